"""Per-label thresholds and review bands chosen on the validation split.

For each label the *threshold* is chosen for a target precision (default 0.95: the lowest threshold whose
flagged set is at least that precise, which gives the most recall at that precision) or a target recall (the
highest threshold that still reaches it). Under each threshold sits a *review band* ``[low, threshold)``: scores
there go to human review instead of being dropped. ``low`` is the highest score at which flagged + review
together reach ``review_recall`` of the validation positives (the band is empty when the threshold already
reaches it). Thresholds sit halfway between neighbouring validation scores so they do not hinge on one photo.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from wildlife_vision.evaluation.baserate import precision_at
from wildlife_vision.evaluation.metrics import precision_recall_curve

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5


def _between(thresholds: np.ndarray, idx: int) -> float:
    """A threshold halfway between distinct score ``idx`` and the next lower one (flags the same val photos)."""
    t = float(thresholds[idx])
    if idx + 1 < thresholds.size:
        t = (t + float(thresholds[idx + 1])) / 2.0
    return float(min(1.0, max(0.0, t)))


def pick_threshold(y: np.ndarray, s: np.ndarray, target: str, value: float,
                   prevalence: Optional[float] = None) -> Dict[str, Any]:
    """Threshold for one label; returns threshold, achieved precision and recall, and whether the target was met.

    With ``prevalence`` a precision target is met at that base rate instead of the sample's own: precision is
    computed from the sample's recall and false-positive rate (:func:`~.baserate.precision_at`)."""
    precision, recall, thresholds = precision_recall_curve(y, s)
    if prevalence is not None and target == "precision":
        positives = float(np.asarray(y).sum())
        negatives = float(np.asarray(y).size) - positives
        fp = np.rint(_flagged_at_thresholds(s) - recall * positives)  # flagged photos less the true ones, per threshold
        fpr = fp / negatives if negatives else np.full(recall.shape, np.nan)
        precision = np.nan_to_num(precision_at(prevalence, recall, fpr), nan=0.0)
    if target == "precision":
        ok = np.flatnonzero(precision >= value)
        if ok.size:
            idx, met = int(ok[-1]), True
        else:  # unreachable: the most precise point, and among those the one with the most recall
            best = precision.max()
            idx, met = int(np.flatnonzero(precision == best)[-1]), False
    elif target == "recall":
        ok = np.flatnonzero(recall >= value)
        idx, met = (int(ok[0]), True) if ok.size else (int(recall.size - 1), False)
    else:
        raise ValueError(f"target must be 'precision' or 'recall', got {target!r}")
    return {"threshold": _between(thresholds, idx), "precision": float(precision[idx]),
            "recall": float(recall[idx]), "met": met, "_index": idx}


def _flagged_at_thresholds(s: np.ndarray) -> np.ndarray:
    """How many photos score at or above each distinct score, highest first (the points of
    :func:`~.metrics.precision_recall_curve`)."""
    ss = np.sort(np.asarray(s, dtype=np.float64).ravel())[::-1]
    last = np.r_[np.flatnonzero(np.diff(ss)), ss.size - 1] if ss.size else np.array([], dtype=int)
    return last + 1.0


