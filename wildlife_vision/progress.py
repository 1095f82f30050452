"""The one progress reporter: `predict`, the `data` commands (fingerprinting, pair search, embeddings) and the
trainer's scoring loop all report through :class:`Progress` (or :func:`track`, which wraps an iterable).

* stderr is a terminal and tqdm is installed: a tqdm bar.
* stderr is a terminal without tqdm: one line rewritten in place (``\\r``) twice a second.
* stderr is not a terminal (CI logs, ``2> log``): a plain line every :data:`LINE_INTERVAL` seconds, e.g.
  ``predict: 1200/3835 photos (31%), 61.2/s, ETA 43 s``, and a last line when the loop ends, so a long run
  is never silent and a log never fills with carriage returns.
* not enabled (``--no-progress``): nothing at all.

tqdm is optional (not a dependency of the runtime) and imported only when a bar is shown.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, Optional, TextIO, TypeVar

T = TypeVar("T")

#: seconds between plain progress lines when stderr is not a terminal
LINE_INTERVAL = 10.0
#: seconds between rewrites of the in-place line on a terminal without tqdm
TTY_INTERVAL = 0.5


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def _plural(unit: str) -> str:
    return unit + ("es" if unit.endswith(("s", "ch", "sh", "x")) else "s")


def format_seconds(s: float) -> str:
    """``43 s``, ``3 min 20 s``, ``1 h 05 min``."""
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        m, sec = divmod(int(round(s)), 60)
        return f"{m} min {sec:02d} s"
    h, m = divmod(int(round(s / 60)), 60)
    return f"{h} h {m:02d} min"


class Progress:
    """Progress of a loop over ``total`` items (``None``: unknown), shown as described in the module docstring.

    Call :meth:`update` with the number of items just finished and :meth:`close` at the end (or use it as a
    context manager, or :meth:`wrap` an iterable). ``leave``: keep the finished bar / print a last line even
    when the loop was short; with ``leave=False`` a plain log gets a last line only if it already showed one.
    """

    def __init__(self, total: Optional[int], desc: str, unit: str = "photo", enabled: bool = True,
                 leave: bool = True, interval: Optional[float] = None, stream: Optional[TextIO] = None):
        self.total = None if total is None else int(total)
        self.desc, self.unit, self.leave = desc, unit, leave
        self.enabled = bool(enabled)
        self.n = 0
        self.stream = stream if stream is not None else sys.stderr
        self._bar: Any = None
        self._inplace = False
        self._shown = False
        self._closed = False
        self._start = self._last = time.monotonic()
        tty = _isatty(self.stream)
        self.interval = float(interval) if interval is not None else (TTY_INTERVAL if tty else LINE_INTERVAL)
        if not self.enabled:
            return
        if tty:
            try:
                from tqdm import tqdm  # optional
            except ImportError:
                self._inplace = True
            else:
                self._bar = tqdm(total=self.total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True,
                                 leave=leave, smoothing=0.1, mininterval=0.5)

    # ---- reporting -----------------------------------------------------------------------------------
    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.enabled or self._closed:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        finished = self.total is not None and self.n >= self.total
        if now - self._last >= self.interval or (self._inplace and finished):
            self._last = now
            self._emit(self.line(now))

    def line(self, now: Optional[float] = None, final: bool = False) -> str:
        """The plain progress line, e.g. ``predict: 1200/3835 photos (31%), 61.2/s, ETA 43 s``."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self._start, 1e-9)
        rate = self.n / elapsed
        units = _plural(self.unit)
        if self.total is not None:
            pct = 100.0 * self.n / self.total if self.total else 100.0
            text = f"{self.n}/{self.total} {units} ({pct:.0f}%)"
        else:
            text = f"{self.n} {units}"
        if final:
            text += f" in {format_seconds(elapsed)}, {rate:.1f}/s"
        else:
            text += f", {rate:.1f}/s"
            if self.total is not None and 0 < self.n < self.total and rate > 0:
                text += f", ETA {format_seconds((self.total - self.n) / rate)}"
        return f"{self.desc}: {text}" if self.desc else text

    def _emit(self, text: str, final: bool = False) -> None:
        try:
            if self._inplace:
                self.stream.write(f"\r{text}   " + ("\n" if final else ""))
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed: progress is never worth failing a run for
            self.enabled = False
            return
        self._shown = True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        elif self._shown or (self.leave and self.n):
            self._emit(self.line(final=True), final=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def wrap(self, iterable: Iterable[T]) -> Iterator[T]:
        """Yield the items of ``iterable``, counting each one; closes the reporter at the end."""
        try:
            for item in iterable:
                yield item
                self.update(1)
        finally:
            self.close()


def track(iterable: Iterable[T], total: Optional[int] = None, desc: str = "", unit: str = "photo",
             enabled: bool = True, leave: bool = False) -> Iterable[T]:
    """``iterable`` with a :class:`Progress` reporter counting its items (``iterable`` itself when not enabled).

    ``total`` defaults to ``len(iterable)`` when it has one.
    """
    if not enabled:
        return iterable
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    return Progress(total, desc, unit=unit, enabled=True, leave=leave).wrap(iterable)


__all__ = ["Progress", "track", "format_seconds", "LINE_INTERVAL"]
