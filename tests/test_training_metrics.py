"""Metrics and calibration against hand-computed values (no sklearn)."""

from __future__ import annotations

import numpy as np
import pytest

from wildlife_vision.evaluation.calibrate import calibrate, pick_threshold
from wildlife_vision.evaluation.metrics import (average_precision, confusion, macro_ap, multilabel_report, precision_recall_curve, prf,
                              roc_auc)

Y = np.array([1, 0, 1, 1, 0, 0, 1, 0])
S = np.array([.9, .8, .7, .6, .5, .4, .3, .2])


def test_average_precision_by_hand():
    # positives at ranks 1, 3, 4, 7: (1 + 2/3 + 3/4 + 4/7) / 4
    assert average_precision(Y, S) == pytest.approx((1 + 2 / 3 + 3 / 4 + 4 / 7) / 4)
    assert average_precision([0, 0], [0.1, 0.2]) is None
    assert average_precision([1, 0], [0.9, 0.1]) == 1.0


def test_average_precision_with_ties_uses_one_threshold_per_distinct_score():
    # both at 0.5: one step to P=1/2, R=1
    assert average_precision([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    # [1, 0, 1] with the first two tied: step (R=.5, P=.5), then (R=1, P=2/3)
    assert average_precision([1, 0, 1], [0.9, 0.9, 0.1]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)


def test_roc_auc_by_hand():
    # pairs (pos > neg): 4 + 3 + 3 + 1 = 11 of 16
    assert roc_auc(Y, S) == pytest.approx(11 / 16)
    assert roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts one half
    assert roc_auc([1, 1], [0.2, 0.3]) is None
    assert roc_auc([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8]) == 1.0


def test_precision_recall_curve():
    p, r, t = precision_recall_curve([1, 0, 1], [0.9, 0.5, 0.1])
    assert t.tolist() == [0.9, 0.5, 0.1]
    assert p.tolist() == pytest.approx([1.0, 0.5, 2 / 3])
    assert r.tolist() == pytest.approx([0.5, 0.5, 1.0])


def test_prf_and_confusion():
    c = confusion([1, 1, 0, 0, 1], [1, 0, 1, 0, 1])
    assert c == {"tp": 2, "fp": 1, "fn": 1, "tn": 1}
    m = prf(c["tp"], c["fp"], c["fn"])
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert prf(0, 0, 3) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_multilabel_report_macro_and_micro():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    s = np.array([[0.9, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.1]])
    rep = multilabel_report(y, s, ["ivory", "live_animal"], {"ivory": 0.5, "live_animal": 0.5})
    iv, la = rep["per_class"]["ivory"], rep["per_class"]["live_animal"]
    assert (iv["tp"], iv["fp"], iv["fn"], iv["tn"]) == (2, 0, 0, 2)
    assert (la["tp"], la["fp"], la["fn"], la["tn"]) == (1, 0, 1, 2)
    assert la["recall"] == 0.5 and la["support"] == 2
    assert rep["macro"]["recall"] == pytest.approx(0.75)
    assert rep["micro"]["recall"] == pytest.approx(3 / 4) and rep["micro"]["precision"] == 1.0
    assert rep["macro"]["ap"] == pytest.approx(macro_ap(y, s))
    with pytest.raises(ValueError):
        multilabel_report(y, s[:, :1], ["ivory", "live_animal"])


def test_macro_skips_labels_without_positives():
    y = np.array([[1, 0], [0, 0]])
    s = np.array([[0.9, 0.8], [0.1, 0.2]])
    rep = multilabel_report(y, s, ["a", "b"])
    assert rep["per_class"]["b"]["ap"] is None and rep["macro"]["ap"] == 1.0


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        average_precision([1, 2], [0.1, 0.2])
    with pytest.raises(ValueError):
        roc_auc([1, 0], [np.nan, 0.2])


def test_threshold_for_target_precision_maximises_recall():
    # flagging down to 0.6 gives precision 3/4 (recall 3/4); to 0.7 gives 2/3; to 0.9 gives 1
    pick = pick_threshold(Y, S, "precision", 0.75)
    assert pick["met"] and pick["precision"] == pytest.approx(0.75) and pick["recall"] == pytest.approx(0.75)
    assert 0.5 < pick["threshold"] < 0.6  # halfway between 0.6 and the next lower score 0.5
    pick = pick_threshold(Y, S, "precision", 0.99)
    assert pick["met"] and pick["recall"] == pytest.approx(0.25)


def test_threshold_for_target_recall():
    pick = pick_threshold(Y, S, "recall", 0.75)
    assert pick["met"] and pick["recall"] == pytest.approx(0.75)
    assert (S >= pick["threshold"]).sum() == 4


def test_calibrate_thresholds_and_review_bands():
    y = np.stack([Y, 1 - Y], axis=1)
    s = np.stack([S, 1 - S], axis=1)
    thr, bands, cal = calibrate(y, s, ["ivory", "live_animal"], "precision", 0.75, review_recall=1.0)
    for lab in ("ivory", "live_animal"):
        low, high = bands[lab]
        assert high == thr[lab] and 0.0 <= low <= high <= 1.0
        assert cal["per_label"][lab]["review_recall"] == 1.0
    # review band for ivory must reach down to the last positive (0.3)
    assert bands["ivory"][0] <= 0.3
    assert cal["target"] == "precision" and cal["value"] == 0.75


def test_unreachable_target_and_missing_positives_are_reported_not_raised():
    y = np.array([[0, 1], [1, 0], [0, 1], [0, 0]])
    s = np.array([[0.9, 0.1], [0.1, 0.9], [0.8, 0.2], [0.2, 0.2]])
    thr, bands, cal = calibrate(y, s, ["a", "b"], "precision", 0.95)
    assert cal["per_label"]["a"]["met"] is False
    thr, bands, cal = calibrate(np.zeros((3, 1)), np.full((3, 1), 0.4), ["a"])
    assert thr["a"] == 0.5 and "not calibrated" in cal["per_label"]["a"]["note"]
