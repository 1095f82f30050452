"""Precision and reviewer load at marketplace base rates, and thresholds chosen for a precision at a base rate."""

from __future__ import annotations

import numpy as np
import pytest

from wildlife_vision.evaluation.baserate import (at_prevalence, base_rate_table, label_base_rates, per_million,
                                                 precision_at, rate_draws, sentence, zero_fp_fpr_bound)
from wildlife_vision.evaluation.bootstrap import resample_indices
from wildlife_vision.evaluation.calibrate import calibrate, operating_points, pick_threshold


def test_precision_at_a_base_rate_follows_bayes():
    # 90% recall, 1% false positives: at 1 in 1,000 listings most flags are false
    assert precision_at(0.001, 0.9, 0.01) == pytest.approx(0.0009 / (0.0009 + 0.999 * 0.01))
    assert precision_at(0.5, 0.9, 0.1) == pytest.approx(0.9)
    assert np.isnan(precision_at(0.01, 0.0, 0.0))  # nothing flagged: undefined, not 0 or 1
    arr = precision_at(0.01, np.array([0.5, np.nan]), np.array([0.01, 0.01]))
    assert arr[0] == pytest.approx(0.005 / (0.005 + 0.0099)) and np.isnan(arr[1])
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        precision_at(0.0, 0.5, 0.1)


def test_precision_at_the_sample_prevalence_is_the_sample_precision():
    rng = np.random.default_rng(3)
    y = rng.random(500) < 0.2
    flag = np.where(y, rng.random(500) < 0.7, rng.random(500) < 0.05)
    tp, fp = (y & flag).sum(), (~y & flag).sum()
    assert precision_at(y.mean(), tp / y.sum(), fp / (~y).sum()) == pytest.approx(tp / (tp + fp))


def test_per_million_listings_and_the_sentence():
    pm = per_million(0.001, 0.8, 0.002)
    assert pm == {"flagged": round(800 + 0.999 * 2000), "true": 800, "false": round(0.999 * 2000)}
    entry = at_prevalence(0.001, 0.8, 0.002)
    assert entry["text"] == "per million listings: 2,798 flagged, of which 800 true"
    assert sentence(at_prevalence(0.001, None, 0.002)).startswith("per million listings: 1,998 false flags")


def test_base_rate_table_intervals_from_the_bootstrap_contain_the_estimates():
    rng = np.random.default_rng(0)
    y = rng.random(800) < 0.25
    flag = np.where(y, rng.random(800) < 0.8, rng.random(800) < 0.03)
    draws = resample_indices(800, None, 400, seed=0)
    table = label_base_rates(y, flag, draws)
    assert [e["prevalence"] for e in table] == [0.01, 0.001, 0.0001]
    tpr, fpr = (y & flag).sum() / y.sum(), (~y & flag).sum() / (~y).sum()
    for e in table:
        assert e["precision"] == pytest.approx(precision_at(e["prevalence"], tpr, fpr))
        lo, hi = e["precision_ci95"]
        assert lo <= e["precision"] <= hi
        flo, fhi = e["per_million_ci95"]["flagged"]
        assert flo <= e["per_million"]["flagged"] <= fhi
    assert table[0]["precision"] > table[1]["precision"] > table[2]["precision"]  # rarer positives, worse precision
    t_draws, f_draws = rate_draws(y, flag, draws)
    assert base_rate_table(tpr, fpr, t_draws, f_draws)[1]["precision_ci95"] == table[1]["precision_ci95"]


def test_no_false_positive_gives_a_rule_of_three_bound_instead_of_a_false_certainty():
    y = np.r_[np.ones(20, bool), np.zeros(300, bool)]
    flag = np.r_[np.ones(10, bool), np.zeros(310, bool)]
    table = label_base_rates(y, flag, resample_indices(320, None, 200, 0))
    e = table[1]
    assert e["precision"] == 1.0 and e["precision_ci95"] == [1.0, 1.0]  # what the bootstrap alone would say
    assert e["fpr_upper95"] == pytest.approx(zero_fp_fpr_bound(300)) and 2.9 / 300 < e["fpr_upper95"] < 3.1 / 300
    assert e["precision_lower95"] == pytest.approx(precision_at(0.001, 0.5, e["fpr_upper95"]))
    assert e["precision_lower95"] < 0.2 and "no false positive among 300 negatives" in e["note"]


