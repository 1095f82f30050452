"""Multi-label classification metrics in numpy (no sklearn): AP, ROC-AUC, precision/recall/F1, PR curves.

Conventions follow scikit-learn: average precision is the step-wise sum ``sum_k (R_k - R_{k-1}) * P_k`` over
distinct score thresholds (no interpolation); ROC-AUC is the Mann-Whitney statistic with ties counted as one
half. Undefined values (AP without positives, AUC with one class) are ``None`` so reports stay valid JSON.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np


def _check(y_true: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true and scores differ in size: {y.shape} vs {s.shape}")
    if y.size and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must contain only 0 and 1")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    return y, s


def precision_recall_curve(y_true: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall when flagging ``score >= t`` for every distinct score ``t`` (descending thresholds).

    Returns ``(precision, recall, thresholds)`` of equal length; recall rises along the arrays.
    """
    y, s = _check(y_true, scores)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.array([], dtype=int)
    tp = np.cumsum(y)[last_of_group]
    flagged = last_of_group + 1.0
    n_pos = y.sum()
    precision = tp / flagged
    recall = tp / n_pos if n_pos > 0 else np.zeros_like(tp)
    return precision, recall, s[last_of_group]


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> Optional[float]:
    y, s = _check(y_true, scores)
    if y.sum() == 0:
        return None
    precision, recall, _ = precision_recall_curve(y, s)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> Optional[float]:
    y, s = _check(y_true, scores)
    n_pos = y.sum()
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # average ranks over ties
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], s.size]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def confusion(y_true: np.ndarray, predicted: np.ndarray) -> Dict[str, int]:
    y = np.asarray(y_true).astype(bool).ravel()
    p = np.asarray(predicted).astype(bool).ravel()
    return {"tp": int((y & p).sum()), "fp": int((~y & p).sum()), "fn": int((y & ~p).sum()),
            "tn": int((~y & ~p).sum())}


def prf(tp: int, fp: int, fn: int) -> Dict[str, Optional[float]]:
    """Precision, recall and F1 from counts; 0 when there is nothing to divide (scikit-learn's zero_division=0)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def multilabel_report(y_true: np.ndarray, scores: np.ndarray, labels: Sequence[str],
                      thresholds: Optional[Mapping[str, float]] = None) -> Dict[str, Any]:
    """Per-class and macro/micro metrics for an (N, L) target matrix and (N, L) scores.

    A label is predicted when ``score >= thresholds[label]`` (default 0.5). Macro averages are over the labels
    with at least one positive (and, for AUC, one negative); micro pools every (image, label) decision.
    """
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 2 or y.shape != s.shape or y.shape[1] != len(labels):
        raise ValueError(f"expected (N, {len(labels)}) targets and scores, got {y.shape} and {s.shape}")
    thr = {lab: float((thresholds or {}).get(lab, 0.5)) for lab in labels}
    pred = s >= np.array([thr[lab] for lab in labels])[None, :]
    per_class: Dict[str, Dict[str, Any]] = {}
    for j, lab in enumerate(labels):
        c = confusion(y[:, j], pred[:, j])
        per_class[lab] = {**prf(c["tp"], c["fp"], c["fn"]), "ap": average_precision(y[:, j], s[:, j]),
                          "roc_auc": roc_auc(y[:, j], s[:, j]), "support": int(y[:, j].sum()),
                          "threshold": thr[lab], **c}
    supported = [lab for lab in labels if per_class[lab]["support"] > 0]
    macro = {k: _mean([per_class[lab][k] for lab in supported]) for k in ("precision", "recall", "f1", "ap", "roc_auc")}
    tot = confusion(y, pred)
    micro = {**prf(tot["tp"], tot["fp"], tot["fn"]), "ap": average_precision(y, s) if y.size else None,
             "roc_auc": roc_auc(y, s) if y.size else None}
    return {"n_images": int(y.shape[0]), "labels": list(labels), "per_class": per_class, "macro": macro,
            "micro": micro}


def macro_ap(y_true: np.ndarray, scores: np.ndarray) -> Optional[float]:
    """Mean AP over the labels that have at least one positive."""
    y = np.asarray(y_true)
    return _mean([average_precision(y[:, j], scores[:, j]) for j in range(y.shape[1])])
