"""Several models on the same photos: AP and operating points per model, paired bootstrap differences per pair,
speed measured in the same run, slices by manifest column and, on request, robustness to benign edits.

:func:`compare_models` scores every model once on one manifest split (ONNX files through
``wildlife_vision.load_model``; training run folders and ``.pt`` checkpoints through the trainer's checkpoint
scorer, :func:`~wildlife_vision.evaluation.evaluate.checkpoint_scorer`), keeps the photos that *every* model could
read (a photo one model fails on is dropped for all of them, and counted), and draws one set of bootstrap resamples
(:func:`~wildlife_vision.evaluation.bootstrap.resample_indices`: photos, or whole near-duplicate groups when the
manifest has a ``group`` column). Every figure of every model and every difference between two models is computed
on those same resamples, which makes the difference intervals *paired*: the photos that are hard for one model are
hard for the other in the same resample, so the interval of AP(b) - AP(a) is much narrower than the two AP
intervals side by side suggest.

The result (``wildlife-vision/compare/v1``) is a JSON-ready dict; :func:`write_comparison` writes it as
``compare.json`` and ``compare.md`` with the plots (:mod:`.compare_report`). Numpy only; no torch is imported
here (a checkpoint is scored by the ``[train]`` extra's plugin).
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from wildlife_vision.data.manifest import Sample, file_sha256, read_manifest, targets_for
from wildlife_vision.evaluation.bootstrap import CONFIDENCE, DEFAULT_RESAMPLES, percentile_interval, resample_indices
from wildlife_vision.evaluation.evaluate import checkpoint_scorer, group_ids, score_onnx, select_split
from wildlife_vision.evaluation.metrics import average_precision, precision_recall_curve
from wildlife_vision.progress import Progress

log = logging.getLogger(__name__)

SCHEMA = "wildlife-vision/compare/v1"
#: the common operating point: each model's recall where its precision first reaches this value
DEFAULT_AT_PRECISION = 0.95
DEFAULT_SPEED_PHOTOS = 200
DEFAULT_SPEED_ROUNDS = 3
#: a slice value gets intervals from this many photos; a label within it from this many positives
MIN_SLICE_PHOTOS = 30
MIN_SLICE_POSITIVES = 5
#: photos per scoring call, so the progress reporter moves during a long split
_SCORE_CHUNK = 256
#: figures computed per resample, per model and label
_FIGURES = ("ap", "precision", "recall", "fpr", "recall_at_precision")

PathLike = Union[str, os.PathLike]


# ---- the models -------------------------------------------------------------------------------------------------

class _Entry:
    """One model to compare: where it lives, what it is, and how it scores samples."""

    def __init__(self, path: Path, ident: str, batch_size: int):
        self.path = path
        self.id = ident
        self.is_checkpoint = path.is_dir() or path.suffix == ".pt"
        self.model: Any = None
        if self.is_checkpoint:
            self.file = path / "best.pt" if path.is_dir() else path
            if not self.file.is_file():
                from wildlife_vision.errors import ModelLoadError

                raise ModelLoadError(f"checkpoint not found: {self.file}")
            self.scorer = checkpoint_scorer()
            self.labels: Tuple[str, ...] = tuple(self.scorer.labels(self.file))
            self.thresholds: Dict[str, float] = {}
            self.name, self.version, self.provider = "checkpoint", "", "torch (CPU)"
        else:
            from wildlife_vision import load_model

            self.file = path
            self.model = load_model(path, batch_size=batch_size)
            self.labels = tuple(self.model.labels)
            self.thresholds = dict(self.model.thresholds)
            self.name, self.version, self.provider = self.model.name, self.model.version, self.model.provider

    def describe(self) -> Dict[str, Any]:
        return {"model": str(self.path), "id": self.id, "kind": "checkpoint" if self.is_checkpoint else "onnx",
                "name": self.name, "version": self.version, "sha256": file_sha256(self.file),
                "size_bytes": self.file.stat().st_size, "provider": self.provider, "model_labels": list(self.labels)}

    def score(self, samples: Sequence[Sample], batch_size: int, workers: int, progress: bool
              ) -> Tuple[np.ndarray, List[int], Dict[int, str]]:
        """(scores of the kept rows, their indices into ``samples``, index -> error for the others)."""
        where = {id(s): i for i, s in enumerate(samples)}
        if self.is_checkpoint:
            scores, kept, failures, _, thresholds = self.scorer(self.file, list(samples), batch_size, workers)
            self.thresholds = {lab: float(t) for lab, t in thresholds.items()}
            return (np.asarray(scores, dtype=np.float64), [where[id(s)] for s in kept],
                    {where[id(s)]: str(e) for s, e in failures})
        rows, kept_idx, failed = [], [], {}
        prog = Progress(len(samples), f"compare: scoring with {self.id}", enabled=progress and len(samples) > 0)
        try:
            for start in range(0, len(samples), _SCORE_CHUNK):
                chunk = samples[start:start + _SCORE_CHUNK]
                scores, kept, failures = score_onnx(self.model, chunk, batch_size=batch_size, workers=workers)
                rows.append(np.asarray(scores, dtype=np.float64))
                kept_idx += [where[id(s)] for s in kept]
                failed.update({where[id(s)]: e for s, e in failures})
                prog.update(len(chunk))
        finally:
            prog.close()
        return np.concatenate(rows) if rows else np.zeros((0, len(self.labels))), kept_idx, failed


def _identities(paths: Sequence[Path]) -> List[str]:
    """A short, unique name per model: its file (or run folder) name, numbered when two share one."""
    names = [p.name or str(p) for p in paths]
    out = []
    for i, n in enumerate(names):
        out.append(n if names.count(n) == 1 else f"{n}#{names[:i + 1].count(n)}")
    return out


# ---- figures on one set of photos ----------------------------------------------------------------------------------

def recall_at_precision(y: np.ndarray, s: np.ndarray, target: float) -> Tuple[Optional[float], Optional[float]]:
    """(the highest recall at which precision is at least ``target``, the score threshold that gives it), from
    the precision-recall curve over every distinct score; (0.0, None) when no threshold reaches ``target``, and
    (None, None) without positives."""
    if not np.any(y):
        return None, None
    p, r, t = precision_recall_curve(y, s)
    ok = np.flatnonzero(p >= target - 1e-12)
    if not ok.size:
        return 0.0, None
    best = ok[np.argmax(r[ok])]
    return float(r[best]), float(t[best])


def _figures(y: np.ndarray, s: np.ndarray, threshold: float, at_precision: Optional[float]
             ) -> Dict[str, Optional[float]]:
    """One label's figures on one sample of photos (None where the sample does not define them)."""
    y = np.asarray(y, dtype=bool)
    flag = s >= threshold
    tp, fp = int((y & flag).sum()), int((~y & flag).sum())
    pos, neg = int(y.sum()), int((~y).sum())
    rap = recall_at_precision(y, s, at_precision)[0] if at_precision else None
    return {"ap": average_precision(y, s) if pos else None, "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / pos if pos else None, "fpr": fp / neg if neg else None, "recall_at_precision": rap}


def _draw_figures(y: np.ndarray, s: np.ndarray, threshold: float, at_precision: Optional[float],
                  draws: Sequence[np.ndarray]) -> Dict[str, np.ndarray]:
    """Each of :data:`_FIGURES` on every resample (NaN where undefined), in the order of ``draws``."""
    out = {k: np.full(len(draws), np.nan) for k in _FIGURES}
    for d, idx in enumerate(draws):
        for k, v in _figures(y[idx], s[idx], threshold, at_precision).items():
            if v is not None:
                out[k][d] = v
    return out


def _interval(values: np.ndarray, need: float = 0.9) -> Optional[List[float]]:
    """The percentile interval of the defined values; None when the figure is undefined on more than
    ``1 - need`` of the resamples (then an interval would describe a different sample)."""
    if not len(values) or np.mean(np.isfinite(values)) < need:
        return None
    ci = percentile_interval([float(v) for v in values if np.isfinite(v)])
    return None if ci is None else [ci[0], ci[1]]


def _p_value(diffs: np.ndarray) -> Optional[float]:
    """Two-sided bootstrap p-value of a difference: twice the smaller share of resamples on either side of 0."""
    d = diffs[np.isfinite(diffs)]
    if not d.size:
        return None
    return float(min(1.0, 2.0 * min(np.mean(d <= 0), np.mean(d >= 0))))


def holm(p_values: Sequence[Optional[float]]) -> List[Optional[float]]:
    """Holm-Bonferroni adjusted p-values (None stays None and is not counted)."""
    idx = [i for i, p in enumerate(p_values) if p is not None]
    order = sorted(idx, key=lambda i: p_values[i])  # type: ignore[arg-type, return-value]
    out: List[Optional[float]] = [None] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * float(p_values[i])))  # type: ignore[arg-type]
        out[i] = running
    return out


