"""Hard-negative mining: `wildlife-vision mine`, one round of "score a pool believed negative, keep the most
confident false positives, add them to training as negatives".

A round (docs/hard-negative-mining.md):

1. :func:`read_pool` reads the pool, a manifest or a folder of photos. A pool must be believed to hold no
   positives, so rows that carry a label (or photos under a folder named after a label) are refused and
   counted, never mined.
2. :func:`score_pool` scores every pool photo through the runtime's one scoring loop
   (:meth:`wildlife_vision.Model.predict_iter`), so a photo is flagged or sent to review exactly as a platform
   running the model would see it.
3. :func:`known_mask` marks pool photos already in the target manifest (same resolved path, or same file bytes
   under another path: sha256, hashed only where the file sizes make a match possible) and later copies of
   the same bytes inside the pool; those are never selected.
4. :func:`eligible_mask` says which (photo, label) pairs count as false positives (by default the label is
   flagged or in its review band; ``--flagged-only``; ``--min-score S``) and :func:`select_top` ranks them by
   the highest score over labels (or per label) and keeps the top K. Both are plain functions of score
   arrays, so other selections (active learning) can share them.
5. :func:`build_manifest` writes the target manifest's rows unchanged (relative image paths re-based when the
   new manifest lives in another folder) plus the mined rows as negatives, with the one manifest writer.
6. :func:`round_report` is the round's JSON (schema :data:`SCHEMA`): per-label flag and review rates on the
   pool with 95% bootstrap intervals (:mod:`wildlife_vision.evaluation.bootstrap`), what was selected, and the
   new manifest's path and sha256.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from wildlife_vision.cli_common import HelpFormatter, fail, wrap
from wildlife_vision.exitcodes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

SCHEMA = "wildlife-vision/mining-round/v1"
#: columns every mined manifest has (added after the target's own columns when missing)
MINED_COLUMNS = ("mined_round", "mined_score", "mined_label")
#: pool columns never copied into a mined row (they describe the pool, not the photo in training)
_NOT_CARRIED = {"image", "labels", "split", "source", "group", *MINED_COLUMNS}
DEFAULT_TOP = 500
QUANTILES = {"min": 0.0, "p10": 0.1, "p25": 0.25, "median": 0.5, "p75": 0.75, "p90": 0.9, "max": 1.0}
#: at most this many resampled indices held in memory at once by the bootstrap of the pool rates
_BOOTSTRAP_CHUNK = 4_000_000


class MiningError(ValueError):
    """Bad input for a mining round; ``code`` is the exit code (:mod:`wildlife_vision.exitcodes`)."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


# ---- the pool -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PoolPhoto:
    path: str                        # absolute path (symlinks kept)
    image: str                       # as written in the pool manifest, or relative to the pool folder
    source: str                      # the row's source column, else the pool's name
    group: str = ""                  # the row's group column (near-duplicates resampled whole)
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Pool:
    path: Path
    kind: str                        # "manifest" or "folder"
    name: str                        # the pool manifest's folder name, or the pool folder's name
    photos: List[PoolPhoto]
    rows: int                        # rows (or photo files) before anything was refused
    positives_skipped: int = 0
    positive_labels: Dict[str, int] = field(default_factory=dict)
    outside_split: int = 0           # rows of other splits when a pool split was chosen


def _label_dirs(rel: Path) -> List[str]:
    from wildlife_vision.data.manifest import TAXONOMY

    return [part for part in rel.parent.parts if part in TAXONOMY]


