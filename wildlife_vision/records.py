"""Versioned prediction records: what `wildlife-vision predict` writes, one row per input (JSONL or CSV).

The format is documented in docs/predict.md. Every record says which schema it follows
(:data:`RECORD_SCHEMA`) and which model produced it. Rows are encoded here as whole lines so that the
writer can append them with one ``write`` each and a reader can always tell a complete row from a row cut
short by a crash (it has no trailing newline).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

from .model import Prediction

#: Schema identifier written in every record; bump the trailing version on incompatible changes.
RECORD_SCHEMA = "wildlife-vision/prediction/v1"

FORMATS = ("jsonl", "csv")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}

#: JSONL keys, in the order they are written.
JSONL_FIELDS = ("schema", "input", "error", "error_kind", "flagged", "review", "scores", "model", "model_version",
                "profile")


def format_for(path: Union[str, os.PathLike]) -> Optional[str]:
    """The output format implied by a file name's extension (``.jsonl``/``.ndjson``/``.json``, ``.csv``), else None."""
    return _EXTENSIONS.get(os.path.splitext(os.fspath(path))[1].lower())


def prediction_record(pred: Prediction, model_name: str, model_version: str,
                      heatmaps: Optional[Dict[str, str]] = None, profile: str = "fp32") -> Dict[str, Any]:
    """The versioned record for one prediction (the JSONL object, keys in :data:`JSONL_FIELDS` order).
    ``profile``: the execution profile that scored it (``Model.profile``: fp32, int8, bf16...), whose thresholds
    decided ``flagged`` and ``review``.

    ``heatmaps`` ({label: overlay image path}, from ``predict --explain``) adds the optional key ``heatmaps``
    after ``scores``: ``{}`` for a row that was explained but needed no overlay (neither flagged nor in review)."""
    rec = {
        "schema": RECORD_SCHEMA,
        "input": pred.input,
        "error": _one_line(pred.error) if pred.error is not None else None,
        "error_kind": pred.error_kind if pred.error is not None else None,
        "flagged": list(pred.flagged),
        "review": list(pred.review),
        "scores": dict(pred.scores),
        "model": model_name,
        "model_version": model_version,
        "profile": profile,
    }
    if heatmaps is not None:
        rec = {**{k: rec[k] for k in JSONL_FIELDS[:7]}, "heatmaps": dict(heatmaps),
               **{k: rec[k] for k in JSONL_FIELDS[7:]}}
    return rec


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def csv_header(labels: Sequence[str], heatmaps: bool = False) -> List[str]:
    """CSV columns: input, error, error_kind, flagged, review, score_<label> per label, model, model_version, profile,
    schema, and with ``heatmaps`` (``predict --explain``) a last column ``heatmaps``: ``label=path`` pairs joined by ``;``."""
    return ["input", "error", "error_kind", "flagged", "review", *[f"score_{lab}" for lab in labels], "model",
            "model_version", "profile", "schema", *(["heatmaps"] if heatmaps else [])]


def csv_escape_input(text: str) -> str:
    r"""CSV rows must stay one line each: control characters in a path are written as ``\xNN``."""
    if not any(ord(c) < 32 or ord(c) == 127 for c in text):
        return text
    return "".join(f"\\x{ord(c):02x}" if ord(c) < 32 or ord(c) == 127 else c for c in text)