def _model_block(y: np.ndarray, scores: np.ndarray, labels: Sequence[str], thresholds: Mapping[str, float],
                 at_precision: Optional[float], draws: Sequence[np.ndarray], with_ci: Sequence[bool]
                 ) -> Tuple[Dict[str, Any], Dict[str, Dict[str, np.ndarray]]]:
    """Per label: the figures at the model's own threshold and at the common precision, with intervals, and the
    per-resample values (for the pairs)."""
    per_label, per_draw = {}, {}
    for j, lab in enumerate(labels):
        yj, sj, t = y[:, j].astype(bool), scores[:, j], float(thresholds.get(lab, 0.5))
        point = _figures(yj, sj, t, at_precision)
        rap, rap_t = recall_at_precision(yj, sj, at_precision) if at_precision else (None, None)
        draw = _draw_figures(yj, sj, t, at_precision, draws) if with_ci[j] and draws else {}
        per_draw[lab] = draw
        ci = {k: (_interval(v) if point[k] is not None else None) for k, v in draw.items()}
        flagged = int((sj >= t).sum())
        per_label[lab] = {
            "positives": int(yj.sum()), "negatives": int((~yj).sum()), "threshold": t,
            "ap": point["ap"], "ap_ci95": ci.get("ap"),
            "precision_at_threshold": point["precision"], "precision_at_threshold_ci95": ci.get("precision"),
            "recall_at_threshold": point["recall"], "recall_at_threshold_ci95": ci.get("recall"),
            "fpr_at_threshold": point["fpr"], "fpr_at_threshold_ci95": ci.get("fpr"),
            "flag_rate": flagged / len(yj) if len(yj) else None,
            "recall_at_precision": rap, "recall_at_precision_ci95": ci.get("recall_at_precision"),
            "threshold_at_precision": rap_t,
        }
    return per_label, per_draw


