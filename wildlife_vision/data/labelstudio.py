"""Label Studio round trips: import a JSON export into a manifest; export predictions as pre-annotations.

Import (``labelstudio-import``) reads Label Studio's *JSON* export (a list of tasks, each with
``data`` and ``annotations[].result[]``) or its *JSON_MIN* export (flat objects with the image URL and
the choices). Only ``choices`` results are used (image classification). Cancelled (skipped)
annotations are ignored. With several annotations, ``policy="latest"`` (default) takes the most
recently updated one; ``policy="majority"`` keeps each label chosen by more than half of the
annotators, ties following the latest annotation. A choice in :data:`NONE_CHOICES` (for example
"none" or "No wildlife product") means: none of the classes (empty labels).

Export (``labelstudio-export``) turns prediction records (``wildlife-vision predict`` JSONL, schema
``wildlife-vision/prediction/v1``, or its CSV) into Label Studio tasks with ``predictions``, most
uncertain first: ordered by the smallest distance of any label's score to that label's threshold.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

from wildlife_vision.data.manifest import join_labels

#: choices (after normalisation) that mean "none of the classes"
NONE_CHOICES = frozenset({"none", "nothing", "negative", "clean", "no_wildlife_product",
                          "no_wildlife", "no_product", "not_wildlife", "no_label", "none_of_the_above"})
POLICIES = ("latest", "majority")
PREDICTION_SCHEMA = "wildlife-vision/prediction/v1"


class LabelStudioError(ValueError):
    """The file is not a Label Studio export / prediction file this module understands."""


def normalise_choice(text: str) -> str:
    """"Rhino horn" -> "rhino_horn", "Live-Animal" -> "live_animal" (lower case, other characters to _)."""
    return re.sub(r"[^0-9a-z]+", "_", str(text).strip().lower()).strip("_")


# ---- import -------------------------------------------------------------------------------------

@dataclass
class ImportResult:
    fieldnames: List[str]
    rows: List[Dict[str, str]]
    counts: Counter = field(default_factory=Counter)
    problems: List[str] = field(default_factory=list)

    def summary(self) -> Dict[str, Any]:
        return {"rows": len(self.rows), **dict(sorted(self.counts.items())), "problems": self.problems[:50]}


def _is_remote(url: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", url))


def resolve_image_url(url: str, image_root: Optional[str] = None, strip_prefixes: Sequence[str] = ()) -> Tuple[str, str]:
    """A Label Studio image reference -> (path or URL, kind).

    kind: ``local-files`` (``/data/local-files/?d=PATH``, PATH relative to ``image_root``, Label
    Studio's LOCAL_FILES_DOCUMENT_ROOT), ``upload`` (``/data/upload/P/FILE`` -> ``image_root/upload/P/FILE``,
    ``image_root`` being Label Studio's media folder), ``stripped`` (a URL starting with one of
    ``strip_prefixes``, the rest taken as a path under ``image_root``), ``remote`` (any other URL, kept
    as it is), ``path`` (a plain path, relative ones under ``image_root``).
    """
    url = str(url).strip()
    root = image_root or ""
    for prefix in strip_prefixes:
        if prefix and url.startswith(prefix):
            return os.path.join(root, unquote(url[len(prefix):]).lstrip("/")), "stripped"
    parts = urlsplit(url)
    path = parts.path
    if path.startswith("/data/local-files"):  # also with a host: http://ls:8080/data/local-files/?d=...
        d = parse_qs(parts.query).get("d")
        if not d:
            raise LabelStudioError(f"local-files URL without ?d=: {url}")
        return os.path.join(root, d[0].lstrip("/") if root else d[0]), "local-files"
    if path.startswith("/data/upload/"):
        return os.path.join(root, unquote(path[len("/data/"):])), "upload"
    if _is_remote(url):
        return url, "remote"
    if url.startswith("data:"):
        raise LabelStudioError("inline data: URLs are not supported; export with file references")
    return (url if os.path.isabs(url) or not root else os.path.join(root, url)), "path"


def _annotation_time(a: Mapping[str, Any]) -> Tuple[str, float]:
    t = a.get("updated_at") or a.get("created_at") or ""
    try:
        i = float(a.get("id") or 0)
    except (TypeError, ValueError):
        i = 0.0
    return (str(t), i)


def _choices_of(result: Any, from_name: Optional[str]) -> Optional[List[str]]:
    """Union of choices in an annotation's result list; None when it has no choices result at all."""
    if not isinstance(result, list):
        return None
    out: List[str] = []
    found = False
    for r in result:
        if not isinstance(r, dict) or r.get("type") != "choices":
            continue
        if from_name and r.get("from_name") != from_name:
            continue
        found = True
        for c in (r.get("value") or {}).get("choices") or []:
            if c not in out:
                out.append(str(c))
    return out if found else None


