"""A small, torch-free reader and writer for manifest CSVs.

The format: ``image,labels[,split,...]``; ``image`` is a path relative to the manifest's folder (or
absolute, or a URL), ``labels`` is ``;``-separated (empty = none of the classes), and every other
column (``split``, ``source``, ``seller``, ``listing``, ...) is kept as it is, in its order.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

PathLike = Union[str, os.PathLike]

REQUIRED_COLUMNS = ("image", "labels")
LABEL_SEP = ";"


class ManifestError(ValueError):
    """The manifest file is missing, unreadable or lacks the required columns."""


def split_labels(text: Optional[str]) -> Tuple[str, ...]:
    """``"ivory; live_animal"`` -> ``("ivory", "live_animal")``; empty or missing -> ``()``. Order kept, repeats dropped."""
    if not text:
        return ()
    out: List[str] = []
    for part in str(text).split(LABEL_SEP):
        part = part.strip()
        if part and part not in out:
            out.append(part)
    return tuple(out)


def join_labels(labels: Iterable[str]) -> str:
    return LABEL_SEP.join(labels)


@dataclass
class Manifest:
    """Rows of a manifest as dicts (every column kept), the column order and the folder paths are relative to."""

    path: Optional[Path]
    fieldnames: List[str]
    rows: List[Dict[str, str]] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.path.parent if self.path is not None else Path(".")

    def __len__(self) -> int:
        return len(self.rows)

    def image_path(self, i: int) -> Path:
        """Filesystem path of row ``i``'s image (relative paths resolved against the manifest's folder)."""
        p = Path(self.rows[i]["image"])
        return p if p.is_absolute() else self.root / p

    def labels(self, i: int) -> Tuple[str, ...]:
        return split_labels(self.rows[i].get("labels", ""))

    def column(self, name: str) -> List[str]:
        if name not in self.fieldnames:
            raise ManifestError(f"{self.path}: no column {name!r}; the columns are {self.fieldnames}")
        return [r.get(name, "") or "" for r in self.rows]

    def all_labels(self) -> List[str]:
        """Every label that occurs, in first-seen order."""
        seen: Dict[str, None] = {}
        for i in range(len(self.rows)):
            for lab in self.labels(i):
                seen.setdefault(lab, None)
        return list(seen)

    def with_column(self, name: str, values: Sequence[str], after: Optional[str] = None) -> "Manifest":
        """A copy with column ``name`` set to ``values`` (added after ``after``, or at the end, when new)."""
        if len(values) != len(self.rows):
            raise ValueError(f"{len(values)} values for {len(self.rows)} rows")
        fields = list(self.fieldnames)
        if name not in fields:
            if after is not None and after in fields:
                fields.insert(fields.index(after) + 1, name)
            else:
                fields.append(name)
        rows = []
        for r, v in zip(self.rows, values):
            r2 = dict(r)
            r2[name] = v
            rows.append(r2)
        return Manifest(self.path, fields, rows)


def read_manifest(path: PathLike) -> Manifest:
    """Read a manifest CSV (UTF-8, optional BOM). Raises :class:`ManifestError` with a clear message."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"cannot read manifest {path}: {e}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fieldnames = [f.strip() for f in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in fieldnames]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {missing}; a manifest needs a header 'image,labels[,split,...]', "
                            f"found {fieldnames or 'an empty file'}")
    reader.fieldnames = fieldnames
    rows: List[Dict[str, str]] = []
    for lineno, raw in enumerate(reader, start=2):
        if raw.get(None):
            raise ManifestError(f"{path}:{lineno}: more values than columns")
        row = {k: ("" if v is None else v) for k, v in raw.items()}
        if not row["image"].strip():
            if not any(v.strip() for v in row.values()):
                continue  # blank line
            raise ManifestError(f"{path}:{lineno}: empty image path")
        rows.append(row)
    return Manifest(path, fieldnames, rows)


def write_manifest(path: PathLike, manifest_or_fields, rows: Optional[Sequence[Dict[str, str]]] = None) -> Path:
    """Write a manifest atomically (temporary file in the same folder, then rename), keeping column order.

    Call as ``write_manifest(path, manifest)`` or ``write_manifest(path, fieldnames, rows)``.
    """
    if isinstance(manifest_or_fields, Manifest):
        fieldnames, rows = manifest_or_fields.fieldnames, manifest_or_fields.rows
    else:
        fieldnames = list(manifest_or_fields)
        rows = list(rows or [])
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=fieldnames, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k, "") for k in fieldnames})
    return atomic_write_text(path, buf.getvalue())


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


__all__ = ["Manifest", "ManifestError", "read_manifest", "write_manifest", "atomic_write_text", "split_labels",
           "join_labels", "LABEL_SEP"]