class RecordEncoder:
    """Turns predictions into complete output lines (bytes) for one format, model and label set."""

    def __init__(self, fmt: str, labels: Sequence[str], model_name: str, model_version: str,
                 heatmaps: bool = False, profile: str = "fp32"):
        if fmt not in FORMATS:
            raise ValueError(f"unknown output format {fmt!r}; use one of {FORMATS}")
        self.fmt = fmt
        self.labels = list(labels)
        self.model_name = model_name
        self.model_version = model_version
        self.heatmaps = bool(heatmaps)  # rows carry the overlay paths of `predict --explain`
        self.profile = profile

    def key(self, input_name: str) -> str:
        """The value of the ``input`` field this input gets in the file (what ``--resume`` matches on)."""
        return csv_escape_input(input_name) if self.fmt == "csv" else input_name

    def model_id(self) -> Tuple[str, str]:
        """(model, model_version) exactly as written in this format's rows (compare with ExistingOutput.models)."""
        if self.fmt == "csv":
            return _one_line(self.model_name), _one_line(self.model_version)
        return self.model_name, self.model_version

    def header(self) -> bytes:
        return _csv_line(csv_header(self.labels, self.heatmaps)) if self.fmt == "csv" else b""

    def encode(self, pred: Prediction, heatmaps: Optional[Dict[str, str]] = None) -> bytes:
        """One complete output line; ``heatmaps`` ({label: path}) when the encoder writes heatmap paths."""
        rec = prediction_record(pred, self.model_name, self.model_version,
                                (heatmaps or {}) if self.heatmaps else None, self.profile)
        if self.fmt == "jsonl":
            text = json.dumps(rec, ensure_ascii=False, allow_nan=False)
            try:
                return (text + "\n").encode("utf-8")
            except UnicodeEncodeError:  # a file name that is not valid UTF-8 (lone surrogates): escape it
                return (json.dumps(rec, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")
        scores = rec["scores"]
        row = [csv_escape_input(rec["input"]), rec["error"] or "", rec["error_kind"] or "", ";".join(rec["flagged"]),
               ";".join(rec["review"]), *[repr(scores[lab]) if lab in scores else "" for lab in self.labels],
               _one_line(self.model_name), _one_line(self.model_version), self.profile, RECORD_SCHEMA]
        if self.heatmaps:
            row.append(";".join(f"{lab}={csv_escape_input(path)}" for lab, path in rec["heatmaps"].items()))
        return _csv_line(row)


def _csv_line(row: Sequence[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(row)
    return buf.getvalue().encode("utf-8", errors="surrogateescape")


class RecordWriter:
    """Appends whole lines to a file descriptor or binary stream; fsyncs at most every ``fsync_every`` seconds.

    Each :meth:`write` call hands the complete lines of one batch to a single ``write``; a process killed
    mid-write can leave at most one incomplete last line, which :func:`read_existing` detects and drops.
    """

    def __init__(self, target: Union[int, BinaryIO], fsync_every: float = 1.0):
        self._fd = target if isinstance(target, int) else None
        self._stream = None if isinstance(target, int) else target
        self.fsync_every = fsync_every
        self._last_sync = time.monotonic()
        self.rows = 0

    def write_raw(self, data: bytes) -> None:
        if not data:
            return
        if self._fd is not None:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            if self.fsync_every is not None and time.monotonic() - self._last_sync >= self.fsync_every:
                self.sync()
        elif self._stream is not None:
            self._stream.write(data)
            self._stream.flush()

    def write_lines(self, lines: Iterable[bytes]) -> None:
        lines = list(lines)
        self.write_raw(b"".join(lines))
        self.rows += len(lines)

    def sync(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError:  # e.g. a pipe or a file system without fsync
                pass
            self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None


@dataclass
class ExistingOutput:
    """What an earlier (possibly interrupted) run left in an output file."""

    done: Set[str] = field(default_factory=set)          #: ``input`` values already present
    rows: int = 0                                        #: complete rows
    valid_bytes: int = 0                                 #: length of the file up to its last complete line
    dropped_bytes: int = 0                               #: bytes of an incomplete last line (to truncate)
    models: Set[Tuple[str, str]] = field(default_factory=set)  #: (model, model_version) pairs seen
    #: execution profiles named by the rows (rows written before profiles existed name none)
    profiles: Set[str] = field(default_factory=set)
    has_header: bool = False                             #: CSV: the header line is complete


class OutputFormatError(ValueError):
    """An existing output file cannot be resumed (not our format, other columns, a damaged line)."""


def read_existing(path: Union[str, os.PathLike], fmt: str, labels: Sequence[str],
                  heatmaps: bool = False) -> ExistingOutput:
    """Read an output file for ``--resume``: the inputs it has, and where its last complete line ends.
    ``heatmaps``: the run writes the ``heatmaps`` CSV column (``predict --explain``)."""
    with open(path, "rb") as f:
        data = f.read()
    out = ExistingOutput()
    end = data.rfind(b"\n") + 1  # 0 when there is no complete line
    out.valid_bytes, out.dropped_bytes = end, len(data) - end
    body = data[:end]
    if fmt == "jsonl":
        for n, line in enumerate(body.split(b"\n")[:-1], start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line.decode("utf-8", errors="surrogateescape"))
            except ValueError:
                raise OutputFormatError(f"{os.fspath(path)} line {n} is not valid JSON; it was not written by "
                                        "`wildlife-vision predict`, or was edited. Fix or remove that line, or "
                                        "use --overwrite") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("input"), str):
                raise OutputFormatError(f"{os.fspath(path)} line {n} is not a prediction record (no 'input'); "
                                        "use another --output or --overwrite")
            out.done.add(rec["input"])
            out.rows += 1
            out.models.add((str(rec.get("model", "")), str(rec.get("model_version", ""))))
            if rec.get("profile"):
                out.profiles.add(str(rec["profile"]))
        return out
    text = body.decode("utf-8", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        return out
    out.has_header = True
    expected = csv_header(labels, heatmaps)
    if header != expected:
        raise OutputFormatError(f"{os.fspath(path)} has columns {header}, but this model writes {expected}; use "
                                "another --output, the same --model, or --overwrite")
    i_model, i_version, i_profile = expected.index("model"), expected.index("model_version"), expected.index("profile")
    for n, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(expected):
            raise OutputFormatError(f"{os.fspath(path)} line {n} has {len(row)} columns, expected {len(expected)}; "
                                    "fix or remove that line, or use --overwrite")
        out.done.add(row[0])
        out.rows += 1
        out.models.add((row[i_model], row[i_version]))
        out.profiles.add(row[i_profile])
    return out


__all__ = ["RECORD_SCHEMA", "FORMATS", "JSONL_FIELDS", "format_for", "prediction_record", "csv_header",
           "csv_escape_input", "RecordEncoder", "RecordWriter", "ExistingOutput", "OutputFormatError",
           "read_existing"]