def read_pool(path: os.PathLike, split: Optional[str] = None) -> Pool:
    """The pool's photos: a manifest CSV (rows with labels refused; ``split``: only that split's rows) or a
    folder of photos, read recursively (photos under a folder named after a taxonomy label refused)."""
    from wildlife_vision.data.manifest import SPLIT_ALIASES, read_manifest_table, split_labels
    from wildlife_vision.inputs import expand_inputs

    src = Path(path)
    if src.is_dir():
        if split:
            raise MiningError("--pool-split needs a manifest pool; a folder pool has no splits")
        found = expand_inputs([str(src)], recursive=True)
        pool = Pool(src, "folder", src.resolve().name, [], rows=len(found.paths))
        refused: Counter = Counter()
        for p in found.paths:
            rel = Path(os.path.relpath(p, src))
            labels = _label_dirs(rel)
            if labels:
                refused.update(labels)
                pool.positives_skipped += 1
                continue
            pool.photos.append(PoolPhoto(os.path.abspath(p), rel.as_posix(), pool.name))
        pool.positive_labels = dict(refused)
        if not pool.rows:
            raise MiningError(f"--pool {src}: no photos found (by extension) in this folder or its subfolders")
        return pool
    if not src.exists():
        raise MiningError(f"--pool {src} does not exist; pass a manifest CSV or a folder of photos")
    table = read_manifest_table(src)  # ManifestError: the caller reports it
    name = src.resolve().parent.name
    pool = Pool(src, "manifest", name, [], rows=len(table))
    refused = Counter()
    has_split = "split" in table.fieldnames
    wanted = SPLIT_ALIASES.get(split.strip().lower(), None) if split else None
    if split and (wanted is None or not wanted):
        raise MiningError(f"--pool-split {split!r} is not one of train, val, test")
    if wanted and not has_split:
        raise MiningError(f"--pool-split {split}: the pool {src} has no split column")
    for i, row in enumerate(table.rows):
        if wanted and SPLIT_ALIASES.get(row.get("split", "").strip().lower(), "?") != wanted:
            pool.outside_split += 1
            continue
        labels = split_labels(row.get("labels", ""))
        if labels:
            refused.update(labels)
            pool.positives_skipped += 1
            continue
        extra = {k: v for k, v in row.items() if k not in _NOT_CARRIED}
        pool.photos.append(PoolPhoto(os.path.abspath(table.image_path(i)), row["image"],
                                     (row.get("source") or "").strip() or name, (row.get("group") or "").strip(),
                                     extra))
    pool.positive_labels = dict(refused)
    return pool


# ---- scoring --------------------------------------------------------------------------------------------

@dataclass
class PoolScores:
    """Per pool photo (rows aligned with ``Pool.photos``): scores (NaN when unreadable), flagged and review."""

    labels: Tuple[str, ...]
    scores: np.ndarray               # (n, L) float64
    flagged: np.ndarray              # (n, L) bool
    review: np.ndarray               # (n, L) bool
    errors: Dict[int, str]           # row -> error message

    @property
    def ok(self) -> np.ndarray:
        return ~np.isnan(self.scores).any(axis=1)


def score_pool(model: Any, photos: Sequence[PoolPhoto], batch_size: int = 32, workers: int = 1,
               progress: bool = True) -> PoolScores:
    """Score the pool with ``model.predict_iter`` (the runtime's one batched loop), reporting progress."""
    from wildlife_vision.progress import Progress

    labels = tuple(model.labels)
    n, k = len(photos), len(labels)
    scores = np.full((n, k), np.nan)
    flagged = np.zeros((n, k), bool)
    review = np.zeros((n, k), bool)
    errors: Dict[int, str] = {}
    col = {lab: j for j, lab in enumerate(labels)}
    with Progress(n, "mine", enabled=progress) as bar:
        preds = model.predict_iter([p.path for p in photos], batch_size=batch_size, workers=workers)
        for i, pred in enumerate(preds):
            bar.update(1)
            if pred.error is not None:
                errors[i] = pred.error
                continue
            scores[i] = [pred.scores[lab] for lab in labels]
            for lab in pred.flagged:
                flagged[i, col[lab]] = True
            for lab in pred.review:
                review[i, col[lab]] = True
    return PoolScores(labels, scores, flagged, review, errors)


# ---- what is already known --------------------------------------------------------------------------------

