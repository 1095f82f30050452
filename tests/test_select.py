"""Active-learning selection: uncertainty near the threshold, then diversity in embedding space."""

from __future__ import annotations

import numpy as np
import pytest

from wildlife_vision.data.select import confident_positives, random_pick, select_for_review


def test_picks_are_uncertain_diverse_and_never_excluded():
    rng = np.random.default_rng(0)
    # 3 tight clusters of near-copies, all close to the threshold, and far-off confident photos
    centres = rng.normal(size=(3, 16))
    emb = np.concatenate([c + 0.01 * rng.normal(size=(20, 16)) for c in centres] + [rng.normal(size=(40, 16))])
    scores = np.concatenate([np.full(60, 0.5) + rng.normal(0, 0.01, 60), np.full(40, 0.999)])
    exclude = np.zeros(100, dtype=bool)
    exclude[:5] = True
    pick = select_for_review(scores, 0.5, emb, 3, candidates=10, exclude=exclude)
    assert len(set(pick.tolist())) == 3 and not exclude[pick].any()
    assert all(i < 60 for i in pick), "only uncertain photos are candidates"
    clusters = {int(i) // 20 for i in pick}
    assert clusters == {0, 1, 2}, "one photo per cluster of near-copies, not three from one"


def test_labelled_photos_push_the_pick_elsewhere():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=16), rng.normal(size=16)
    emb = np.stack([a + 0.01 * rng.normal(size=16) for _ in range(10)] + [b + 0.01 * rng.normal(size=16) for _ in range(10)])
    scores = np.full(20, 0.5)
    (first,) = select_for_review(scores, 0.5, emb, 1, candidates=20, labelled=emb[:3], diversity="kcenter")
    assert first >= 10, "the cluster already labelled is not picked again first"


def test_small_pools_bad_input_and_the_other_pickers():
    emb = np.eye(4)
    assert sorted(select_for_review(np.array([0.1, 0.2, 0.3, np.nan]), 0.5, emb, 5).tolist()) == [0, 1, 2]
    with pytest.raises(ValueError):
        select_for_review(np.zeros(3), 0.5, emb, 1)
    assert confident_positives(np.array([0.1, 0.9, 0.5, 0.95]), 2).tolist() == [3, 1]
    got = random_pick(10, 4, np.arange(10) < 8, np.random.default_rng(0))
    assert sorted(got.tolist()) == [8, 9]
