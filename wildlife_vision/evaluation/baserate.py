"""Flag rates at base rates: what a model's recall and false-positive rate mean on a real marketplace.

A labelled sample is usually far richer in positives than a marketplace (a few in a thousand listings, or
fewer), and precision depends on that share. Recall (the true-positive rate, TPR) and the false-positive rate
(FPR) do not, so the precision at a prevalence ``pi`` follows from them::

    precision(pi) = pi * TPR / (pi * TPR + (1 - pi) * FPR)

and per million listings ``1e6 * (pi * TPR + (1 - pi) * FPR)`` are flagged, ``1e6 * pi * TPR`` of them
rightly. Intervals come from the same arithmetic on each bootstrap resample's TPR and FPR
(:mod:`wildlife_vision.evaluation.bootstrap`). `wildlife-vision calibrate --prevalence` chooses thresholds with
:func:`precision_at`, and `evaluate` reports :func:`base_rate_table` for every label.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .bootstrap import percentile_interval

#: the marketplace base rates every evaluation report shows: 1 in 100, 1 in 1,000, 1 in 10,000 listings
BASE_RATES = (0.01, 0.001, 0.0001)
PER = 1_000_000


def check_prevalence(prevalence: float) -> float:
    p = float(prevalence)
    if not 0.0 < p < 1.0:
        raise ValueError(f"a prevalence must lie strictly between 0 and 1 (e.g. 0.001 for 1 in 1,000), "
                         f"got {prevalence}")
    return p


def precision_at(prevalence: float, tpr: Any, fpr: Any) -> Any:
    """Precision at ``prevalence`` from recall and false-positive rate (scalars or arrays; NaN where nothing is
    flagged or an input is undefined)."""
    pi = check_prevalence(prevalence)
    t = np.asarray(np.nan if tpr is None else tpr, dtype=np.float64)
    f = np.asarray(np.nan if fpr is None else fpr, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        true = pi * t
        flagged = true + (1.0 - pi) * f
        out = np.where(flagged > 0, true / np.where(flagged > 0, flagged, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


def per_million(prevalence: float, tpr: Optional[float], fpr: Optional[float]) -> Dict[str, Optional[int]]:
    """Listings per million at ``prevalence``: flagged, of which true, and false (None where undefined: without
    positives the sample says nothing about true flags, without negatives nothing about false ones)."""
    pi = check_prevalence(prevalence)
    true = None if tpr is None else PER * pi * float(tpr)
    false = None if fpr is None else PER * (1.0 - pi) * float(fpr)
    flagged = None if true is None or false is None else true + false
    return {"flagged": _round(flagged), "true": _round(true), "false": _round(false)}


def _round(x: Optional[float]) -> Optional[int]:
    return None if x is None else int(round(x))


def sentence(entry: Dict[str, Any]) -> str:
    """'per million listings: N flagged, of which M true' for one :func:`at_prevalence` entry."""
    pm = entry["per_million"]
    if pm["flagged"] is None:
        false = "unknown" if pm["false"] is None else f"{pm['false']:,}"
        return f"per million listings: {false} false flags (true flags unknown: no positives in the sample)"
    return f"per million listings: {pm['flagged']:,} flagged, of which {pm['true']:,} true"


def rate_draws(y_true: np.ndarray, flagged: np.ndarray, resamples: Sequence[np.ndarray]
               ) -> Tuple[np.ndarray, np.ndarray]:
    """Per bootstrap resample (row indices), the TPR and FPR of a flag vector (NaN where undefined)."""
    y = np.asarray(y_true, dtype=bool).ravel()
    f = np.asarray(flagged, dtype=bool).ravel()
    tpr, fpr = np.full(len(resamples), np.nan), np.full(len(resamples), np.nan)
    for k, r in enumerate(resamples):
        yy, ff = y[r], f[r]
        pos, neg = int(yy.sum()), int((~yy).sum())
        if pos:
            tpr[k] = (yy & ff).sum() / pos
        if neg:
            fpr[k] = (~yy & ff).sum() / neg
    return tpr, fpr


def _interval(values: np.ndarray) -> Optional[List[float]]:
    finite = np.isfinite(values)
    if values.size == 0 or finite.mean() < 0.9:  # undefined on many resamples: the interval would say nothing
        return None
    iv = percentile_interval(list(values[finite]))
    return list(iv) if iv else None


def at_prevalence(prevalence: float, tpr: Optional[float], fpr: Optional[float],
                  tpr_draws: Optional[np.ndarray] = None, fpr_draws: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """Precision and listings per million at one prevalence, with 95% intervals from the resamples' rates."""
    pi = check_prevalence(prevalence)
    p = precision_at(pi, tpr, fpr)
    out: Dict[str, Any] = {"prevalence": pi, "precision": None if p is None or np.isnan(p) else float(p),
                           "precision_ci95": None, "per_million": per_million(pi, tpr, fpr),
                           "per_million_ci95": {"flagged": None, "true": None, "false": None}}
    if tpr_draws is not None and fpr_draws is not None and len(tpr_draws):
        t, f = np.asarray(tpr_draws, dtype=np.float64), np.asarray(fpr_draws, dtype=np.float64)
        if tpr is not None and fpr is not None:
            out["precision_ci95"] = _interval(precision_at(pi, t, f))
        ci = out["per_million_ci95"]
        if tpr is not None:
            ci["true"] = _scaled(_interval(PER * pi * t))
        if fpr is not None:
            ci["false"] = _scaled(_interval(PER * (1.0 - pi) * f))
        if tpr is not None and fpr is not None:
            ci["flagged"] = _scaled(_interval(PER * (pi * t + (1.0 - pi) * f)))
    out["text"] = sentence(out)
    return out


