"""Tracked runs (`train --track mlflow,tensorboard`), offline: a local SQLite MLflow store and TensorBoard event
files, read back the way a researcher would (``mlflow.search_runs``, the client, TensorBoard's EventAccumulator);
resume continuing the same MLflow run; the exported model in the registry; failures that must not cost a run.

Tiny random-init timm model on generated photos (as tests/test_training_pipeline.py); a run takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("albumentations")
mlflow = pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")

from helpers import make_tiny_model  # noqa: E402
from test_training_pipeline import train_args, write_synthetic_manifest  # noqa: E402

from wildlife_vision.exitcodes import EXIT_MISSING_EXTRA, EXIT_OK, EXIT_USAGE  # noqa: E402

EXPERIMENT = "wildlife-vision"
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")  # MLflow's


def _train(*argv: str) -> int:
    from wildlife_vision.cli import main

    return main(["train", *argv])


def _rows(run_dir: Path):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _only_run(uri: str, experiment: str = EXPERIMENT):
    runs = _client(uri).search_runs([_client(uri).get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def _history(uri: str, run_id: str, key: str):
    return [(m.step, m.value) for m in sorted(_client(uri).get_metric_history(run_id, key), key=lambda m: m.step)]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_synthetic_manifest(tmp_path_factory.mktemp("synth"), n_train=4, n_val=3)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating one takes seconds); each test has its own experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def tracked(synth, store, tmp_path_factory):
    """A 2-epoch run tracked in MLflow (experiment wildlife-vision, the default) and TensorBoard."""
    uri = store
    run_dir = tmp_path_factory.mktemp("tracked") / "run"
    assert _train(*train_args(synth, run_dir, "--epochs", "2", "--track", "mlflow", "--track", "tensorboard",
                              "--track-uri", uri, "--run-name", "tiny")) == EXIT_OK
    return run_dir, uri


def test_the_run_is_found_by_search_runs_with_params_metrics_and_artefacts(tracked, monkeypatch, tmp_path):
    from wildlife_vision_train.checkpoint import load_checkpoint

    run_dir, uri = tracked
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    df = mlflow.search_runs(experiment_names=[EXPERIMENT])
    assert len(df) == 1
    row = df.iloc[0]
    assert row["status"] == "FINISHED" and row["tags.mlflow.runName"] == "tiny"
    record = json.loads((run_dir / "tracking.json").read_text())
    assert row["run_id"] == record["mlflow"]["run_id"]

    # params: the resolved config, flattened, and the hashes the checkpoint carries
    best = load_checkpoint(run_dir / "best.pt")
    assert row["params.model.name"] == "test_efficientnet" and row["params.optim.lr"] == "0.003"
    assert row["params.data.labels"] == "ivory,live_animal" and row["params.run.world_size"] == "1"
    assert row["params.config_sha256"] == best["config_sha256"]
    assert row["params.manifest_sha256"] == best["manifest_sha256"]
    assert row["params.version.torch"] and row["params.version.wildlife-vision"]

    # one value per epoch (step = epoch, as in metrics.jsonl), the same values
    rows = _rows(run_dir)
    run_id = row["run_id"]
    assert _history(uri, run_id, "train_loss") == [(r["epoch"], pytest.approx(r["train_loss"])) for r in rows]
    assert _history(uri, run_id, "val_ap/ivory") == [(r["epoch"], pytest.approx(r["val_ap"]["ivory"])) for r in rows]
    for key in ("val_loss", "val_macro_ap", "lr", "train_images_per_sec"):
        assert [s for s, _ in _history(uri, run_id, key)] == [1, 2], key
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    assert row["metrics.eval/macro_ap"] == pytest.approx(report["macro"]["ap"])

    # artefacts: the report, calibration, config, metrics and the plots
    client = _client(uri)
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"calibration.json", "config.yaml", "metrics.jsonl", "train.log", "eval"} <= top
    plots = {a.path for a in client.list_artifacts(run_id, "eval")}
    assert {"eval/report.json", "eval/report.md", "eval/pr_curves.png"} <= plots
    got = Path(client.download_artifacts(run_id, "eval/report.json", str(tmp_path)))
    assert json.loads(got.read_text()) == report


def test_tensorboard_event_files_hold_the_scalars(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = tracked
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    ea = EventAccumulator(str(run_dir / "tensorboard"))
    ea.Reload()
    rows = _rows(run_dir)
    for key, value in (("train_loss", lambda r: r["train_loss"]), ("val_ap/live_animal",
                                                                  lambda r: r["val_ap"]["live_animal"])):
        events = ea.Scalars(key)
        assert [e.step for e in events] == [1, 2]
        assert [e.value for e in events] == pytest.approx([value(r) for r in rows], rel=1e-5)
    assert "eval/macro_ap" in ea.Tags()["scalars"]
    assert {"config", "report"} <= {t.split("/")[0] for t in ea.Tags()["tensors"]}


def test_resume_continues_the_same_mlflow_run_without_repeating_epochs(synth, store, tmp_path):
    uri = store
    run_dir = tmp_path / "run"
    args = train_args(synth, run_dir)
    assert _train(*args, "--epochs", "1") == EXIT_OK  # not tracked
    assert not (run_dir / "tracking.json").exists()
    # tracking turned on when resuming: a new MLflow run that also gets the epoch trained before
    assert _train("--resume", "--output", str(run_dir), "--epochs", "2", "--workers", "0", "--track", "mlflow",
                  "--track-uri", uri, "--experiment", "resumed") == EXIT_OK
    run_id = json.loads((run_dir / "tracking.json").read_text())["mlflow"]["run_id"]
    # resumed again without --track: the recorded MLflow run (and store) continues
    assert _train("--resume", "--output", str(run_dir), "--epochs", "3", "--workers", "0") == EXIT_OK
    run = _only_run(uri, "resumed")
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    rows = _rows(run_dir)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert _history(uri, run_id, "train_loss") == [(r["epoch"], pytest.approx(r["train_loss"])) for r in rows]
    changed = json.loads(run.data.tags["wildlife_vision.changed_on_resume"])
    assert changed["optim.epochs"] == ["2", "3"]
    assert run.data.params["optim.epochs"] == "2"  # params cannot change: the first value stays, the change is a tag


def test_an_exported_model_is_registered_with_its_metadata(tracked, tmp_path):
    from wildlife_vision import load_model
    from wildlife_vision_train.tracking import log_exported_model

    run_dir, uri = tracked
    onnx_path = make_tiny_model(tmp_path / "tiny.onnx", labels=("ivory", "live_animal"))
    (tmp_path / "tiny.export.json").write_text('{"schema_version": "wildlife-vision/export/v1"}')
    sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    entry = log_exported_model(run_dir, onnx_path, strict=True)
    run_id = json.loads((run_dir / "tracking.json").read_text())["mlflow"]["run_id"]
    assert entry["run_id"] == run_id and entry["sha256"] == sha

    client = _client(uri)
    version = client.get_model_version(entry["name"], entry["version"])
    assert version.run_id == run_id and version.name == "tiny-test-model"
    tags = version.tags
    model = load_model(onnx_path)
    assert tags["wildlife_vision.sha256"] == sha and tags["wildlife_vision.labels"] == "ivory,live_animal"
    assert json.loads(tags["wildlife_vision.thresholds"]) == dict(model.thresholds)
    assert tags["wildlife_vision.model_version"] == "0.0.1" and tags["wildlife_vision.input_size"] == "32x32"
    assert sha in version.description

    # the registered file is the exported file, byte for byte, and loads as a model
    got = Path(client.download_artifacts(run_id, "models/tiny", str(tmp_path / "dl")))
    assert hashlib.sha256((got / "tiny.onnx").read_bytes()).hexdigest() == sha
    assert (got / "tiny.export.json").is_file()
    assert load_model(got / "tiny.onnx").labels == model.labels

    # the same file again: no second version; a run folder without MLflow: nothing to do
    assert log_exported_model(run_dir, onnx_path, strict=True)["version"] == entry["version"]
    assert len(client.search_model_versions(f"name='{entry['name']}'")) == 1
    assert log_exported_model(tmp_path, onnx_path, strict=True) is None


def test_a_tracker_failing_mid_run_is_reported_once_and_training_goes_on(synth, store, tmp_path, monkeypatch,
                                                                        caplog):
    from wildlife_vision_train import tracking

    def broken(self, values, step):
        raise RuntimeError("the store went away")

    monkeypatch.setattr(tracking.MlflowTracker, "_log_metrics", broken)
    monkeypatch.setattr(tracking, "RETRY_PAUSE", 0.0)
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        assert _train(*train_args(synth, run_dir, "--epochs", "2", "--track", "mlflow", "--track-uri", store,
                                  "--experiment", "broken")) == EXIT_OK
    warnings = [r.getMessage() for r in caplog.records if r.name == tracking.__name__]
    assert len(warnings) == 1 and "could not log epoch 1" in warnings[0] and "the store went away" in warnings[0]
    assert [r["epoch"] for r in _rows(run_dir)] == [1, 2] and (run_dir / "eval" / "report.json").is_file()
    assert _only_run(store, "broken").info.status == "FINISHED"


@pytest.mark.parametrize("extra,message", [
    (lambda tmp: ["--track", "mlflow", "--track-uri", f"sqlite:///{tmp / 'a_file' / 'mlflow.db'}"], "cannot create"),
    (lambda tmp: ["--track", "mlflow", "--track-uri", (tmp / "fs").as_uri()], "MLFLOW_ALLOW_FILE_STORE"),
    (lambda tmp: ["--track", "mlflow", "--track-uri", "sqlite:///:memory:"], "in-memory store would lose the run"),
    (lambda tmp: ["--track", "wandb"], "unknown tracker 'wandb'"),
    (lambda tmp: ["--track-uri", f"sqlite:///{tmp / 'x.db'}"], "need --track mlflow"),
])
def test_a_bad_tracking_setup_stops_before_training(synth, tmp_path, capsys, extra, message):
    (tmp_path / "a_file").write_text("not a folder")
    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    assert _train(*train_args(synth, run_dir, "--epochs", "1"), *extra(tmp_path)) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (run_dir / "last.pt").exists() and not (run_dir / "metrics.jsonl").exists()
    assert time.monotonic() - t0 < 30


def test_a_run_refused_for_its_manifest_leaves_no_run_in_the_store(store, tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,labels,split\nmissing_a.jpg,ivory,train\nmissing_b.jpg,,val\n")
    assert _train(*train_args(manifest, tmp_path / "run", "--epochs", "1"), "--track", "mlflow", "--track-uri", store,
                  "--experiment", "refused") == EXIT_USAGE
    assert "missing_a.jpg" in capsys.readouterr().err
    client = _client(store)
    assert client.search_runs([client.get_experiment_by_name("refused").experiment_id]) == []
    assert not (tmp_path / "run" / "tracking.json").exists()


@pytest.mark.parametrize("tracker,module", [("mlflow", "mlflow"), ("tensorboard", "tensorboard")])
def test_without_the_track_extra_the_command_names_it(synth, tmp_path, capsys, monkeypatch, tracker, module):
    monkeypatch.setitem(sys.modules, module, None)  # importing it now raises ImportError
    run_dir = tmp_path / "run"
    assert _train(*train_args(synth, run_dir, "--epochs", "1"), "--track", tracker) == EXIT_MISSING_EXTRA
    assert "pip install 'wildlife-vision[track]'" in capsys.readouterr().err
    assert not run_dir.exists()


def test_default_store_is_beside_the_run_folder(tmp_path, monkeypatch):
    from wildlife_vision_train.tracking import TrackingError, _prepare_store, default_uri, parse_trackers

    assert default_uri(tmp_path / "runs" / "a") == f"sqlite:///{(tmp_path / 'runs' / 'mlruns.db').resolve()}"
    monkeypatch.chdir(tmp_path)  # a relative store is recorded with its absolute path, artefacts beside it
    assert _prepare_store("sqlite:///s/m.db") == (f"sqlite:///{tmp_path.resolve() / 's' / 'm.db'}",
                                                  (tmp_path.resolve() / "s" / "mlartifacts").as_uri())
    assert parse_trackers(["mlflow,tensorboard", "mlflow"]) == ("mlflow", "tensorboard")
    assert parse_trackers(None) == ()
    with pytest.raises(TrackingError, match="choose from mlflow, tensorboard"):
        parse_trackers(["mlflow,neptune"])


@pytest.mark.slow
def test_under_torchrun_only_rank_0_tracks(synth, tmp_path):
    """Two processes, one MLflow run with each epoch once, one TensorBoard event file."""
    import os
    import subprocess

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "ddp"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "wildlife_vision", "train",
                           *train_args(synth, run_dir, "--epochs", "2", "--batch-size", "8", "--track",
                                       "mlflow,tensorboard", "--track-uri", uri)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = _only_run(uri)
    assert run.info.status == "FINISHED" and run.data.params["run.world_size"] == "2"
    assert [s for s, _ in _history(uri, run.info.run_id, "train_loss")] == [1, 2]
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1
