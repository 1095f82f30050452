"""Tracked runs: ``wildlife-vision train --track mlflow,tensorboard``, and the exported model in the registry.

Off by default. With ``--track mlflow`` a run is recorded in an MLflow tracking store: by default a local SQLite
file ``mlruns.db`` in the run folder's parent folder, with artefacts in ``mlartifacts/`` beside it, so every run
under ``runs/`` lands in one store and needs no server and no network (``mlflow ui --backend-store-uri
sqlite:///runs/mlruns.db``); ``--track-uri`` takes any MLflow tracking URI instead. With ``--track
tensorboard`` the same figures go to TensorBoard event files in ``RUN_DIR/tensorboard/``.

What is logged: the resolved config as flattened params (``optim.lr``, ``model.name`` ...) with the config and
manifest hashes, the world size and the package versions; one value per epoch (step = the epoch, 1-based, as in
``metrics.jsonl``) of every figure of ``metrics.jsonl`` (train and val loss, val AP per label and macro, lr,
images/s ...); at the end the evaluation figures, and ``eval/`` (report, plots), ``calibration.json``,
``config.yaml``, ``metrics.jsonl`` and ``train.log`` as artefacts. ``RUN_DIR/tracking.json`` records where the run
went, so ``--resume`` continues the same MLflow run (its epochs after the checkpoint only, and any epoch of
``metrics.jsonl`` the store missed) and :func:`log_exported_model` can register an exported ONNX file with the run.

Only the process that writes the run folder (rank 0 under torchrun) opens a tracker. The store is opened before
any photo is read, and a bad URI or an unwritable folder raises :class:`TrackingError` then (exit 2); the MLflow
run itself is made once the data and the model are set up, so a run refused for its manifest leaves no trace in
the store. A tracker that fails later is reported once and dropped, and training carries on: a tracking store
must never cost a long run.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from wildlife_vision.data.manifest import atomic_write_text
from wildlife_vision.exitcodes import MissingExtraError, require_extra

from wildlife_vision_train.config import ConfigError

log = logging.getLogger(__name__)

TRACKERS = ("mlflow", "tensorboard")
DEFAULT_EXPERIMENT = "wildlife-vision"
RECORD_NAME = "tracking.json"                  # in the run folder
RECORD_SCHEMA = "wildlife-vision/tracking/v1"
STORE_NAME = "mlruns.db"                       # the default store, in the run folder's parent
ARTIFACTS_NAME = "mlartifacts"                 # beside it (the name `mlflow server` uses)
TENSORBOARD_DIR = "tensorboard"
#: the files of a finished run logged as artefacts (besides the folder eval/)
RUN_ARTEFACTS = ("calibration.json", "config.yaml", "metrics.jsonl", "train.log")
#: figures of a metrics.jsonl row that are not per-epoch metrics
_NOT_METRICS = ("epoch", "world_size", "best", "frozen")
RETRY_PAUSE = 1.0                              # seconds before the one retry of a failed tracker call
_PACKAGES = ("wildlife-vision", "torch", "timm", "albumentations", "numpy", "onnxruntime", "mlflow", "tensorboard")


class TrackingError(ConfigError):
    """A tracker cannot start (bad URI, unwritable store, unknown tracker): a usage error, raised before training."""


@dataclass(frozen=True)
class TrackingCfg:
    """Where a run is tracked: not part of the training config (it changes nothing in the weights)."""

    trackers: Tuple[str, ...] = ()            # () = off
    uri: Optional[str] = None                 # MLflow tracking URI; None = sqlite:///<run parent>/mlruns.db
    experiment: str = DEFAULT_EXPERIMENT
    run_name: Optional[str] = None            # None = the run folder's name
    recipe: Optional[str] = None              # the --config file, kept as a tag

    def require(self) -> None:
        """Raise :class:`MissingExtraError` (exit 3, naming ``[track]``) when a chosen tracker is not installed."""
        if "mlflow" in self.trackers:
            require_extra("track", "mlflow")
        if "tensorboard" in self.trackers:
            require_extra("track", "tensorboard", "torch.utils.tensorboard")


def parse_trackers(values: Optional[Iterable[str]]) -> Tuple[str, ...]:
    """``--track mlflow --track tensorboard`` or ``--track mlflow,tensorboard`` -> ('mlflow', 'tensorboard')."""
    out: List[str] = []
    for value in values or ():
        for name in str(value).split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in TRACKERS:
                raise TrackingError(f"--track: unknown tracker {name!r}; choose from {', '.join(TRACKERS)} "
                                    "(comma-separated or the flag repeated)")
            if name not in out:
                out.append(name)
    return tuple(out)


def default_uri(run_dir: Path) -> str:
    """The local store every run under the same parent folder shares: ``sqlite:///<parent>/mlruns.db``."""
    return "sqlite:///" + str((Path(run_dir).resolve().parent / STORE_NAME))


