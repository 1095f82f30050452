"""The ASGI application: FastAPI routes around one loaded :class:`wildlife_vision.Model` (docs/serving.md).

A request's image is decoded and preprocessed off the event loop, in a small thread pool, by the model's own
decoding step (``Model.prepare``, the step ``predict``'s loop runs); the preprocessed row then waits in the
:class:`~wildlife_vision.serve.batcher.MicroBatcher`, which scores the rows of concurrent requests together
through the model's one scoring loop. Answers are the records ``predict`` writes
(:func:`wildlife_vision.records.prediction_record`). The service never fetches URLs: it scores the bytes it is
sent, nothing else.

Status codes: 200 scored (and every multipart answer: each file has its own record, errors in place); 400 an
empty body or a malformed request; 413 a body over ``--max-body-mb`` or an image over the decompression-bomb
pixel limit; 415 not an image / an unsupported format / a Content-Type that is not ``image/*``,
``application/octet-stream`` or ``multipart/form-data``; 422 a corrupt or truncated image; 429 the queue is
full; 503 starting or shutting down (429 and 503 carry ``Retry-After``); 500 inference failed; 499 (in the
metrics only) the client left before its answer, and its image was taken out of the queue. Every refusal has
a JSON body with ``error`` and ``error_kind``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from fastapi import FastAPI, Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from .._version import __version__
from ..model import Prediction
from ..records import RECORD_SCHEMA, prediction_record
from .batcher import BatcherClosed, MicroBatcher
from .limits import RETRY_AFTER_S, Admission, BodyLimit, BodyTooLarge, error_body
from .metrics import CONTENT_TYPE, ServiceMetrics

log = logging.getLogger(__name__)

#: HTTP status for a single image that could not be scored, by its error kind (wildlife_vision.errors)
STATUS_FOR_KIND = {
    "empty": 400, "bad_array": 400, "unsupported_type": 400, "not_found": 400, "unreadable": 400,
    "too_large": 413,
    "not_an_image": 415, "unsupported_format": 415,
    "corrupt": 422, "truncated": 422,
    "inference_failed": 500, "internal_error": 500,
}

#: error kinds of whole requests, beside the per-image kinds of wildlife_vision.errors.ERROR_KINDS
REQUEST_ERROR_KINDS = ("bad_request", "unsupported_media_type", "too_many_files", "overloaded", "not_ready",
                       "shutting_down", "client_gone", "too_large", "empty")

#: the routes, as they appear in the metrics' ``route`` label (anything else is ``other``)
ROUTES = ("/v1/predict", "/v1/model", "/healthz", "/readyz", "/metrics", "/openapi.json")

_BINARY = {"type": "string", "format": "binary"}
_PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "image/*": {"schema": _BINARY},
    "application/octet-stream": {"schema": _BINARY},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "files": {"type": "array", "items": _BINARY}}}},
}}}


@dataclass(frozen=True)
class ServeSettings:
    """The service's limits and tuning (the `wildlife-vision serve` flags)."""

    max_queue: int = 64            #: images admitted and not yet answered; more are refused with 429
    max_batch: int = 8             #: images per inference call (the CLI: 8 on a CPU, 32 on a GPU)
    max_body_bytes: int = 20 * 1024 * 1024  #: largest request body (20 MiB)
    max_wait_ms: float = 5.0       #: how long a micro-batch waits for more images already on their way
    decode_threads: int = 1        #: threads decoding and preprocessing request bodies
    max_files: int = 32            #: files in one multipart request

    def __post_init__(self) -> None:
        for name in ("max_queue", "max_batch", "max_body_bytes", "decode_threads", "max_files"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer of at least 1, got {value!r}")
        if not self.max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be 0 or more, got {self.max_wait_ms!r}")


class Service:
    """The state behind the routes: model, batcher, decode threads, admission and metrics."""

    def __init__(self, model: Any, settings: ServeSettings):
        self.model = model
        self.settings = settings
        self.sha256, self.size_bytes = _file_digest(model.path)
        self.admission = Admission(settings.max_queue)
        self.metrics = ServiceMetrics(queue_depth=lambda: self.admission.count,
                                      batch_queue_depth=lambda: self.batcher.depth, ready=lambda: int(self.ready))
        self.metrics.model_info.set(1, name=model.name, version=model.version, sha256=self.sha256)
        self.batcher = MicroBatcher(model, settings.max_batch, settings.max_wait_ms / 1000.0,
                                    pending=lambda: self.admission.count, on_batch=self._on_batch)
        self.pool: Optional[ThreadPoolExecutor] = None
        self.draining = False

    # ---- life cycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=self.settings.decode_threads,
                                       thread_name_prefix="wildlife-vision-decode")
        self.batcher.start()

    def begin_drain(self) -> None:
        """Fail readiness and refuse new predictions (503); requests already admitted are still answered."""
        self.draining = True

    def stop(self, timeout: Optional[float] = None) -> None:
        """Finish every queued image, then stop the batcher and the decode threads."""
        self.draining = True
        self.batcher.close(timeout)
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    @property
    def ready(self) -> bool:
        return self.pool is not None and self.batcher.ready and not self.draining

    # ---- scoring ------------------------------------------------------------------------------------
    async def score(self, name: str, body: bytes, gone: Optional["asyncio.Future[Any]"] = None) -> Prediction:
        """One image's Prediction: decoded in the pool, scored in the next micro-batch. ``gone`` (optional)
        completes when the client disconnects: the image is then taken out of the queue (:class:`ClientGone`)."""
        row = self.model._empty_batch(1)[0]
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(self.pool, self.model.prepare, body, row)
        err = prepared[0]
        if err is not None:
            pred = Prediction(input=name, error=err[0], error_kind=err[1])
        else:
            result = asyncio.wrap_future(self.batcher.submit(name, row, prepared))
            if gone is not None:
                await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not result.done():
                    result.cancel()  # still queued: the batcher drops it; already running: the answer is dropped
                    raise ClientGone()
            pred = await result
        self.metrics.images.inc(outcome="scored" if pred.ok else "error")
        if not pred.ok:
            self.metrics.errors.inc(kind=pred.error_kind or "internal_error")
        return pred

    def record(self, pred: Prediction) -> Dict[str, Any]:
        return prediction_record(pred, self.model.name, self.model.version, profile=self.model.profile)

    def refuse(self, status: int, kind: str, message: str) -> JSONResponse:
        self.metrics.errors.inc(kind=kind)
        headers = {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else None
        if kind == "shutting_down":
            headers = {**(headers or {}), "Connection": "close"}
        return JSONResponse(error_body(kind, message), status_code=status, headers=headers)

    def _on_batch(self, size: int, seconds: float) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.inference.observe(seconds)

    def model_info(self) -> Dict[str, Any]:
        m, s = self.model, self.settings
        return {
            "name": m.name, "version": m.version, "labels": list(m.labels), "thresholds": m.thresholds,
            "review_bands": {lab: list(band) for lab, band in m.review_bands.items()},
            "sha256": self.sha256, "file": os.path.basename(str(m.path)), "size_bytes": self.size_bytes,
            "provider": m.provider, "profile": m.profile_choice.to_dict(),
            "input_size": list(m.preprocess_config.input_size),
            "preprocess": m.preprocess_config.to_dict(), "metadata_schema": m.metadata.schema_version,
            "record_schema": RECORD_SCHEMA, "service_version": __version__,
            "limits": {"max_batch": s.max_batch, "max_queue": s.max_queue, "max_body_bytes": s.max_body_bytes,
                       "max_files": self.max_files, "max_wait_ms": s.max_wait_ms},
        }

    @property
    def max_files(self) -> int:
        return min(self.settings.max_files, self.settings.max_queue)

    # ---- POST /v1/predict ---------------------------------------------------------------------------
    async def predict(self, request: Request) -> Response:
        if not self.ready:
            if self.draining:
                return self.refuse(503, "shutting_down", "the service is shutting down; send to another instance")
            return self.refuse(503, "not_ready", "the model is still warming up; retry shortly")
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        multipart = media == "multipart/form-data"
        if media and not (multipart or media.startswith("image/") or media == "application/octet-stream"):
            return self.refuse(415, "unsupported_media_type",
                               f"Content-Type {media!r} is not accepted: send the photo's bytes as image/* or "
                               "application/octet-stream, or several as multipart/form-data (URLs are never fetched)")
        if not self.admission.try_acquire(1):
            return self.refuse(429, "overloaded", f"the queue is full ({self.admission.limit} images admitted); "
                                                  f"retry after {RETRY_AFTER_S} s")
        held = [1]
        try:
            if multipart:
                return await self._predict_form(request, held)
            body = await request.body()
            gone = asyncio.ensure_future(_disconnected(request))
            try:
                pred = await self.score(f"<bytes {len(body)}>", body, gone)
            finally:
                gone.cancel()
            status = 200 if pred.ok else STATUS_FOR_KIND.get(pred.error_kind or "", 500)
            return JSONResponse(self.record(pred), status_code=status)
        except BatcherClosed:
            return self.refuse(503, "shutting_down", "the service is shutting down; send to another instance")
        except ClientGone:  # nobody to answer; counted as nginx does, 499
            return self.refuse(499, "client_gone", "the client closed the connection before its answer")
        finally:
            self.admission.release(held[0])

    async def _predict_form(self, request: Request, held: List[int]) -> Response:
        limit = self.max_files
        try:
            form = await request.form(max_files=limit + 1, max_fields=limit + 16)
        except HTTPException as e:  # python-multipart's parse errors, through Starlette
            return self.refuse(400, "bad_request", f"malformed multipart form: {e.detail}")
        try:
            files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
            if not files:
                return self.refuse(400, "empty", "the multipart form has no files; send each photo as a file part")
            if len(files) > limit:
                return self.refuse(413, "too_many_files", f"at most {limit} files per request; split the request")
            if len(files) > 1:
                if not self.admission.try_acquire(len(files) - 1):
                    return self.refuse(429, "overloaded", f"the queue cannot take {len(files)} more images now "
                                                          f"(limit {self.admission.limit}); retry after "
                                                          f"{RETRY_AFTER_S} s, or send fewer per request")
                held[0] += len(files) - 1
            bodies = [await f.read() for f in files]
        finally:
            await form.close()
        names = [f.filename or f"<bytes {len(b)} #{i}>" for i, (f, b) in enumerate(zip(files, bodies))]
        preds = await asyncio.gather(*(self.score(n, b) for n, b in zip(names, bodies)))
        return JSONResponse([self.record(p) for p in preds])


class ClientGone(Exception):
    """The client disconnected while its image waited for inference."""


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects. Only for after the body is read whole: the server's next message
    is then ``http.disconnect``, sent when the connection drops (or when the answer is complete). A server
    that cannot tell (an error here) is taken to keep the client: this then waits until it is cancelled."""
    try:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    except Exception:  # noqa: BLE001 - never drop a request because the watch itself failed
        await asyncio.Event().wait()


def _file_digest(path: Any) -> tuple:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


class _Instrument:
    """ASGI middleware: counts every answer by route and status, and times it."""

    def __init__(self, app: Any, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in ROUTES else "other"
        start = time.perf_counter()
        state = {"status": 500, "done": False}

        def done() -> None:
            if not state["done"]:
                state["done"] = True
                self.metrics.requests.inc(route=route, status=str(state["status"]))
                self.metrics.latency.observe(time.perf_counter() - start, route=route)

        async def timed_send(message: Dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                done()

        try:
            await self.app(scope, receive, timed_send)
        finally:
            done()


def create_app(model: Any, settings: Optional[ServeSettings] = None, drain_timeout: float = 30.0) -> FastAPI:
    """The FastAPI app serving ``model``; its :class:`Service` is ``app.state.service``.

    The lifespan starts the batcher (with a warm-up inference; ``/readyz`` answers 503 until it is done) and,
    at shutdown, scores every image already queued (waiting at most ``drain_timeout`` seconds) before stopping.
    """
    service = Service(model, settings or ServeSettings())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, service.stop, drain_timeout)

    app = FastAPI(title="wildlife-vision", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json",
                  description="Scores marketplace listing photos for illegal wildlife products. Photos are sent as "
                              "bytes; the service never fetches URLs. See docs/serving.md.")
    app.state.service = service

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> Response:
        return service.refuse(413, "too_large", str(exc))

    @app.post("/v1/predict", openapi_extra=_PREDICT_BODY, summary="Score one photo (raw body) or several (multipart)")
    async def predict(request: Request) -> Response:
        """One photo as the raw body (``image/*`` or ``application/octet-stream``) answers one prediction record
        (``wildlife-vision/prediction/v1``, as `wildlife-vision predict` writes); a multipart form answers a
        list of records, one per file part, in order, with a bad file's error in its place."""
        return await service.predict(request)

    @app.get("/v1/model", summary="The loaded model: labels, thresholds, review bands, version, sha256")
    async def model_info() -> Dict[str, Any]:
        return service.model_info()

    @app.get("/healthz", summary="Liveness: 200 while the process runs; says whether it is ready")
    async def healthz() -> Dict[str, Any]:
        return {"status": "ok", "ready": service.ready, "draining": service.draining}

    @app.get("/readyz", summary="Readiness: 200 when predictions are accepted, 503 while warming up or draining")
    async def readyz() -> Response:
        body = {"ready": service.ready, "draining": service.draining, "model": model.name,
                "version": model.version}
        return JSONResponse(body, status_code=200 if service.ready else 503)

    @app.get("/metrics", summary="Prometheus text exposition format")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    app.add_middleware(BodyLimit, max_bytes=service.settings.max_body_bytes,
                       on_refused=lambda kind: service.metrics.errors.inc(kind=kind))
    app.add_middleware(_Instrument, metrics=service.metrics)
    return app


__all__ = ["create_app", "Service", "ServeSettings", "STATUS_FOR_KIND", "REQUEST_ERROR_KINDS", "ROUTES"]
