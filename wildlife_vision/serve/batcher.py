"""Dynamic micro-batching: images decoded for concurrent requests are scored together in one inference call.

One thread owns the model's session. It takes the first waiting image, then keeps collecting until the batch
has ``max_batch`` images or ``max_wait`` seconds have passed, whichever comes first (as LitServe's loop does);
it stops waiting early when no other admitted image is on its way (``pending``), so a lone client pays no
batching delay. Images whose caller already gave up are dropped before inference. The batch goes
through the model's own scoring loop (``Model.score_prepared``: ``run_batch``, the result rows, one input at a time
again if the whole batch fails), so the service scores exactly as ``predict`` does, and
the number of results is checked against the number of inputs so no caller can get another's answer.

The queue itself is not bounded here: the service admits at most ``--max-queue`` images before it reads their
bodies (:class:`wildlife_vision.serve.app.Admission`), so at most that many can be waiting.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

import numpy as np

log = logging.getLogger(__name__)


class BatcherClosed(RuntimeError):
    """The batcher is draining or stopped: it takes no new images."""


@dataclass
class _Item:
    name: str
    row: np.ndarray
    prepared: Any  # what the model's decoding said about this input (``Model.prepare``), handed back to score_prepared
    future: Future
    queued_at: float


_STOP = object()


class MicroBatcher:
    """Scores preprocessed rows (3, H, W) from many callers in micro-batches on one thread.

    ``model`` is a :class:`wildlife_vision.Model`; rows come from its own decoding and preprocessing
    (``model.prepare``, the step of ``predict``'s loop), with what that step returned. ``pending()``
    (optional) says how many images the service has admitted and not yet answered: while more are admitted
    than collected, some are still being read or decoded, and worth waiting ``max_wait`` for.
    ``on_batch(size, seconds)`` is called after every inference call (metrics).
    """

    def __init__(self, model: Any, max_batch: int = 8, max_wait: float = 0.005,
                 pending: Optional[Callable[[], int]] = None,
                 on_batch: Optional[Callable[[int, float], None]] = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait < 0:
            raise ValueError(f"max_wait must be 0 or more seconds, got {max_wait}")
        self.model = model
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait)
        self.pending = pending
        self.on_batch = on_batch
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._buffer = model._empty_batch(self.max_batch)  # the one preallocated batch, reused for every call
        self._lock = threading.Lock()
        self._closed = False
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wildlife-vision-batcher", daemon=True)

    # ---- the callers' side (event loop) ----------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    @property
    def ready(self) -> bool:
        """True once the warm-up inference has run (the session is initialised and takes requests)."""
        return self._ready.is_set()

    def wait_ready(self, timeout: Optional[float] = None) -> bool:
        return self._ready.wait(timeout)

    @property
    def depth(self) -> int:
        """Decoded images waiting for an inference call."""
        return self._queue.qsize()

    def submit(self, name: str, row: np.ndarray, prepared: Any) -> Future:
        """Queue one preprocessed row (``prepared``: what ``model.prepare`` returned for it, without an error);
        the future resolves to its :class:`~wildlife_vision.Prediction`."""
        with self._lock:
            if self._closed:
                raise BatcherClosed("the service is shutting down")
            future: Future = Future()
            self._queue.put(_Item(name, row, prepared, future, time.monotonic()))
        return future

    def close(self, timeout: Optional[float] = None) -> None:
        """Stop taking images, score every image already queued, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ---- the batcher thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self.model.run_batch(np.zeros_like(self._buffer[:1]))  # warm-up: onnxruntime's first call allocates
        except Exception:  # noqa: BLE001 - the requests will report inference errors themselves
            log.exception("the warm-up inference failed")
        self._ready.set()
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            items = [first]
            deadline = time.monotonic() + self.max_wait
            while len(items) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    incoming = 1 if self.pending is None else self.pending() - len(items) - self._queue.qsize()
                    left = deadline - time.monotonic()
                    if incoming <= 0 or left <= 0:
                        break
                    try:
                        nxt = self._queue.get(timeout=min(left, 0.001))
                    except queue.Empty:
                        continue
                if nxt is _STOP:
                    stopping = True  # score what was collected, then stop (nothing can be queued after _STOP)
                    break
                items.append(nxt)
            self._score([it for it in items if it.future.set_running_or_notify_cancel()])

    def _score(self, items: List[_Item]) -> None:
        if not items:
            return
        n = len(items)
        batch = self._buffer[:n]
        for i, it in enumerate(items):
            batch[i] = it.row
        start = time.perf_counter()
        try:
            preds = self.model.score_prepared([it.name for it in items], batch, [it.prepared for it in items])
            if len(preds) != n:
                raise RuntimeError(f"the model returned {len(preds)} results for {n} inputs")
        except Exception as e:  # noqa: BLE001 - a bug must answer the callers, never hang them
            log.exception("scoring a micro-batch of %d failed", n)
            for it in items:
                it.future.set_exception(e)
            return
        finally:
            if self.on_batch is not None:
                try:
                    self.on_batch(n, time.perf_counter() - start)
                except Exception:  # noqa: BLE001
                    log.exception("the on_batch callback failed")
        for it, pred in zip(items, preds):
            if pred.input != it.name:  # never hand one caller another's answer
                it.future.set_exception(RuntimeError("results came back out of order"))
            else:
                it.future.set_result(pred)


__all__ = ["MicroBatcher", "BatcherClosed"]