def read_record(run_dir: Path) -> Dict[str, Any]:
    """``RUN_DIR/tracking.json`` ({} when the run was not tracked or the file is unreadable)."""
    try:
        record = json.loads((Path(run_dir) / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) and record.get("schema_version") == RECORD_SCHEMA else {}


def _write_record(run_dir: Path, part: str, entry: Dict[str, Any]) -> None:
    record = read_record(run_dir) or {"schema_version": RECORD_SCHEMA}
    record[part] = entry
    atomic_write_text(Path(run_dir) / RECORD_NAME, json.dumps(record, indent=2) + "\n")


def for_run(requested: TrackingCfg, run_dir: Path, resuming: bool) -> TrackingCfg:
    """The tracking a run gets: a resumed run given no ``--track`` continues the trackers it was started with
    (and their store, unless ``--track-uri`` names another)."""
    if requested.trackers or not resuming:
        return requested
    record = read_record(run_dir)
    trackers = tuple(t for t in TRACKERS if t in record)
    uri = requested.uri or record.get("mlflow", {}).get("tracking_uri")
    return replace(requested, trackers=trackers, uri=uri)


# ---- flattening ------------------------------------------------------------------------------------------

def flatten(d: Mapping[str, Any], prefix: str = "") -> Dict[str, str]:
    """``{"optim": {"lr": 0.001}}`` -> ``{"optim.lr": "0.001"}``; lists comma-joined, other values as JSON."""
    out: Dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = ",".join(str(v) for v in value)
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


def epoch_metrics(record: Mapping[str, Any]) -> Dict[str, float]:
    """The per-epoch figures of a metrics.jsonl row: numbers only (finite), ``val_ap`` as ``val_ap/LABEL``."""
    out: Dict[str, float] = {}
    for key, value in record.items():
        if key in _NOT_METRICS:
            continue
        if isinstance(value, Mapping):
            for sub, v in value.items():
                if _is_number(v):
                    out[f"{key}/{sub}"] = float(v)
        elif _is_number(value):
            out[key] = float(value)
    return out


def final_metrics(report: Mapping[str, Any], best_epoch: int) -> Dict[str, float]:
    """The evaluation of the best checkpoint: macro and per-label AP, precision, recall and threshold."""
    out: Dict[str, float] = {"best_epoch": float(best_epoch)}
    for key in ("ap", "precision", "recall", "f1"):
        if _is_number(report.get("macro", {}).get(key)):
            out[f"eval/macro_{key}"] = float(report["macro"][key])
    for lab, m in report.get("per_class", {}).items():
        for key in ("ap", "precision", "recall", "threshold"):
            if _is_number(m.get(key)):
                out[f"eval/{lab}/{key}"] = float(m[key])
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _read_metrics(path: Path) -> List[Dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a crash
    return [r for r in rows if isinstance(r, dict) and isinstance(r.get("epoch"), int)]


def package_versions() -> Dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in _PACKAGES:
        try:
            out[f"version.{name}"] = version(name)
        except PackageNotFoundError:
            pass
    import platform

    out["version.python"] = platform.python_version()
    return out


def git_commit() -> Optional[str]:
    """The commit of the wildlife-vision checkout the code runs from; None outside git (or without git)."""
    import wildlife_vision

    try:
        proc = subprocess.run(["git", "-C", str(Path(wildlife_vision.__file__).resolve().parent), "rev-parse",
                               "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = proc.stdout.strip()
    return commit if proc.returncode == 0 and len(commit) == 40 else None


# ---- trackers --------------------------------------------------------------------------------------------

class Tracker:
    """What a run tells its trackers; this base does nothing (the stand-in when tracking is off, and on the
    processes other than rank 0). As a context manager it closes the run as FINISHED, FAILED or KILLED."""

    name = "none"

    def start(self, cfg: Any, common: Mapping[str, Any], metrics_path: Path) -> None:
        """The run is set up: its resolved config and hashes are known; ``metrics_path`` holds earlier epochs."""

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        """One row of metrics.jsonl, just written."""

    def finish(self, run_dir: Path, report: Mapping[str, Any], best_epoch: int, step: int) -> None:
        """The best checkpoint is evaluated and calibrated: the final figures (at ``step``, the epochs trained)
        and the artefacts."""

    def close(self, status: str = "FINISHED") -> None:
        """End the run (``FINISHED``, ``FAILED`` or ``KILLED``)."""

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        self.close("FINISHED" if kind is None else "KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")


class _Guarded(Tracker):
    """A tracker whose failures after startup are reported once, then it is dropped for the rest of the run."""

    def __init__(self) -> None:
        self.enabled = True

    def _guard(self, what: str, fn: Callable[[], None], retry: bool = True) -> None:
        if not self.enabled:
            return
        for attempt in (1, 2) if retry else (1,):
            try:
                fn()
                return
            except Exception as e:  # noqa: BLE001 - a tracking store must never cost the run
                error = e
                if attempt == 1 and retry:
                    time.sleep(RETRY_PAUSE)  # one retry: a busy SQLite file, a network blip
        self.enabled = False
        log.warning("%s could not %s (%s: %s); training goes on without %s for the rest of this run",
                    self.name, what, type(error).__name__, _first_line(error), self.name)


class MlflowTracker(_Guarded):
    """One MLflow run per run folder, through :class:`mlflow.tracking.MlflowClient` (no global MLflow state)."""

    name = "MLflow"

    def __init__(self, run_dir: Path, cfg: TrackingCfg, resuming: bool):
        """Open the store and find (or make) the experiment, or the recorded run of a resumed run folder; the
        run itself is made by :meth:`start`, once the data and the model are set up, so a run that cannot
        start (a manifest error) leaves nothing in the store."""
        super().__init__()
        from mlflow.tracking import MlflowClient

        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.run_id: Optional[str] = None
        self.uri, artifact_location = _prepare_store(cfg.uri or default_uri(self.run_dir))
        self.recorded = read_record(self.run_dir).get("mlflow", {}) if resuming else {}
        try:
            self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
            if self.recorded.get("run_id"):
                self._check_recorded(self.recorded["run_id"])
            else:
                self.experiment_id = self._experiment(cfg.experiment, artifact_location)
        except TrackingError:
            raise
        except Exception as e:  # noqa: BLE001 - MLflow raises many kinds; all mean this store cannot be used
            raise TrackingError(f"--track mlflow: cannot use the tracking store {self.uri}: "
                                f"{type(e).__name__}: {_first_line(e)}") from None

    def _experiment(self, name: str, artifact_location: Optional[str]) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return self.client.create_experiment(name, artifact_location=artifact_location)
            except Exception:  # noqa: BLE001 - another run created it meanwhile
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage != "active":
            raise TrackingError(f"--experiment {name!r} is deleted in {self.uri}; restore it (`mlflow experiments "
                                "restore`) or choose another name")
        return experiment.experiment_id

    def _check_recorded(self, run_id: str) -> None:
        try:
            self.experiment_id = self.client.get_run(run_id).info.experiment_id
        except Exception:  # noqa: BLE001
            raise TrackingError(f"{self.run_dir / RECORD_NAME} records MLflow run {run_id}, which is not in "
                                f"{self.uri}; pass the --track-uri that holds it, or delete {RECORD_NAME} to start "
                                "a new MLflow run") from None

    def _open_run(self) -> None:
        """Make the run (or mark the recorded one RUNNING again) and record it in RUN_DIR/tracking.json."""
        if self.recorded.get("run_id"):
            self.run_id = self.recorded["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            tags = {"mlflow.source.name": "wildlife-vision train", "mlflow.source.type": "LOCAL",
                    "wildlife_vision.run_dir": str(self.run_dir.resolve())}
            if self.cfg.recipe:
                tags["wildlife_vision.recipe"] = self.cfg.recipe
            commit = git_commit()
            if commit:
                tags["mlflow.source.git.commit"] = commit
            self.run_id = self.client.create_run(self.experiment_id, tags=tags,
                                                 run_name=self.cfg.run_name or self.run_dir.resolve().name).info.run_id
        run = self.client.get_run(self.run_id)
        experiment = self.client.get_experiment(self.experiment_id).name
        _write_record(self.run_dir, "mlflow", {"tracking_uri": self.uri, "experiment_id": self.experiment_id,
                                               "experiment": experiment, "run_id": self.run_id,
                                               "run_name": run.info.run_name, "artifact_uri": run.info.artifact_uri,
                                               "registered": self.recorded.get("registered", [])})
        log.info("MLflow run %s (%s) of experiment %r in %s%s", self.run_id, run.info.run_name, experiment,
                 self.uri, " (continued)" if self.recorded.get("run_id") else "")

    # -- what the run tells it

    def start(self, cfg: Any, common: Mapping[str, Any], metrics_path: Path) -> None:
        try:
            self._open_run()
        except Exception as e:  # noqa: BLE001 - the store answered a moment ago: still a startup failure
            raise TrackingError(f"--track mlflow: cannot start a run in {self.uri}: {type(e).__name__}: "
                                f"{_first_line(e)}") from None
        self._guard("log the parameters", lambda: self._log_params(cfg, common))
        self._guard("log the earlier epochs", lambda: self._backfill(metrics_path))

    def _log_params(self, cfg: Any, common: Mapping[str, Any]) -> None:
        from mlflow.entities import Param, RunTag

        params = {**flatten(cfg.to_dict()), "config_sha256": common["config_sha256"],
                  "manifest_sha256": common["manifest_sha256"], "train_images": str(common["counts"]["train_images"]),
                  "val_images": str(common["counts"]["val_images"]), **package_versions()}
        params = {k: v[:6000] for k, v in params.items()}
        existing = self.client.get_run(self.run_id).data.params
        changed = {k: [existing[k], v] for k, v in params.items() if k in existing and existing[k] != v}
        new = [Param(k, v) for k, v in params.items() if k not in existing]  # params cannot change: only new ones
        for i in range(0, len(new), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=new[i:i + 100])
        if changed:  # a resumed run with a longer --epochs, another device ...: kept as a tag
            self.client.log_batch(self.run_id, tags=[RunTag("wildlife_vision.changed_on_resume",
                                                            json.dumps(changed)[:5000])])

    def _backfill(self, metrics_path: Path) -> None:
        """Epochs of metrics.jsonl the store does not have (none for a new run): a resumed run whose tracker
        was dropped or off. Each epoch once: steps already there are skipped."""
        rows = _read_metrics(metrics_path)
        if not rows:
            return
        logged = {m.step for m in self.client.get_metric_history(self.run_id, "train_loss")}
        for row in rows:
            if row["epoch"] not in logged:
                self._log_metrics(epoch_metrics(row), row["epoch"])
                logged.add(row["epoch"])

    def _log_metrics(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        self._guard(f"log epoch {record['epoch']}", lambda: self._log_metrics(epoch_metrics(record), record["epoch"]))

    def finish(self, run_dir: Path, report: Mapping[str, Any], best_epoch: int, step: int) -> None:
        self._guard("log the evaluation", lambda: self._log_metrics(final_metrics(report, best_epoch), step))
        self._guard("store the artefacts", lambda: self._log_artefacts(Path(run_dir)))

    def _log_artefacts(self, run_dir: Path) -> None:
        if (run_dir / "eval").is_dir():
            self.client.log_artifacts(self.run_id, str(run_dir / "eval"), "eval")
        for name in RUN_ARTEFACTS:
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))

    def close(self, status: str = "FINISHED") -> None:
        if self.run_id is None:  # never started
            return
        if self.enabled:
            self._guard(f"mark the run {status}", lambda: self.client.set_terminated(self.run_id, status), retry=False)
        else:  # dropped earlier (and reported then): still try to end the run, quietly
            try:
                self.client.set_terminated(self.run_id, status)
            except Exception:  # noqa: BLE001
                pass
        self.enabled = False


class TensorBoardTracker(_Guarded):
    """Event files in ``RUN_DIR/tensorboard/`` (:class:`torch.utils.tensorboard.SummaryWriter`)."""

    name = "TensorBoard"

    def __init__(self, run_dir: Path, epochs_done: Optional[int]):
        super().__init__()
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        if epochs_done is None:
            _remove_events(self.log_dir)  # a run folder being overwritten: its old curves are not this run's
        self.had_events = any(self.log_dir.glob("events.out.tfevents.*"))
        try:
            # purge_step: TensorBoard drops earlier files' events from this step on (epochs logged after last.pt)
            self.writer = SummaryWriter(str(self.log_dir), purge_step=epochs_done + 1 if epochs_done else None)
            self.writer.flush()
        except Exception as e:  # noqa: BLE001
            raise TrackingError(f"--track tensorboard: cannot write event files in {self.log_dir}: "
                                f"{type(e).__name__}: {_first_line(e)}") from None
        self.epochs_done = epochs_done or 0
        _write_record(run_dir, "tensorboard", {"log_dir": TENSORBOARD_DIR})
        log.info("TensorBoard event files in %s", self.log_dir)

    def start(self, cfg: Any, common: Mapping[str, Any], metrics_path: Path) -> None:
        def text() -> None:
            import yaml

            config = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
            self.writer.add_text("config", "    " + config.replace("\n", "\n    ") + f"\n\nconfig_sha256 "
                                 f"{common['config_sha256']}, manifest_sha256 {common['manifest_sha256']}",
                                 self.epochs_done)

        self._guard("write the config", text)
        if not self.had_events:  # a resumed run that was not tracked before: its earlier epochs too
            self._guard("write the earlier epochs", lambda: [self._scalars(epoch_metrics(r), r["epoch"])
                                                             for r in _read_metrics(metrics_path)
                                                             if r["epoch"] <= self.epochs_done])

    def _scalars(self, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        self._guard(f"write epoch {record['epoch']}", lambda: self._scalars(epoch_metrics(record), record["epoch"]))

    def finish(self, run_dir: Path, report: Mapping[str, Any], best_epoch: int, step: int) -> None:
        self._guard("write the evaluation", lambda: self._scalars(final_metrics(report, best_epoch), step))
        md = Path(run_dir) / "eval" / "report.md"
        if md.is_file():
            self._guard("write the report", lambda: (self.writer.add_text("report", md.read_text("utf-8"), step),
                                                     self.writer.flush()))

    def close(self, status: str = "FINISHED") -> None:
        try:
            self.writer.close()
        except Exception as e:  # noqa: BLE001
            if self.enabled:
                log.warning("TensorBoard could not close its event file (%s: %s)", type(e).__name__, _first_line(e))
        self.enabled = False


class Trackers(Tracker):
    """Several trackers as one."""

    def __init__(self, trackers: Sequence[Tracker]):
        self.trackers = list(trackers)

    def start(self, cfg: Any, common: Mapping[str, Any], metrics_path: Path) -> None:
        for t in self.trackers:
            t.start(cfg, common, metrics_path)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        for t in self.trackers:
            t.log_epoch(record)

    def finish(self, run_dir: Path, report: Mapping[str, Any], best_epoch: int, step: int) -> None:
        for t in self.trackers:
            t.finish(run_dir, report, best_epoch, step)

    def close(self, status: str = "FINISHED") -> None:
        for t in self.trackers:
            t.close(status)


def open_trackers(tracking: Optional[TrackingCfg], run_dir: Path, epochs_done: Optional[int]) -> Tracker:
    """Start this run's trackers (call on rank 0 only, once the run folder exists). ``epochs_done``: None for a
    new run, else the epochs the resumed checkpoint holds. A new run first forgets an overwritten run's record.
    Raises :class:`TrackingError` when a tracker cannot start, and :class:`MissingExtraError` when not installed.
    """
    run_dir = Path(run_dir)
    if epochs_done is None:
        (run_dir / RECORD_NAME).unlink(missing_ok=True)
    if tracking is None or not tracking.trackers:
        return Tracker()
    tracking.require()
    opened: List[Tracker] = []
    try:
        if "mlflow" in tracking.trackers:
            opened.append(MlflowTracker(run_dir, tracking, resuming=epochs_done is not None))
        if "tensorboard" in tracking.trackers:
            opened.append(TensorBoardTracker(run_dir, epochs_done))
    except BaseException:
        for t in opened:  # the MLflow run was created: it did not start after all
            t.close("FAILED")
        raise
    return opened[0] if len(opened) == 1 else Trackers(opened)


def _prepare_store(uri: str) -> Tuple[str, Optional[str]]:
    """For a local SQLite store: create its folder (or say why not); returns the URI with an absolute path (so a
    resume from another folder finds it) and the artefact folder beside it. Other URIs are left to MLflow (and
    the server's own artefact location)."""
    if not uri.startswith("sqlite:"):
        return uri, None
    if not uri.startswith("sqlite:///") or uri.rstrip("/") == "sqlite:":
        raise TrackingError(f"--track-uri {uri}: a SQLite store is sqlite:///relative/path.db or "
                            "sqlite:////absolute/path.db")
    path, sep, query = uri[len("sqlite:///"):].partition("?")  # sqlite:///x.db?timeout=30: SQLAlchemy options
    db = Path(path)
    if path in ("", ":memory:"):
        raise TrackingError(f"--track-uri {uri}: an in-memory store would lose the run; give a file")
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrackingError(f"--track-uri {uri}: cannot create the folder {db.parent}: {e.strerror or e}") from None
    db = db.resolve()
    return "sqlite:///" + str(db) + sep + query, (db.parent / ARTIFACTS_NAME).as_uri()


def _remove_events(log_dir: Path) -> None:
    for path in log_dir.glob("events.out.tfevents.*"):
        path.unlink(missing_ok=True)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"


# ---- the exported model in the registry ------------------------------------------------------------------

def _sha256(path: Path) -> str:
    from wildlife_vision.data.manifest import file_sha256  # the one file hash

    return file_sha256(Path(path))


def model_version_tags(meta: Any, sha256: str, path: Path) -> Dict[str, str]:
    """The model-version tags of an exported model: what its metadata says about it, and its file's hash."""
    training = dict(meta.training)
    macro = dict(meta.metrics).get("macro")
    macro = macro if isinstance(macro, Mapping) else {}
    tags = {"wildlife_vision.file": path.name, "wildlife_vision.sha256": sha256,
            "wildlife_vision.name": meta.name, "wildlife_vision.model_version": meta.model_version,
            "wildlife_vision.package_version": meta.package_version, "wildlife_vision.backbone": meta.backbone,
            "wildlife_vision.labels": ",".join(meta.labels),
            "wildlife_vision.thresholds": json.dumps({k: float(v) for k, v in meta.thresholds.items()}),
            "wildlife_vision.review_bands": json.dumps({k: [float(a), float(b)] for k, (a, b) in
                                                        meta.review_bands.items()}),
            "wildlife_vision.input_size": "x".join(str(s) for s in meta.preprocess.input_size),
            "wildlife_vision.schema_version": str(meta.schema_version), "wildlife_vision.created": meta.created}
    for key in ("config_sha256", "manifest_sha256"):
        if training.get(key):
            tags[f"wildlife_vision.{key}"] = str(training[key])
    if "quantization" in training:
        tags["wildlife_vision.quantization"] = json.dumps(training["quantization"])[:5000]
    if _is_number(macro.get("ap")):
        tags["wildlife_vision.val_macro_ap"] = f"{macro['ap']:.4f}"
    return {k: v[:5000] for k, v in tags.items() if v}


def log_exported_model(run_dir: Path, onnx_path: Path, name: Optional[str] = None,
                       strict: bool = False) -> Optional[Dict[str, Any]]:
    """Log an exported ONNX file with the MLflow run recorded in ``run_dir`` and register it as a new version
    of the registered model ``name`` (default: the model's own metadata name, ``...-int8`` for the INT8 twin).

    The file goes unchanged (same sha256) to the run's artefacts ``models/<stem>/``, with its ``.export.json``
    record when one is beside it; the version's tags carry the metadata (labels, thresholds, review bands,
    model and package version, input size, config and manifest hashes, sha256) and its description says what
    it is. The same file registered twice is not registered again. Returns ``{"name", "version", "source",
    "sha256", "run_id"}``, or None when the run was not tracked with MLflow. A failure is a warning and None
    (the export itself went well) unless ``strict``.
    """
    run_dir, onnx_path = Path(run_dir), Path(onnx_path)
    recorded = read_record(run_dir).get("mlflow")
    if not recorded or not recorded.get("run_id"):
        return None
    try:
        require_extra("track", "mlflow")
        return _register(run_dir, onnx_path, recorded, name)
    except Exception as e:  # noqa: BLE001 - the model file is written and checked: registering is extra
        if strict:
            raise
        if isinstance(e, MissingExtraError):
            log.warning("the run is tracked with MLflow, but mlflow is not installed (pip install "
                        "'wildlife-vision[track]'): %s is not registered", onnx_path)
        else:
            log.warning("could not register %s with MLflow run %s (%s: %s)", onnx_path, recorded["run_id"],
                        type(e).__name__, _first_line(e))
        return None


def _register(run_dir: Path, onnx_path: Path, recorded: Dict[str, Any], name: Optional[str]) -> Dict[str, Any]:
    from mlflow.tracking import MlflowClient

    from wildlife_vision.metadata import read_model_metadata

    meta = read_model_metadata(onnx_path)
    sha = _sha256(onnx_path)
    name = name or meta.name
    for done in recorded.get("registered", []):
        if done.get("sha256") == sha and done.get("name") == name:
            log.info("%s is already version %s of the registered model %s", onnx_path, done["version"], name)
            return done
    uri, run_id = recorded["tracking_uri"], recorded["run_id"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    artefact_dir = f"models/{onnx_path.stem}"
    client.log_artifact(run_id, str(onnx_path), artefact_dir)
    export_record = onnx_path.with_name(onnx_path.stem + ".export.json")
    if export_record.is_file():
        client.log_artifact(run_id, str(export_record), artefact_dir)
    try:
        client.get_registered_model(name)
    except Exception:  # noqa: BLE001 - not there yet
        client.create_registered_model(name, description="wildlife-vision multi-label classifier (ONNX with its "
                                       "labels, thresholds and preprocessing in its metadata; load it with "
                                       "wildlife_vision.load_model)")
    description = (f"{meta.name} {meta.model_version}: labels {', '.join(meta.labels)}; backbone {meta.backbone} at "
                   f"{'x'.join(str(s) for s in meta.preprocess.input_size)} px; ONNX file {onnx_path.name} (sha256 "
                   f"{sha}), exported from {run_dir.resolve()} by wildlife-vision {meta.package_version}")
    source = f"runs:/{run_id}/{artefact_dir}"
    version = client.create_model_version(name, source=source, run_id=run_id,
                                          tags=model_version_tags(meta, sha, onnx_path), description=description)
    client.set_tag(run_id, f"wildlife_vision.registered.{onnx_path.stem}", f"{name}/{version.version}")
    entry = {"name": name, "version": str(version.version), "source": source, "sha256": sha, "run_id": run_id,
             "file": str(onnx_path.resolve())}
    record = read_record(run_dir)
    record["mlflow"]["registered"] = [*record["mlflow"].get("registered", []), entry]
    atomic_write_text(run_dir / RECORD_NAME, json.dumps(record, indent=2) + "\n")
    log.info("registered %s as version %s of %s in %s", onnx_path, version.version, name, uri)
    return entry
