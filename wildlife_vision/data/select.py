"""Which unlabelled photos are worth a reviewer's time next (active learning), torch-free.

:func:`select_for_review` takes a pool's scores for one label, its threshold and the pool's embeddings
(``Model.embed``), and picks ``n`` photos:

1. **uncertainty**: the ``candidates x n`` photos whose score is closest, in logit space, to the model's decision
   boundary (0.5; or to the label's threshold, ``around="threshold"``);
2. **diversity**: among those, one photo per k-means cluster of their embeddings (cosine), the one nearest its
   cluster's centre, so that one batch covers the uncertain region with typical photos instead of spending 50
   labels on 50 near-copies of one listing (``diversity="kcenter"``: greedy farthest-first, which favours outliers).

The defaults were chosen by the simulation in ``benchmarks/active_learning.py`` on the validation split (see
docs/adapt.md). :func:`plan_selection` shares a batch among several labels, as ``wildlife-vision data select`` does.
:func:`confident_positives` is the other half of the loop: on a pool believed clean (no positives, e.g. a
category of everyday listings), its highest-scored photos are the look-alikes a reviewer should confirm.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


#: where uncertainty is measured: the model's own decision boundary (score 0.5, logit 0), or the label's threshold
AROUND = ("boundary", "threshold")
#: how one batch is spread out: k-means medoids (representative photos) or greedy k-center (farthest first)
DIVERSITY = ("kmeans", "kcenter")


def kmeans_medoids(z: np.ndarray, k: int, seed: int = 0, iters: int = 25) -> np.ndarray:
    """Indices of ``k`` rows of ``z`` (unit vectors), one per k-means cluster: the member nearest its centroid.
    k-means++ seeding, Lloyd iterations; numpy only. Clusters left empty are reseeded from the farthest row."""
    n = len(z)
    if k >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    centres = [int(rng.integers(n))]
    d2 = np.sum((z - z[centres[0]]) ** 2, axis=1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else None
        c = int(rng.choice(n, p=p))
        centres.append(c)
        d2 = np.minimum(d2, np.sum((z - z[c]) ** 2, axis=1))
    cent = z[centres].astype(np.float64)
    zz = (z * z).sum(1)[:, None]

    def sq_dist() -> np.ndarray:  # (n, k) squared distances of every row to every centre
        return zz - 2 * z @ cent.T + (cent * cent).sum(1)[None, :]

    assign = np.zeros(n, dtype=int)
    for it in range(iters):
        dist = sq_dist()
        new = np.argmin(dist, axis=1)
        if it and np.array_equal(new, assign):
            break
        assign = new
        for c in range(k):
            members = assign == c
            if members.any():
                cent[c] = z[members].mean(0)
            else:  # reseed an empty cluster at the row farthest from its centre
                far = int(np.argmax(dist[np.arange(n), assign]))
                cent[c] = z[far]
                assign[far] = c
    dist = sq_dist()
    out = []
    for c in range(k):
        members = np.flatnonzero(assign == c)
        if members.size:
            out.append(int(members[np.argmin(dist[members, c])]))
    return np.asarray(out, dtype=int)


def _kcenter(z: np.ndarray, n: int, labelled: Optional[np.ndarray]) -> List[int]:
    if labelled is not None and len(labelled):  # start from the candidate farthest from what is labelled
        far = np.min(1.0 - _unit(labelled) @ z.T, axis=0)
        first = int(np.argmax(far))
    else:  # start from the most uncertain candidate
        far = np.full(len(z), np.inf)
        first = 0
    picked = [first]
    far = np.minimum(far, 1.0 - z @ z[first])
    far[first] = -np.inf
    while len(picked) < n:
        i = int(np.argmax(far))
        picked.append(i)
        far = np.minimum(far, 1.0 - z @ z[i])
        far[picked] = -np.inf
    return picked


def select_for_review(scores: np.ndarray, threshold: float, embeddings: np.ndarray, n: int,
                      candidates: float = 4.0, exclude: Optional[np.ndarray] = None,
                      labelled: Optional[np.ndarray] = None, around: str = "boundary",
                      diversity: str = "kmeans", seed: int = 0) -> np.ndarray:
    """Indices of ``n`` pool photos to label next. ``exclude``: a boolean mask of photos that may not be picked
    (already labelled, unreadable).

    1. **Uncertainty**: the ``candidates x n`` photos closest, in logit space, to the model's decision boundary
       (``around="boundary"``: score 0.5, where a class-balanced head is least sure) or to ``threshold``
       (``around="threshold"``).
    2. **Diversity** among them: ``diversity="kmeans"`` (default) clusters the candidates' embeddings (cosine)
       into ``n`` groups and takes the photo nearest each group's centre, so that a batch covers the uncertain
       region with typical photos; ``"kcenter"`` picks greedily the candidate farthest from everything picked
       and from ``labelled`` (embeddings of photos already labelled), which favours outliers.

    The simulation in docs/adapt.md chose the default (boundary, k-means) on the validation split."""
    if around not in AROUND:
        raise ValueError(f"around must be one of {AROUND}, got {around!r}")
    if diversity not in DIVERSITY:
        raise ValueError(f"diversity must be one of {DIVERSITY}, got {diversity!r}")
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
    centre = 0.0 if around == "boundary" else float(_logit(np.array([threshold]))[0])
    margin = np.abs(_logit(scores[pool]) - centre)
    m = min(len(pool), max(n, int(round(candidates * n))))
    order = np.argsort(margin, kind="stable")[:m]
    cand, cand_margin = pool[order], margin[order]
    z = _unit(embeddings[cand])
    if diversity == "kmeans":  # the medoids, most uncertain first
        picked = kmeans_medoids(z, n, seed=seed)
        return cand[picked[np.argsort(cand_margin[picked], kind="stable")]]
    return cand[np.asarray(_kcenter(z, n, labelled))]


def plan_selection(scores: np.ndarray, thresholds: Sequence[float], embeddings: np.ndarray, n: int,
                   labels: Sequence[str], candidates: float = 4.0, labelled: Optional[np.ndarray] = None,
                   clean_scores: Optional[np.ndarray] = None, confident: int = 0,
                   diversity: str = "kmeans") -> List[Tuple[str, int, str]]:
    """What `data select` picks: ``n`` pool photos shared among ``labels`` (``scores``: (N, L), one column per
    label, with its threshold in ``thresholds``), each label's share by :func:`select_for_review` among the photos
    no earlier label took (with ``diversity="kcenter"``, also away from ``labelled`` embeddings and from the
    earlier labels' picks; k-means does not use them); then, with ``clean_scores`` (M, L) of a pool believed to hold no positives, the
    ``confident`` top-scored clean photos per label (:func:`confident_positives`).

    Returns ``(where, index, reason)`` in the order picked: ``where`` is ``"pool"`` or ``"clean"``, ``index`` a row
    of that pool, ``reason`` ``"uncertain: LABEL"`` or ``"look-alike check: LABEL"``."""
    scores = np.asarray(scores, dtype=np.float64).reshape(len(embeddings), len(labels))
    taken = np.zeros(len(scores), dtype=bool)
    out: List[Tuple[str, int, str]] = []
    share = [n // len(labels) + (1 if j < n % len(labels) else 0) for j in range(len(labels))]
    seen = labelled if diversity == "kcenter" else None
    for j, lab in enumerate(labels):
        if share[j] == 0 or taken.all():
            continue
        idx = select_for_review(scores[:, j], thresholds[j], embeddings, share[j], candidates=candidates,
                                exclude=taken, labelled=seen, diversity=diversity)
        taken[idx] = True
        out += [("pool", int(i), f"uncertain: {lab}") for i in idx]
        if diversity == "kcenter":
            picked = embeddings[idx]
            seen = picked if seen is None or not len(seen) else np.concatenate([seen, picked])
    if clean_scores is not None and confident > 0 and len(clean_scores):
        cs = np.asarray(clean_scores, dtype=np.float64).reshape(-1, len(labels))
        used = np.zeros(len(cs), dtype=bool)
        for j, lab in enumerate(labels):
            idx = confident_positives(cs[:, j], confident, exclude=used)
            used[idx] = True
            out += [("clean", int(i), f"look-alike check: {lab}") for i in idx]
    return out


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


__all__ = ["select_for_review", "plan_selection", "confident_positives", "random_pick"]

