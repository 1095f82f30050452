"""The review page: one self-contained HTML file of the photos `predict` flagged or sent to review.

:func:`write_review_page` reads a prediction-records file (``wildlife-vision/prediction/v1``, JSONL or CSV, as
`predict` writes it: :mod:`wildlife_vision.records`) and writes a page with a grid of thumbnails (heatmap
overlays on hover or toggle, where the rows name them under ``heatmaps``), each label's score against its
threshold and review band, filters by label and band, sorting and pages of :data:`PAGE_SIZE` cards; and a table
of the rows that could not be scored, with their error kind.

Self-contained and offline: every image is a ``data:`` URI (each distinct thumbnail once), the style sheet and
script are inline (:mod:`.review_assets`), and a Content-Security-Policy forbids the page any network load, so
opening it never tells a third party which listing photos are under review. Every string from a record is
escaped (HTML) or handed to the script as JSON and set with ``textContent``.

Thresholds and review bands are not in the rows: they come from ``model=`` (the ONNX file's metadata, read
without onnxruntime) or, when the rows name the shipped default model and version, from that; otherwise the
page says they are unknown and shows the scores alone. Relative paths in the rows (photos and heatmaps) are
resolved against ``root`` when given, else the current folder, else the records file's folder.
:mod:`.evaluation_page` renders `evaluate`'s report with the same parts.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .review_assets import CSP, CSS, JS
from .review_images import THUMB_SIZE, ThumbnailStore

PathLike = Union[str, os.PathLike]

#: cards per page of the grid
PAGE_SIZE = 60
#: photos put in one page unless told otherwise (flagged first, then review, highest scores first)
DEFAULT_MAX_ROWS = 5000
#: the record schema this page reads
SCHEMA_PREFIX = "wildlife-vision/prediction/"
#: the page's generator meta: `report` replaces an existing output without --overwrite only when it carries this
GENERATOR = "wildlife-vision review page"
BANDS = (("flagged", "flagged"), ("review", "review band"), ("none", "neither"))


class RecordsError(ValueError):
    """The records file cannot be read as prediction records (names the file and line)."""


@dataclass
class Record:
    """One prediction row, validated."""

    line: int
    input: str
    error: Optional[str] = None
    error_kind: Optional[str] = None
    flagged: List[str] = field(default_factory=list)
    review: List[str] = field(default_factory=list)
    scores: Dict[str, float] = field(default_factory=dict)
    model: str = ""
    model_version: str = ""
    heatmaps: Dict[str, str] = field(default_factory=dict)


@dataclass
class Thresholds:
    """Where the page's thresholds and review bands came from; labels without one are shown as scores only."""

    thresholds: Dict[str, float] = field(default_factory=dict)
    review_bands: Dict[str, Tuple[float, float]] = field(default_factory=dict)
    source: str = "unknown"
    labels: Tuple[str, ...] = ()
    notes: List[str] = field(default_factory=list)


@dataclass
class ReviewSummary:
    """What :func:`write_review_page` put in the page (the CLI prints it)."""

    path: Optional[Path] = None
    n_records: int = 0
    n_errors: int = 0
    n_candidates: int = 0      #: rows eligible for the grid (flagged or review; every scored row with --all)
    n_shown: int = 0
    n_unreadable: int = 0      #: photos shown as a placeholder
    n_heatmaps: int = 0
    n_heatmaps_unreadable: int = 0
    n_images: int = 0          #: distinct images embedded
    html_bytes: int = 0
    models: List[Tuple[str, str]] = field(default_factory=list)
    thresholds_source: str = ""
    notes: List[str] = field(default_factory=list)


# ---- reading records ----------------------------------------------------------------------------------------

def clean_text(value: Any) -> str:
    """A string safe to write as UTF-8: each lone surrogate (an undecodable byte of a file name, as `predict` keeps
    it) becomes U+FFFD."""
    text = value if isinstance(value, str) else str(value)
    return _SURROGATE.sub("\ufffd", text)


