"""`train --config RECIPE.yaml`: a run's config.yaml is a recipe that reproduces its config hash; the flags
given on the command line override the file and argparse's defaults never do; bad recipes are usage errors that
name the key and the valid ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("albumentations")

from test_training_pipeline import train_args, write_synthetic_manifest  # noqa: E402

from wildlife_vision.exitcodes import EXIT_OK, EXIT_USAGE  # noqa: E402


def _train(*argv: str) -> int:
    from wildlife_vision.cli import main

    return main(["train", *argv])


def _config(*argv: str):
    """The TrainConfig that `train ARGV` would run, without running it."""
    from wildlife_vision.cli import build_parser
    from wildlife_vision_train.cli import config_from_args
    from wildlife_vision_train.config import read_recipe

    args = build_parser().parse_args(["train", *argv])
    return config_from_args(args, read_recipe(Path(args.config)) if args.config else None)


@pytest.fixture(scope="module")
def earlier(tmp_path_factory):
    """An earlier run with non-default values, and its resolved config.yaml."""
    root = tmp_path_factory.mktemp("earlier")
    manifest = write_synthetic_manifest(root / "data", n_train=4, n_val=3)
    run_dir = root / "run"
    assert _train(*train_args(manifest, run_dir, "--epochs", "1", "--seed", "5", "--loss", "focal",
                              "--review-recall", "0.9")) == EXIT_OK
    return run_dir


def test_an_earlier_runs_config_yaml_reproduces_its_config_hash(earlier, tmp_path):
    from wildlife_vision_train.checkpoint import load_checkpoint
    from wildlife_vision_train.config import TrainConfig

    out = tmp_path / "again"
    assert _train("--config", str(earlier / "config.yaml"), "--output", str(out)) == EXIT_OK
    first, again = load_checkpoint(earlier / "best.pt"), load_checkpoint(out / "best.pt")
    assert again["config_sha256"] == first["config_sha256"]
    a, b = TrainConfig.load_yaml(earlier / "config.yaml"), TrainConfig.load_yaml(out / "config.yaml")
    assert b.run.output == str(out) and b.replace("run", output=a.run.output) == a
    # a new seed: the only change, and the hash follows it
    seeded = _config("--config", str(earlier / "config.yaml"), "--output", str(tmp_path / "s"), "--seed", "6")
    assert seeded.run.seed == 6 and seeded.sha256() != first["config_sha256"]
    assert seeded.replace("run", seed=5, output=a.run.output) == a


def test_flags_given_override_the_file_and_defaults_do_not(earlier, tmp_path):
    recipe = yaml.safe_load((earlier / "config.yaml").read_text())
    assert recipe["data"]["batch_size"] == 12 and recipe["data"]["image_size"] == 32  # not argparse's defaults
    cfg = _config("--config", str(earlier / "config.yaml"), "--output", str(tmp_path / "o"), "--lr", "0.002",
                  "--seed", "42", "--calibrate-recall", "0.8", "--workers", "1")
    assert cfg.optim.lr == 0.002 and cfg.calib.target == "recall" and cfg.calib.value == 0.8
    assert cfg.run.seed == 42  # given, though it is the default: the flag wins over the file's 5
    assert cfg.data.workers == 1
    # left out: the file's values, not argparse's defaults
    assert cfg.data.batch_size == 12 and cfg.data.image_size == 32 and cfg.model.name == "test_efficientnet"
    assert cfg.loss.kind == "focal" and cfg.calib.review_recall == 0.9 and cfg.optim.epochs == 1
    assert cfg.data.manifest == recipe["data"]["manifest"] and cfg.run.output == str(tmp_path / "o")
    no_aug = _config("--config", str(earlier / "config.yaml"), "--output", "o", "--no-aug")
    assert no_aug.aug.color == 0.0 and no_aug.aug.scale_min == 1.0 and no_aug.optim.lr == 0.003


def test_a_partial_recipe_is_the_same_config_as_the_same_flags(tmp_path):
    (tmp_path / "data").mkdir()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("# a shared recipe\n"
                      "data:\n  manifest: data/manifest.csv\n  labels: [ivory, live_animal]\n  image_size: 64\n"
                      "model:\n  name: convnext_tiny\n"
                      "optim:\n  lr: 2e-4\n  epochs: 4\n  grad_clip: 1\n"
                      "run:\n  output: /somewhere/else\n  world_size: 8\n")
    cfg = _config("--config", str(recipe), "--output", "runs/x", "--ema")
    flags = _config("--data", str(tmp_path / "data" / "manifest.csv"), "--labels", "ivory,live_animal",
                    "--image-size", "64", "--model", "convnext_tiny", "--lr", "0.0002", "--epochs", "4",
                    "--grad-clip", "1", "--output", "runs/x", "--ema")
    assert cfg == flags and cfg.sha256() == flags.sha256()
    # YAML's '2e-4' is a string and 1 an int: both read as the floats the flags give
    assert isinstance(cfg.optim.lr, float) and isinstance(cfg.optim.grad_clip, float)
    # the manifest relative to the recipe's folder; output and world size never from the file
    assert cfg.data.manifest == str((tmp_path / "data" / "manifest.csv").resolve())
    assert cfg.run.output == "runs/x" and cfg.run.world_size == 1
    # --data overrides the recipe's manifest
    assert _config("--config", str(recipe), "--output", "o", "--data", "m.csv").data.manifest == \
        str(Path("m.csv").resolve())


@pytest.mark.parametrize("text,message", [
    ("optim:\n  learning_rate: 0.1\n", "unknown key 'optim.learning_rate'; valid keys in 'optim': epochs, lr,"),
    ("track:\n  uri: x\n", "unknown section(s) 'track'; valid sections: data, model, optim, loss, aug, calib, run"),
    ("optim:\n  epochs: ten\n", "optim.epochs must be a whole number, got 'ten'"),
    ("optim:\n  ema: maybe\n", "optim.ema must be true or false"),
    ("model:\n  pretrained: no\n", "quote the word"),
    ("- a\n- b\n", "a recipe is a mapping of sections"),
    ("optim: [1, 2]\n", "section 'optim' must be a mapping"),
    ("optim:\n  lr: 0.1\n  lr 2\n", "not valid YAML"),
    ("optim:\n  lr: 5.0\n", "--lr must be in (0, 1), got 5.0"),
])
def test_a_bad_recipe_is_a_usage_error_that_names_the_problem(tmp_path, capsys, text, message):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    assert _train("--config", str(recipe), "--data", "m.csv", "--output", str(tmp_path / "run")) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_recipe_usage_errors(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("optim:\n  lr: 0.01\n")
    assert _train("--config", str(recipe), "--output", str(tmp_path / "run")) == EXIT_USAGE
    assert "or data.manifest in" in capsys.readouterr().err
    assert _train("--config", str(tmp_path / "missing.yaml"), "--output", str(tmp_path / "run")) == EXIT_USAGE
    assert "cannot read it" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"x")
    assert _train("--resume", "--config", str(recipe), "--output", str(tmp_path / "run")) == EXIT_USAGE
    assert "--config and --resume cannot be combined" in capsys.readouterr().err


def test_without_a_recipe_the_flags_and_their_defaults_are_the_config():
    from wildlife_vision_train.cli import _D
    from wildlife_vision_train.config import CalibCfg

    cfg = _config("--data", "m.csv", "--output", "o", "--epochs", "3")
    assert cfg.optim.lr == _D.optim.lr and cfg.data.batch_size == _D.data.batch_size and cfg.optim.epochs == 3
    assert cfg.calib == CalibCfg() and cfg.aug == _D.aug
