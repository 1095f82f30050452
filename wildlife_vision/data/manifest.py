"""Manifests: the one CSV parser, the validated reader for training and evaluation, and the row-preserving table
for curation (no torch needed).

The canonical format is a CSV file ``image,labels[,split]`` (see ``datasets/README.md``): ``image`` is a path
relative to the manifest (absolute paths are accepted too), ``labels`` is ``;``-separated (empty = none of the
classes), ``split`` is ``train``, ``val`` or ``test``. Other columns are kept (for slicing evaluation).
A folder-per-class tree is accepted as well: ``ROOT/<label>/*.jpg`` with ``none`` (or ``negative``,
``background``) for photos with none of the labels, optionally under ``ROOT/train/`` and ``ROOT/val/``.

Two views of one file, parsed by one function (:func:`_parse_csv`: decoding, header, CSV syntax):

* :func:`read_manifest` -> :class:`Manifest` of validated :class:`Sample` s (training, evaluation). Every row is
  checked; all problems (missing files, unreadable images, unknown labels, duplicate rows, bad encodings, bad
  splits) are collected in one :class:`ValidationReport` and raised together as :class:`ManifestError`, whose
  message is the readable report.
* :func:`read_manifest_table` -> :class:`ManifestTable`: the rows as dicts, every column kept in its order, for
  the curation tools (``data dedup``, ``split``, ``check``, ``stats``) and the model card; written back with
  :func:`write_manifest` (atomically, see :func:`atomic_write_text`).
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import logging
import os
import re
import tempfile
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from wildlife_vision.errors import ImageDecodeError
from wildlife_vision.preprocess import IMAGE_EXTENSIONS, load_image

log = logging.getLogger(__name__)

#: The label taxonomy, in canonical order (see datasets/taxonomy.md for what each label covers).
TAXONOMY: Tuple[str, ...] = ("ivory", "rhino_horn", "pangolin_scales", "tiger_parts", "live_animal")
#: folder names that mean "none of the labels" in a folder-per-class tree
NEGATIVE_FOLDERS = ("none", "negative", "negatives", "background", "other")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "": ""}
LABEL_SEPARATOR = ";"
#: the columns every CSV manifest has
REQUIRED_COLUMNS = ("image", "labels")

PathLike = Union[str, os.PathLike]


class ManifestError(ValueError):
    """The manifest has problems; ``report`` lists all of them and ``str(error)`` is the readable report
    (or ``message``, e.g. the one-line form :meth:`ValidationReport.brief`). A plain message without a report
    is accepted too (``report`` is then None)."""

    def __init__(self, report: Union["ValidationReport", str], message: Optional[str] = None):
        if isinstance(report, str):
            report, message = None, report
        super().__init__(message or report.format())
        self.report = report


def split_labels(text: Optional[str]) -> Tuple[str, ...]:
    """``"ivory; live_animal"`` -> ``("ivory", "live_animal")``; empty or missing -> ``()``. Order kept, repeats dropped."""
    out: List[str] = []
    for part in str(text or "").split(LABEL_SEPARATOR):
        part = part.strip()
        if part and part not in out:
            out.append(part)
    return tuple(out)


def join_labels(labels: Iterable[str]) -> str:
    return LABEL_SEPARATOR.join(labels)


@dataclass(frozen=True)
class Issue:
    severity: str            # "error" or "warning"
    kind: str                # e.g. "missing file", "unknown label"
    message: str
    line: Optional[int] = None
    image: Optional[str] = None

    def to_dict(self) -> Dict[str, object]:
        return {"severity": self.severity, "kind": self.kind, "message": self.message, "line": self.line,
                "image": self.image}


@dataclass
class ValidationReport:
    """Every problem found in one manifest. Errors stop training; warnings are logged."""

    source: str
    rows: int = 0
    issues: List[Issue] = field(default_factory=list)

    def error(self, kind: str, message: str, line: Optional[int] = None, image: Optional[str] = None) -> None:
        self.issues.append(Issue("error", kind, message, line, image))

    def warn(self, kind: str, message: str, line: Optional[int] = None, image: Optional[str] = None) -> None:
        self.issues.append(Issue("warning", kind, message, line, image))

    @property
    def errors(self) -> List[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> List[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> Dict[str, object]:
        return {"source": self.source, "rows": self.rows, "ok": self.ok, "errors": len(self.errors),
                "warnings": len(self.warnings), "issues": [i.to_dict() for i in self.issues]}

    def brief(self, max_errors: int = 10) -> str:
        """The errors only, one line each: ``PATH:LINE: message`` (for the curation commands)."""
        lines = []
        for issue in self.errors[:max_errors]:
            where = f"{self.source}:{issue.line}: " if issue.line is not None else (
                "" if self.source in issue.message else f"{self.source}: ")
            lines.append(where + issue.message)
        if len(self.errors) > max_errors:
            lines.append(f"... and {len(self.errors) - max_errors} more error(s)")
        return "\n".join(lines) or f"{self.source}: no problems found"

    def format(self, max_per_kind: int = 10) -> str:
        """A readable report: a summary line, then the problems grouped by kind (at most ``max_per_kind`` each)."""
        n_err, n_warn = len(self.errors), len(self.warnings)
        head = (f"manifest {self.source}: {self.rows} row(s) checked, {n_err} error(s), {n_warn} warning(s)")
        if not self.issues:
            return head + "; no problems found"
        lines = [head]
        groups: Dict[Tuple[str, str], List[Issue]] = defaultdict(list)
        for issue in self.issues:
            groups[(issue.severity, issue.kind)].append(issue)
        for (severity, kind), items in sorted(groups.items(), key=lambda kv: (kv[0][0] != "error", kv[0][1])):
            lines.append(f"  {severity.upper()} {kind} ({len(items)}):")
            for issue in items[:max_per_kind]:
                where = f"line {issue.line}: " if issue.line is not None else ""
                lines.append(f"    {where}{issue.message}")
            if len(items) > max_per_kind:
                lines.append(f"    ... and {len(items) - max_per_kind} more")
        if n_err:
            lines.append("Fix the errors above (or remove those rows) and run again; nothing was trained.")
        return "\n".join(lines)


@dataclass(frozen=True)
class Sample:
    """One labelled photo."""

    path: str                        # absolute path of the image file
    image: str                       # the path as written in the manifest
    labels: Tuple[str, ...]
    split: str = ""                  # train | val | test | "" (unassigned)
    extra: Mapping[str, str] = field(default_factory=dict)
    line: int = 0                    # line in the manifest (0 for folder trees)


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: its samples, the label list, the extra columns and the source file's hash."""

    source: str
    samples: Tuple[Sample, ...]
    labels: Tuple[str, ...]
    columns: Tuple[str, ...]          # extra columns beyond image, labels, split
    sha256: str
    report: ValidationReport

    def split(self, name: str) -> List[Sample]:
        return [s for s in self.samples if s.split == name]

    def targets(self, samples: Optional[Sequence[Sample]] = None) -> np.ndarray:
        return targets_for(self.samples if samples is None else samples, self.labels)