_SURROGATE = re.compile("[\ud800-\udfff]")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _str_list(value: Any, where: str, key: str) -> List[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):  # CSV: ";"-joined
        return [v for v in value.split(";") if v]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RecordsError(f"{where}: '{key}' must be a list of label names, got {json.dumps(value)[:80]}")
    return list(value)


def _record(d: Mapping[str, Any], line: int, where: str) -> Record:
    schema = d.get("schema")
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_PREFIX):
        raise RecordsError(f"{where}: not a prediction record (schema {schema!r}; expected "
                           f"'{SCHEMA_PREFIX}v1', as `wildlife-vision predict` writes)")
    if schema != SCHEMA_PREFIX + "v1":
        raise RecordsError(f"{where}: schema {schema!r} is newer than this wildlife-vision reads "
                           f"('{SCHEMA_PREFIX}v1'); upgrade wildlife-vision")
    name = d.get("input")
    if not isinstance(name, str):
        raise RecordsError(f"{where}: 'input' must be a string, got {type(name).__name__}")
    raw_scores = d.get("scores") or {}
    if not isinstance(raw_scores, dict):
        raise RecordsError(f"{where}: 'scores' must be an object of label -> score")
    scores = {}
    for lab, s in raw_scores.items():
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
            raise RecordsError(f"{where}: the score of {lab!r} is not a finite number: {s!r}")
        scores[str(lab)] = float(s)
    heat = d.get("heatmaps") or {}
    if not isinstance(heat, dict) or not all(isinstance(v, str) for v in heat.values()):
        raise RecordsError(f"{where}: 'heatmaps' must be an object of label -> image path")
    error = d.get("error")
    return Record(line=line, input=name, error=None if error in (None, "") else str(error),
                  error_kind=None if d.get("error_kind") in (None, "") else str(d.get("error_kind")),
                  flagged=_str_list(d.get("flagged"), where, "flagged"),
                  review=_str_list(d.get("review"), where, "review"), scores=scores,
                  model=str(d.get("model") or ""), model_version=str(d.get("model_version") or ""),
                  heatmaps={str(k): v for k, v in heat.items()})


def read_records(path: PathLike) -> Tuple[List[Record], List[str]]:
    """The records of a JSONL or CSV predictions file, and notes (an incomplete last line, left out).

    Raises :class:`RecordsError` for a file that is not prediction records (naming the line) and ``OSError``
    when it cannot be read.
    """
    from ..records import format_for

    path = Path(path)
    data = path.read_bytes()
    text = data.decode("utf-8", errors="surrogateescape")
    notes: List[str] = []
    if format_for(path) == "csv" or text.startswith("input,error,error_kind,"):
        return _read_csv(path, text), notes
    records = []
    lines = text.split("\n")
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            d = json.loads(line)
        except ValueError:
            if n == len(lines):  # no newline after it: a row cut short by a crash or a run still writing
                notes.append(f"the last line ({n}) is incomplete (an interrupted or running `predict`?) and is "
                             "left out")
                continue
            raise RecordsError(f"{where} is not valid JSON; is this a file written by `wildlife-vision predict`?") \
                from None
        if not isinstance(d, dict):
            raise RecordsError(f"{where}: not a prediction record (a JSON {type(d).__name__}, not an object)")
        records.append(_record(d, n, where))
    return records, notes


def _read_csv(path: Path, text: str) -> List[Record]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None) or []
    fixed = ("input", "error", "error_kind", "flagged", "review")
    if tuple(header[:5]) != fixed or not {"model", "model_version", "schema"} <= set(header[5:]):
        raise RecordsError(f"{path}: not a predictions CSV (columns {header[:8]}); expected "
                           f"{list(fixed)}, score_<label>..., model, model_version, [profile,] schema")
    score_cols = [(i, c[len("score_"):]) for i, c in enumerate(header) if c.startswith("score_")]
    records = []
    for n, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise RecordsError(f"{path} line {n} has {len(row)} columns, expected {len(header)}")
        d: Dict[str, Any] = dict(zip(header, row))
        scores = {}
        for i, lab in score_cols:
            if row[i] != "":
                try:
                    scores[lab] = float(row[i])
                except ValueError:
                    raise RecordsError(f"{path} line {n}: score_{lab} is not a number: {row[i]!r}") from None
        d["scores"] = scores
        records.append(_record(d, n, f"{path} line {n}"))
    return records


