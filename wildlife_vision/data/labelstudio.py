"""Label Studio round trips: import an export into a manifest; export predictions as pre-annotations.

Import (``labelstudio-import``) reads Label Studio's own exports of an image classification project:
*JSON* (a list of tasks, each with ``data`` and ``annotations[].result[]``), *JSON_MIN* (one flat object per
annotation: the task's data, the choices under the control's name, ``id`` = the task id) and *CSV* (the
same rows as JSON_MIN). JSON_MIN/CSV rows are grouped by task id, so a photo annotated by three people is one
row of the manifest. Only one ``Choices`` control is read (``from_name``: given, the config's only one, or
the only one in the export); other controls (e.g. a "quality" control) are ignored and reported. Choices
become labels through :class:`~wildlife_vision.data.labelstudio_config.ChoiceMapper`; a choice that maps to
nothing (non-ASCII text without ``--label-map`` or an ``alias``) stops the import with the list of such
values. Cancelled (skipped) annotations and annotations whose review was rejected (``last_action ==
"rejected"``, Label Studio Enterprise) are dropped. When a task has ``ground_truth`` annotations they decide
its labels; otherwise ``policy="latest"`` (default) takes the most recently updated annotation and
``policy="majority"`` keeps each label chosen by more than half of the annotators, ties following the latest.
Drafts and predictions are never labels. Columns written by the export (``margin``, ``score_<label>``...)
are not imported.

Export (``labelstudio-export``) turns prediction records (``wildlife-vision predict`` JSONL, schema
``wildlife-vision/prediction/v1``, or its CSV) into Label Studio tasks with ``predictions``, most
uncertain first: ordered by the smallest distance of any label's score to that label's threshold. The
choices are the project config's Choice values (the documented config unless another is given).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

from wildlife_vision.data.labelstudio_config import (NONE_CHOICES, ChoiceMapper, ChoicesControl, LabelConfig,
                                                      LabelStudioError, normalise_choice, read_config)
from wildlife_vision.data.manifest import join_labels

POLICIES = ("latest", "majority")
PREDICTION_SCHEMA = "wildlife-vision/prediction/v1"
LOCAL_FILES_PREFIX = "/data/local-files/?d="
#: task data fields written by :func:`predictions_to_tasks` and `data select` (model outputs): never imported as
#: manifest columns
MODEL_DATA_FIELDS = frozenset({"input", "uncertainty_rank", "margin", "closest_label", "flagged", "selected_for",
                               "selection_rank"})
MODEL_DATA_PREFIXES = ("score_",)
#: JSON_MIN / CSV keys that describe the annotation, not the task
_MIN_META = ("id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time")
#: control names tried for JSON_MIN when neither --from-name nor --config says
_GUESS_NAMES = ("choice", "label", "labels", "class")


# ---- import -------------------------------------------------------------------------------------

@dataclass
class ImportResult:
    fieldnames: List[str]
    rows: List[Dict[str, str]]
    counts: Counter = field(default_factory=Counter)
    problems: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    export_format: str = "JSON"
    from_name: Optional[str] = None

    def summary(self) -> Dict[str, Any]:
        return {"rows": len(self.rows), "format": self.export_format, "from_name": self.from_name,
                **dict(sorted(self.counts.items())), "notes": self.notes, "problems": self.problems[:50]}


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


def _is_rejected(a: Mapping[str, Any]) -> bool:
    """A reviewer rejected it: Label Studio Enterprise sets ``last_action`` to "rejected" (or lists reviews)."""
    if a.get("last_action") == "rejected":
        return True
    reviews = a.get("reviews")
    if isinstance(reviews, list) and reviews and isinstance(reviews[-1], dict):
        return reviews[-1].get("accepted") is False
    return False


def _choices_of(result: Any, from_name: str, other: Counter) -> Optional[List[str]]:
    """The choices of control ``from_name`` in a result list (None: no such result); counts other controls."""
    if not isinstance(result, list):
        return None
    out: List[str] = []
    found = False
    for r in result:
        if not isinstance(r, dict):
            continue
        if r.get("from_name") != from_name:
            other[f"{r.get('from_name')} ({r.get('type')})"] += 1
            continue
        if r.get("type") != "choices":
            raise LabelStudioError(f"control {from_name!r} holds {r.get('type')} results, not choices; only Choices "
                                   "(image classification) can be imported")
        found = True
        for c in (r.get("value") or {}).get("choices") or []:
            if str(c) not in out:
                out.append(str(c))
    return out if found else None


def _min_value(v: Any) -> Any:
    """A JSON_MIN/CSV cell: CSV writes a multiple choice as the JSON text ``{"choices": [...]}``."""
    if isinstance(v, str) and v[:1] in "{[":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


def _min_choices(v: Any, key: str) -> Optional[List[str]]:
    v = _min_value(v)
    if v is None or v == "":
        return None
    if isinstance(v, str):
        return [v]
    if isinstance(v, dict) and isinstance(v.get("choices"), list):
        return [str(c) for c in v["choices"]]
    if isinstance(v, list) and all(isinstance(c, str) for c in v):
        return list(v)
    raise LabelStudioError(f"field {key!r} does not hold choices ({str(v)[:80]}); only Choices (image "
                           "classification) can be imported")


def _load_export(path: os.PathLike) -> Tuple[str, List[Dict[str, Any]]]:
    """(format, items): ``JSON`` tasks, or ``JSON_MIN`` / ``CSV`` flat rows."""
    text = Path(path).read_text(encoding="utf-8-sig")
    if str(path).lower().endswith(".csv") or (text.lstrip()[:1] not in "[{" and text.strip()):
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        if not rows or "id" not in rows[0]:
            raise LabelStudioError(f"{path}: not a Label Studio CSV export (no 'id' column)")
        return "CSV", rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LabelStudioError(f"{path} is not JSON ({e}); export the project as JSON, JSON_MIN or CSV") from None
    if isinstance(data, dict) and isinstance(data.get("tasks"), list):
        data = data["tasks"]
    if not isinstance(data, list):
        raise LabelStudioError(f"a Label Studio export is a list of tasks; this file holds a {type(data).__name__}")
    for t in data:
        if not isinstance(t, dict):
            raise LabelStudioError(f"task is not an object: {str(t)[:80]}")
    full = [t for t in data if "data" in t or "annotations" in t]
    if full and len(full) != len(data):
        raise LabelStudioError("the file mixes JSON tasks and JSON_MIN rows")
    return ("JSON" if full or not data else "JSON_MIN"), data


def _pick_json_control(tasks: Sequence[Mapping[str, Any]]) -> str:
    kinds: Dict[str, Counter] = {}
    for t in tasks:
        for a in t.get("annotations") or []:
            for r in (a.get("result") if isinstance(a, dict) else None) or []:
                if isinstance(r, dict):
                    kinds.setdefault(str(r.get("type")), Counter())[str(r.get("from_name"))] += 1
    names = sorted(kinds.get("choices", {}))
    if len(names) == 1:
        return names[0]
    if not names:
        found = ", ".join(f"{k} ({', '.join(sorted(v))})" for k, v in sorted(kinds.items())) or "no results at all"
        raise LabelStudioError(f"the export has no choices results (found: {found}); labelstudio-import reads "
                               "Choices (image classification) only")
    raise LabelStudioError(f"the export has several Choices controls ({', '.join(names)}); pass --from-name "
                           "(or --config) to say which one holds the labels")


def _pick_min_control(rows: Sequence[Mapping[str, Any]]) -> str:
    dict_keys = sorted({k for r in rows for k, v in r.items()
                        if isinstance(_min_value(v), dict) and "choices" in _min_value(v)})
    keys = set().union(*(r.keys() for r in rows)) if rows else set()
    cands = sorted(set(dict_keys) | {k for k in _GUESS_NAMES if k in keys})
    if len(cands) == 1:
        return cands[0]
    if cands:
        raise LabelStudioError(f"fields {cands} could each be the Choices control; pass --from-name (or --config)")
    raise LabelStudioError("a JSON_MIN/CSV export writes a single choice as plain text, indistinguishable from a "
                           "data field: pass --from-name NAME (the Choices control's name) or --config PROJECT.xml "
                           f"(fields: {sorted(k for k in keys if k not in _MIN_META)})")


def _min_to_tasks(rows: Sequence[Mapping[str, Any]], from_name: str, ignore: Iterable[str],
                  res: ImportResult) -> List[Dict[str, Any]]:
    """JSON_MIN/CSV rows -> JSON-shaped tasks, one per task id (one annotation per row)."""
    ignore = set(ignore) | {from_name}
    groups: Dict[Any, List[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(str(r.get("id")) if r.get("id") not in (None, "") else f"row{len(groups)}", []).append(r)
    # fields whose presence or value differs between a task's rows belong to the annotation (another control)
    per_annotation = set()
    for g in groups.values():
        keys = set().union(*(r.keys() for r in g)) - set(_MIN_META) - ignore
        for k in keys:
            vals = {json.dumps(_min_value(r.get(k)), sort_keys=True, ensure_ascii=False) for r in g}
            if len(vals) > 1 or any(isinstance(_min_value(r.get(k)), (dict, list)) for r in g):
                per_annotation.add(k)
    dropped = sorted((ignore - {from_name} | per_annotation) & set().union(*(r.keys() for r in rows)))
    if dropped:
        res.notes.append(f"fields {dropped} are other controls or differ between annotators: not imported")
    tasks = []
    for tid, g in groups.items():
        data = {k: _min_value(v) for k, v in g[0].items()
                if k not in _MIN_META and k not in ignore and k not in per_annotation}
        anns = []
        for r in g:
            ch = _min_choices(r.get(from_name), from_name)
            if r.get("annotation_id") in (None, "") and ch is None:
                continue
            result = [{"type": "choices", "from_name": from_name, "value": {"choices": ch}}] if ch is not None else []
            anns.append({"id": r.get("annotation_id"), "completed_by": r.get("annotator"), "result": result,
                         "created_at": r.get("created_at"), "updated_at": r.get("updated_at"), "was_cancelled": False})
        tasks.append({"id": g[0].get("id"), "data": data, "annotations": anns})
    res.counts["export_rows"] = len(rows)
    return tasks


def import_labelstudio(export: os.PathLike, output: os.PathLike, image_root: Optional[str] = None,
                       labels: Optional[Sequence[str]] = None, policy: str = "latest",
                       label_map: Optional[Mapping[str, str]] = None, none_choices: Iterable[str] = (),
                       from_name: Optional[str] = None, image_key: Optional[str] = None,
                       strip_prefixes: Sequence[str] = (), empty_means_none: bool = False,
                       config: Optional[LabelConfig] = None, use_ground_truth: bool = True) -> ImportResult:
    """Read a Label Studio export into manifest rows (not written; see :func:`wildlife_vision.data.manifest.write_manifest`).

    Image paths are written relative to ``output``'s folder when they are local. ``labels``: the
    allowed label names (after mapping); a task with any other label is skipped and reported. Extra scalar
    fields of a task's ``data`` become columns (e.g. ``seller``, ``listing``; not the export's model columns),
    next to ``ls_task_id``, ``ls_annotations`` (annotations used), ``ls_agreement`` (1 when they all chose
    the same labels) and ``ls_ground_truth`` (1 when a ground-truth annotation decided). Raises
    :class:`LabelStudioError` for an export it cannot read faithfully: no Choices results, an ambiguous
    control, or choices that map to no label (listed).
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    fmt, items = _load_export(export)
    res = ImportResult(fieldnames=["image", "labels"], rows=[], export_format=fmt)
    control: Optional[ChoicesControl] = None
    ignore: List[str] = []
    if config is not None:
        control = config.control(from_name)
        from_name = control.name
        ignore = [c.name for c in config.choices if c.name != from_name] + list(config.other_controls)
        if not image_key and control.to_names:
            image_key = config.objects.get(control.to_names[0])
    if fmt == "JSON":
        from_name = from_name or _pick_json_control(items)
        tasks = items
    else:
        from_name = from_name or _pick_min_control(items)
        tasks = _min_to_tasks(items, from_name, ignore, res)
    res.from_name = from_name
    mapper = ChoiceMapper(control, label_map, none_choices)
    known = None if control is None else set(control.values) | set(control.aliases.values())
    out_dir = Path(output).resolve().parent
    extra_cols: List[str] = []
    unmapped: Counter = Counter()
    not_in_config: Counter = Counter()
    other_controls: Counter = Counter()
    model_cols: set = set()
    c = res.counts
    c["tasks"] = len(tasks)
    allowed = None if not labels else {lab.strip() for lab in labels}

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
        c["annotations_cancelled"] += len(anns) - len(live)
        rejected = [a for a in live if _is_rejected(a)]
        c["annotations_rejected"] += len(rejected)
        live = [a for a in live if not _is_rejected(a)]
        if anns and not live:
            c["skipped_cancelled_or_rejected"] += 1
            continue
        if not anns and (t.get("drafts") or t.get("predictions")):
            c["skipped_drafts_or_predictions_only"] += 1
            continue
        chosen: List[Tuple[Tuple[str, float], List[str], bool]] = []
        for a in live:
            ch = _choices_of(a.get("result"), from_name, other_controls)
            if not ch:
                if empty_means_none:
                    chosen.append((_annotation_time(a), [], bool(a.get("ground_truth"))))
                else:
                    c["annotations_without_choice"] += 1
                continue
            mapped = []
            for x in ch:
                if known is not None and x not in known:
                    not_in_config[x] += 1
                lab = mapper.to_label(x)
                if lab is None:
                    unmapped[x] += 1
                else:
                    mapped.append(lab)
            labs = [m for m in mapped if m]
            if labs and len(labs) < len(mapped):
                c["none_with_labels"] += 1
                res.problems.append(f"task {tid}: 'none' chosen together with {labs}; kept the labels")
            chosen.append((_annotation_time(a), list(dict.fromkeys(labs)), bool(a.get("ground_truth"))))
        if not chosen:
            c["skipped_unlabelled"] += 1
            continue
        chosen.sort(key=lambda x: x[0])
        gt = [x for x in chosen if x[2]] if use_ground_truth else []
        deciding = gt or chosen
        latest = deciding[-1][1]
        if gt or policy == "latest" or len(chosen) == 1:
            final = latest
        else:
            votes = Counter(lab for _, labs, _ in chosen for lab in labs)
            half = len(chosen) / 2
            order = list(dict.fromkeys(lab for _, labs, _ in chosen for lab in labs))
            final = [lab for lab in order if votes[lab] > half or (votes[lab] == half and lab in latest)]
        if gt:
            c["decided_by_ground_truth"] += 1
        agree = len({tuple(sorted(labs)) for _, labs, _ in chosen}) == 1
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
            if k in MODEL_DATA_FIELDS or k.startswith(MODEL_DATA_PREFIXES):
                model_cols.add(k)
                continue
            col = k if not k.startswith("ls_") else f"data_{k}"
            if col not in extra_cols:
                extra_cols.append(col)
            row[col] = "" if v is None else str(v)
        row["ls_task_id"] = "" if tid is None else str(tid)
        row["ls_annotations"] = str(len(chosen))
        row["ls_agreement"] = "1" if agree else "0"
        row["ls_ground_truth"] = "1" if gt else "0"
        res.rows.append(row)
        c["imported"] += 1
    if not res.rows and c["annotations_without_choice"] and other_controls:
        raise LabelStudioError(f"no annotation has a result of control {from_name!r}; the export holds "
                               f"{sorted(other_controls)}. labelstudio-import reads Choices (image classification) only")
    if unmapped:
        listed = ", ".join(f"{v!r} ({n}x)" for v, n in unmapped.most_common())
        raise LabelStudioError(f"choices that map to no label: {listed}. Map each one to a manifest label with "
                               "--label-map FILE (JSON {\"choice\": \"label\"} or CHOICE=LABEL lines) or --map "
                               "CHOICE=LABEL, or give the Choice an alias in the labelling config (--config); "
                               "nothing was written")
    if not_in_config:
        res.notes.append(f"choices not in the config's Choice values: {dict(not_in_config)}")
    if other_controls:
        res.notes.append(f"only control {from_name!r} was read; ignored results of other controls: "
                         f"{dict(sorted(other_controls.items()))}")
    if model_cols:
        res.notes.append(f"model columns from labelstudio-export not imported: {sorted(model_cols)}")
    if fmt != "JSON":
        res.notes.append(f"{fmt} exports carry no ground_truth, review or cancelled state; export JSON for those")
    if "split" in extra_cols:
        extra_cols.remove("split")
        extra_cols.insert(0, "split")
    res.fieldnames = (["image", "labels"] + extra_cols
                      + ["ls_task_id", "ls_annotations", "ls_agreement", "ls_ground_truth"])
    return res


