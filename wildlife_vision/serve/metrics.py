"""Prometheus metrics for the service, written in the text exposition format (version 0.0.4) by hand.

prometheus_client is not a dependency: the format is a few lines per family (``# HELP``, ``# TYPE``, then one
``name{labels} value`` line per sample; histograms add cumulative ``_bucket{le=...}`` lines, ``_sum`` and
``_count``). Every family here is process-local: run one model per process and let the scraper add an
``instance`` label (docs/serving.md). Updates are thread-safe (the batcher thread records batch sizes).
"""

from __future__ import annotations

import math
import threading
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

#: the Content-Type of :meth:`Registry.render`'s text
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LabelValues = Tuple[str, ...]


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(v: float) -> str:
    v = float(v)
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


def _labels(names: Sequence[str], values: Sequence[str], extra: Optional[Tuple[str, str]] = None) -> str:
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra is not None:
        pairs.append(f'{extra[0]}="{_escape(extra[1])}"')
    return "{" + ",".join(pairs) + "}" if pairs else ""


class _Family:
    kind = ""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()):
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: Dict[str, str]) -> LabelValues:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes the labels {self.labelnames}, got {sorted(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> List[str]:
        return [f"# HELP {self.name} {_escape(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def lines(self) -> List[str]:  # pragma: no cover - overridden
        raise NotImplementedError


class Counter(_Family):
    """A monotonically increasing count per label set (the sample is named ``<name>_total``)."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()):
        super().__init__(name, help_text, labelnames)
        self._values: Dict[LabelValues, float] = {}
        if not self.labelnames:
            self._values[()] = 0.0

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def lines(self) -> List[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}_total{_labels(self.labelnames, k)} {_number(v)}" for k, v in items]


class Gauge(_Family):
    """A value that goes up and down; ``function`` (optional) is read at each scrape instead of a stored value."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = (), function=None):
        super().__init__(name, help_text, labelnames)
        self._values: Dict[LabelValues, float] = {}
        self._function = function

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def lines(self) -> List[str]:
        if self._function is not None:
            return [f"{self.name} {_number(float(self._function()))}"]
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.labelnames, k)} {_number(v)}" for k, v in items]


class Histogram(_Family):
    """Observations counted into cumulative buckets (upper bounds ``buckets``, plus ``+Inf``), with sum and count."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Iterable[float], labelnames: Sequence[str] = ()):
        super().__init__(name, help_text, labelnames)
        self.buckets = tuple(sorted(float(b) for b in buckets))
        if not self.buckets or any(math.isinf(b) for b in self.buckets):
            raise ValueError("histogram buckets must be finite upper bounds (+Inf is added)")
        self._values: Dict[LabelValues, List[float]] = {}  # per label set: bucket counts..., sum, count

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            row = self._values.setdefault(key, [0.0] * (len(self.buckets) + 2))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    row[i] += 1
                    break
            row[-2] += value
            row[-1] += 1

    def count(self, **labels: str) -> float:
        with self._lock:
            row = self._values.get(self._key(labels))
            return row[-1] if row else 0.0

    def lines(self) -> List[str]:
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._values.items())
        out: List[str] = []
        for key, row in items:
            cumulative = 0.0
            for bound, n in zip(self.buckets, row):
                cumulative += n
                out.append(f"{self.name}_bucket{_labels(self.labelnames, key, ('le', _number(bound)))} "
                           f"{_number(cumulative)}")
            out.append(f"{self.name}_bucket{_labels(self.labelnames, key, ('le', '+Inf'))} {_number(row[-1])}")
            out.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_number(row[-2])}")
            out.append(f"{self.name}_count{_labels(self.labelnames, key)} {_number(row[-1])}")
        return out


class Registry:
    """The families one process exposes, rendered in registration order."""

    def __init__(self) -> None:
        self._families: List[_Family] = []

    def add(self, family: _Family) -> _Family:
        if any(f.name == family.name for f in self._families):
            raise ValueError(f"metric {family.name} is already registered")
        self._families.append(family)
        return family

    def render(self) -> str:
        lines: List[str] = []
        for family in self._families:
            lines += family.header() + family.lines()
        return "\n".join(lines) + "\n"


#: request latency buckets, seconds (a CPU model answers in tens to hundreds of milliseconds)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: micro-batch size buckets, images
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServiceMetrics:
    """Every metric the service exposes (listed in docs/serving.md), in one registry."""

    def __init__(self, queue_depth=None, batch_queue_depth=None, ready=None) -> None:
        self.registry = r = Registry()
        p = "wildlife_vision"
        self.requests = r.add(Counter(f"{p}_http_requests", "HTTP requests answered, by route and status code",
                                      ("route", "status")))
        self.latency = r.add(Histogram(f"{p}_http_request_duration_seconds",
                                       "time from a request's arrival to the end of its answer, by route",
                                       LATENCY_BUCKETS, ("route",)))
        self.images = r.add(Counter(f"{p}_images", "images answered, by outcome (scored or error)", ("outcome",)))
        self.errors = r.add(Counter(f"{p}_errors", "errors answered, by error kind (per image and per request)",
                                    ("kind",)))
        self.batch_size = r.add(Histogram(f"{p}_batch_size", "images per inference call (micro-batch)",
                                          BATCH_BUCKETS))
        self.inference = r.add(Histogram(f"{p}_inference_duration_seconds", "time of one inference call",
                                         LATENCY_BUCKETS))
        self.queue_depth = r.add(Gauge(f"{p}_queue_depth", "images admitted and not yet answered (at most "
                                       "--max-queue)", function=queue_depth or (lambda: 0)))
        self.batch_queue = r.add(Gauge(f"{p}_batch_queue_depth", "decoded images waiting for an inference call",
                                       function=batch_queue_depth or (lambda: 0)))
        self.ready = r.add(Gauge(f"{p}_ready", "1 when the service accepts predictions, 0 while starting or "
                                 "draining", function=ready or (lambda: 0)))
        self.model_info = r.add(Gauge(f"{p}_model_info", "the loaded model (always 1)",
                                      ("name", "version", "sha256")))

    def render(self) -> str:
        return self.registry.render()


__all__ = ["CONTENT_TYPE", "Counter", "Gauge", "Histogram", "Registry", "ServiceMetrics", "LATENCY_BUCKETS",
           "BATCH_BUCKETS"]
