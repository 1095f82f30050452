"""Scores you can read as probabilities: per-label score maps (temperature or isotonic), their fitting, the
expected calibration error and the reliability diagram. numpy only (matplotlib, lazily, for the plot).

A *score map* turns the network's score for one label into a calibrated probability. It is stored in the model's
metadata under ``calibration.score_calibration`` as ``{label: {"method": ..., "params": {...}}}`` and
:class:`wildlife_vision.model.Model` applies it to every score after the session, so thresholds and review bands
written next to it are on the calibrated scale. A label without an entry keeps its scores as they are.

- ``temperature``: ``sigmoid(logit(s) / T)``, one ``T`` per label fitted by minimising the negative
  log-likelihood of the calibration sample (T > 1 softens an over-confident model, T < 1 sharpens it). It keeps
  the order of the scores, so AP and ROC-AUC do not move.
- ``isotonic``: the monotone step function closest (least squares) to the 0/1 labels, fitted by
  pool-adjacent-violators, stored as knots ``x`` (scores) and ``y`` (probabilities) and applied by linear
  interpolation between knots (flat outside them). It can merge neighbouring scores into ties.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import numpy as np

METHODS = ("temperature", "isotonic")
#: scores are clipped to [EPS, 1 - EPS] before the logit (float32 sigmoid outputs reach exactly 0 and 1)
EPS = 1e-7
ECE_BINS = 15

ScoreMap = Callable[[np.ndarray], np.ndarray]


class ScoreMapError(ValueError):
    """A stored score map is malformed."""


def logit(s: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(s, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # stable for large |z|


def _nll(y: np.ndarray, z: np.ndarray) -> float:
    # -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))] = log(1 + e^z) - y z, computed stably
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(y_true: np.ndarray, scores: np.ndarray, iterations: int = 200) -> Dict[str, float]:
    """The temperature ``T`` minimising the mean NLL of ``sigmoid(logit(s) / T)``; ``T`` in [0.01, 100].

    The NLL is convex in ``1 / T`` (a logistic regression without intercept), so a golden-section search over
    ``log(1 / T)`` finds the minimum."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    z = logit(scores).ravel()
    lo, hi = math.log(0.01), math.log(100.0)
    g = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = _nll(y, z * math.exp(a)), _nll(y, z * math.exp(b))
    for _ in range(iterations):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = _nll(y, z * math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = _nll(y, z * math.exp(b))
        if hi - lo < 1e-9:
            break
    return {"temperature": float(1.0 / math.exp((lo + hi) / 2.0))}


def fit_isotonic(y_true: np.ndarray, scores: np.ndarray) -> Dict[str, list]:
    """Pool-adjacent-violators: the non-decreasing fit of the labels on the scores, as interpolation knots."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError("isotonic calibration needs at least one photo")
    xs, inverse = np.unique(s, return_inverse=True)  # tied scores are one point, weighted by their count
    weight = np.bincount(inverse).astype(np.float64)
    total = np.bincount(inverse, weights=y)
    # blocks as parallel stacks: mean value, weight, first and last point index
    value: list = []
    w: list = []
    first: list = []
    last: list = []
    for i in range(xs.size):
        value.append(total[i] / weight[i])
        w.append(weight[i])
        first.append(i)
        last.append(i)
        while len(value) > 1 and value[-2] >= value[-1]:  # pool: keep the fit non-decreasing
            wt = w[-2] + w[-1]
            value[-2] = (value[-2] * w[-2] + value[-1] * w[-1]) / wt
            w[-2] = wt
            last[-2] = last[-1]
            del value[-1], w[-1], first[-1], last[-1]
    kx: list = []
    ky: list = []
    for v, a, b in zip(value, first, last):
        kx.append(float(xs[a]))
        ky.append(float(v))
        if b != a:
            kx.append(float(xs[b]))
            ky.append(float(v))
    return {"x": kx, "y": ky}


def fit(method: str, y_true: np.ndarray, scores: np.ndarray) -> Dict[str, Any]:
    """One label's score map ``{"method", "params", "n"}`` fitted on (0/1 labels, scores)."""
    if method == "temperature":
        params: Dict[str, Any] = fit_temperature(y_true, scores)
    elif method == "isotonic":
        params = fit_isotonic(y_true, scores)
    else:
        raise ValueError(f"unknown probability calibration {method!r}; choose from {', '.join(METHODS)}")
    return {"method": method, "params": params, "n": int(np.asarray(scores).size)}


def score_map(spec: Any, label: str = "") -> ScoreMap:
    """The function applying one stored score map (validated: :class:`ScoreMapError` says what is wrong)."""
    where = f"score_calibration[{label!r}]" if label else "score_calibration"
    if not isinstance(spec, Mapping) or not isinstance(spec.get("params"), Mapping):
        raise ScoreMapError(f"{where} must be an object with 'method' and 'params'")
    method, params = spec.get("method"), spec["params"]
    if method == "temperature":
        t = params.get("temperature")
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ScoreMapError(f"{where}: 'temperature' must be a positive number, got {t!r}")
        inv = 1.0 / float(t)
        return lambda s: _sigmoid(logit(s) * inv)
    if method == "isotonic":
        try:
            x = np.asarray(params.get("x"), dtype=np.float64)
            y = np.asarray(params.get("y"), dtype=np.float64)
        except (TypeError, ValueError):
            raise ScoreMapError(f"{where}: isotonic 'x' and 'y' must be lists of numbers") from None
        if (x.ndim != 1 or x.shape != y.shape or x.size == 0 or not np.isfinite(x).all() or not np.isfinite(y).all()
                or (np.diff(x) < 0).any() or (np.diff(y) < 0).any() or y.min() < 0 or y.max() > 1):
            raise ScoreMapError(f"{where}: isotonic 'x' and 'y' must be equally long, non-decreasing lists with y "
                                "in [0, 1]")
        return lambda s: np.interp(np.asarray(s, dtype=np.float64), x, y)
    raise ScoreMapError(f"{where}: unknown method {method!r} (this wildlife_vision knows {', '.join(METHODS)}; "
                        "upgrade with `pip install -U wildlife-vision`)")


def score_maps(calibration: Mapping[str, Any], labels: Sequence[str]) -> Dict[str, ScoreMap]:
    """The score maps stored in a model's ``calibration`` block (``score_calibration``), by label; empty when
    there are none. Raises :class:`ScoreMapError` for a malformed map or one naming an unknown label."""
    block = calibration.get("score_calibration") if isinstance(calibration, Mapping) else None
    if not block:
        return {}
    if not isinstance(block, Mapping):
        raise ScoreMapError("score_calibration must be an object mapping label to {method, params}")
    unknown = sorted(set(block) - set(labels))
    if unknown:
        raise ScoreMapError(f"score_calibration names labels the model does not have: {unknown}")
    return {lab: score_map(block[lab], lab) for lab in labels if lab in block}


def apply_maps(maps: Mapping[str, ScoreMap], scores: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """(N, L) scores through the per-label maps, as float32 (what :class:`~wildlife_vision.model.Model` returns)."""
    s = np.array(scores, dtype=np.float64, copy=True).reshape(-1, len(labels))
    for j, lab in enumerate(labels):
        if lab in maps:
            s[:, j] = maps[lab](s[:, j])
    return s.astype(np.float32)


def reliability_bins(y_true: np.ndarray, scores: np.ndarray, bins: int = ECE_BINS) -> Dict[str, np.ndarray]:
    """Equal-width bins over [0, 1]: per bin the photo count, mean score and share of positives."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.clip(np.asarray(scores, dtype=np.float64).ravel(), 0.0, 1.0)
    which = np.minimum((s * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.bincount(which, weights=s, minlength=bins) / count
        positive_rate = np.bincount(which, weights=y, minlength=bins) / count
    return {"count": count, "mean_score": mean_score, "positive_rate": positive_rate}


def ece(y_true: np.ndarray, scores: np.ndarray, bins: int = ECE_BINS) -> Optional[float]:
    """Expected calibration error: the photo-weighted mean over equal-width score bins of
    ``|share of positives - mean score|``; None for an empty sample."""
    r = reliability_bins(y_true, scores, bins)
    n = r["count"].sum()
    if n == 0:
        return None
    used = r["count"] > 0
    return float(np.sum(r["count"][used] * np.abs(r["positive_rate"][used] - r["mean_score"][used])) / n)


def ece_draws(y_true: np.ndarray, scores: np.ndarray, resamples: Sequence[np.ndarray],
              bins: int = ECE_BINS) -> list:
    """The ECE on each bootstrap resample (row indices), for :func:`~.bootstrap.percentile_interval`."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    return [ece(y[r], s[r], bins) for r in resamples]


def plot_reliability(y_true: np.ndarray, scores: np.ndarray, labels: Sequence[str], path: Path,
                     bins: int = ECE_BINS, title: str = "") -> None:
    """Reliability diagram: per label the share of positives against the mean score in each bin (the diagonal
    is a perfectly calibrated model), with the ECE in the legend and the photo count per bin below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(y_true).reshape(-1, len(labels))
    s = np.asarray(scores).reshape(-1, len(labels))
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(6, 6.5), dpi=100, sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfectly calibrated")
    edges = np.linspace(0, 1, bins + 1)
    for j, lab in enumerate(labels):
        r = reliability_bins(y[:, j], s[:, j], bins)
        used = r["count"] > 0
        e = ece(y[:, j], s[:, j], bins)
        ax.plot(r["mean_score"][used], r["positive_rate"][used], "o-", ms=4,
                label=f"{lab} (ECE {e:.3f})" if e is not None else lab)
        hist.stairs(r["count"], edges, label=lab)
    ax.set_ylabel("share of positives")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or f"Reliability ({bins} equal-width score bins)")
    hist.set_xlabel("score")
    hist.set_ylabel("photos")
    hist.set_yscale("symlog")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


__all__ = ["METHODS", "ScoreMapError", "fit", "fit_temperature", "fit_isotonic", "score_map", "score_maps",
           "apply_maps", "ece", "ece_draws", "reliability_bins", "plot_reliability", "logit"]