# ---- export -------------------------------------------------------------------------------------

@dataclass
class ExportResult:
    tasks: List[Dict[str, Any]]
    counts: Counter = field(default_factory=Counter)
    problems: List[str] = field(default_factory=list)
    choices: Dict[str, str] = field(default_factory=dict)   # label -> Choice written


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
    """The ``data.image`` value for an input: URLs unchanged; local paths as ``url_prefix`` + path (relative to ``image_root``).

    Raises :class:`LabelStudioError` when a local path is not under ``image_root`` (Label Studio would
    answer 404), or when ``url_prefix`` is local-files and there is no ``image_root``."""
    if _is_remote(input_path) or input_path.startswith("/data/"):
        return input_path
    p = input_path
    if image_root:
        try:
            p = os.path.relpath(os.path.abspath(input_path), os.path.abspath(image_root))
        except ValueError:
            p = ".."
        if p == ".." or p.startswith(".." + os.sep):
            raise LabelStudioError(f"{input_path} is not under --image-root {image_root}; Label Studio serves "
                                   "local files from under its LOCAL_FILES_DOCUMENT_ROOT only")
    elif url_prefix.startswith("/data/local-files"):
        raise LabelStudioError("--image-root is needed: Label Studio resolves /data/local-files/?d= paths "
                               "against its LOCAL_FILES_DOCUMENT_ROOT (pass that folder, or --url-prefix '' for "
                               "plain paths)")
    p = p.replace(os.sep, "/")
    return f"{url_prefix}{quote(p, safe='/')}" if url_prefix else p