def _to_tasks(data: Any) -> List[Dict[str, Any]]:
    """Full JSON tasks as they are; JSON_MIN objects turned into the same shape."""
    if isinstance(data, dict) and isinstance(data.get("tasks"), list):
        data = data["tasks"]
    if not isinstance(data, list):
        raise LabelStudioError("a Label Studio JSON export is a list of tasks; this file holds a "
                               f"{type(data).__name__}")
    tasks = []
    for t in data:
        if not isinstance(t, dict):
            raise LabelStudioError(f"task is not an object: {str(t)[:80]}")
        if "data" in t or "annotations" in t:
            tasks.append(t)
            continue
        # JSON_MIN: {"image": ..., "<from_name>": "choice" | {"choices": [...]}, "id": .., "annotator": ..}
        meta_keys = {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time"}
        result = []
        data_fields = {}
        for k, v in t.items():
            if k in meta_keys:
                continue
            if isinstance(v, dict) and "choices" in v:
                result.append({"type": "choices", "from_name": k, "value": {"choices": list(v["choices"])}})
            else:
                data_fields[k] = v
        # a plain string value under a from_name is a single choice; guess it is any non-URL-like field
        # that is not a known data field only when no dict-style choices were found
        if not result:
            for k in ("choice", "label", "labels", "class"):
                if k in data_fields and isinstance(data_fields[k], (str, list)):
                    v = data_fields.pop(k)
                    result.append({"type": "choices", "from_name": k,
                                   "value": {"choices": [v] if isinstance(v, str) else list(v)}})
                    break
        ann = {"id": t.get("annotation_id"), "result": result, "updated_at": t.get("updated_at"),
               "created_at": t.get("created_at"), "was_cancelled": False} if result else None
        tasks.append({"id": t.get("id"), "data": data_fields, "annotations": [ann] if ann else []})
    return tasks


def import_labelstudio(export: os.PathLike, output: os.PathLike, image_root: Optional[str] = None,
                       labels: Optional[Sequence[str]] = None, policy: str = "latest",
                       label_map: Optional[Mapping[str, str]] = None, none_choices: Iterable[str] = (),
                       from_name: Optional[str] = None, image_key: Optional[str] = None,
                       strip_prefixes: Sequence[str] = (), empty_means_none: bool = False) -> ImportResult:
    """Read a Label Studio export into manifest rows (not written; see :func:`wildlife_vision.data.manifest.write_manifest`).

    Image paths are written relative to ``output``'s folder when they are local. ``labels``: the
    allowed label names (after ``label_map`` and normalisation); a task with any other choice is
    skipped and reported. Extra scalar fields of a task's ``data`` become columns (e.g. ``seller``,
    ``listing``), next to ``ls_task_id``, ``ls_annotations`` (annotations used) and ``ls_agreement``
    (1 when they all chose the same labels).
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    try:
        data = json.loads(Path(export).read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise LabelStudioError(f"{export} is not JSON ({e}); export the project as JSON or JSON_MIN") from None
    tasks = _to_tasks(data)
    out_dir = Path(output).resolve().parent
    nones = set(NONE_CHOICES) | {normalise_choice(c) for c in none_choices}
    lmap = {k: v for k, v in (label_map or {}).items()}
    res = ImportResult(fieldnames=["image", "labels"], rows=[])
    extra_cols: List[str] = []
    c = res.counts
    c["tasks"] = len(tasks)

    def map_choice(ch: str) -> str:
        if ch in lmap:
            return lmap[ch]
        n = normalise_choice(ch)
        return lmap.get(n, n)

    allowed = None if not labels else {map_choice(x) for x in labels}

    for t in tasks:
        tid = t.get("id")
        tdata = t.get("data") or {}
        key = image_key or ("image" if "image" in tdata else next(
            (k for k, v in tdata.items() if isinstance(v, str) and re.search(r"\.(jpe?g|png|webp|gif|bmp|tiff?)($|\?)",
                                                                            v, re.I)), None))
        if not key or key not in tdata:
            c["skipped_no_image"] += 1
            res.problems.append(f"task {tid}: no image field in data (keys {sorted(tdata)})")
            continue
        anns = [a for a in (t.get("annotations") or []) if isinstance(a, dict)]
        live = [a for a in anns if not a.get("was_cancelled")]
        if anns and not live:
            c["skipped_cancelled"] += 1
            continue
        chosen: List[Tuple[Tuple[str, float], List[str]]] = []
        for a in live:
            ch = _choices_of(a.get("result"), from_name)
            if not ch:
                if empty_means_none:
                    chosen.append((_annotation_time(a), []))
                else:
                    c["annotations_without_choice"] += 1
                continue
            mapped = [map_choice(x) for x in ch]
            labs = [m for m in mapped if m not in nones]
            if labs and len(labs) < len(mapped):
                c["none_with_labels"] += 1
                res.problems.append(f"task {tid}: 'none' chosen together with {labs}; kept the labels")
            chosen.append((_annotation_time(a), list(dict.fromkeys(labs))))
        if not chosen:
            c["skipped_unlabelled"] += 1
            continue
        chosen.sort(key=lambda x: x[0])
        latest = chosen[-1][1]
        if policy == "latest" or len(chosen) == 1:
            final = latest
        else:
            votes = Counter(lab for _, labs in chosen for lab in labs)
            half = len(chosen) / 2
            order = list(dict.fromkeys(lab for _, labs in chosen for lab in labs))
            final = [lab for lab in order if votes[lab] > half or (votes[lab] == half and lab in latest)]
        agree = len({tuple(sorted(labs)) for _, labs in chosen}) == 1
        if not agree:
            c["disagreements"] += 1
        if allowed is not None:
            unknown = [lab for lab in final if lab not in allowed]
            if unknown:
                c["skipped_unknown_label"] += 1
                res.problems.append(f"task {tid}: label(s) {unknown} not in --labels {sorted(allowed)}")
                continue
        try:
            path, kind = resolve_image_url(str(tdata[key]), image_root, strip_prefixes)
        except LabelStudioError as e:
            c["skipped_bad_image_url"] += 1
            res.problems.append(f"task {tid}: {e}")
            continue
        c[f"images_{kind}"] += 1
        if kind != "remote":
            absolute = Path(path).resolve() if not os.path.isabs(path) else Path(path)
            if not absolute.is_file():
                c["missing_files"] += 1
                if c["missing_files"] <= 20:
                    res.problems.append(f"task {tid}: image file not found: {absolute}")
            try:
                path = os.path.relpath(absolute, out_dir)
            except ValueError:  # another drive on Windows
                path = str(absolute)
            path = path.replace(os.sep, "/")
        row = {"image": path, "labels": join_labels(final)}
        for k, v in tdata.items():
            if k == key or k in ("image", "labels") or isinstance(v, (dict, list)):
                continue
            col = k if k not in ("ls_task_id", "ls_annotations", "ls_agreement") else f"data_{k}"
            if col not in extra_cols:
                extra_cols.append(col)
            row[col] = "" if v is None else str(v)
        row["ls_task_id"] = "" if tid is None else str(tid)
        row["ls_annotations"] = str(len(chosen))
        row["ls_agreement"] = "1" if agree else "0"
        res.rows.append(row)
        c["imported"] += 1
    if "split" in extra_cols:
        extra_cols.remove("split")
        extra_cols.insert(0, "split")
    res.fieldnames = ["image", "labels"] + extra_cols + ["ls_task_id", "ls_annotations", "ls_agreement"]
    return res


# ---- export -------------------------------------------------------------------------------------

@dataclass
class ExportResult:
    tasks: List[Dict[str, Any]]
    counts: Counter = field(default_factory=Counter)
    problems: List[str] = field(default_factory=list)


def read_prediction_records(path: os.PathLike) -> Tuple[List[Dict[str, Any]], Counter]:
    """Records from a `wildlife-vision predict` output: JSONL (one object a line) or CSV (``score_<label>`` columns).

    A last line cut short (no newline, not valid JSON) is skipped and counted; other bad lines raise.
    """
    text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
    counts: Counter = Counter()
    out: List[Dict[str, Any]] = []
    if str(path).lower().endswith(".csv"):
        for row in csv.DictReader(io.StringIO(text, newline="")):
            scores = {}
            for k, v in row.items():
                if k and k.startswith("score_") and v not in (None, ""):
                    scores[k[len("score_"):]] = float(v)
            out.append({"input": row.get("input", ""), "error": row.get("error") or None, "scores": scores,
                        "flagged": [x for x in (row.get("flagged") or "").split(";") if x],
                        "model": row.get("model"), "model_version": row.get("model_version"),
                        "schema": row.get("schema")})
        return out, counts
    lines = text.split("\n")
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):  # the last line has no newline: cut short by an interrupted run
                counts["incomplete_last_line"] += 1
                continue
            raise LabelStudioError(f"{path} line {n} is not JSON; expected `wildlife-vision predict` JSONL") from None
        if not isinstance(rec, dict) or "input" not in rec:
            raise LabelStudioError(f"{path} line {n} is not a prediction record (no 'input')")
        if rec.get("schema") not in (None, PREDICTION_SCHEMA):
            counts["other_schema"] += 1
        out.append(rec)
    return out, counts


def parse_thresholds(text: Optional[str]) -> Dict[str, float]:
    """``"ivory=0.4,live_animal=0.6"`` -> dict; raises ValueError with the offending item."""
    out: Dict[str, float] = {}
    if not text:
        return out
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ValueError(f"--thresholds items are LABEL=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        t = float(v)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"threshold for {k!r} must be in [0, 1], got {t}")
        out[k.strip()] = t
    return out


def image_url(input_path: str, image_root: Optional[str], url_prefix: str) -> str:
    """The ``data.image`` value for an input: URLs unchanged; local paths as ``url_prefix`` + path (relative to ``image_root``)."""
    if _is_remote(input_path) or input_path.startswith("/data/"):
        return input_path
    p = input_path
    if image_root:
        try:
            p = os.path.relpath(os.path.abspath(input_path), os.path.abspath(image_root))
        except ValueError:
            p = input_path
    p = p.replace(os.sep, "/")
    return f"{url_prefix}{quote(p, safe='/')}" if url_prefix else p


def predictions_to_tasks(records: Sequence[Mapping[str, Any]], thresholds: Mapping[str, float],
                         default_threshold: float = 0.5, image_root: Optional[str] = None,
                         url_prefix: str = "/data/local-files/?d=", from_name: str = "label", to_name: str = "image",
                         none_choice: Optional[str] = "none", label_map: Optional[Mapping[str, str]] = None,
                         limit: Optional[int] = None) -> ExportResult:
    """Label Studio tasks with pre-annotations, sorted most uncertain first.

    For each record: ``margin`` = min over labels of |score - threshold| (the distance to the nearest
    decision boundary; small = uncertain), ``closest_label`` the label attaining it. The prediction's
    choices are the labels scoring at or above their threshold (or ``none_choice`` when there are none);
    its ``score`` is the margin, so sorting by prediction score in Label Studio also puts uncertain
    tasks first. Records with ``error`` set (or no scores) are left out and counted.
    """
    res = ExportResult(tasks=[])
    rows = []
    lmap = dict(label_map or {})
    seen: Dict[str, int] = {}
    for rec in records:
        if rec.get("error"):
            res.counts["left_out_error"] += 1
            continue
        scores = rec.get("scores") or {}
        if not isinstance(scores, dict) or not scores:
            res.counts["left_out_no_scores"] += 1
            continue
        inp = str(rec.get("input", ""))
        if inp in seen:
            res.counts["duplicate_inputs_replaced"] += 1
            rows[seen[inp]] = None
        margins = {lab: abs(float(s) - float(thresholds.get(lab, default_threshold))) for lab, s in scores.items()}
        closest = min(margins, key=lambda lab: (margins[lab], lab))
        flagged = [lab for lab, s in scores.items() if float(s) >= float(thresholds.get(lab, default_threshold))]
        seen[inp] = len(rows)
        rows.append((margins[closest], inp, closest, flagged, rec))
    rows = [r for r in rows if r is not None]
    rows.sort(key=lambda r: (r[0], r[1]))
    if limit is not None:
        res.counts["left_out_limit"] = max(0, len(rows) - limit)
        rows = rows[:limit]
    for rank, (margin, inp, closest, flagged, rec) in enumerate(rows, start=1):
        choices = [lmap.get(lab, lab) for lab in flagged] or ([none_choice] if none_choice else [])
        model = " ".join(str(x) for x in (rec.get("model"), rec.get("model_version")) if x) or "wildlife-vision"
        result = [{"id": f"wv{rank}", "from_name": from_name, "to_name": to_name, "type": "choices",
                   "value": {"choices": choices}}] if choices else []
        data = {"image": image_url(inp, image_root, url_prefix), "input": inp, "uncertainty_rank": rank,
                "margin": round(margin, 6), "closest_label": closest,
                "flagged": ";".join(flagged)}
        for lab, s in rec["scores"].items():
            data[f"score_{lab}"] = round(float(s), 6)
        res.tasks.append({"data": data, "predictions": [{"model_version": model, "score": round(margin, 6),
                                                          "result": result}]})
    res.counts["tasks"] = len(res.tasks)
    return res


__all__ = ["import_labelstudio", "ImportResult", "resolve_image_url", "normalise_choice", "NONE_CHOICES",
           "predictions_to_tasks", "read_prediction_records", "parse_thresholds", "image_url", "ExportResult",
           "LabelStudioError", "POLICIES"]
