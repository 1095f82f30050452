"""`predict --engine ray`: a job's blocks scored on Ray Data, one model per actor.

The inputs of the blocks left to score become a Ray dataset of (position, input key) rows — keys, not bytes:
each actor reads its photos itself (local paths through the model's own decoder, URIs through pyarrow's
filesystems, :mod:`wildlife_vision.batch.uris`), so a cluster reading object storage runs the same code.
``map_batches`` with the callable class :class:`BlockScorer` keeps one :class:`~wildlife_vision.model.Model`
per actor (loaded once in ``__init__`` from the model bytes the driver put in the object store, so the nodes
need no copy of the file), a fixed pool of actors, each with its CPUs (and onnxruntime / decoding threads to
match, so actors do not oversubscribe the cores) and GPUs. Actors return whole JSONL lines from the one
record encoder; the driver groups them by block (Ray does not keep order; rows are keyed by position, and a
row seen twice after a retried task counts once) and hands each block back as soon as it is complete, for
:func:`wildlife_vision.batch.job.write_part`. Needs the [ray] extra; see docs/batch.md.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from ..exitcodes import require_extra
from .job import Plan

#: the extra this engine needs
EXTRA = "ray"


def require_ray() -> None:
    """Raise MissingExtraError naming the [ray] extra unless ray, ray.data and pyarrow import."""
    require_extra(EXTRA, "ray", "ray.data", "pyarrow")


@dataclass
class RaySettings:
    """How the actors run. ``threads``/``workers`` default to the actor's CPUs (at least 1)."""

    address: Optional[str] = None          #: cluster address; None: $RAY_ADDRESS, else a new local instance
    actors: Optional[int] = None           #: None: the cluster's CPUs (or GPUs) divided by the actor's share
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    batch_size: int = 32
    threads: Optional[int] = None          #: onnxruntime intra-op threads per actor
    workers: Optional[int] = None          #: decoding threads per actor
    providers: Optional[List[str]] = None
    draft: Optional[bool] = None

    def actor_threads(self) -> int:
        return self.threads or max(1, int(self.cpus_per_actor))

    def actor_workers(self) -> int:
        return self.workers or max(1, int(self.cpus_per_actor))


class RaySession:
    """Connects to Ray for one command: reuses an initialised Ray, else ``ray.init`` (a local instance with
    this machine's CPUs, or ``address`` / $RAY_ADDRESS), quiet, without the dashboard; shuts down only what it
    started. ``seconds``: how long connecting took."""

    def __init__(self, address: Optional[str] = None):
        self.address = address
        self.started = False
        self.seconds = 0.0

    def __enter__(self) -> "RaySession":
        import ray

        start = time.monotonic()
        if not ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS") or "local"
            # ERROR: Ray's start-up notices are not the command's business; Ray Data's warnings stay on (below)
            kwargs: Dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR}
            if address == "local":
                kwargs["num_cpus"] = os.cpu_count() or 1
            ray.init(address=address, **kwargs)
            self.started = True
        self.seconds = time.monotonic() - start
        _quiet_ray_data()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.started:
            import ray

            ray.shutdown()

    def resources(self) -> Dict[str, float]:
        import ray

        return dict(ray.cluster_resources())