def resolve_path(name: str, base_dir: Path, root: Optional[Path] = None) -> Optional[Path]:
    """Where a path named in a records file is: as is when absolute; else under ``root`` when given; else under
    the current folder if it exists there, else under ``base_dir`` (the records file's folder). None for a name
    that is not a local file name (empty, a NUL byte, a URL: the page never fetches anything)."""
    if not name or "\x00" in name or _URL.match(name):
        return None
    p = Path(name)
    if p.is_absolute():
        return p
    if root is not None:
        return root / p
    try:
        if p.exists():
            return p
    except (OSError, ValueError):
        return None
    return base_dir / p


# ---- thresholds -----------------------------------------------------------------------------------------------

def thresholds_for(models: Iterable[Tuple[str, str]], labels: Sequence[str],
                   model: Optional[PathLike] = None) -> Thresholds:
    """The thresholds and review bands to show for records written by ``models`` ((name, version) pairs).

    With ``model``: that file's (raises ``ModelLoadError``/``MetadataError`` when it cannot be read). Without:
    the shipped default model's when the records name exactly it (name and version), else none.
    """
    from ..errors import ModelLoadError
    from ..metadata import read_model_metadata

    models = sorted(set(models))
    out = Thresholds()
    if model is not None:
        meta = read_model_metadata(model)
        out.source = f"{Path(model).name} ({meta.name} {meta.model_version})"
        if models and (meta.name, meta.model_version) not in models:
            out.notes.append("the records were written by " + ", ".join(f"{n} {v}" for n, v in models)
                             + f", not by {meta.name} {meta.model_version} (--model): its thresholds are shown "
                               "but the rows' flags are the other model's")
    else:
        from ..model import default_model_path

        try:
            meta = read_model_metadata(default_model_path())
        except ModelLoadError:
            meta = None
        if meta is None or len(models) != 1 or models[0] != (meta.name, meta.model_version):
            who = ", ".join(f"{n} {v}".strip() for n, v in models) or "an unnamed model"
            out.notes.append(f"thresholds unknown for {', '.join(labels) or 'every label'}: the records were "
                             f"written by {who}, not the shipped default model; pass --model MODEL.onnx to show "
                             "them. Scores are shown alone; flags and review bands are the rows' own")
            out.labels = tuple(labels)
            return out
        out.source = f"the shipped default model ({meta.name} {meta.model_version})"
    out.thresholds = {lab: float(t) for lab, t in meta.thresholds.items()}
    out.review_bands = {lab: (float(a), float(b)) for lab, (a, b) in meta.review_bands.items()}
    out.labels = tuple(meta.labels) + tuple(lab for lab in labels if lab not in meta.labels)
    missing = [lab for lab in labels if lab not in out.thresholds]
    if missing:
        out.notes.append(f"thresholds unknown for {', '.join(missing)}: not labels of {out.source}")
    return out


# ---- HTML -----------------------------------------------------------------------------------------------------

def esc(value: Any) -> str:
    """HTML-escaped text (quotes too), safe in element content and attribute values."""
    return html.escape(clean_text(value), quote=True)


def json_blob(element_id: str, obj: Any) -> str:
    """A ``<script type="application/json">`` element holding ``obj``: ASCII-only JSON with ``<``, ``>`` and ``&``
    escaped, so no string in it can close the element or start markup."""
    text = json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