def _size(path: str) -> Optional[int]:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def known_mask(pool_paths: Sequence[str], target_paths: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """``(in_target, repeat)`` booleans per pool photo: the photo is in the target (same resolved path, or the
    same bytes under another path), or repeats the bytes of an earlier pool photo. Files are hashed (sha256)
    only when another file has the same size."""
    from wildlife_vision.data.manifest import file_sha256

    target_real = {os.path.realpath(p) for p in target_paths}
    pool_real = [os.path.realpath(p) for p in pool_paths]
    in_target = np.array([p in target_real for p in pool_real], dtype=bool)
    pool_sizes = [_size(p) for p in pool_real]
    target_sizes: Dict[int, List[str]] = defaultdict(list)
    for p in sorted(target_real):
        s = _size(p)
        if s is not None:
            target_sizes[s].append(p)
    size_count = Counter(s for s in pool_sizes if s is not None)
    cache: Dict[str, Optional[str]] = {}

    def digest(p: str) -> Optional[str]:
        if p not in cache:
            try:
                cache[p] = file_sha256(Path(p))
            except OSError:
                cache[p] = None
        return cache[p]

    target_hashes: Dict[int, Set[str]] = {}
    repeat = np.zeros(len(pool_paths), dtype=bool)
    seen: Dict[str, int] = {}       # sha256 -> first pool row
    seen_path: Set[str] = set()
    for i, (p, s) in enumerate(zip(pool_real, pool_sizes)):
        if p in seen_path:
            repeat[i] = True         # the same file listed twice
            continue
        seen_path.add(p)
        if s is None or (size_count[s] < 2 and s not in target_sizes):
            continue
        h = digest(p)
        if h is None:
            continue
        if not in_target[i] and s in target_sizes:
            if s not in target_hashes:
                target_hashes[s] = {d for d in map(digest, target_sizes[s]) if d}
            in_target[i] = h in target_hashes[s]
        if h in seen:
            repeat[i] = True
        else:
            seen[h] = i
    return in_target, repeat


# ---- selection (plain functions of score arrays) -----------------------------------------------------------

def eligible_mask(scores: np.ndarray, flagged: np.ndarray, review: np.ndarray, rule: str = "band",
                  min_score: Optional[float] = None) -> np.ndarray:
    """Which (photo, label) pairs count as false positives on a negative pool: ``band`` (flagged or in the
    review band), ``flagged`` (over the threshold) or ``min-score`` (score >= ``min_score``)."""
    if rule == "band":
        return flagged | review
    if rule == "flagged":
        return flagged.copy()
    if rule == "min-score":
        if min_score is None:
            raise ValueError("rule 'min-score' needs min_score")
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(scores, nan=-np.inf) >= float(min_score)
    raise ValueError(f"unknown rule {rule!r}; expected band, flagged or min-score")


@dataclass(frozen=True)
class Selected:
    index: int                       # row in the scored pool
    labels: Tuple[str, ...]          # the label(s) it was selected for (its highest first)
    score: float                     # its highest score among those labels


def _ranked(idx: np.ndarray, key: np.ndarray) -> np.ndarray:
    """``idx`` ordered by ``key`` descending, ties by index (deterministic)."""
    return idx[np.lexsort((idx, -key[idx]))]


def select_top(scores: np.ndarray, eligible: np.ndarray, labels: Sequence[str], top: Optional[int],
               per_label: bool = False, exclude: Optional[np.ndarray] = None) -> List[Selected]:
    """The top ``top`` (None: all) eligible photos, ranked by their highest eligible score over labels, or with
    ``per_label`` the top ``top`` of each label by that label's score (a photo picked for several labels is one
    row). Rows in ``exclude`` are never picked and take no place. Order: score descending, then row."""
    elig = eligible & ~np.isnan(scores)
    if exclude is not None:
        elig &= ~np.asarray(exclude, bool)[:, None]
    masked = np.where(elig, scores, -np.inf)
    if not per_label:
        best = masked.argmax(axis=1) if masked.size else np.zeros(len(scores), int)
        best_score = masked[np.arange(len(scores)), best] if masked.size else np.zeros(0)
        order = _ranked(np.flatnonzero(np.isfinite(best_score)), best_score)
        if top is not None:
            order = order[:top]
        return [Selected(int(i), (labels[int(best[i])],), float(best_score[i])) for i in order]
    picked: Dict[int, List[Tuple[float, str]]] = defaultdict(list)
    for j, lab in enumerate(labels):
        order = _ranked(np.flatnonzero(elig[:, j]), masked[:, j])
        for i in (order if top is None else order[:top]):
            picked[int(i)].append((float(scores[i, j]), lab))
    out = []
    for i, hits in picked.items():
        hits.sort(key=lambda h: -h[0])
        out.append(Selected(i, tuple(lab for _, lab in hits), hits[0][0]))
    out.sort(key=lambda s: (-s.score, s.index))
    return out


# ---- figures ----------------------------------------------------------------------------------------------

def rate_intervals(masks: np.ndarray, groups: Optional[Sequence[str]] = None, seed: int = 0
                   ) -> List[Optional[Tuple[float, float]]]:
    """95% bootstrap interval of the mean of each column of the (n, k) boolean ``masks`` (photos resampled, or
    whole groups), from :mod:`wildlife_vision.evaluation.bootstrap`; drawn in chunks to bound memory."""
    from wildlife_vision.evaluation.bootstrap import DEFAULT_RESAMPLES, percentile_interval, resample_indices

    n, k = masks.shape
    if n == 0:
        return [None] * k
    x = masks.astype(np.float32)
    per_chunk = max(1, min(DEFAULT_RESAMPLES, _BOOTSTRAP_CHUNK // max(1, n * k)))
    means: List[np.ndarray] = []
    done = 0
    while done < DEFAULT_RESAMPLES:
        count = min(per_chunk, DEFAULT_RESAMPLES - done)
        draws = resample_indices(n, groups, count, seed=seed + done)
        if groups is None:
            means.append(x[np.stack(draws)].mean(axis=1))
        else:
            means.append(np.stack([x[r].mean(axis=0) for r in draws]))
        done += count
    m = np.concatenate(means)
    return [percentile_interval(m[:, j].tolist()) for j in range(k)]


def _quantiles(values: Sequence[float]) -> Optional[Dict[str, float]]:
    if not len(values):
        return None
    q = np.quantile(np.asarray(values, np.float64), list(QUANTILES.values()))
    return {name: round(float(v), 6) for name, v in zip(QUANTILES, q)}


def _ci(v: Optional[Tuple[float, float]]) -> Optional[List[float]]:
    return None if v is None else [round(v[0], 6), round(v[1], 6)]


def pool_rates(scored: PoolScores, rows: np.ndarray, groups: Optional[Sequence[str]]) -> Dict[str, Dict[str, Any]]:
    """Per label: flagged and review counts, rates and intervals over the pool rows ``rows``."""
    f, r = scored.flagged[rows], scored.review[rows]
    cis = rate_intervals(np.concatenate([f, r], axis=1), None if groups is None else [groups[i] for i in rows])
    n, k = len(rows), len(scored.labels)
    out = {}
    for j, lab in enumerate(scored.labels):
        out[lab] = {"n": int(n), "flagged": int(f[:, j].sum()), "flag_rate": float(f[:, j].mean()) if n else None,
                    "flag_rate_ci95": _ci(cis[j]), "review": int(r[:, j].sum()),
                    "review_rate": float(r[:, j].mean()) if n else None, "review_rate_ci95": _ci(cis[k + j])}
    return out


def round_report(*, model: Any, model_sha256: str, pool: Pool, scored: PoolScores, in_target: np.ndarray,
                 repeat: np.ndarray, selected: Sequence[Selected], settings: Mapping[str, Any],
                 into: Path, into_sha256: str, output: Path, output_sha256: str, output_rows: int,
                 round_no: int, rebased: int) -> Dict[str, Any]:
    ok = scored.ok
    rows = np.flatnonzero(ok)
    unseen = np.flatnonzero(ok & ~in_target)
    groups = [p.group for p in pool.photos] if any(p.group for p in pool.photos) else None
    if groups is not None:
        groups = [g or f"row{i}" for i, g in enumerate(groups)]
    all_rates, unseen_rates = pool_rates(scored, rows, groups), pool_rates(scored, unseen, groups)
    per_label: Dict[str, Any] = {}
    for lab in scored.labels:
        j = scored.labels.index(lab)
        chosen = [float(scored.scores[s.index, j]) for s in selected if lab in s.labels]
        lo, thr = model.review_bands.get(lab, (model.thresholds[lab], model.thresholds[lab]))
        per_label[lab] = {"threshold": float(model.thresholds[lab]), "review_band": [float(lo), float(thr)],
                          **all_rates[lab], "unseen": unseen_rates[lab], "selected": len(chosen),
                          "selected_score_quantiles": _quantiles(chosen)}
    return {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "round": int(round_no),
        "model": {"path": str(model.path), "sha256": model_sha256, "name": model.name, "version": model.version},
        "pool": {"path": str(pool.path), "kind": pool.kind, "name": pool.name, "split": settings.get("pool_split")
                 or "all", "rows": pool.rows, "outside_split": pool.outside_split,
                 "positives_skipped": pool.positives_skipped, "positive_labels": pool.positive_labels,
                 "unreadable": len(scored.errors), "size": int(len(rows)),
                 "already_in_training": int((ok & in_target).sum()), "repeats": int((ok & repeat & ~in_target).sum())},
        "pool_size": int(len(rows)),
        "figures_split": "pool: every readable pool photo (believed negative); 'unseen': those not in the "
                         "training manifest",
        "intervals": {"method": "percentile bootstrap", "confidence": 0.95, "resamples": 1000,
                      "unit": "group" if groups is not None else "photo"},
        "selection": dict(settings),
        "per_label": per_label,
        "selected": {"total": len(selected), "score_quantiles": _quantiles([s.score for s in selected])},
        "manifest": {"into": str(into), "into_sha256": into_sha256, "path": str(output), "sha256": output_sha256,
                     "rows": output_rows, "mined_rows": len(selected), "rebased_paths": rebased},
    }


# ---- the new manifest -----------------------------------------------------------------------------------

def _relative(path: str, folder: Path) -> str:
    try:
        return Path(os.path.relpath(path, folder)).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(path).as_posix()


def build_manifest(target: Any, output: Path, pool: Pool, scored: PoolScores, selected: Sequence[Selected],
                   round_no: int, split: str) -> Tuple[List[str], List[Dict[str, str]], int]:
    """(fieldnames, rows, re-based count): the target's rows unchanged (a relative image path re-based onto the
    new manifest's folder when that differs), then one negative row per selected photo."""
    out_dir = Path(os.path.abspath(output)).parent
    fields = list(target.fieldnames)
    fields += [c for c in ("split", "source", *MINED_COLUMNS) if c not in fields]
    rows: List[Dict[str, str]] = []
    rebased = 0
    same = Path(os.path.abspath(target.root)) == out_dir
    for r in target.rows:
        r = dict(r)
        if not same and not Path(r["image"]).is_absolute():
            r["image"] = _relative(os.path.abspath(target.root / r["image"]), out_dir)
            rebased += 1
        rows.append(r)
    for s in selected:
        photo = pool.photos[s.index]
        row = {k: v for k, v in photo.extra.items() if k in fields}
        row.update({"image": _relative(photo.path, out_dir), "labels": "", "split": split,
                    "source": f"mined:{photo.source}", "mined_round": str(round_no),
                    "mined_score": repr(round(s.score, 6)), "mined_label": ";".join(s.labels)})
        rows.append(row)
    return fields, rows, rebased


def next_round(target: Any) -> int:
    """1 + the highest ``mined_round`` in the target manifest (1 when it has none)."""
    if "mined_round" not in target.fieldnames:
        return 1
    done = [int(v) for v in target.column("mined_round") if v.strip().isdigit()]
    return max(done, default=0) + 1


# ---- the command ----------------------------------------------------------------------------------------

def _one_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    return lines[0] + (f" (and {len(lines) - 1} more problem(s))" if len(lines) > 1 else "")


def _pct(v: Optional[float], ci: Optional[Sequence[float]]) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.1f}%" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def format_summary(report: Mapping[str, Any]) -> str:
    pool, sel, man = report["pool"], report["selected"], report["manifest"]
    lines = [f"round {report['round']}: {sel['total']} hard negative(s) mined from {pool['size']} pool photo(s) "
             f"({pool['name']}, split {pool['split']}) into {man['path']} ({man['rows']} rows)"]
    skipped = [f"{pool['positives_skipped']} with positive labels refused" if pool["positives_skipped"] else "",
               f"{pool['outside_split']} of other splits" if pool["outside_split"] else "",
               f"{pool['unreadable']} unreadable" if pool["unreadable"] else "",
               f"{pool['already_in_training']} already in the training manifest" if pool["already_in_training"] else "",
               f"{pool['repeats']} repeated bytes" if pool["repeats"] else ""]
    if any(skipped):
        lines.append("  pool rows left out: " + ", ".join(s for s in skipped if s))
    for lab, m in report["per_label"].items():
        text = (f"  {lab:<16} flag rate {_pct(m['flag_rate'], m['flag_rate_ci95'])}, review "
                f"{_pct(m['review_rate'], m['review_rate_ci95'])} (pool, 95% CI); selected {m['selected']}")
        q = m["selected_score_quantiles"]
        if q:
            text += f" (scores {q['min']:.3f}-{q['max']:.3f}, median {q['median']:.3f})"
        lines.append(text)
    return "\n".join(lines)


def _check_output(path: Path, flag: str, overwrite: bool) -> None:
    if path.is_dir():
        raise MiningError(f"{flag} {path} is a folder; name a file")
    if path.exists() and not overwrite:
        raise MiningError(f"{flag} {path} already exists; pass --overwrite to replace it")


def default_report_path(output: Path) -> Path:
    return output.with_name(output.stem + ".mining-round.json")


def run_mine(args: argparse.Namespace) -> int:
    from wildlife_vision.cli_predict import _load_model
    from wildlife_vision.data.manifest import (SPLIT_ALIASES, ManifestError, atomic_write_text, file_sha256,
                                               read_manifest_table, write_manifest)

    output = Path(args.output)
    report_path = Path(args.report) if args.report else default_report_path(output)
    try:
        if args.top is not None and args.top < 0:
            raise MiningError(f"--top must be 0 (measure only) or more, got {args.top}")
        if args.min_score is not None and not 0.0 <= args.min_score <= 1.0:
            raise MiningError(f"--min-score must be between 0 and 1, got {args.min_score}")
        if args.batch_size < 1 or (args.workers is not None and args.workers < 1):
            raise MiningError("--batch-size and --workers must be at least 1")
        if args.round is not None and args.round < 1:
            raise MiningError(f"--round must be at least 1, got {args.round}")
        split = SPLIT_ALIASES.get(args.split.strip().lower())
        if not split:
            raise MiningError(f"--split {args.split!r} is not one of train, val, test")
        into = Path(args.into)
        if not into.is_file():
            raise MiningError(f"--into {into} is not a manifest file" + (" (it is a folder)" if into.is_dir() else ""))
        _check_output(output, "--output", args.overwrite)
        _check_output(report_path, "--report", args.overwrite)
        if os.path.abspath(report_path) == os.path.abspath(output):
            raise MiningError("--report and --output name the same file")
        target = read_manifest_table(into)
        pool = read_pool(args.pool, args.pool_split)
        if not pool.photos:
            raise MiningError(f"--pool {args.pool}: no photo left to score ({pool.rows} row(s): "
                              f"{pool.positives_skipped} with positive labels refused, {pool.outside_split} of other "
                              "splits); a pool must hold photos believed negative")
    except MiningError as e:
        return fail("mine", str(e), e.code)
    except ManifestError as e:
        return fail("mine", _one_line(e))
    round_no = args.round if args.round is not None else next_round(target)
    workers = args.workers if args.workers is not None else max(1, min(4, os.cpu_count() or 1))
    model, code = _load_model(args.model, None, 0, args.batch_size, "mine")
    if model is None:
        return code
    if pool.positives_skipped:
        labs = ", ".join(f"{lab} {n}" for lab, n in sorted(pool.positive_labels.items()))
        print(f"wildlife-vision mine: warning: {pool.positives_skipped} pool row(s) carry positive labels ({labs}) "
              "and were refused; a pool must be believed negative", file=sys.stderr)

    scored = score_pool(model, pool.photos, args.batch_size, workers, progress=not args.no_progress)
    if not scored.ok.any():
        first = next(iter(scored.errors.values()), "")
        return fail("mine", f"none of the {len(pool.photos)} pool photo(s) could be read (first error: {first})")
    in_target, repeat = known_mask([p.path for p in pool.photos],
                                   [str(target.image_path(i)) for i in range(len(target))])
    rule = "min-score" if args.min_score is not None else ("flagged" if args.flagged_only else "band")
    eligible = eligible_mask(scored.scores, scored.flagged, scored.review, rule, args.min_score)
    selected = select_top(scored.scores, eligible, scored.labels, args.top, args.per_label, in_target | repeat)
    fields, rows, rebased = build_manifest(target, output, pool, scored, selected, round_no, split)
    writing = output
    try:
        write_manifest(output, fields, rows)
        settings = {"rule": rule, "top": args.top, "per_label": bool(args.per_label), "min_score": args.min_score,
                    "split": split, "pool_split": args.pool_split}
        report = round_report(model=model, model_sha256=file_sha256(model.path), pool=pool, scored=scored,
                              in_target=in_target, repeat=repeat, selected=selected, settings=settings, into=into,
                              into_sha256=file_sha256(into), output=output, output_sha256=file_sha256(output),
                              output_rows=len(rows), round_no=round_no, rebased=rebased)
        writing = report_path
        atomic_write_text(report_path, json.dumps(report, indent=2) + "\n")
    except OSError as e:
        where = f" ({e.filename})" if e.filename and os.path.abspath(e.filename) != os.path.abspath(writing) else ""
        return fail("mine", f"cannot write {writing}: {e.strerror or e}{where}", EXIT_FAILURE)
    print(format_summary(report))
    print(f"report: {report_path}")
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "mine", help="hard-negative mining: add a model's most confident false positives on a negative pool "
                     "to a training manifest",
        description=wrap("One round of hard-negative mining. Score a pool of photos believed to hold no positives "
                         "(a manifest, whose rows with labels are refused, or a folder of photos) with the model, "
                         "pick the most confident false positives (by default those flagged or in a label's review "
                         "band, the top K by their highest score), leave out photos already in the training "
                         "manifest (same path or same bytes), and write a new manifest: the training manifest's "
                         "rows unchanged plus the mined photos as negatives (split train, source mined:<pool>, "
                         "columns mined_round, mined_score, mined_label). Writes the round's report "
                         f"(schema {SCHEMA}): the pool's flag and review rates per label with 95% bootstrap "
                         "intervals, what was selected, the new manifest's sha256. See docs/hard-negative-mining.md."),
        epilog="example:\n  wildlife-vision mine model.onnx --pool ../everyday/manifest.csv --pool-split train \\\n"
               "      --into data/manifest.csv --output data/manifest.round1.csv --top 200",
        formatter_class=HelpFormatter)
    p.add_argument("model", metavar="MODEL.onnx", help="the model whose false positives are mined")
    p.add_argument("--pool", required=True, metavar="POOL",
                   help="photos believed negative: a manifest CSV or a folder of photos (read recursively)")
    p.add_argument("--pool-split", default=None, metavar="SPLIT",
                   help="mine only this split of a manifest pool (keep another split held out for measuring)")
    p.add_argument("--into", required=True, metavar="TRAIN_MANIFEST.csv", help="the training manifest to add to")
    p.add_argument("--output", "-o", required=True, metavar="NEW_MANIFEST.csv", help="the new manifest to write")
    p.add_argument("--top", type=int, default=DEFAULT_TOP, metavar="K",
                   help=f"keep at most K photos (per label with --per-label); 0: measure the pool only "
                        f"(default {DEFAULT_TOP})")
    p.add_argument("--per-label", action="store_true", help="rank each label by its own score and keep K per label")
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--min-score", type=float, default=None, metavar="S",
                      help="a photo is a candidate when a label's score is at least S (instead of flagged or in "
                           "the review band)")
    rule.add_argument("--flagged-only", action="store_true",
                      help="a photo is a candidate only when a label is flagged (not for the review band)")
    p.add_argument("--split", default="train", help="split written for the mined rows")
    p.add_argument("--round", type=int, default=None, metavar="N",
                   help="round number written in mined_round (default: 1 + the highest in --into)")
    p.add_argument("--report", metavar="ROUND.json", default=None,
                   help="the round's report (default: NEW_MANIFEST.mining-round.json beside --output)")
    p.add_argument("--batch-size", "-b", type=int, default=32, metavar="N", help="images per onnxruntime call")
    p.add_argument("--workers", "-j", type=int, default=None, metavar="N",
                   help="decoding threads (default: min(4, CPU count))")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output / --report")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress output on stderr (by default: a bar on a terminal, else a line every 10 s)")
    p.set_defaults(func=run_mine)


__all__ = ["SCHEMA", "MINED_COLUMNS", "MiningError", "Pool", "PoolPhoto", "PoolScores", "Selected", "read_pool",
           "score_pool", "known_mask", "eligible_mask", "select_top", "rate_intervals", "pool_rates",
           "round_report", "build_manifest", "next_round", "format_summary", "run_mine", "register"]
