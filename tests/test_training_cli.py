"""The train/evaluate/export commands: help for every flag, and a clear message without the train extra."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap

import pytest

from wildlife_vision.cli import build_parser
from wildlife_vision.exitcodes import EXIT_MISSING_EXTRA, EXIT_USAGE

COMMANDS = ("train", "evaluate", "export")


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_is_explained(command):
    p = _subparser(command)
    for action in p._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and len(action.help) > 10, f"{command} {action.option_strings or action.dest}"
    text = p.format_help()
    assert "example" in text


def test_train_help_shows_the_issue_forms():
    text = _subparser("train").format_help()
    for flag in ("--data", "--model", "--epochs", "--image-size", "--output", "--pretrained", "--freeze-epochs",
                 "--ema", "--loss", "--pos-weight", "--resume", "--max-train-images", "--calibrate-precision",
                 "--calibrate-recall", "--workers", "--device", "--amp"):
        assert flag in text
    assert "--int8" in _subparser("export").format_help()


_NO_TORCH = textwrap.dedent("""
    import sys
    for name in ("torch", "timm", "albumentations", "matplotlib"):
        sys.modules[name] = None   # importing them now raises ImportError
    import wildlife_vision_train.cli            # must not need them
    from wildlife_vision.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.parametrize("argv,extra", [
    (["train", "--data", "m.csv", "--output", "run"], "train"),
    (["evaluate", "--model", "m.onnx", "--data", "m.csv", "--output", "rep"], "eval"),  # plots: matplotlib only
    (["evaluate", "--model", "run_dir", "--data", "m.csv", "--output", "rep"], "train"),  # a checkpoint: torch
    (["export", "run", "--output", "m.onnx"], "train"),
])
def test_without_the_train_extra_the_command_names_it(argv, extra, tmp_path):
    (tmp_path / "run_dir").mkdir()
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH, *argv], capture_output=True, text=True, cwd=tmp_path,
                          timeout=60)
    assert proc.returncode == EXIT_MISSING_EXTRA, proc.stderr
    assert f"pip install 'wildlife-vision[{extra}]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_works_without_torch(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH, "train", "--help"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 0 and "--image-size" in proc.stdout


def test_resume_without_checkpoint_and_train_without_data(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    pytest.importorskip("albumentations")
    from wildlife_vision.cli import main

    assert main(["train", "--resume", "--output", str(tmp_path)]) == EXIT_USAGE
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["train", "--output", str(tmp_path)]) == EXIT_USAGE
    assert "--data MANIFEST is required" in capsys.readouterr().err


def test_bad_config_values_are_messages(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    pytest.importorskip("albumentations")
    from wildlife_vision.cli import main

    assert main(["train", "--data", "x.csv", "--output", str(tmp_path), "--epochs", "2", "--freeze-epochs", "3"]) == EXIT_USAGE
    assert "--freeze-epochs (3) is more than --epochs (2)" in capsys.readouterr().err
    assert main(["train", "--data", "x.csv", "--output", str(tmp_path), "--image-size", "4"]) == EXIT_USAGE
    assert "--image-size" in capsys.readouterr().err