def html_page(title: str, header: str, body: str) -> str:
    """The page shell: CSP and referrer policy, the inline style sheet, ``header`` and ``body`` (HTML)."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
            "<meta name=\"referrer\" content=\"no-referrer\">\n"
            f"<meta name=\"generator\" content=\"{GENERATOR}\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<header>\n{header}\n</header>\n<main>\n{body}\n</main>\n</body>\n</html>\n")


def grid_section(rows: List[Dict[str, Any]], images: List[str], labels: Sequence[str], thresholds: Thresholds,
                 bands: Sequence[Tuple[str, str]], page_size: int = PAGE_SIZE, heading: str = "Photos") -> str:
    """The filterable, sortable, paginated card grid (controls, grid, pager, its data and script)."""
    data = {"labels": list(labels), "thresholds": thresholds.thresholds,
            "review_bands": {k: list(v) for k, v in thresholds.review_bands.items()},
            "bands": [list(b) for b in bands], "page_size": int(page_size), "rows": rows}
    return (f"<section id=\"wv-photos\">\n<h2>{esc(heading)}</h2>\n"
            "<noscript><p class=\"wv-note\">The photo grid needs JavaScript (inline only; the page loads nothing "
            "from the network).</p></noscript>\n"
            "<div id=\"wv-controls\">"
            "<label>label <select id=\"wv-label\"></select></label>"
            "<label>band <select id=\"wv-band\"></select></label>"
            "<label>sort <select id=\"wv-sort\"><option value=\"score-desc\">score, highest first</option>"
            "<option value=\"score-asc\">score, lowest first</option><option value=\"name\">name</option>"
            "<option value=\"order\">file order</option></select></label>"
            "<label>find <input type=\"search\" id=\"wv-query\" placeholder=\"file name\"></label>"
            "<label><input type=\"checkbox\" id=\"wv-overlay\"> heatmaps</label>"
            "<span id=\"wv-count\"></span></div>\n"
            "<div id=\"wv-grid\"></div>\n"
            "<div id=\"wv-pager\"><button type=\"button\" id=\"wv-prev\">\u2190 previous</button>"
            "<span id=\"wv-page\"></span><button type=\"button\" id=\"wv-next\">next \u2192</button></div>\n"
            f"{json_blob('wv-rows', data)}\n{json_blob('wv-images', images)}\n<script>{JS}</script>\n</section>")


def notes_html(notes: Sequence[str]) -> str:
    return "\n".join(f"<p class=\"wv-note\">{esc(n)}</p>" for n in notes)


def _fmt(v: Optional[float]) -> str:
    return "\u2013" if v is None else f"{v:.3f}"


def generated_note() -> str:
    from .. import __version__

    return (f"generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} by wildlife-vision "
            f"{__version__}")


# ---- the review page ---------------------------------------------------------------------------------------

def _band_rank(r: Record) -> Tuple[int, float]:
    return (0 if r.flagged else 1 if r.review else 2), -max(r.scores.values(), default=0.0)


def build_review_page(records_path: PathLike, *, root: Optional[PathLike] = None, model: Optional[PathLike] = None,
                      include_all: bool = False, max_rows: Optional[int] = DEFAULT_MAX_ROWS,
                      thumb_size: int = THUMB_SIZE, workers: int = 1, progress: bool = False,
                      title: Optional[str] = None, page_size: int = PAGE_SIZE) -> Tuple[str, ReviewSummary]:
    """The review page's HTML for a records file, and what it holds. See :func:`write_review_page`."""
    from ..progress import Progress

    records_path = Path(records_path)
    records, notes = read_records(records_path)
    base_dir = records_path.resolve().parent
    root_dir = Path(root) if root is not None else None
    summary = ReviewSummary(n_records=len(records))
    models = sorted({(r.model, r.model_version) for r in records if r.model or r.model_version})
    summary.models = models
    if len(models) > 1:
        notes.append("the records come from more than one model: " + ", ".join(f"{n} {v}" for n, v in models))
    seen_labels: Dict[str, None] = {}
    for r in records:
        for lab in [*r.scores, *r.flagged, *r.review]:
            seen_labels.setdefault(lab, None)
    th = thresholds_for(models, list(seen_labels), model)
    notes += th.notes
    labels = list(th.labels) if th.labels else list(seen_labels)
    summary.thresholds_source = th.source

    errors = [r for r in records if r.error is not None]
    scored = [r for r in records if r.error is None]
    candidates = scored if include_all else [r for r in scored if r.flagged or r.review]
    summary.n_errors, summary.n_candidates = len(errors), len(candidates)
    kept = candidates
    if max_rows is not None and len(candidates) > max_rows:
        kept = sorted(sorted(candidates, key=_band_rank)[:max_rows], key=lambda r: r.line)
        notes.insert(0, f"showing {max_rows:,} of {len(candidates):,} photos (flagged first, then review band, "
                        "highest scores first); pass --max-rows to show more")
    summary.n_shown = len(kept)

    store = ThumbnailStore(size=thumb_size, workers=workers)
    photo_paths = [resolve_path(r.input, base_dir, root_dir) for r in kept]
    heat_jobs = [(i, lab, resolve_path(hp, base_dir, root_dir)) for i, r in enumerate(kept)
                 for lab, hp in r.heatmaps.items()]
    chunk = 64
    with Progress(len(photo_paths) + len(heat_jobs), "report", unit="image",
                  enabled=progress and bool(photo_paths)) as prog:
        for i in range(0, len(photo_paths), chunk):
            store.prefetch(photo_paths[i:i + chunk])
            prog.update(len(photo_paths[i:i + chunk]))
        thumbs = [store.photo(p) for p in photo_paths]
        fits = [None if thumbs[i].note else (thumbs[i].width, thumbs[i].height) for i, _, _ in heat_jobs]
        for i in range(0, len(heat_jobs), chunk):
            store.prefetch([p for _, _, p in heat_jobs[i:i + chunk]], fits[i:i + chunk])
            prog.update(len(heat_jobs[i:i + chunk]))
    rows = []
    for i, (r, thumb) in enumerate(zip(kept, thumbs)):
        row: Dict[str, Any] = {"i": i, "o": r.line, "n": clean_text(r.input), "t": thumb.index, "w": thumb.width,
                               "h": thumb.height, "s": r.scores, "b": {}}
        xs = []
        if thumb.note:
            summary.n_unreadable += 1
            xs.append(f"photo not shown: {thumb.note}")
        if r.flagged:
            row["b"]["flagged"] = r.flagged
        if r.review:
            row["b"]["review"] = r.review
        if include_all:
            rest = [lab for lab in labels if lab not in r.flagged and lab not in r.review]
            if rest:
                row["b"]["none"] = rest
        heat = {}
        for lab, hp in r.heatmaps.items():
            ov = store.overlay(resolve_path(hp, base_dir, root_dir),
                               None if thumb.note else (thumb.width, thumb.height))
            if ov.note:
                summary.n_heatmaps_unreadable += 1
                xs.append(f"heatmap for {lab} not shown: {ov.note}")
            else:
                summary.n_heatmaps += 1
                heat[clean_text(lab)] = ov.index
        if heat:
            row["m"] = heat
        if xs:
            row["x"] = clean_text("; ".join(xs))
        rows.append(row)
    if summary.n_unreadable:
        notes.append(f"{summary.n_unreadable} photo(s) could not be read for a thumbnail and show a placeholder "
                     "with the reason (moved since `predict` ran? pass --root DIR)")
    summary.n_images = len(store.images)
    summary.notes = notes

    bands = [b for b in BANDS if include_all or b[0] != "none"]
    title = title or f"Review: {records_path.name}"
    header = _review_header(title, records_path, records, labels, th, models, summary, notes, include_all)
    body = grid_section(rows, store.images, labels, th, bands, page_size,
                        heading="Flagged and review-band photos" if not include_all else "Photos") \
        + "\n" + errors_section(errors)
    return html_page(title, header, body), summary


