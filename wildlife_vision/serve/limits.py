"""What bounds the service: the request body size, and how many images it holds at once.

:class:`BodyLimit` is pure ASGI middleware (like LitServe's ``MaxSizeMiddleware``): a ``Content-Length`` over
the limit is answered 413 before the body is read at all, and a chunked body (no length) is counted as it
streams in, so reading stops with 413 as soon as it passes the limit. :class:`Admission` counts the images
admitted and not yet answered; a request that would pass ``--max-queue`` is refused at once (429) instead of
waiting, so overload turns into fast refusals, never into timeouts or unbounded memory.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

#: the ``schema`` of every request-level error body (per-image errors are prediction records instead)
ERROR_SCHEMA = "wildlife-vision/serve-error/v1"

#: seconds a refused client is told to wait (``Retry-After``) before trying again
RETRY_AFTER_S = 1


class BodyTooLarge(Exception):
    """A request body passed the byte limit while it was being read."""

    def __init__(self, limit: int):
        super().__init__(f"request body over the {limit:,}-byte limit (--max-body-mb); send one photo of at most "
                         f"that size, or several requests")
        self.limit = limit


def error_body(kind: str, message: str) -> Dict[str, Any]:
    """The JSON body of a request-level refusal: what went wrong (``error``) and its stable ``error_kind``."""
    return {"schema": ERROR_SCHEMA, "error": message, "error_kind": kind}


def refusal_headers(status: int) -> List[Tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json")]
    if status in (429, 503):
        headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
    return headers


Scope = Dict[str, Any]
Receive = Callable[[], Awaitable[Dict[str, Any]]]
Send = Callable[[Dict[str, Any]], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: 413 for a declared or streamed request body over ``max_bytes``."""

    def __init__(self, app: Any, max_bytes: int, on_refused: Optional[Callable[[str], None]] = None):
        self.app = app
        self.max_bytes = int(max_bytes)
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length == -1 or (length is not None and length > self.max_bytes):
            # answered without reading the body; the server discards what the client still sends
            if length == -1:
                status, kind, msg = 400, "bad_request", "the Content-Length header is not a number"
            else:
                status, kind, msg = 413, "too_large", (f"request body of {length:,} bytes is over the "
                                                       f"{self.max_bytes:,}-byte limit (--max-body-mb)")
            if self.on_refused is not None:
                self.on_refused(kind)
            body = json.dumps(error_body(kind, msg), separators=(",", ":")).encode()
            await send({"type": "http.response.start", "status": status, "headers": refusal_headers(status)})
            await send({"type": "http.response.body", "body": body})
            return
        seen = 0
        limit = self.max_bytes

        async def counted() -> Dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> Optional[int]:
    """The declared body length; None when there is none (chunked), -1 when it is not a number."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                n = int(value)
            except ValueError:
                return -1
            return n if n >= 0 else -1
    return None


class Admission:
    """At most ``limit`` images admitted and not yet answered; :meth:`try_acquire` never waits."""

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"the queue limit must be at least 1, got {limit}")
        self.limit = int(limit)
        self._count = 0
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return self._count

    def try_acquire(self, n: int = 1) -> bool:
        with self._lock:
            if self._count + n > self.limit:
                return False
            self._count += n
            return True

    def release(self, n: int = 1) -> None:
        with self._lock:
            self._count = max(0, self._count - n)


__all__ = ["BodyLimit", "BodyTooLarge", "Admission", "error_body", "refusal_headers", "ERROR_SCHEMA",
           "RETRY_AFTER_S"]