def _macro(per_label: Mapping[str, Mapping[str, Any]], per_draw: Mapping[str, Mapping[str, np.ndarray]]
           ) -> Tuple[Optional[float], np.ndarray]:
    """Macro AP over the labels with positives, and per resample."""
    labs = [lab for lab, m in per_label.items() if m["ap"] is not None]
    if not labs:
        return None, np.zeros(0)
    point = float(np.mean([per_label[lab]["ap"] for lab in labs]))
    if any(not per_draw[lab] for lab in labs):
        return point, np.zeros(0)
    with np.errstate(all="ignore"):
        draws = np.nanmean(np.stack([per_draw[lab]["ap"] for lab in labs]), axis=0)
    return point, draws


def _pair_block(a: Mapping[str, Any], b: Mapping[str, Any], da: Mapping[str, Dict[str, np.ndarray]],
                db: Mapping[str, Dict[str, np.ndarray]], labels: Sequence[str], flags_a: Optional[np.ndarray] = None,
                flags_b: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """b minus a per label: AP, and precision, recall and false-positive rate at each model's own threshold,
    and recall at the common precision, each with its paired interval; ``significant``: the AP interval
    excludes 0."""
    out = {}
    keys = (("ap", "ap"), ("recall_at_threshold", "recall"), ("precision_at_threshold", "precision"),
            ("fpr_at_threshold", "fpr"), ("recall_at_precision", "recall_at_precision"))
    for j, lab in enumerate(labels):
        ma, mb = a[lab], b[lab]
        m: Dict[str, Any] = {}
        for key, figure in keys:
            va, vb = ma[key], mb[key]
            diff = None if va is None or vb is None else float(vb - va)
            draws = (db[lab][figure] - da[lab][figure]) if da.get(lab) and db.get(lab) else np.zeros(0)
            ci = _interval(draws) if diff is not None else None
            m[f"{key}_diff"] = diff
            m[f"{key}_diff_ci95"] = ci
            if key == "ap":
                m["ap_diff_p"] = _p_value(draws) if ci is not None else None
                m["significant"] = bool(ci is not None and (ci[0] > 0 or ci[1] < 0))
        if flags_a is not None and flags_b is not None:
            m["flag_agreement"] = float(np.mean(flags_a[:, j] == flags_b[:, j])) if len(flags_a) else None
        out[lab] = m
    return out


def _check_intervals(result: Mapping[str, Any]) -> Dict[str, Any]:
    """Every (figure, interval) pair in the result, and where the interval does not contain its figure (a
    percentile interval can miss its own point estimate on a skewed statistic; reported, never clipped)."""
    checked, outside = 0, []

    def visit(node: Any, where: str) -> None:
        nonlocal checked
        if isinstance(node, dict):
            for k, v in node.items():
                if k.endswith("_ci95") and v is not None and node.get(k[:-5]) is not None:
                    checked += 1
                    value = node[k[:-5]]
                    if not v[0] - 1e-12 <= value <= v[1] + 1e-12:
                        outside.append({"where": f"{where}/{k[:-5]}", "value": value, "ci95": v})
                elif isinstance(v, (dict, list)):
                    visit(v, f"{where}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                visit(v, f"{where}[{i}]")

    for key in ("models", "pairs", "slices"):
        visit(result.get(key), key)
    return {"checked": checked, "outside": outside}


# ---- speed and the machine -------------------------------------------------------------------------------------

def machine() -> Dict[str, Any]:
    """What the speeds were measured on."""
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {"cpu": cpu, "cpus": os.cpu_count(), "usable_cpus": usable, "system": platform.platform(terse=True),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__}


def measure_speed(models: Sequence[Any], paths: Sequence[str], batch_size: int = 32, workers: int = 2,
                  rounds: int = DEFAULT_SPEED_ROUNDS) -> List[Dict[str, Any]]:
    """Photos/s of each loaded model on the same ``paths`` (decoding included, as ``predict`` runs), in the same
    process: one warm-up pass each (session, threads, the photos in the page cache), then ``rounds`` rounds in
    which every model scores every photo once, the order rotated each round so that no model always runs first.
    Reports the median and the best round."""
    if not paths or not models:
        return [{"photos_per_s": None, "note": "no photos to time"} for _ in models]
    for m in models:  # warm-up: session, threads and the page cache of the photos
        list(m.predict_iter(list(paths), batch_size=batch_size, workers=workers))
    times: List[List[float]] = [[] for _ in models]
    for r in range(max(1, rounds)):
        for k in range(len(models)):
            i = (k + r) % len(models)
            t0 = time.perf_counter()
            for _ in models[i].predict_iter(list(paths), batch_size=batch_size, workers=workers):
                pass
            times[i].append(time.perf_counter() - t0)
    out = []
    for t in times:
        out.append({"photos_per_s": len(paths) / statistics.median(t), "photos_per_s_best": len(paths) / min(t),
                    "round_seconds": [round(x, 4) for x in t], "photos": len(paths)})
    return out


# ---- slices ----------------------------------------------------------------------------------------------------

def _slices(columns: Sequence[str], kept: Sequence[Sample], y: np.ndarray, scores: Sequence[np.ndarray],
            labels: Sequence[str], thresholds: Sequence[Mapping[str, float]], ids: Sequence[str],
            paths: Sequence[str], at_precision: Optional[float], groups: Optional[Sequence[str]], resamples: int,
            seed: int) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for col in columns:
        values: Dict[str, List[int]] = {}
        for i, s in enumerate(kept):
            values.setdefault(s.extra.get(col, ""), []).append(i)
        out[col] = {}
        for value, idx in sorted(values.items()):
            n = len(idx)
            big = n >= MIN_SLICE_PHOTOS
            yi = y[idx]
            pos = yi.sum(axis=0)
            with_ci = [bool(big and pos[j] >= MIN_SLICE_POSITIVES and pos[j] < n) for j in range(len(labels))]
            sub_groups = None if groups is None else [groups[i] for i in idx]
            draws = resample_indices(n, sub_groups, resamples, seed) if big and resamples and any(with_ci) else []
            blocks = [_model_block(yi, s[idx], labels, t, at_precision, draws, with_ci)
                      for s, t in zip(scores, thresholds)]
            keep = ("positives", "negatives", "ap", "ap_ci95", "recall_at_threshold", "recall_at_threshold_ci95",
                    "precision_at_threshold", "fpr_at_threshold")
            entry: Dict[str, Any] = {
                "n_photos": n,
                "models": [{"id": mid, "labels": {lab: {k: m[lab][k] for k in keep} for lab in labels}}
                           for mid, (m, _) in zip(ids, blocks)],
                "pairs": [],
            }
            if not big:
                entry["note"] = f"{n} photo(s): too few for intervals (need {MIN_SLICE_PHOTOS})"
            else:
                small = [f"{lab} ({int(pos[j])} positives" + (", no negatives)" if pos[j] == n else ")")
                         for j, lab in enumerate(labels) if not with_ci[j]]
                if small:
                    entry["note"] = (f"no intervals for {', '.join(small)}: an interval needs {MIN_SLICE_POSITIVES} "
                                     "positives and a negative")
            for a in range(len(blocks)):
                for b in range(a + 1, len(blocks)):
                    d = _pair_block(blocks[a][0], blocks[b][0], blocks[a][1], blocks[b][1], labels)
                    entry["pairs"].append({"a": paths[a], "b": paths[b], "a_id": ids[a], "b_id": ids[b], "labels": {
                        lab: {k: d[lab][k] for k in ("ap_diff", "ap_diff_ci95", "significant",
                                                     "recall_at_threshold_diff", "recall_at_threshold_diff_ci95")}
                        for lab in labels}})
            out[col][value] = entry
    return out


# ---- robustness --------------------------------------------------------------------------------------------------

def _robustness(entries: Sequence[_Entry], paths: Sequence[str], edits: Sequence[str], seed: int, batch_size: int,
                workers: int, resamples: int, groups: Optional[Sequence[str]], progress: bool) -> Dict[str, Any]:
    """Per ONNX model, per edit and label: p95 |score change| and flip rate with intervals (the same photos, seed
    and resamples for every model)."""
    from .robustness import measure_robustness, resolve_edits

    names = resolve_edits(list(edits) if edits else None)
    out: Dict[str, Any] = {"edits": names, "seed": seed, "models": {}}
    for e in entries:
        if e.model is None:
            out["models"][e.id] = {"note": "checkpoints are not measured; export the run first"}
            continue
        r = measure_robustness(e.model, paths, edits=names, seed=seed, batch_size=batch_size, workers=workers,
                               resamples=resamples, progress=progress, groups=groups)
        out["targets"] = r["targets"]
        out["models"][e.id] = {"n_images": r["n_images"], "n_failed": r["n_failed"], "edits": {
            name: {lab: {k: m[k] for k in ("p95_abs_change", "flip_rate", "flips", "n", "ci95", "meets_target")}
                   for lab, m in block["per_class"].items()} for name, block in r["edits"].items()}}
    return out


# ---- the comparison --------------------------------------------------------------------------------------------

def _sample(samples: List[Sample], limit: Optional[int], seed: int) -> List[Sample]:
    """A seeded random sample of ``limit`` rows, in manifest order (manifests are often sorted by source, so the
    first rows would be one source)."""
    if limit is None or limit >= len(samples):
        return samples
    keep = np.sort(np.random.default_rng(seed).choice(len(samples), size=limit, replace=False))
    return [samples[int(i)] for i in keep]


def compare_models(models: Sequence[PathLike], manifest: PathLike, split: str = "test",
                   output_dir: Optional[PathLike] = None, slice_by: Sequence[str] = (),
                   at_precision: Optional[float] = DEFAULT_AT_PRECISION, resamples: int = DEFAULT_RESAMPLES,
                   seed: int = 0, limit: Optional[int] = None, speed_photos: int = DEFAULT_SPEED_PHOTOS,
                   speed_rounds: int = DEFAULT_SPEED_ROUNDS, robustness: Optional[Sequence[str]] = None,
                   batch_size: int = 32, workers: int = 2, progress: bool = False, plots: bool = True
                   ) -> Dict[str, Any]:
    """Compare ``models`` (ONNX files; training run folders or ``.pt`` checkpoints with the ``[train]`` extra) on
    one split of ``manifest``, and with ``output_dir`` write compare.json, compare.md and the plots there.

    Every model scores the same photos (a photo any model cannot read is dropped for all, and counted); every
    interval comes from one set of ``resamples`` bootstrap resamples (seed ``seed``; whole groups when the
    manifest has a ``group`` column), so pair differences are paired. ``at_precision``: the common operating
    point (recall where precision reaches it; None: left out). ``limit``: a seeded random sample of that many
    photos of the split. ``speed_photos``: photos timed per ONNX model (0: no timing), ``speed_rounds`` rounds.
    ``robustness``: edit names (``["all"]`` or an empty list: every edit) measured per ONNX model on the same
    photos. ``slice_by``: manifest columns to break the figures down by.

    Returns the result dict (``wildlife-vision/compare/v1``; see docs/compare.md). Raises
    :class:`~wildlife_vision.errors.ModelLoadError` for a model that cannot be loaded,
    :class:`~wildlife_vision.data.manifest.ManifestError` for a bad manifest and :class:`ValueError` for other bad
    input (no models, a model given twice, no label in common, an unknown column or split, no readable photo).
    """
    paths = [Path(m) for m in models]
    if not paths:
        raise ValueError("no models to compare")
    seen = [str(p.resolve()) for p in paths]
    twice = sorted({str(p) for p, r in zip(paths, seen) if seen.count(r) > 1})
    if twice:
        raise ValueError(f"model(s) given twice: {', '.join(twice)}")
    if at_precision is not None and not 0.0 < float(at_precision) <= 1.0:
        raise ValueError(f"at_precision must be in (0, 1], got {at_precision}")
    for name, value, low in (("resamples", resamples, 0), ("speed_photos", speed_photos, 0),
                             ("speed_rounds", speed_rounds, 1), ("batch_size", batch_size, 1), ("workers", workers, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer of at least {low}, got {value!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")

    entries = [_Entry(p, ident, batch_size) for p, ident in zip(paths, _identities(paths))]
    labels = [lab for lab in entries[0].labels if all(lab in e.labels for e in entries[1:])]
    if not labels:
        raise ValueError("the models have no label in common: " + "; ".join(
            f"{e.id}: {', '.join(e.labels)}" for e in entries))
    notes: List[str] = []
    for e in entries:
        extra = [lab for lab in e.labels if lab not in labels]
        if extra:
            notes.append(f"{e.id} also has label(s) {', '.join(extra)}, which not every model has: left out")
    m = read_manifest(manifest, labels=labels, check_images=False, for_training=False)
    unknown = [c for c in slice_by if c not in m.columns]
    if unknown:
        raise ValueError(f"slice column(s) {', '.join(unknown)} not in the manifest (its extra columns: "
                         f"{', '.join(m.columns) or 'none'})")
    in_split = select_split(m.samples, split)
    samples = _sample(in_split, limit, seed)

    # ---- score every model once; keep the photos every model could read
    scored = [e.score(samples, batch_size, workers, progress) for e in entries]
    ok = np.ones(len(samples), dtype=bool)
    errors: Dict[int, Dict[str, str]] = {}
    for e, (_, kept_idx, failed) in zip(entries, scored):
        mask = np.zeros(len(samples), dtype=bool)
        mask[kept_idx] = True
        for i in np.flatnonzero(~mask):
            errors.setdefault(int(i), {})[e.id] = failed.get(int(i), "not scored")
        ok &= mask
    keep_idx = np.flatnonzero(ok)
    if not keep_idx.size:
        raise ValueError(f"none of the {len(samples)} photo(s) in split '{split}' could be read by every model")
    kept = [samples[i] for i in keep_idx]
    scores = []
    for e, (s, kept_idx, _) in zip(entries, scored):
        full = np.full((len(samples), len(e.labels)), np.nan)
        full[kept_idx] = s
        scores.append(full[keep_idx][:, [e.labels.index(lab) for lab in labels]])
    y = targets_for(kept, labels)
    groups = group_ids(kept)
    draws = resample_indices(len(kept), groups, resamples, seed) if resamples else []

    # ---- per model, then every pair, on the same resamples
    result: Dict[str, Any] = {
        "schema": SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "manifest": str(manifest), "manifest_sha256": m.sha256, "split": split, "n_split": len(in_split),
        "limit": limit, "n_photos": len(kept),
        "dropped": {"n": int(len(samples) - len(kept)),
                    "photos": [{"image": samples[i].image, "errors": errors[i]} for i in sorted(errors)]},
        "labels": labels, "at_precision": at_precision,
        "bootstrap": {"method": "paired percentile bootstrap", "confidence": CONFIDENCE, "resamples": resamples,
                      "seed": seed, "unit": "group" if groups is not None else "photo",
                      "units": len(set(groups)) if groups is not None else len(kept)},
        "notes": notes,
    }
    blocks, flags = [], []
    with Progress(len(entries), "compare: bootstrap", unit="model", enabled=progress and bool(draws)) as prog:
        for e, s in zip(entries, scores):
            blocks.append(_model_block(y, s, labels, e.thresholds, at_precision, draws, [True] * len(labels)))
            flags.append(s >= np.array([e.thresholds.get(lab, 0.5) for lab in labels])[None, :])
            prog.update(1)
    result["models"] = []
    for e, (per_label, per_draw) in zip(entries, blocks):
        macro, macro_draws = _macro(per_label, per_draw)
        result["models"].append({**e.describe(), "thresholds": {lab: e.thresholds.get(lab, 0.5) for lab in labels},
                                 "macro": {"ap": macro, "ap_ci95": _interval(macro_draws) if macro is not None
                                           else None}, "labels": per_label})
    result["pairs"] = []
    for a in range(len(entries)):
        for b in range(a + 1, len(entries)):
            (la, da), (lb, db) = blocks[a], blocks[b]
            ma, mad = _macro(la, da)
            mb, mbd = _macro(lb, db)
            diff = None if ma is None or mb is None else mb - ma
            ci = _interval(mbd - mad) if diff is not None and mad.size and mbd.size else None
            result["pairs"].append({
                "a": str(entries[a].path), "b": str(entries[b].path), "a_id": entries[a].id, "b_id": entries[b].id,
                "macro": {"ap_diff": diff, "ap_diff_ci95": ci,
                          "significant": bool(ci is not None and (ci[0] > 0 or ci[1] < 0))},
                "labels": _pair_block(la, lb, da, db, labels, flags[a], flags[b])})
    cells = [(pair, lab) for pair in result["pairs"] for lab in labels]
    adjusted = holm([pair["labels"][lab]["ap_diff_p"] for pair, lab in cells])
    for (pair, lab), p in zip(cells, adjusted):
        pair["labels"][lab]["ap_diff_p_holm"] = p
        pair["labels"][lab]["significant_holm"] = bool(p is not None and p < 1 - CONFIDENCE)
    tested = sum(p is not None for p in adjusted)
    result["multiple_comparisons"] = {
        "comparisons": tested, "pairs": len(result["pairs"]), "labels": len(labels),
        "significant": sum(pair["labels"][lab]["significant"] for pair, lab in cells),
        "significant_holm": sum(pair["labels"][lab]["significant_holm"] for pair, lab in cells),
        "expected_by_chance": round((1 - CONFIDENCE) * tested, 2), "method": "Holm on bootstrap p-values"}

    # ---- slices, speed, robustness
    result["slice_rule"] = {"min_photos": MIN_SLICE_PHOTOS, "min_positives": MIN_SLICE_POSITIVES}
    result["slices"] = _slices(slice_by, kept, y, scores, labels, [e.thresholds for e in entries],
                               [e.id for e in entries], [str(e.path) for e in entries], at_precision, groups,
                               resamples, seed)
    onnx = [e for e in entries if e.model is not None]
    # spread over the split (manifests are often sorted by source, and photo sizes differ by source)
    timed = [kept[int(i)].path for i in np.unique(np.linspace(0, len(kept) - 1, min(speed_photos, len(kept)))
                                                  .round().astype(int))] if speed_photos else []
    speed_info: Dict[str, Any] = {"photos": len(timed), "rounds": speed_rounds, "batch_size": batch_size,
                                  "workers": workers, "statistic": "median of the rounds (best also given)",
                                  "includes": "decoding and preprocessing (Model.predict_iter), as `predict` runs"}
    speeds = measure_speed([e.model for e in onnx], timed, batch_size, workers, speed_rounds) if speed_photos else []
    by_id = {e.id: s for e, s in zip(onnx, speeds)}
    first = next((s["photos_per_s"] for s in speeds if s.get("photos_per_s")), None)
    for e, block in zip(entries, result["models"]):
        s = by_id.get(e.id) or {"photos_per_s": None, "note": "not timed" + (
            " (a checkpoint: scored by torch, not comparable with ONNX)" if e.is_checkpoint else "")}
        if s.get("photos_per_s") and first:
            s["relative_to_first_timed"] = s["photos_per_s"] / first
        block["speed"] = s
    result["speed"] = {**speed_info, "machine": machine()}
    if robustness is not None:
        result["robustness"] = _robustness(entries, [s.path for s in kept], robustness, seed, batch_size, workers,
                                           resamples, groups, progress)
    result["interval_check"] = _check_intervals(result)
    if result["interval_check"]["outside"]:
        log.warning("%d interval(s) do not contain their own estimate (reported as they are; see interval_check)",
                    len(result["interval_check"]["outside"]))
    if output_dir is not None:
        write_comparison(result, y, scores, output_dir, plots=plots)
    return result


def write_comparison(result: Dict[str, Any], y: np.ndarray, scores: Sequence[np.ndarray], output_dir: PathLike,
                     plots: bool = True) -> Path:
    """compare.json, compare.md and (with matplotlib, the ``[eval]`` extra) pr_curves.png, forest_ap.png and
    forest_diff.png in ``output_dir``; returns compare.json's path. Without matplotlib the plots are skipped and
    ``result["plots"]`` says why."""
    import json

    from wildlife_vision.data.manifest import atomic_write_text

    from .compare_report import to_markdown, write_plots

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result["plots"] = write_plots(result, y, scores, out) if plots else {"skipped": "not asked for"}
    atomic_write_text(out / "compare.json", json.dumps(result, indent=2, allow_nan=False) + "\n")
    atomic_write_text(out / "compare.md", to_markdown(result))
    return out / "compare.json"


__all__ = ["SCHEMA", "compare_models", "write_comparison", "measure_speed", "recall_at_precision", "holm", "machine",
           "DEFAULT_AT_PRECISION", "MIN_SLICE_PHOTOS", "MIN_SLICE_POSITIVES"]