def _review_header(title: str, records_path: Path, records: Sequence[Record], labels: Sequence[str],
                   th: Thresholds, models: Sequence[Tuple[str, str]], summary: ReviewSummary,
                   notes: Sequence[str], include_all: bool) -> str:
    who = ", ".join(f"{n} {v}".strip() for n, v in models) or "unknown"
    lines = [f"<h1>{esc(title)}</h1>",
             f"<div class=\"wv-sub\">model <b id=\"wv-model\">{esc(who)}</b> \u00b7 thresholds: {esc(th.source)} "
             f"\u00b7 {esc(records_path.name)} \u00b7 {esc(generated_note())}</div>",
             f"<p id=\"wv-counts\">{summary.n_records:,} rows: {summary.n_records - summary.n_errors:,} scored, "
             f"{summary.n_errors:,} could not be scored; {summary.n_candidates:,} photos "
             f"{'scored' if include_all else 'flagged or in a review band'}"
             + (f", {summary.n_shown:,} of them shown" if summary.n_candidates != summary.n_shown else "") + ".</p>",
             notes_html(notes)]
    flagged = {lab: sum(lab in r.flagged for r in records) for lab in labels}
    review = {lab: sum(lab in r.review for r in records) for lab in labels}
    body = []
    for lab in labels:
        t = th.thresholds.get(lab)
        band = th.review_bands.get(lab)
        body.append(f"<tr><td>{esc(lab)}</td><td class=\"num\">{_fmt(t)}</td><td class=\"num\">"
                    + (f"[{band[0]:.3f}, {band[1]:.3f})" if band else "\u2013")
                    + f"</td><td class=\"num\">{flagged[lab]:,}</td><td class=\"num\">{review[lab]:,}</td></tr>")
    lines.append("<table id=\"wv-labels\"><tr><th>label</th><th class=\"num\">threshold</th>"
                 "<th class=\"num\">review band</th><th class=\"num\">flagged</th><th class=\"num\">in review band"
                 "</th></tr>" + "".join(body) + "</table>")
    lines.append("<div class=\"wv-legend wv-sub\"><span><i class=\"wv-sw\" style=\"background:var(--flag)\"></i>"
                 "flagged (score \u2265 threshold)</span><span><i class=\"wv-sw\" style=\"background:var(--band)\">"
                 "</i>review band</span><span><i class=\"wv-sw\" style=\"background:var(--fg)\"></i>threshold</span>"
                 "<span>hover a photo, press its \u201cheatmap\u201d button or tick \u201cheatmaps\u201d to see what "
                 "the model looked at</span></div>")
    return "\n".join(lines)