def result_id(image: str, from_name: str, model_version: str) -> str:
    """A result id unique per task and control, the same on every run: 12 hex digits of a hash."""
    return hashlib.sha1(f"{model_version}\0{image}\0{from_name}".encode("utf-8", "surrogateescape")).hexdigest()[:12]


AUTO = object()  #: ``none_choice`` default: the config's own 'none' Choice, if it has one


def predictions_to_tasks(records: Sequence[Mapping[str, Any]], thresholds: Mapping[str, float],
                         default_threshold: Optional[float] = None, image_root: Optional[str] = None,
                         url_prefix: str = LOCAL_FILES_PREFIX, config: Optional[LabelConfig] = None,
                         from_name: Optional[str] = None, to_name: Optional[str] = None, none_choice: Any = AUTO,
                         label_map: Optional[Mapping[str, str]] = None,
                         choice_map: Optional[Mapping[str, str]] = None, limit: Optional[int] = None) -> ExportResult:
    """Label Studio tasks with pre-annotations, sorted most uncertain first.

    For each record: ``margin`` = min over labels of |score - threshold| (the distance to the nearest
    decision boundary; small = uncertain), ``closest_label`` the label attaining it. The prediction's
    choices are the config's Choices (``config``, default the documented one) for the labels scoring at or
    above their threshold, or the config's 'none' Choice when there are none; its ``score`` is the margin, so
    sorting by prediction score in Label Studio also puts uncertain tasks first. ``label_map`` overrides
    label -> Choice; ``choice_map`` is the import's Choice -> label map (used in reverse). Every label needs a
    threshold (``thresholds`` or ``default_threshold``) and a Choice, else :class:`LabelStudioError` lists
    them. A single-choice control (``choice="single"``) gets only the top-scoring flagged label (counted).
    Records with ``error`` set (or no scores) are left out and counted.
    """
    config = config or read_config(None)
    control = config.control(from_name)
    to_name = to_name or (control.to_names[0] if control.to_names else "image")
    if control.to_names and to_name not in control.to_names:
        raise LabelStudioError(f"--to-name {to_name!r}: control {control.name!r} labels {control.to_names}")
    data_key = config.objects.get(to_name, "image")
    stored = [control.stored(v) for v in control.values]
    choice_of = ChoiceMapper(control, choice_map).choice_for()
    for lab, ch in (label_map or {}).items():
        if ch not in stored:
            raise LabelStudioError(f"--map {lab}={ch}: {ch!r} is not a Choice of {control.name!r} ({stored})")
        choice_of[lab] = ch
    if none_choice is AUTO:
        none_choice = choice_of.get("")
    elif none_choice and none_choice not in stored:
        raise LabelStudioError(f"--none-choice {none_choice!r} is not a Choice of {control.name!r} ({stored})")
    res = ExportResult(tasks=[], choices={k: v for k, v in choice_of.items() if k})
    good = [r for r in records if not r.get("error") and isinstance(r.get("scores"), dict) and r.get("scores")]
    all_labels = sorted({lab for r in good for lab in r["scores"]})
    no_threshold = [lab for lab in all_labels if lab not in thresholds] if default_threshold is None else []
    if no_threshold:
        raise LabelStudioError(f"no threshold for {no_threshold}: pass --model MODEL.onnx (the model that wrote the "
                               "predictions) or --thresholds LABEL=T,...; --default-threshold T only on purpose")
    no_choice = [lab for lab in all_labels if lab not in choice_of]
    if no_choice:
        raise LabelStudioError(f"labels {no_choice} have no Choice in control {control.name!r} of {config.source} "
                               f"(Choices: {stored}); add them to the config, or map with --map LABEL=CHOICE")
    rows = []
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
        th = {lab: float(thresholds.get(lab, default_threshold)) for lab in scores}
        margins = {lab: abs(float(s) - th[lab]) for lab, s in scores.items()}
        closest = min(margins, key=lambda lab: (margins[lab], lab))
        flagged = [lab for lab, s in scores.items() if float(s) >= th[lab]]
        seen[inp] = len(rows)
        rows.append((margins[closest], inp, closest, flagged, rec))
    rows = [r for r in rows if r is not None]
    rows.sort(key=lambda r: (r[0], r[1]))
    if limit is not None:
        res.counts["left_out_limit"] = max(0, len(rows) - limit)
        rows = rows[:limit]
    for rank, (margin, inp, closest, flagged, rec) in enumerate(rows, start=1):
        picked = flagged
        if len(flagged) > 1 and not control.multiple:  # choice="single": Label Studio takes one Choice
            picked = [max(flagged, key=lambda lab: (float(rec["scores"][lab]), lab))]
            res.counts["single_choice_kept_top_label"] += 1
        choices = [choice_of[lab] for lab in picked] or ([none_choice] if none_choice else [])
        model = " ".join(str(x) for x in (rec.get("model"), rec.get("model_version")) if x) or "wildlife-vision"
        url = image_url(inp, image_root, url_prefix)
        result = [{"id": result_id(url, control.name, model), "from_name": control.name, "to_name": to_name,
                   "type": "choices", "value": {"choices": choices}}] if choices else []
        data = {data_key: url, "input": inp, "uncertainty_rank": rank, "margin": round(margin, 6),
                "closest_label": closest, "flagged": ";".join(flagged)}
        for lab, s in rec["scores"].items():
            data[f"score_{lab}"] = round(float(s), 6)
        res.tasks.append({"data": data, "predictions": [{"model_version": model, "score": round(margin, 6),
                                                          "result": result}]})
    res.counts["tasks"] = len(res.tasks)
    return res


__all__ = ["import_labelstudio", "ImportResult", "resolve_image_url", "normalise_choice", "NONE_CHOICES",
           "predictions_to_tasks", "read_prediction_records", "parse_thresholds", "image_url", "ExportResult",
           "LabelStudioError", "POLICIES", "MODEL_DATA_FIELDS", "result_id", "LOCAL_FILES_PREFIX", "AUTO"]
