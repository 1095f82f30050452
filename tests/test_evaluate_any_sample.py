"""`evaluate` on any sample a platform has: negatives only, positives only, one label without positives. It never
crashes, reports false-positive and flag rates with bootstrap intervals, and runs with torch unavailable."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from helpers import make_tiny_model, write_photos
from wildlife_vision.data.manifest import Sample
from wildlife_vision.evaluation.bootstrap import label_intervals, percentile_interval, resample_indices
from wildlife_vision.evaluation.evaluate import build_report

LABELS = ["ivory", "live_animal"]
THRESHOLDS = {"ivory": 0.5, "live_animal": 0.5}

_NO_TORCH = textwrap.dedent("""
    import sys
    for name in ("torch", "timm", "albumentations", "torchvision"):
        sys.modules[name] = None   # importing them now raises ImportError
    from wildlife_vision.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _manifest(tmp_path: Path, labels_per_row) -> Path:
    photos = write_photos(tmp_path / "photos", len(labels_per_row))
    rows = ["image,labels,split,source"] + [f"photos/{p.name},{lab},test,{'a' if i % 2 else 'b'}"
                                           for i, (p, lab) in enumerate(zip(photos, labels_per_row))]
    path = tmp_path / "manifest.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def _evaluate(tmp_path: Path, manifest: Path) -> subprocess.CompletedProcess:
    model = make_tiny_model(tmp_path / "tiny.onnx")  # thresholds 0.5
    return subprocess.run([sys.executable, "-c", _NO_TORCH, "evaluate", "--model", str(model), "--data", str(manifest),
                           "--split", "test", "--output", str(tmp_path / "report")], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)


def test_negatives_only_gives_false_positive_rates_with_intervals_without_torch(tmp_path):
    proc = _evaluate(tmp_path, _manifest(tmp_path, [""] * 24))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "no positives in this sample" in proc.stdout and "false-positive rate" in proc.stdout
    assert "precision 0.000" not in proc.stdout
    assert "cannot learn" not in proc.stderr  # no training warnings in an evaluation
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    for lab in LABELS:
        m = report["per_class"][lab]
        assert m["support"] == 0 and m["negatives"] == 24 and m["precision"] is None and m["recall"] is None
        assert m["fpr"] == pytest.approx(m["fp"] / 24)
        lo, hi = m["ci95"]["fpr"]
        assert 0.0 <= lo <= m["fpr"] <= hi <= 1.0
    assert report["macro"]["ap"] is None
    assert "false-positive rate" in (tmp_path / "report" / "report.md").read_text()


def test_negatives_only_gives_false_flags_per_million_and_per_source_rates(tmp_path):
    import hashlib

    proc = _evaluate(tmp_path, _manifest(tmp_path, [""] * 24))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["model_sha256"] == hashlib.sha256((tmp_path / "tiny.onnx").read_bytes()).hexdigest()
    assert set(report["negative_sources"]) == {"a", "b"}  # every source is negatives-only here
    for lab in LABELS:
        m = report["per_class"][lab]
        assert m["review_rate"] is not None and m["ece"] is not None
        for e in m["base_rates"]:
            assert e["precision"] is None and e["per_million"]["true"] is None  # no positives: no true flags known
            assert e["per_million"]["false"] == round((1 - e["prevalence"]) * m["fpr"] * 1e6)
        a = report["negative_sources"]["a"]["per_class"][lab]
        assert report["negative_sources"]["a"]["n_images"] == 12 and 0.0 <= a["flag_rate"] <= 1.0
        lo, hi = a["ci95"]["flag_rate"]
        assert lo <= a["flag_rate"] <= hi
    assert (tmp_path / "report" / "reliability.png").stat().st_size > 0


def test_positives_only_and_a_label_without_positives(tmp_path):
    proc = _evaluate(tmp_path, _manifest(tmp_path, ["ivory"] * 12))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    ivory, live = report["per_class"]["ivory"], report["per_class"]["live_animal"]
    assert ivory["support"] == 12 and ivory["negatives"] == 0 and ivory["fpr"] is None
    assert ivory["ci95"]["fpr"] is None and ivory["recall"] is not None
    assert live["support"] == 0 and live["recall"] is None


def test_intervals_contain_their_estimates_and_narrow_with_more_photos():
    rng = np.random.default_rng(0)

    def width(n):
        y = (rng.random((n, 2)) < 0.4).astype(np.float32)
        s = np.clip(y * 0.3 + rng.random((n, 2)) * 0.7, 0, 1).astype(np.float32)
        samples = [Sample(path=f"/x/{i}.jpg", image=f"{i}.jpg", labels=(), extra={}) for i in range(n)]
        rep = build_report(y, s, LABELS, THRESHOLDS, samples, resamples=300)
        m = rep["per_class"]["ivory"]
        for key in ("ap", "precision", "recall", "fpr", "flag_rate"):
            lo, hi = m["ci95"][key]
            assert lo <= m[key] <= hi, (key, lo, m[key], hi)
        return m["ci95"]["ap"][1] - m["ci95"]["ap"][0]

    assert width(2000) < width(100)


def test_groups_are_resampled_whole():
    groups = ["g0"] * 5 + ["g1"] * 5 + [f"s{i}" for i in range(10)]
    for idx in resample_indices(20, groups, resamples=50, seed=1):
        counts = np.bincount(idx, minlength=20)
        assert len(set(counts[:5])) == 1 and len(set(counts[5:10])) == 1  # a group's photos come together


def test_grouped_intervals_are_wider_for_correlated_photos():
    # 10 groups of 20 identical photos: grouped resampling knows there are only 10 independent observations
    y = np.repeat(np.arange(10) % 2, 20).astype(bool)
    s = np.repeat(np.linspace(0.2, 0.8, 10), 20)
    groups = list(np.repeat([f"g{i}" for i in range(10)], 20))
    by_photo = label_intervals(y, s, 0.5, resample_indices(200, None, 400, 0))["recall"]
    by_group = label_intervals(y, s, 0.5, resample_indices(200, groups, 400, 0))["recall"]
    assert (by_group[1] - by_group[0]) > (by_photo[1] - by_photo[0])


def test_percentile_interval_needs_values():
    assert percentile_interval([None, None]) is None
    assert percentile_interval([0.2, 0.4, 0.6]) == pytest.approx((0.21, 0.59))