def _quiet_ray_data() -> None:
    """Ray Data logs its execution plan at INFO and draws its own bars; the command reports progress itself."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_auto_log_stats = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"


def default_actors(settings: RaySettings, resources: Dict[str, float]) -> int:
    """As many actors as the cluster's CPUs (or GPUs, with --ray-gpus-per-actor) hold, at least one."""
    if settings.gpus_per_actor > 0:
        return max(1, int(resources.get("GPU", 0) // settings.gpus_per_actor))
    return max(1, int(resources.get("CPU", 1) // settings.cpus_per_actor))


class BlockScorer:
    """The callable class for ``map_batches``: one model per actor, rows in, whole JSONL lines out.

    A batch is a pyarrow table with ``index`` (the input's position in the job) and ``input`` (its key,
    UTF-8 with surrogates passed through); the result has ``index``, ``line`` (one record, from
    :class:`~wildlife_vision.records.RecordEncoder`) and ``provider``. Inputs the driver already knows to be
    broken (``problems``: a folder that cannot be listed) get their error without being read.
    """

    def __init__(self, model_ref: List[Any], settings: RaySettings, problems: Dict[str, Tuple[str, str]]):
        import ray

        from ..model import load_model
        from ..records import RecordEncoder

        data = ray.get(model_ref[0])
        with tempfile.TemporaryDirectory(prefix="wildlife-vision-model-") as d:
            path = os.path.join(d, "model.onnx")
            with open(path, "wb") as f:
                f.write(data)
            self.model = load_model(path, providers=settings.providers, threads=settings.actor_threads(),
                                    batch_size=settings.batch_size, draft=settings.draft)
        self.encoder = RecordEncoder("jsonl", self.model.labels, self.model.name, self.model.version,
                                     profile=self.model.profile)
        self.workers = settings.actor_workers()
        self.problems = problems

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        index = batch.column("index").to_pylist()
        keys = [b.decode("utf-8", errors="surrogatepass") for b in batch.column("input").to_pylist()]
        with warnings.catch_warnings():
            # as in the local engine: Pillow's warnings about damaged files are in each row's error already
            warnings.filterwarnings("ignore", module=r"PIL(\..*)?$")
            lines = [self.encoder.encode(p) for p in self._predictions(keys)]
        return pa.table({"index": pa.array(index, pa.int64()), "line": pa.array(lines, pa.binary()),
                         "provider": pa.array([self.model.provider] * len(lines), pa.string())})

    def _predictions(self, keys: Sequence[str]) -> List[Any]:
        from ..errors import ImageDecodeError
        from ..model import Prediction
        from .uris import is_uri, read_uri

        out: List[Any] = [None] * len(keys)
        items, names, where = [], [], []
        for i, key in enumerate(keys):
            if key in self.problems:
                msg, kind = self.problems[key]
                out[i] = Prediction(input=key, error=msg, error_kind=kind)
                continue
            item: Any = key
            if is_uri(key):
                try:
                    item = read_uri(key)
                except ImageDecodeError as e:
                    out[i] = Prediction(input=key, error=str(e), error_kind=e.kind)
                    continue
            items.append(item)
            names.append(key)
            where.append(i)
        for i, pred in zip(where, self.model.predict_iter(items, workers=self.workers, names=names)):
            out[i] = pred
        return out


@dataclass
class RayRun:
    """One execution over a plan's blocks; :meth:`blocks` yields ``(block, lines)`` as blocks complete."""

    plan: Plan
    model_bytes: bytes
    settings: RaySettings
    problems: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    actors: int = 1
    providers: Set[str] = field(default_factory=set)   #: execution providers the actors reported

    def __post_init__(self) -> None:
        import pyarrow as pa

        job, todo = self.plan.job, self.plan.todo
        rows = sum(len(job.block(b)) for b in todo)
        # Ray blocks lie inside job blocks, small enough that every actor gets work even for a small job
        chunk = max(1, min(job.rows_per_part, max(self.settings.batch_size, -(-rows // (self.actors * 4)))))
        self._tables = []
        for b in todo:
            keys = job.block(b)
            first = b * job.rows_per_part
            for s in range(0, len(keys), chunk):
                part = keys[s:s + chunk]
                self._tables.append(pa.table({
                    "index": pa.array(range(first + s, first + s + len(part)), pa.int64()),
                    "input": pa.array([k.encode("utf-8", errors="surrogatepass") for k in part], pa.binary())}))
        self.actors = max(1, min(self.actors, len(self._tables)))  # an actor without a block would only idle

    def dataset(self) -> Any:
        import ray

        ds = ray.data.from_arrow(self._tables)
        # held for the whole run, so an actor that Ray restarts can still fetch the model
        self._model_ref = ray.put(self.model_bytes)
        return ds.map_batches(
            BlockScorer, fn_constructor_kwargs={"model_ref": [self._model_ref], "settings": self.settings,
                                                "problems": self.problems},
            batch_size=self.settings.batch_size, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=self.actors), num_cpus=self.settings.cpus_per_actor,
            num_gpus=self.settings.gpus_per_actor or None)

    def blocks(self, on_rows: Optional[Callable[[int], None]] = None) -> Iterator[Tuple[int, List[bytes]]]:
        """Run the dataset; yield each block's rows (whole lines, sorted by input) once all have arrived."""
        job = self.plan.job
        expected = {b: len(job.block(b)) for b in self.plan.todo}
        pending: Dict[int, Dict[int, bytes]] = {}
        if not expected:
            return
        for batch in self.dataset().iter_batches(batch_size=None, batch_format="pyarrow"):
            index = batch.column("index").to_pylist()
            lines = batch.column("line").to_pylist()
            self.providers.update(batch.column("provider").unique().to_pylist())
            new = 0
            for i, line in zip(index, lines):
                b = job.block_of(i)
                if b not in expected:  # a block already handed back: a retried task's duplicate
                    continue
                rows = pending.setdefault(b, {})
                new += i not in rows
                rows[i] = line
            if on_rows is not None and new:
                on_rows(new)
            for b in [b for b, rows in pending.items() if len(rows) == expected[b]]:
                rows = pending.pop(b)
                del expected[b]
                yield b, [rows[i] for i in sorted(rows)]
        if expected:
            missing = sum(n - len(pending.get(b, {})) for b, n in expected.items())
            raise RuntimeError(f"Ray finished without rows for {missing} inputs of {len(expected)} blocks; rerun "
                               "with --resume to score them")


__all__ = ["EXTRA", "require_ray", "RaySettings", "RaySession", "BlockScorer", "RayRun", "default_actors"]
