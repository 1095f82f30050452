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
from typing import Any, Dict, Sequence, Tuple

import numpy as np

from wildlife_vision.evaluation.metrics import precision_recall_curve

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5


def _between(thresholds: np.ndarray, idx: int) -> float:
    """A threshold halfway between distinct score ``idx`` and the next lower one (flags the same val photos)."""
    t = float(thresholds[idx])
    if idx + 1 < thresholds.size:
        t = (t + float(thresholds[idx + 1])) / 2.0
    return float(min(1.0, max(0.0, t)))


def pick_threshold(y: np.ndarray, s: np.ndarray, target: str, value: float) -> Dict[str, Any]:
    """Threshold for one label; returns threshold, achieved precision and recall, and whether the target was met."""
    precision, recall, thresholds = precision_recall_curve(y, s)
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


def calibrate(y_true: np.ndarray, scores: np.ndarray, labels: Sequence[str], target: str = "precision",
              value: float = 0.95, review_recall: float = 0.95, split: str = "val"
              ) -> Tuple[Dict[str, float], Dict[str, Tuple[float, float]], Dict[str, Any]]:
    """Choose thresholds and review bands for every label.

    Returns ``(thresholds, review_bands, calibration)`` where ``calibration`` describes the method and, per
    label, the achieved precision/recall at the threshold and the recall including the review band.
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
        pick = pick_threshold(y[:, j], s[:, j], target, value)
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
    calibration = {"split": split, "target": target, "value": value, "review_recall": review_recall,
                   "n_images": int(y.shape[0]), "rule": (
                       f"threshold = lowest score with val precision >= {value}" if target == "precision"
                       else f"threshold = highest score with val recall >= {value}") +
                   f"; review band down to the score reaching val recall {review_recall}",
                   "per_label": per_label}
    return thresholds, bands, calibration
