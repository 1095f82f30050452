"""95% bootstrap intervals for evaluation figures, resampling photos, or groups of photos where groups exist.

Every figure an evaluation reports (AP, precision, recall, false-positive and flag rates) gets a percentile
interval from the same resamples, so intervals of one report are consistent with each other and, for two models
scored on the same photos, paired (:func:`resample_indices` with the same seed gives the same resamples).
Near-duplicate groups (a manifest ``group`` column) are resampled whole: photos of one group are not
independent, and resampling them one by one would make the interval too narrow.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .metrics import average_precision

#: resamples per interval: the percentile interval's end points move by about 0.002 between seeds at 1,000
DEFAULT_RESAMPLES = 1000
CONFIDENCE = 0.95

Interval = Optional[Tuple[float, float]]


def resample_indices(n: int, groups: Optional[Sequence[str]] = None, resamples: int = DEFAULT_RESAMPLES,
                     seed: int = 0) -> List[np.ndarray]:
    """``resamples`` arrays of row indices, each a bootstrap resample of ``n`` rows (of whole groups when
    ``groups`` gives each row's group)."""
    rng = np.random.default_rng(seed)
    if n == 0:
        return []
    if groups is None:
        return list(rng.integers(0, n, size=(resamples, n)))
    if len(groups) != n:
        raise ValueError(f"{len(groups)} group ids for {n} rows")
    _, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(int(inverse.max()) + 1)]
    out = []
    for _ in range(resamples):
        picked = rng.integers(0, len(members), size=len(members))
        out.append(np.concatenate([members[g] for g in picked]))
    return out


def percentile_interval(values: Sequence[Optional[float]], confidence: float = CONFIDENCE) -> Interval:
    """The central ``confidence`` percentile interval of the defined (non-None, finite) values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size < 2:
        return None
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(v, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def interval(stat: Callable[[np.ndarray], Optional[float]], resamples: Sequence[np.ndarray]) -> Interval:
    """Percentile interval of ``stat(indices)`` over the resamples."""
    return percentile_interval([stat(idx) for idx in resamples])


def _ratio(num: np.ndarray, den: np.ndarray) -> List[Optional[float]]:
    return [float(a / b) if b else None for a, b in zip(num, den)]


def label_intervals(y_true: np.ndarray, scores: np.ndarray, threshold: float,
                    resamples: Sequence[np.ndarray]) -> Dict[str, Interval]:
    """Intervals for one label's AP, precision, recall, false-positive rate and flag rate at ``threshold``.

    A figure that is undefined on (almost) every resample, e.g. recall without positives, gets ``None``.
    """
    y = np.asarray(y_true, dtype=bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    flag = s >= threshold
    if not resamples:
        return {k: None for k in ("ap", "precision", "recall", "fpr", "flag_rate")}
    idx = np.stack(resamples) if len({len(r) for r in resamples}) == 1 else None
    if idx is not None:  # vectorised counts for the photo bootstrap
        yy, ff = y[idx], flag[idx]
        tp = (yy & ff).sum(1)
        fp = (~yy & ff).sum(1)
        pos = yy.sum(1)
        neg = (~yy).sum(1)
        size = np.full(len(idx), idx.shape[1])
    else:
        tp = np.array([(y[r] & flag[r]).sum() for r in resamples])
        fp = np.array([(~y[r] & flag[r]).sum() for r in resamples])
        pos = np.array([y[r].sum() for r in resamples])
        neg = np.array([(~y[r]).sum() for r in resamples])
        size = np.array([len(r) for r in resamples])
    out: Dict[str, Interval] = {
        "precision": percentile_interval(_ratio(tp, tp + fp)),
        "recall": percentile_interval(_ratio(tp, pos)),
        "fpr": percentile_interval(_ratio(fp, neg)),
        "flag_rate": percentile_interval(_ratio(tp + fp, size)),
    }
    out["ap"] = interval(lambda r: average_precision(y[r], s[r]) if y[r].any() else None, resamples) \
        if y.any() else None
    # an interval needs the figure to be defined on most resamples; otherwise it says nothing
    for key, defined in (("recall", pos > 0), ("precision", tp + fp > 0), ("fpr", neg > 0)):
        if defined.mean() < 0.9:
            out[key] = None
    return out


__all__ = ["resample_indices", "percentile_interval", "interval", "label_intervals", "DEFAULT_RESAMPLES",
           "CONFIDENCE"]
