"""Fitting new label heads on frozen embeddings: one L2-regularised logistic regression per label.

Features are standardised with the train rows' mean and standard deviation; the standardisation is affine, so it
is folded into the head's weights afterwards (:func:`fold_standardisation`) and the head in the graph stays one
plain ``Gemm`` on the model's ``embedding`` output. The regularisation strength is chosen per label by k-fold
cross-validation on the train rows only (folds seeded, stratified, and grouped by the manifest's ``group``
column when it has one, so near-duplicates never straddle a fold), scored by average precision; the validation
rows are left for the thresholds. Uses scikit-learn's L-BFGS solver (the ``[adapt]`` extra).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..evaluation.metrics import average_precision

#: inverse regularisation strengths tried by cross-validation (sklearn's C = 1 / lambda on standardised features)
DEFAULT_CS: Tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)
DEFAULT_FOLDS = 5
#: features whose train standard deviation is below this are left unscaled (constant features)
MIN_STD = 1e-6


@dataclass
class Head:
    """One fitted head, on the raw embedding: ``logit = weight . embedding + bias`` (float32, standardisation
    folded in); ``cv`` is the mean cross-validated AP per C tried."""

    label: str
    weight: np.ndarray
    bias: float
    C: float
    cv: Dict[str, Optional[float]] = field(default_factory=dict)
    folds: int = 0
    positives: int = 0
    negatives: int = 0
    converged: bool = True

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The head's logits on (N, D) embeddings, computed in float32 as the graph's Gemm does."""
        return np.asarray(x, dtype=np.float32) @ self.weight.astype(np.float32) + np.float32(self.bias)

    def to_dict(self) -> Dict[str, Any]:
        return {"C": self.C, "cv_folds": self.folds, "cv_ap": self.cv, "train_positives": self.positives,
                "train_negatives": self.negatives, "converged": self.converged}


def sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float32)
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def standardisation(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation of the train rows (constant features get sd 1)."""
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    sd[sd < MIN_STD] = 1.0
    return mu, sd


def fold_standardisation(coef: np.ndarray, intercept: float, mu: np.ndarray, sd: np.ndarray
                         ) -> Tuple[np.ndarray, float]:
    """Weights on raw features from weights on standardised ones: w.(x - mu)/sd + c = (w/sd).x + (c - (w/sd).mu)."""
    w = np.asarray(coef, dtype=np.float64) / sd
    return w.astype(np.float32), float(intercept - w @ mu)


def _folds(y: np.ndarray, groups: Optional[Sequence[str]], k: int, seed: int):
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if groups is not None and len(set(groups)) >= k:
        return list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(y, y, groups))
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(y, y))


def _fit(z: np.ndarray, y: np.ndarray, C: float, balanced: bool, seed: int) -> Tuple[Any, bool]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, class_weight="balanced" if balanced else None, solver="lbfgs", max_iter=1000,
                             tol=1e-5, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(z, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return clf, converged


def fit_heads(x: np.ndarray, y: np.ndarray, labels: Sequence[str], groups: Optional[Sequence[str]] = None,
              Cs: Sequence[float] = DEFAULT_CS, folds: int = DEFAULT_FOLDS, balanced: bool = True, seed: int = 0,
              progress: Any = None) -> List[Head]:
    """One :class:`Head` per label from train embeddings ``x`` (N, D) and 0/1 targets ``y`` (N, len(labels)).

    Each label needs positives and negatives. ``C`` is chosen among ``Cs`` by ``folds``-fold CV (mean AP; ties go
    to the stronger regularisation); with fewer positives or negatives than folds, the folds shrink to that (at
    least 2), and with a single C or fewer than 2 of either class, no CV is run. ``progress``: a
    :class:`~wildlife_vision.progress.Progress` updated once per fit.
    """
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y).reshape(len(x), len(labels))
    mu, sd = standardisation(x)
    z = ((x - mu) / sd).astype(np.float64)
    heads: List[Head] = []
    for j, lab in enumerate(labels):
        yj = (y[:, j] > 0.5).astype(int)
        pos, neg = int(yj.sum()), int(len(yj) - yj.sum())
        if pos == 0 or neg == 0:
            raise ValueError(f"label '{lab}' has {'no positive' if pos == 0 else 'no negative'} train rows; a head "
                             "needs both")
        k = min(int(folds), pos, neg)
        cv: Dict[str, Optional[float]] = {}
        best = float(Cs[0]) if len(Cs) else 1.0
        if k >= 2 and len(Cs) > 1:
            splits = _folds(yj, groups, k, seed)
            best_ap = -1.0
            for C in sorted(float(c) for c in Cs):
                aps = []
                for tr, te in splits:
                    if yj[tr].min() == yj[tr].max():
                        continue
                    clf, _ = _fit(z[tr], yj[tr], C, balanced, seed)
                    ap = average_precision(yj[te], clf.decision_function(z[te]))
                    if ap is not None:
                        aps.append(ap)
                    if progress is not None:
                        progress.update(1)
                mean = float(np.mean(aps)) if aps else None
                cv[f"{C:g}"] = mean
                if mean is not None and mean > best_ap + 1e-9:
                    best_ap, best = mean, C
        else:
            k = 0
        clf, converged = _fit(z, yj, best, balanced, seed)
        if progress is not None:
            progress.update(1)
        w, b = fold_standardisation(clf.coef_[0], float(clf.intercept_[0]), mu, sd)
        heads.append(Head(label=lab, weight=w, bias=b, C=best, cv=cv, folds=k, positives=pos, negatives=neg,
                          converged=converged))
    return heads


def planned_fits(n_labels: int, Cs: Sequence[float], folds: int) -> int:
    """How many fits :func:`fit_heads` runs at most (for the progress bar's total)."""
    return n_labels * ((len(Cs) * folds if len(Cs) > 1 else 0) + 1)


__all__ = ["Head", "fit_heads", "fold_standardisation", "standardisation", "sigmoid", "planned_fits",
           "DEFAULT_CS", "DEFAULT_FOLDS"]