def calibrate(y_true: np.ndarray, scores: np.ndarray, labels: Sequence[str], target: str = "precision",
              value: float = 0.95, review_recall: float = 0.95, split: str = "val",
              prevalence: Optional[float] = None
              ) -> Tuple[Dict[str, float], Dict[str, Tuple[float, float]], Dict[str, Any]]:
    """Choose thresholds and review bands for every label.

    Returns ``(thresholds, review_bands, calibration)`` where ``calibration`` describes the method and, per
    label, the achieved precision/recall at the threshold and the recall including the review band. With
    ``prevalence`` a precision target is met at that base rate (see :func:`pick_threshold`); ``precision`` in
    the result is then the precision at that prevalence.
    """
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    thresholds: Dict[str, float] = {}
    bands: Dict[str, Tuple[float, float]] = {}
    per_label: Dict[str, Any] = {}
    for j, lab in enumerate(labels):
        support = int(y[:, j].sum())
        if support == 0 or support == y.shape[0]:
            log.warning("calibration: label '%s' has %s in the %s split; keeping threshold %.2f", lab,
                        "no positives" if support == 0 else "no negatives", split, DEFAULT_THRESHOLD)
            thresholds[lab] = DEFAULT_THRESHOLD
            bands[lab] = (DEFAULT_THRESHOLD, DEFAULT_THRESHOLD)
            per_label[lab] = {"threshold": DEFAULT_THRESHOLD, "review_low": DEFAULT_THRESHOLD, "met": False,
                              "support": support, "precision": None, "recall": None, "review_recall": None,
                              "note": f"not calibrated: {'no positives' if support == 0 else 'no negatives'}"}
            continue
        pick = pick_threshold(y[:, j], s[:, j], target, value, prevalence)
        thr = pick["threshold"]
        review = pick_threshold(y[:, j], s[:, j], "recall", review_recall)
        low = min(review["threshold"], thr)
        if not pick["met"]:
            log.warning("calibration: label '%s' cannot reach %s %.3f on %s (best %.3f at recall %.3f)", lab, target,
                        value, split, pick["precision"] if target == "precision" else pick["recall"],
                        pick["recall"])
        thresholds[lab] = thr
        bands[lab] = (low, thr)
        flagged_or_review = s[:, j] >= low
        per_label[lab] = {"threshold": thr, "review_low": low, "met": pick["met"], "support": support,
                          "precision": pick["precision"], "recall": pick["recall"],
                          "review_recall": float((flagged_or_review & (y[:, j] == 1)).sum() / support),
                          "review_fraction": float(((s[:, j] >= low) & (s[:, j] < thr)).mean())}
    at = f" at prevalence {prevalence:g}" if prevalence is not None and target == "precision" else ""
    calibration = {"split": split, "target": target, "value": value, "review_recall": review_recall,
                   "n_images": int(y.shape[0]), "rule": (
                       f"threshold = lowest score with {split} precision{at} >= {value}" if target == "precision"
                       else f"threshold = highest score with {split} recall >= {value}") +
                   f"; review band down to the score reaching {split} recall {review_recall}",
                   "per_label": per_label}
    if prevalence is not None:
        calibration["prevalence"] = float(prevalence)
    return thresholds, bands, calibration


# ---- `wildlife-vision calibrate`: thresholds with their evidence ------------------------------------------