def targets_for(samples: Sequence[Sample], labels: Sequence[str]) -> np.ndarray:
    """(N, len(labels)) float32 0/1 matrix; labels outside ``labels`` are ignored."""
    index = {lab: i for i, lab in enumerate(labels)}
    y = np.zeros((len(samples), len(labels)), dtype=np.float32)
    for r, s in enumerate(samples):
        for lab in s.labels:
            if lab in index:
                y[r, index[lab]] = 1.0
    return y


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (manifests; the ``model_sha256`` that `evaluate` records and `model-card` checks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- reading ---------------------------------------------------------------------------------------------

def read_manifest(source: os.PathLike | str, labels: Optional[Sequence[str]] = None, check_images: bool = True,
                  threads: Optional[int] = None, raise_on_error: bool = True, for_training: bool = True) -> Manifest:
    """Read and validate a CSV manifest or a folder-per-class tree.

    ``labels``: the label list to train (default: the labels present, in taxonomy order). Labels in the data
    that are neither in the taxonomy nor in ``labels`` are errors; taxonomy labels left out of an explicit
    ``labels`` are ignored with a warning. ``check_images`` decodes every image (with the same decoder as
    inference) so unreadable files are reported before training. Raises :class:`ManifestError` listing every
    problem when there is at least one error (unless ``raise_on_error`` is false).
    """
    src = Path(source)
    if src.is_dir():
        report = ValidationReport(str(src))
        samples, columns, digest = _read_folder(src, report)
    elif src.is_file():
        report = ValidationReport(str(src))
        samples, columns = _read_csv(src, report)
        digest = file_sha256(src)
    else:
        report = ValidationReport(str(src))
        report.error("missing manifest", f"{src} does not exist; pass a manifest CSV (image,labels[,split]) "
                                         "or a folder with one sub-folder per label")
        raise ManifestError(report)

    report.rows = report.rows or len(samples)
    resolved = _check_labels(samples, labels, report)
    samples = _drop_duplicates(samples, report)
    if check_images:
        bad = _check_files(samples, report, threads)
        samples = [s for s in samples if (s.line, s.path) not in bad]
    for lab in resolved if for_training else ():  # an evaluation sample may lack positives: that is no problem
        if not any(lab in s.labels for s in samples if s.split != "val"):
            report.warn("label without examples", f"label '{lab}' has no positive training example; the model "
                                                  "cannot learn it from this manifest")
    if not samples and report.ok:
        report.error("empty manifest", "no usable rows: the manifest lists no images")
    if not report.ok and raise_on_error:
        raise ManifestError(report)
    for issue in report.warnings:
        log.warning("%s: %s%s", issue.kind, f"line {issue.line}: " if issue.line else "", issue.message)
    return Manifest(source=str(src), samples=tuple(samples), labels=tuple(resolved), columns=tuple(columns),
                    sha256=digest, report=report)


def _decode_text(data: bytes, report: ValidationReport) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    for n, raw in enumerate(data.splitlines(), start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            bad = raw[e.start:e.start + 1].hex()
            report.error("encoding", f"not UTF-8 (byte 0x{bad} at column {e.start + 1}): "
                                     f"{raw.decode('utf-8', 'replace')[:120]!r}", line=n)
    report.warn("encoding", "the manifest is not valid UTF-8; re-save it as UTF-8 (for example "
                            "`iconv -f latin1 -t utf-8 old.csv > manifest.csv`)")
    return data.decode("utf-8", "replace").lstrip("\ufeff")


def _parse_csv(path: Path, report: ValidationReport) -> Tuple[List[str], List[Tuple[int, List[str]]]]:
    """The one manifest CSV parser: the header and ``(line, fields)`` for every non-blank row.

    Decodes UTF-8 (a BOM is dropped; lines that are not UTF-8 are reported and left out), checks the header
    (``image`` and ``labels`` present, no duplicate names) and reports rows with CSV syntax errors. Problems
    that leave nothing to read (missing, unreadable or empty file, a bad header) raise :class:`ManifestError`;
    the others are recorded in ``report`` for the caller to raise. Field counts are the caller's to check.
    """
    if not path.is_file():
        report.error("missing manifest", f"manifest not found: {path} does not exist or is not a file; pass a "
                                         "manifest CSV (image,labels[,split])")
        raise ManifestError(report)
    try:
        data = path.read_bytes()
    except OSError as e:
        report.error("unreadable manifest", f"cannot read {path}: {e.strerror or e}")
        raise ManifestError(report) from None
    text = _decode_text(data, report)
    bad_lines = {i.line for i in report.issues if i.kind == "encoding" and i.line}
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        report.error("empty manifest", "the file is empty; expected a header line `image,labels[,split]`")
        raise ManifestError(report) from None
    except csv.Error as e:
        report.error("csv syntax", f"cannot parse the header: {e}", line=1)
        raise ManifestError(report) from None
    header = [h.strip() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        report.error("header", f"missing column(s) {missing}; the header is {header}, expected "
                               "`image,labels[,split][,other columns]`", line=1)
        raise ManifestError(report)
    dupes = sorted(c for c, n in Counter(header).items() if n > 1)
    if dupes:
        report.error("header", f"duplicate column name(s) {dupes}", line=1)
        raise ManifestError(report)
    rows: List[Tuple[int, List[str]]] = []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            report.error("csv syntax", str(e), line=reader.line_num)
            report.rows += 1
            continue
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        report.rows += 1
        if line in bad_lines:
            continue  # already reported as an encoding error
        rows.append((line, row))
    return header, rows


def _read_csv(path: Path, report: ValidationReport) -> Tuple[List[Sample], List[str]]:
    header, rows = _parse_csv(path, report)
    extra_cols = [c for c in header if c not in ("image", "labels", "split")]
    base = path.parent
    samples: List[Sample] = []
    for line, row in rows:
        if len(row) != len(header):
            report.error("csv syntax", f"{len(row)} field(s), the header has {len(header)}: {row[:4]!r}"
                         f"{_comma_hint(header, row)}", line=line)
            continue
        rec = dict(zip(header, row))
        image = rec["image"].strip()
        if not image:
            report.error("empty path", "the image column is empty", line=line)
            continue
        split_raw = rec.get("split", "").strip().lower()
        if split_raw not in SPLIT_ALIASES:
            report.error("bad split", f"split {rec['split']!r} is not one of train, val, test or empty",
                         line=line, image=image)
            continue
        labels = _parse_labels(rec["labels"], report, line, image)
        p = Path(image)
        full = p if p.is_absolute() else base / p
        samples.append(Sample(path=str(full), image=image, labels=labels, split=SPLIT_ALIASES[split_raw],
                              extra={c: rec[c] for c in extra_cols}, line=line))
    return samples, extra_cols


def _comma_hint(header: Sequence[str], row: Sequence[str]) -> str:
    """A hint when a row has extra fields because its labels were separated by commas (``a.jpg,ivory,live_animal``)."""
    extra = len(row) - len(header)
    at = list(header).index("labels")
    cells = [c.strip() for c in row[at:at + extra + 1]]
    if extra < 1 or len(cells) < 2 or not all(c in TAXONOMY for c in cells):
        return ""
    return (f"; labels are separated by '{LABEL_SEPARATOR}', not ',': did you mean "
            f"'{join_labels(cells)}'?")


def _parse_labels(cell: str, report: ValidationReport, line: int, image: str) -> Tuple[str, ...]:
    out = split_labels(cell)
    if len(out) != len([p for p in cell.split(LABEL_SEPARATOR) if p.strip()]):
        report.warn("repeated label", f"label repeated in {cell!r}", line=line, image=image)
    return out


def _read_folder(root: Path, report: ValidationReport) -> Tuple[List[Sample], List[str], str]:
    split_dirs = {name: root / name for name in ("train", "val", "valid", "validation", "test")
                  if (root / name).is_dir()}
    trees = [(SPLIT_ALIASES[name], d) for name, d in split_dirs.items()] if split_dirs else [("", root)]
    samples: List[Sample] = []
    for split, tree in trees:
        for class_dir in sorted(p for p in tree.iterdir() if p.is_dir()):
            label = class_dir.name
            labels: Tuple[str, ...] = () if label.lower() in NEGATIVE_FOLDERS else (label,)
            for f in sorted(class_dir.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                    samples.append(Sample(path=str(f), image=str(f.relative_to(root)), labels=labels, split=split,
                                          extra={"folder": label}))
                elif f.is_file() and not f.name.startswith("."):
                    report.warn("skipped file", f"not an image file name (by extension): {f.relative_to(root)}")
    if not samples:
        report.error("empty folder", f"no images found under {root}; expected {root}/<label>/*.jpg (and "
                                     f"{root}/none/ for photos with none of the labels)")
        raise ManifestError(report)
    canonical = "".join(f"{s.image},{LABEL_SEPARATOR.join(s.labels)},{s.split}\n" for s in samples)
    return samples, ["folder"], hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _check_labels(samples: Sequence[Sample], labels: Optional[Sequence[str]], report: ValidationReport
                  ) -> Tuple[str, ...]:
    explicit = tuple(labels or ())
    if len(set(explicit)) != len(explicit):
        report.error("labels", f"--labels has duplicates: {list(explicit)}")
    vocabulary = set(TAXONOMY) | set(explicit)
    present = Counter(lab for s in samples for lab in s.labels)
    ignored = Counter()
    for s in samples:
        for lab in s.labels:
            if lab not in vocabulary:
                report.error("unknown label", f"{lab!r} is not a known label{_did_you_mean(lab, vocabulary)} "
                             f"(taxonomy: {', '.join(TAXONOMY)}{'; --labels: ' + ', '.join(explicit) if explicit else ''}"
                             f"; labels are separated by '{LABEL_SEPARATOR}')", line=s.line or None, image=s.image)
            elif explicit and lab not in explicit:
                ignored[lab] += 1
    for lab, n in sorted(ignored.items()):
        report.warn("ignored label", f"label '{lab}' ({n} row(s)) is not in --labels and is ignored")
    if explicit:
        return explicit
    return tuple(lab for lab in TAXONOMY if present[lab] > 0)


#: what people type between labels instead of ';'
_WRONG_SEPARATORS = re.compile(r"\s*[,|/+]\s*|\s+")


def _did_you_mean(label: str, vocabulary: Iterable[str]) -> str:
    """``": did you mean 'ivory'?"`` for a typo, ``": did you mean 'ivory;live_animal'?"`` for labels joined by
    another separator, else ``""``."""
    known = sorted(vocabulary)
    parts = [p for p in _WRONG_SEPARATORS.split(label.strip()) if p]
    if len(parts) > 1:
        fixed = [p if p in known else next(iter(difflib.get_close_matches(p, known, n=1, cutoff=0.75)), None)
                 for p in parts]
        if all(fixed):
            return f": did you mean '{join_labels(dict.fromkeys(fixed))}'?"
    close = difflib.get_close_matches(label.strip(), known, n=1, cutoff=0.6)
    return f": did you mean '{close[0]}'?" if close else ""


def _drop_duplicates(samples: Sequence[Sample], report: ValidationReport) -> List[Sample]:
    first: Dict[str, Sample] = {}
    out: List[Sample] = []
    for s in samples:
        key = os.path.normcase(os.path.normpath(s.path))
        prev = first.get(key)
        if prev is None:
            first[key] = s
            out.append(s)
        elif set(prev.labels) == set(s.labels) and prev.split == s.split:
            report.warn("duplicate row", f"{s.image} repeats line {prev.line} with the same labels and split; "
                                         "the repeat is ignored", line=s.line or None, image=s.image)
        else:
            report.error("duplicate row", f"{s.image} also appears on line {prev.line} with different labels or "
                                          f"split ({list(prev.labels)}/{prev.split or '-'} vs "
                                          f"{list(s.labels)}/{s.split or '-'}); keep one row", line=s.line or None,
                         image=s.image)
    return out


def _check_one(sample: Sample) -> Optional[Tuple[str, str]]:
    if not os.path.exists(sample.path):
        return ("missing file", f"{sample.image}: file not found ({sample.path})")
    try:
        load_image(sample.path)
    except ImageDecodeError as e:
        return ("unreadable image", f"{sample.image}: {e}")
    return None


def _check_files(samples: Sequence[Sample], report: ValidationReport, threads: Optional[int]) -> set:
    """Decode every image once; returns the (line, path) keys of samples that failed."""
    workers = threads or min(8, (os.cpu_count() or 1) + 2)
    bad = set()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for s, problem in zip(samples, pool.map(_check_one, samples, chunksize=32)):
            if problem is not None:
                report.error(problem[0], problem[1], line=s.line or None, image=s.image)
                bad.add((s.line, s.path))
    return bad


# ---- the row-preserving table (curation) ------------------------------------------------------------------

@dataclass
class ManifestTable:
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

    def with_column(self, name: str, values: Sequence[str], after: Optional[str] = None) -> "ManifestTable":
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
        return ManifestTable(self.path, fields, rows)


def read_manifest_table(path: PathLike) -> ManifestTable:
    """Read a manifest CSV as a :class:`ManifestTable`, with the same parser as :func:`read_manifest`.

    Rows shorter than the header get empty values; a row with more values than columns, an empty image
    path, CSV syntax or encoding errors raise :class:`ManifestError` with one line per problem
    (``PATH:LINE: message``). Labels and images are not checked here (``data check`` and training do that).
    """
    path = Path(path)
    report = ValidationReport(str(path))
    try:
        header, parsed = _parse_csv(path, report)
    except ManifestError:
        raise ManifestError(report, report.brief()) from None
    rows: List[Dict[str, str]] = []
    for line, fields in parsed:
        if len(fields) > len(header):
            report.error("csv syntax", f"more values than columns ({len(fields)} field(s), the header has "
                                       f"{len(header)}): {fields[:4]!r}", line=line)
            continue
        row = dict(zip(header, fields + [""] * (len(header) - len(fields))))
        if not row["image"].strip():
            report.error("empty path", "empty image path", line=line)
            continue
        rows.append(row)
    if not report.ok:
        raise ManifestError(report, report.brief())
    return ManifestTable(path, header, rows)


def write_manifest(path: PathLike, manifest_or_fields, rows: Optional[Sequence[Dict[str, str]]] = None) -> Path:
    """Write a manifest atomically (temporary file in the same folder, then rename), keeping column order.

    Call as ``write_manifest(path, table)`` or ``write_manifest(path, fieldnames, rows)``.
    """
    if isinstance(manifest_or_fields, ManifestTable):
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


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same folder and an atomic rename.

    The file gets the permissions a plain ``open(path, "w")`` would give it (0o666 less the umask), not the
    0o600 of the temporary file.
    """
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: PathLike, data: bytes, fsync: bool = False) -> Path:
    """:func:`atomic_write_text` for bytes (a model file, an image). The temporary file is ``.NAME.*.tmp`` beside
    ``path``; ``fsync`` flushes it to the disk before the rename (a file that must survive a power cut whole)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