def test_negatives_only_sample_still_gives_false_flags_per_million():
    flag = np.r_[np.ones(3, bool), np.zeros(97, bool)]
    table = label_base_rates(np.zeros(100, bool), flag, resample_indices(100, None, 200, 0))
    e = table[1]
    assert e["precision"] is None and e["per_million"]["true"] is None and e["per_million"]["flagged"] is None
    assert e["per_million"]["false"] == round(0.999 * 0.03 * 1e6)
    lo, hi = e["per_million_ci95"]["false"]
    assert lo <= e["per_million"]["false"] <= hi


def _scores(n=600, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.float32)
    s = np.clip(0.35 * y + rng.normal(0.4, 0.15, n), 0, 1).astype(np.float32)
    return y, s


def test_threshold_at_a_prevalence_is_the_lowest_meeting_the_target_there():
    y, s = _scores()
    pi, target = 0.05, 0.6
    pick = pick_threshold(y, s, "precision", target, prevalence=pi)
    assert pick["met"]
    # brute force over every distinct score: precision at pi of flagging score >= t
    ok = []
    for t in np.unique(s):
        f = s >= t
        p = precision_at(pi, (f & (y == 1)).sum() / y.sum(), (f & (y == 0)).sum() / (y == 0).sum())
        if not np.isnan(p) and p >= target:
            ok.append(t)
    lowest = min(ok)
    assert s[s >= pick["threshold"]].min() == lowest  # flags exactly the photos the lowest passing score flags
    # at the sample's own prevalence the base-rate rule is the plain rule
    plain = pick_threshold(y, s, "precision", target)
    same = pick_threshold(y, s, "precision", target, prevalence=float(y.mean()))
    assert same["threshold"] == plain["threshold"]
    # a rarer base rate needs a stricter threshold
    assert pick["threshold"] >= plain["threshold"]


def test_calibrate_with_a_prevalence_records_it_and_keeps_the_old_rule_without():
    y, s = _scores()
    Y, S = y[:, None], s[:, None]
    _, _, cal = calibrate(Y, S, ["ivory"], value=0.9)
    assert cal["rule"].startswith("threshold = lowest score with val precision >= 0.9") and "prevalence" not in cal
    _, _, cal = calibrate(Y, S, ["ivory"], value=0.6, prevalence=0.05)
    assert "at prevalence 0.05" in cal["rule"] and cal["prevalence"] == 0.05


def test_operating_points_at_a_prevalence_use_the_same_arithmetic():
    y, s = _scores(800, 1)
    out = operating_points(y[:, None], s[:, None], ["ivory"], 0.6, prevalence=0.05, resamples=200)
    m = out["calibration"]["per_label"]["ivory"]
    at = m["at_prevalence"]
    assert not out["unmet"] and m["met"]
    assert at["precision"] == pytest.approx(precision_at(0.05, m["at_sample"]["recall"], m["at_sample"]["fpr"]))
    assert at["precision"] >= 0.6 and at["prevalence"] == 0.05
    assert at["per_million"] == per_million(0.05, m["at_sample"]["recall"], m["at_sample"]["fpr"])
    lo, hi = at["precision_ci95"]
    assert lo <= at["precision"] <= hi
    assert m["positives"] == int(y.sum()) and m["negatives"] == int((y == 0).sum())
    assert m["sample_prevalence"] == pytest.approx(y.mean())


def test_operating_points_say_when_no_threshold_can_meet_the_target():
    y, s = _scores(300, 2)
    y[np.argmax(s)] = 0  # the top-scored photo is a negative: every threshold has a false positive
    out = operating_points(y[:, None], s[:, None], ["ivory"], 0.9, prevalence=0.0001, resamples=50)
    assert out["unmet"] == ["ivory"]
    assert "ivory: no threshold reaches precision 0.9 at prevalence 0.0001" in out["messages"][0]


def test_a_target_met_only_because_no_negative_was_flagged_is_not_trusted():
    y, s = _scores(300, 2)
    y[s >= np.quantile(s, 0.97)] = 1  # the top 3% are all positives: FPR 0, so precision 1 at any prevalence
    out = operating_points(y[:, None], s[:, None], ["ivory"], 0.9, prevalence=0.0001, resamples=50)
    m = out["calibration"]["per_label"]["ivory"]
    assert not out["unmet"] and m["at_prevalence"]["precision"] == 1.0
    assert m["met_at_lower_bound"] is False and m["at_prevalence"]["precision_lower95"] < 0.9
    assert any("95% interval reaches down to" in line for line in out["messages"])