def operating_points(y_true: np.ndarray, scores: np.ndarray, labels: Sequence[str], target_precision: float,
                     prevalence: Optional[float] = None, review_recall: float = 0.95, probability: str = "none",
                     split: str = "val", resamples: int = 1000, groups: Optional[Sequence[str]] = None,
                     previous_maps: Optional[Dict[str, Any]] = None, seed: int = 0) -> Dict[str, Any]:
    """Thresholds and review bands for ``target_precision`` (at ``prevalence`` when given), optionally on scores
    made probabilities by a fitted per-label map (``probability``: none, temperature or isotonic), and the
    ``calibration`` block describing them: per label the counts, the sample prevalence, the precision, recall
    and false-positive rate achieved on the sample and at the prevalence, review rate and ECE, each with a 95%
    bootstrap interval (resampling photos, or ``groups``).

    ``scores`` are the model's scores as it outputs them; with ``probability`` other than none they must be the
    network's own (no earlier map), and ``previous_maps`` (the model's existing map, kept with ``none``) is
    replaced. Returns ``thresholds``, ``review_bands``, ``scores`` (those the thresholds are on, float32 as
    ``Model`` returns them), ``calibration``, ``unmet`` (labels that cannot reach the target) and ``messages``.
    """
    from datetime import datetime, timezone

    from .baserate import BASE_RATES, at_prevalence, label_base_rates, rate_draws, with_zero_fp_bound
    from .bootstrap import CONFIDENCE, label_intervals, percentile_interval, resample_indices
    from .probability import apply_maps, ece, ece_draws, fit, score_maps

    y = np.asarray(y_true, dtype=np.float64).reshape(-1, len(labels))
    raw = np.asarray(scores, dtype=np.float32).reshape(-1, len(labels))
    messages: List[str] = []
    maps_spec: Dict[str, Any] = {}
    if probability != "none":
        for j, lab in enumerate(labels):
            if 0 < y[:, j].sum() < y.shape[0]:
                maps_spec[lab] = fit(probability, y[:, j], raw[:, j])
        s = apply_maps(score_maps({"score_calibration": maps_spec}, labels), raw, labels)
    else:
        maps_spec = dict(previous_maps or {})
        s = raw
    thresholds, bands, cal = calibrate(y, s, labels, "precision", target_precision, review_recall, split, prevalence)
    draws = resample_indices(y.shape[0], groups, resamples, seed) if resamples else []
    unmet: List[str] = []
    for j, lab in enumerate(labels):
        m = cal["per_label"][lab]
        yj, sj = y[:, j], s[:, j].astype(np.float64)
        pos, neg = int(yj.sum()), int(yj.size - yj.sum())
        thr, low = thresholds[lab], bands[lab][0]
        flag = sj >= thr
        tp, fp = int((flag & (yj == 1)).sum()), int((flag & (yj == 0)).sum())
        recall, fpr = (tp / pos if pos else None), (fp / neg if neg else None)
        ci = label_intervals(yj, sj, thr, draws) if draws else {}
        m.update({"positives": pos, "negatives": neg, "sample_prevalence": pos / yj.size if yj.size else None})
        m["at_sample"] = {"precision": tp / (tp + fp) if tp + fp else None,
                          "precision_ci95": _listed(ci.get("precision")), "recall": recall,
                          "recall_ci95": _listed(ci.get("recall")), "fpr": fpr, "fpr_ci95": _listed(ci.get("fpr")),
                          "tp": tp, "fp": fp, "flag_rate": float(flag.mean()),
                          "flag_rate_ci95": _listed(ci.get("flag_rate"))}
        in_band = (sj >= low) & (sj < thr)
        m["review_rate"] = float(in_band.mean())
        m["review_rate_ci95"] = _listed(percentile_interval(
            [float(in_band[r].mean()) for r in draws])) if draws else None
        m["ece"] = ece(yj, sj)
        m["ece_ci95"] = _listed(percentile_interval(ece_draws(yj, sj, draws))) if draws else None
        if probability != "none":
            m["ece_before"] = ece(yj, raw[:, j].astype(np.float64))
        t_draws, f_draws = rate_draws(yj, flag, draws) if draws else (None, None)
        if prevalence is not None:
            at = at_prevalence(prevalence, recall, fpr, t_draws, f_draws)
            at.update({"recall": recall, "recall_ci95": m["at_sample"]["recall_ci95"], "fpr": fpr,
                       "fpr_ci95": m["at_sample"]["fpr_ci95"]})
            if fp == 0 and neg:
                with_zero_fp_bound(at, recall, neg)
            m["at_prevalence"] = at
        m["base_rates"] = label_base_rates(yj, flag, draws, BASE_RATES)
        achieved = m["at_prevalence"] if prevalence is not None else m["at_sample"]
        lower = achieved.get("precision_lower95", (achieved.get("precision_ci95") or [None])[0])
        m["met_at_lower_bound"] = bool(m["met"] and lower is not None and lower >= target_precision)
        if not m["met"]:
            unmet.append(lab)
            why = m.get("note") or (f"best precision {m['precision']:.3g} at recall {m['recall']:.3g}"
                                    if m.get("precision") is not None else "")
            messages.append(f"{lab}: no threshold reaches precision {target_precision:g}"
                            + (f" at prevalence {prevalence:g}" if prevalence is not None else "")
                            + f" on {split} ({why})")
        elif not m["met_at_lower_bound"]:
            messages.append(f"warning: {lab}: precision {target_precision:g} is met on this sample, but its 95% "
                            f"interval reaches down to {lower:.3f}" if lower is not None else
                            f"warning: {lab}: precision {target_precision:g} is met, but without an interval")
    cal.update({
        "schema_version": 1, "method": "wildlife-vision calibrate",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "target_precision": float(target_precision),
        "target_prevalence": None if prevalence is None else float(prevalence),
        "probability": probability if probability != "none" else ("kept" if maps_spec else "none"),
        "intervals": {"method": "percentile bootstrap", "confidence": CONFIDENCE, "resamples": int(resamples),
                      "unit": "group" if groups is not None else "photo"},
        "note": f"in-sample: thresholds were chosen on these {y.shape[0]} {split} photos, so the achieved figures "
                "are optimistic; evaluate on a held-out split for unbiased ones",
    })
    if maps_spec:
        cal["score_calibration"] = maps_spec
    return {"thresholds": thresholds, "review_bands": bands, "scores": s, "calibration": cal, "unmet": unmet,
            "messages": messages}


def _listed(iv: Any) -> Optional[List[float]]:
    return None if iv is None else [float(iv[0]), float(iv[1])]