def errors_section(errors: Sequence[Record]) -> str:
    """The table of rows that could not be scored: input, error kind, error (open when short)."""
    if not errors:
        return "<section id=\"wv-errors\"><h2>Rows that could not be scored</h2><p>none</p></section>"
    kinds: Dict[str, int] = {}
    for r in errors:
        kinds[r.error_kind or "unknown"] = kinds.get(r.error_kind or "unknown", 0) + 1
    by_kind = ", ".join(f"{k} {n:,}" for k, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
    rows = "".join(f"<tr class=\"wv-error\"><td>{esc(r.input)}</td><td>{esc(r.error_kind or 'unknown')}</td>"
                   f"<td>{esc(r.error)}</td></tr>" for r in errors)
    return (f"<section id=\"wv-errors\"><h2>Rows that could not be scored ({len(errors):,})</h2>"
            f"<details{' open' if len(errors) <= 100 else ''}><summary>{esc(by_kind)}</summary>"
            f"<table><tr><th>input</th><th>error kind</th><th>error</th></tr>{rows}</table></details></section>")


def write_review_page(records_path: PathLike, out_path: PathLike, **options: Any) -> ReviewSummary:
    """Write the review page of ``records_path`` to ``out_path`` (atomically) and return what it holds.

    Options (keyword): ``root`` (folder relative paths in the rows are under), ``model`` (ONNX file whose
    thresholds and review bands to show), ``include_all`` (also photos neither flagged nor in a review band),
    ``max_rows`` (photos in the grid, flagged first; None: no limit), ``thumb_size``, ``workers`` (decoding
    threads), ``progress`` (report on stderr), ``title``, ``page_size`` (cards per page).
    Raises :class:`RecordsError` (not prediction records), ``OSError`` (cannot read or write),
    ``ModelLoadError``/``MetadataError`` (``model`` unreadable).
    """
    from ..data.manifest import atomic_write_text

    text, summary = build_review_page(records_path, **options)
    summary.path = atomic_write_text(out_path, text)
    summary.html_bytes = len(text.encode("utf-8"))
    return summary


__all__ = ["PAGE_SIZE", "DEFAULT_MAX_ROWS", "RecordsError", "Record", "Thresholds", "ReviewSummary",
           "read_records", "resolve_path", "thresholds_for", "build_review_page", "write_review_page",
           "html_page", "grid_section", "errors_section", "json_blob", "esc", "clean_text"]
