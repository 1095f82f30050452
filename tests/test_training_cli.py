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


def test_train_help_shows_the_main_flags():
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


def test_no_help_text_names_an_issue_number():
    for command in (*COMMANDS, "benchmark"):
        assert "issue" not in _subparser(command).format_help().lower(), command


def _needs_train_extra():
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    pytest.importorskip("albumentations")


def _missing_photos_manifest(tmp_path):
    """A manifest whose photos are all missing: any check that runs after reading it reports them."""
    path = tmp_path / "m.csv"
    path.write_text("image,labels,split\nmissing_a.jpg,ivory,train\nmissing_b.jpg,,val\n")
    return path


def test_device_cuda_without_cuda_is_a_one_line_usage_error(tmp_path, capsys, monkeypatch):
    _needs_train_extra()
    import torch

    from wildlife_vision.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(["train", "--data", str(_missing_photos_manifest(tmp_path)), "--model", "test_efficientnet",
                 "--pretrained", "none", "--device", "cuda", "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert "--device cuda" in err and "no CUDA device" in err and "--device cpu" in err
    assert "missing" not in err  # refused before the manifest's photos were checked


def test_an_unknown_model_is_reported_before_the_photos_are_checked(tmp_path, capsys, monkeypatch):
    _needs_train_extra()
    import wildlife_vision_train.train as train_mod
    from wildlife_vision.cli import main

    def no_reading(*a, **k):
        raise AssertionError("the manifest must not be read before the model name is checked")

    monkeypatch.setattr(train_mod, "read_manifest", no_reading)
    code = main(["train", "--data", str(_missing_photos_manifest(tmp_path)), "--model", "tf_efficientnet_lite9",
                 "--pretrained", "none", "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "Traceback" not in err
    assert "unknown timm model 'tf_efficientnet_lite9'" in err and "Did you mean" in err
    assert "tf_efficientnet_lite0" in err
    assert main(["train", "--data", str(_missing_photos_manifest(tmp_path)), "--model", "not_a_model",
                 "--pretrained", "none", "--output", str(tmp_path / "run")]) == EXIT_USAGE
    assert "unknown timm model 'not_a_model'" in capsys.readouterr().err


def test_offline_hub_weights_fail_fast_with_the_local_weights_hint(tmp_path, capsys, monkeypatch):
    _needs_train_extra()
    import time

    import timm

    import wildlife_vision_train.backbones as backbones
    from wildlife_vision.cli import main

    real = timm.create_model

    def no_hub(name, pretrained=False, **kw):
        assert not pretrained, "the hub must not be asked offline"
        return real(name, pretrained=False, **kw)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network in tests: the environment says offline
    monkeypatch.setattr(timm, "create_model", no_hub)
    monkeypatch.setattr(backbones, "_hub_cache_file", lambda name: None)  # nothing cached on this machine
    for pretrained in ("auto", "hub"):
        t0 = time.monotonic()
        code = main(["train", "--data", str(_missing_photos_manifest(tmp_path)), "--model", "test_efficientnet",
                     "--pretrained", pretrained, "--output", str(tmp_path / "run")])
        err = capsys.readouterr().err
        assert code == EXIT_USAGE and time.monotonic() - t0 < 5
        assert "HF_HUB_OFFLINE" in err and "--pretrained PATH" in err and "--pretrained none" in err
        assert "missing_a.jpg" not in err and "Traceback" not in err


@pytest.mark.parametrize("given", [["ivory", "live_animal"], ["ivory,live_animal"], ["ivory,", "live_animal"]])
def test_labels_may_be_space_or_comma_separated(given):
    """`--labels ivory,live_animal` once trained one label named 'ivory,live_animal' with no positives."""
    from wildlife_vision_train.cli import config_from_args

    parser = build_parser()
    args = parser.parse_args(["train", "--data", "m.csv", "--output", "out", "--labels", *given])
    assert config_from_args(args).data.labels == ("ivory", "live_animal")