def _scaled(iv: Optional[List[float]]) -> Optional[List[int]]:
    return None if iv is None else [int(round(iv[0])), int(round(iv[1]))]


def base_rate_table(tpr: Optional[float], fpr: Optional[float], tpr_draws: Optional[np.ndarray] = None,
                    fpr_draws: Optional[np.ndarray] = None, rates: Sequence[float] = BASE_RATES
                    ) -> List[Dict[str, Any]]:
    """:func:`at_prevalence` at each of ``rates`` (default 1/100, 1/1,000, 1/10,000)."""
    return [at_prevalence(pi, tpr, fpr, tpr_draws, fpr_draws) for pi in rates]


def zero_fp_fpr_bound(negatives: int, confidence: float = 0.95) -> Optional[float]:
    """The one-sided upper ``confidence`` bound on the false-positive rate when none of ``negatives`` was flagged
    (exact binomial: ``1 - (1 - confidence) ** (1 / n)``, about 3/n, the 'rule of three')."""
    return None if negatives <= 0 else float(1.0 - (1.0 - confidence) ** (1.0 / negatives))


def with_zero_fp_bound(entry: Dict[str, Any], tpr: Optional[float], negatives: int) -> Dict[str, Any]:
    """When no negative was flagged every bootstrap resample has FPR 0 and the precision interval collapses to
    [1, 1]; add ``fpr_upper95`` and ``precision_lower95`` (the precision at that FPR bound), in place."""
    bound = zero_fp_fpr_bound(negatives)
    if bound is None:
        return entry
    entry["fpr_upper95"] = bound
    p = precision_at(entry["prevalence"], tpr, bound) if tpr is not None else None
    entry["precision_lower95"] = None if p is None or np.isnan(p) else float(p)
    entry["note"] = (f"no false positive among {negatives:,} negatives: the sample only bounds the false-positive "
                     f"rate below {bound:.2g} (95%)" + (f", so precision may be as low as {p:.3f}"
                                                        if entry["precision_lower95"] is not None else ""))
    return entry


def label_base_rates(y_true: np.ndarray, flagged: np.ndarray, resamples: Sequence[np.ndarray],
                     rates: Sequence[float] = BASE_RATES) -> List[Dict[str, Any]]:
    """The base-rate table of one label from its 0/1 truth and flags on a sample, with bootstrap intervals
    (and the zero-false-positive bound of :func:`with_zero_fp_bound` when no negative was flagged)."""
    y = np.asarray(y_true, dtype=bool).ravel()
    f = np.asarray(flagged, dtype=bool).ravel()
    pos, neg = int(y.sum()), int((~y).sum())
    tpr = float((y & f).sum() / pos) if pos else None
    fpr = float((~y & f).sum() / neg) if neg else None
    t_draws, f_draws = rate_draws(y, f, resamples) if resamples else (None, None)
    table = base_rate_table(tpr, fpr, t_draws, f_draws, rates)
    if fpr == 0.0:
        for entry in table:
            with_zero_fp_bound(entry, tpr, neg)
    return table


__all__ = ["BASE_RATES", "precision_at", "per_million", "at_prevalence", "base_rate_table", "label_base_rates",
           "rate_draws", "sentence", "check_prevalence", "zero_fp_fpr_bound", "with_zero_fp_bound"]
