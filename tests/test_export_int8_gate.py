"""`export --int8`: the INT8 model gets its own thresholds, review bands and metrics, chosen on its own scores on
the run's val split, and a gate against fp32 decides whether it is written.

A tiny random-init timm model (test_efficientnet, 32 px) trained for two epochs on generated photos, as in
tests/test_training_pipeline.py; the gate itself is also checked on hand-made scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("albumentations")
pytest.importorskip("onnxruntime.quantization")

from test_training_pipeline import train_args, write_synthetic_manifest  # noqa: E402

LABELS = ("ivory", "live_animal")
#: limits no tiny model can miss, for the tests that look at what a passing export writes
LENIENT = ["--int8-max-ap-drop", "1", "--int8-max-recall-drop", "1", "--int8-precision-tolerance", "1"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_synthetic_manifest(tmp_path_factory.mktemp("int8_synth"), n_train=8, n_val=6)


@pytest.fixture(scope="module")
def run_dir(synth, tmp_path_factory):
    from wildlife_vision_train.cli import main

    out = tmp_path_factory.mktemp("int8_runs") / "run"
    assert main(train_args(synth, out, "--epochs", "2")) == 0
    return out


def export(run_dir: Path, out: Path, *extra: str) -> int:
    from wildlife_vision.cli import main

    return main(["export", str(run_dir), "--output", str(out), "--int8", "--calib-images", "16", *extra])


@pytest.fixture(scope="module")
def passing(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8_pass") / "model.onnx"
    assert export(run_dir, out, *LENIENT) == 0
    return out


def _val_rows(synth):
    from wildlife_vision.data.manifest import read_manifest

    return [s for s in read_manifest(synth, labels=list(LABELS), check_images=False).samples if s.split == "val"]


def test_int8_metadata_holds_its_own_thresholds_bands_metrics_and_gate(passing, run_dir, synth):
    from wildlife_vision import load_model
    from wildlife_vision.data.manifest import targets_for
    from wildlife_vision.evaluation.calibrate import calibrate
    from wildlife_vision.evaluation.evaluate import score_onnx

    int8_path = passing.with_name("model.int8.onnx")
    fp32, int8 = load_model(passing), load_model(int8_path)
    cal = json.loads((run_dir / "calibration.json").read_text())
    assert dict(fp32.metadata.thresholds) == pytest.approx(cal["thresholds"])  # fp32 keeps the run's thresholds

    # the INT8 thresholds and bands are the calibration of the INT8 model's own scores on the run's val rows
    scores, kept, _ = score_onnx(int8, _val_rows(synth))
    assert len(kept) == 24
    c = cal["calibration"]
    thresholds, bands, _ = calibrate(targets_for(kept, list(LABELS)), scores, list(LABELS), c["target"], c["value"],
                                     c["review_recall"])
    meta = int8.metadata
    assert dict(meta.thresholds) == pytest.approx(thresholds)
    for lab in LABELS:
        assert list(meta.review_bands[lab]) == pytest.approx(list(bands[lab]))
    assert meta.calibration["split"] == "val" and meta.calibration["target"] == c["target"]
    assert meta.calibration["fp32_thresholds"] == pytest.approx(cal["thresholds"])
    assert meta.training["quantization"]["calibration_images"] == 16

    # its metrics: AP, precision and recall at its own thresholds, with 95% intervals, the split named
    m = meta.metrics
    assert m["split"] == "val" and m["n_images"] == 24
    for lab in LABELS:
        row = m["per_class"][lab]
        assert row["threshold"] == pytest.approx(meta.thresholds[lab])
        for k in ("ap", "precision", "recall"):
            assert row[k] is not None and k in row["ci95"]  # None where undefined on most resamples
            if row["ci95"][k] is not None:
                lo, hi = row["ci95"][k]
                assert 0 <= lo <= hi <= 1
        assert row["ci95"]["ap"] is not None and row["ci95"]["recall"] is not None
        flagged = scores[:, LABELS.index(lab)] >= meta.thresholds[lab]
        truth = targets_for(kept, list(LABELS))[:, LABELS.index(lab)] == 1
        assert row["recall"] == pytest.approx((flagged & truth).sum() / truth.sum())

    gate = m["int8_gate"]
    assert gate["passed"] is True and gate["failures"] == [] and gate["split"] == "val"
    assert gate["limits"] == {"max_ap_drop": 1.0, "max_recall_drop": 1.0, "precision_tolerance": 1.0}
    for lab in LABELS:
        g = gate["per_label"][lab]
        assert g["passed"] and g["int8"]["threshold"] == pytest.approx(meta.thresholds[lab])
        assert g["fp32"]["threshold"] == pytest.approx(cal["thresholds"][lab])
        assert set(g["checks"]) == {"ap_drop", "recall_drop", "int8_precision"}
    assert "int8_vs_fp32" in m
    record = json.loads(passing.with_name("model.export.json").read_text())
    assert record["int8"]["gate"]["passed"] and record["int8_model"].endswith("model.int8.onnx")


def test_quantisation_is_deterministic_and_leaves_the_scores_unrounded(passing, synth, tmp_path):
    import onnx

    from wildlife_vision import load_model
    from wildlife_vision.data.manifest import read_manifest
    from wildlife_vision_train.int8 import calibration_photos, quantize_int8

    meta = load_model(passing).metadata
    samples = read_manifest(synth, labels=list(LABELS), check_images=False).samples
    batch, _ = calibration_photos(samples, meta.preprocess, 16, seed=42)
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    quantize_int8(passing, a, batch, meta)
    quantize_int8(passing, b, batch, meta)
    assert a.read_bytes() == b.read_bytes()
    # the head (pooling, classifier, sigmoid) stays in fp32: scores are not rounded to multiples of 1/255
    graph = onnx.load(str(a)).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    assert producer["scores"] == "Sigmoid" and producer["embedding"] != "DequantizeLinear"
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)
    scores = load_model(a).run_batch(batch)
    assert not np.allclose(scores * 255, np.round(scores * 255), atol=1e-4)


def test_export_summary_prints_both_operating_points(run_dir, tmp_path, capsys):
    from wildlife_vision.metadata import read_model_metadata

    assert export(run_dir, tmp_path / "m.onnx", *LENIENT) == 0
    out = capsys.readouterr().out
    assert "fp32: threshold, precision / recall" in out and "INT8: threshold, precision / recall" in out
    assert "on 24 val images" in out and "INT8 gate passed" in out
    fp32 = json.loads((run_dir / "calibration.json").read_text())["thresholds"]
    int8 = read_model_metadata(tmp_path / "m.int8.onnx").thresholds
    for lab in LABELS:
        line = next(x for x in out.splitlines() if x.strip().startswith(lab))
        assert f"{fp32[lab]:.3f}, " in line and f"{int8[lab]:.3f}, " in line.split(f"{fp32[lab]:.3f}, ", 1)[1]
        assert line.count("[") >= 2  # 95% intervals (none where a figure is undefined on most resamples)


def test_a_failing_gate_exits_1_names_the_label_and_figure_and_writes_no_int8_file(run_dir, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert export(run_dir, out, "--int8-max-ap-drop", "-1") == 1
    captured = capsys.readouterr()
    assert "INT8 gate failed: ivory: AP drops" in captured.err and "live_animal: AP drops" in captured.err
    assert "not written" in captured.err and "Traceback" not in captured.err
    assert "INT8 gate FAILED" in captured.out
    assert out.is_file()  # the fp32 model is always written
    assert not out.with_name("model.int8.onnx").exists()
    assert not list(tmp_path.glob("*.tmp"))
    record = json.loads(out.with_name("model.export.json").read_text())
    assert record["int8_model"] == "" and record["int8"]["gate"]["passed"] is False


def test_a_failing_gate_removes_the_int8_model_of_the_replaced_export(run_dir, tmp_path):
    out = tmp_path / "model.onnx"
    assert export(run_dir, out, *LENIENT) == 0
    assert export(run_dir, out, "--overwrite", "--int8-max-recall-drop", "-1") == 1
    assert out.is_file() and not out.with_name("model.int8.onnx").exists()


def test_allow_failing_writes_the_int8_model_marked_as_failing(run_dir, tmp_path, capsys):
    from wildlife_vision.metadata import read_model_metadata

    out = tmp_path / "model.onnx"
    assert export(run_dir, out, "--int8-max-ap-drop", "-1", "--int8-allow-failing") == 0
    captured = capsys.readouterr()
    assert "INT8 gate failed: ivory: AP drops" in captured.err and "written anyway" in captured.err
    meta = read_model_metadata(out.with_name("model.int8.onnx"))
    gate = meta.metrics["int8_gate"]
    assert gate["passed"] is False and gate["limits"]["max_ap_drop"] == -1.0
    assert any(f.startswith("ivory: AP drops") for f in gate["failures"])
    assert gate["per_label"]["ivory"]["checks"]["ap_drop"] is False


def test_allow_failing_needs_int8(run_dir, tmp_path, capsys):
    from wildlife_vision.cli import main

    assert main(["export", str(run_dir), "--output", str(tmp_path / "m.onnx"), "--int8-allow-failing"]) == 2
    assert "--int8" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()


# ---- the gate on hand-made scores ------------------------------------------------------------------------

def _scores():
    rng = np.random.default_rng(0)
    y = (rng.random((400, 1)) < 0.3).astype(np.float64)
    fp32 = np.clip(0.7 * y + 0.3 * rng.random((400, 1)), 0, 1)  # separable: precision 1 at recall 1
    return y, fp32


def test_gate_fails_on_recall_lost_at_matched_precision():
    from wildlife_vision.evaluation.calibrate import calibrate
    from wildlife_vision_train.int8 import GateLimits, gate

    y, fp32 = _scores()
    int8 = fp32.copy()
    pos = np.flatnonzero(y[:, 0] == 1)
    int8[pos[:12], 0] = 0.05  # 12 positives fall below every negative: recall at precision 0.95 drops
    tf, _, _ = calibrate(y, fp32, ["a"], "precision", 0.95)
    tq, _, _ = calibrate(y, int8, ["a"], "precision", 0.95)
    g = gate(y, fp32, int8, ["a"], tf, tq, "precision", 0.95, GateLimits(max_ap_drop=1.0))
    row = g["per_label"]["a"]
    assert row["fp32"]["recall"] == 1.0 and row["recall_drop"] == pytest.approx(12 / len(pos))
    assert not g["passed"] and not row["checks"]["recall_drop"] and row["checks"]["ap_drop"]
    assert g["failures"] == [g["failures"][0]] and g["failures"][0].startswith("a: recall at matched precision")
    assert gate(y, fp32, int8, ["a"], tf, tq, "precision", 0.95, GateLimits(1.0, 0.2))["passed"]


def test_gate_checks_the_int8_precision_and_skips_labels_without_positives():
    from wildlife_vision_train.int8 import GateLimits, gate

    y, fp32 = _scores()
    y = np.c_[y, np.zeros(len(y))]
    fp32 = np.c_[fp32, fp32]
    int8 = fp32.copy()
    # INT8 at a threshold that also flags negatives: precision under 0.95 - 0.01
    thresholds = {"a": 0.5, "b": 0.5}
    g = gate(y, fp32, int8, ["a", "b"], thresholds, {"a": 0.1, "b": 0.5}, "precision", 0.95,
             GateLimits(1.0, 1.0, 0.01))
    assert not g["passed"] and not g["per_label"]["a"]["checks"]["int8_precision"]
    assert g["failures"][0].startswith("a: INT8 precision")
    assert g["per_label"]["b"] == {"gated": False, "support": 0, "note": "not gated: no positives in val"}
