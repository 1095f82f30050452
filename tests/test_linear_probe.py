"""benchmarks/linear_probe.py: the pieces that decide its figures — group-wise cross-validation folds, the probe's
L2 choice and out-of-fold scores, and the paired AP gap against the compared model. (The whole run needs the real
photos and the pretrained backbone: docs/results/linear-probe-v2split/ is its output.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("linear_probe", ROOT / "benchmarks" / "linear_probe.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_folds_keep_each_group_whole_and_use_every_fold(probe):
    groups = [f"g{i // 3}" for i in range(300)]  # 100 groups of 3 photos
    folds = probe.group_folds(groups, 5)
    for g in set(groups):
        assert len({int(f) for f, gg in zip(folds, groups) if gg == g}) == 1
    assert set(folds.tolist()) == set(range(5))
    assert np.array_equal(folds, probe.group_folds(groups, 5))  # stable: a hash, not a random draw


def test_fit_probe_chooses_l2_by_cv_and_scores_out_of_fold(probe):
    pytest.importorskip("torch")
    from wildlife_vision.evaluation.metrics import average_precision

    rng = np.random.default_rng(0)
    n, d = 240, 6
    x = rng.normal(size=(n, d)).astype(np.float32)
    noise = 0.5 * rng.normal(size=(n, 2))
    y = np.stack([x[:, 0] + noise[:, 0] > 0.8, x[:, 1] + noise[:, 1] > 0], axis=1).astype(np.float32)
    folds = probe.group_folds([f"g{i}" for i in range(n)], 4)
    fits, oof, chosen = probe.fit_probe(x, y, folds, (1e-4, 1e-2))
    assert oof.shape == y.shape and np.all((oof >= 0) & (oof <= 1)) and len(np.unique(oof)) > n  # probabilities
    for j in range(2):
        c = chosen[j]
        assert c["l2"] in (1e-4, 1e-2) and c["cv_ap"] == max(c["cv_ap_by_l2"].values())
        assert c["oof_ap"] == average_precision(y[:, j], oof[:, j]) > 0.7  # out of fold, yet found (chance 0.2-0.5)
        w, b = fits[j]
        assert w.shape == (d,) and np.argmax(np.abs(w)) == j  # the final fit leans on the informative feature
    # a strong penalty shrinks the weights: the grid really changes the fit
    assert np.abs(probe.fit_logreg(x, y[:, 1], 1.0)[0]).sum() < np.abs(probe.fit_logreg(x, y[:, 1], 1e-4)[0]).sum()


def test_paired_gap_is_zero_for_the_same_scores_and_negative_against_a_better_model(probe):
    rng = np.random.default_rng(1)
    n = 200
    y = np.stack([rng.random(n) < 0.3, rng.random(n) < 0.2], axis=1).astype(np.float32)
    good = np.clip(y * 0.6 + rng.random(y.shape) * 0.5, 0, 1)  # positives mostly above negatives
    weak = np.clip(y * 0.15 + rng.random(y.shape), 0, 1)
    groups = [f"g{i // 4}" for i in range(n)]
    labels = ["ivory", "live_animal"]
    same = probe.paired_gap(y, good, good, labels, groups, resamples=100)
    assert same["macro"] == {"ap_diff": 0.0, "ci95": [0.0, 0.0]}
    gap = probe.paired_gap(y, weak, good, labels, groups, resamples=100)
    for lab in labels + ["macro"]:
        lo, hi = gap[lab]["ci95"]
        assert lo <= gap[lab]["ap_diff"] <= hi and hi < 0
    # a label without positives has no gap and does not enter the macro figure
    y0 = y.copy()
    y0[:, 1] = 0
    g0 = probe.paired_gap(y0, weak, good, labels, groups, resamples=50)
    assert g0["live_animal"] == {"ap_diff": None, "ci95": None}
    assert g0["macro"]["ap_diff"] == pytest.approx(g0["ivory"]["ap_diff"])
