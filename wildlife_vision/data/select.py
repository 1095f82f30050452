"""Which unlabelled photos are worth a reviewer's time next (active learning), torch-free.

:func:`select_for_review` takes a pool's scores for one label, its threshold and the pool's embeddings
(``Model.embed``), and picks ``n`` photos:

1. **uncertainty**: the ``candidates x n`` photos whose score is closest to the threshold, in logit space (where
   the model would change its decision with the least evidence);
2. **diversity**: among those, a greedy k-center pick in embedding space (cosine), starting with the most
   uncertain, each next photo the candidate farthest from everything already picked or already labelled, so that
   one batch does not spend 50 labels on 50 near-copies of one listing.

:func:`confident_positives` is the other half of the loop: on a pool believed clean (no positives, e.g. a
category of everyday listings), its highest-scored photos are the look-alikes a reviewer should confirm.
"""

from __future__ import annotations

from typing import Optional

import numpy as np


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def select_for_review(scores: np.ndarray, threshold: float, embeddings: np.ndarray, n: int,
                      candidates: float = 4.0, exclude: Optional[np.ndarray] = None,
                      labelled: Optional[np.ndarray] = None) -> np.ndarray:
    """Indices of ``n`` pool photos to label next (order: the order picked). ``exclude``: a boolean mask of photos
    that may not be picked (already labelled, unreadable); ``labelled``: embeddings of the photos already
    labelled, which the diversity step stays away from."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if len(scores) != len(embeddings):
        raise ValueError(f"{len(scores)} scores for {len(embeddings)} embeddings")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    ok = np.isfinite(scores)
    if exclude is not None:
        ok &= ~np.asarray(exclude, dtype=bool)
    pool = np.flatnonzero(ok)
    if len(pool) <= n:
        return pool
    margin = np.abs(_logit(scores[pool]) - _logit(np.array([threshold]))[0])
    m = min(len(pool), max(n, int(round(candidates * n))))
    cand = pool[np.argsort(margin, kind="stable")[:m]]
    z = _unit(embeddings[cand])
    if labelled is not None and len(labelled):  # start from the candidate farthest from what is labelled
        far = np.min(1.0 - _unit(labelled) @ z.T, axis=0)
        first = int(np.argmax(far))
    else:  # start from the most uncertain candidate
        far = np.full(len(cand), np.inf)
        first = 0
    picked = [first]
    far = np.minimum(far, 1.0 - z @ z[first])
    far[first] = -np.inf
    while len(picked) < n:
        i = int(np.argmax(far))
        picked.append(i)
        far = np.minimum(far, 1.0 - z @ z[i])
        far[picked] = -np.inf
    return cand[np.asarray(picked)]


def confident_positives(scores: np.ndarray, n: int, exclude: Optional[np.ndarray] = None) -> np.ndarray:
    """The ``n`` highest-scored photos of a pool believed to hold no positives: the likeliest look-alikes."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    ok = np.isfinite(scores)
    if exclude is not None:
        ok &= ~np.asarray(exclude, dtype=bool)
    idx = np.flatnonzero(ok)
    return idx[np.argsort(-scores[idx], kind="stable")[:n]]


def random_pick(n_pool: int, n: int, exclude: Optional[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """The baseline: ``n`` photos at random among those not excluded."""
    ok = np.ones(n_pool, dtype=bool) if exclude is None else ~np.asarray(exclude, dtype=bool)
    idx = np.flatnonzero(ok)
    return rng.choice(idx, size=min(n, len(idx)), replace=False)


__all__ = ["select_for_review", "confident_positives", "random_pick"]

