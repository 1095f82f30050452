"""Evaluation reports (torch-free): slices, Markdown, plots, and ONNX evaluation with the tiny helper model."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from helpers import make_photo, make_tiny_model
from wildlife_vision.evaluation.evaluate import (build_report, default_slice_columns, evaluate_onnx, most_confident_errors, select_split,
                               summary, write_report)
from wildlife_vision.data.manifest import Sample

LABELS = ["ivory", "live_animal"]


def _samples(n):
    return [Sample(path=f"/x/{i}.jpg", image=f"{i}.jpg", labels=(), split="val",
                   extra={"source": "a" if i % 2 else "b", "origin": f"o{i}"}) for i in range(n)]


def test_report_slices_by_column_and_is_json():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.float32)
    s = np.array([[0.9, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.1]], dtype=np.float32)
    samples = _samples(4)
    rep = build_report(y, s, LABELS, {"ivory": 0.5, "live_animal": 0.5}, samples, ["source"], {"split": "val"})
    assert set(rep["slices"]["source"]) == {"a", "b"}
    a = rep["slices"]["source"]["a"]  # rows 1 and 3
    assert a["n_images"] == 2 and a["per_class"]["ivory"]["support"] == 0 and a["per_class"]["ivory"]["ap"] is None
    json.dumps(rep, allow_nan=False)
    small = summary(rep)
    assert small["split"] == "val" and set(small["per_class"]["ivory"]) >= {"ap", "precision", "recall", "support"}


def test_default_slice_columns_skip_unique_ids():
    samples = _samples(30)
    assert default_slice_columns(samples, ["source", "origin"]) == ["source"]


def test_write_report_files(tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.random((20, 2)) > 0.5).astype(np.float32)
    s = np.clip(y * 0.6 + rng.random((20, 2)) * 0.4, 0, 1)
    rep = build_report(y, s, LABELS, {"ivory": 0.5, "live_animal": 0.5}, _samples(20), ["source"])
    write_report(rep, y, s, tmp_path)
    for name in ("report.json", "report.md", "pr_curves.png", "confusion.png"):
        assert (tmp_path / name).stat().st_size > 0
    md = (tmp_path / "report.md").read_text()
    assert "| ivory |" in md and "*macro*" in md and "## By `source`" in md


def test_most_confident_errors_are_ranked_by_score():
    y = np.array([[0], [0], [0], [1], [1], [1], [0]], dtype=np.float32)
    s = np.array([[0.7], [0.95], [0.2], [0.1], [0.45], [0.9], [0.6]], dtype=np.float32)
    errors = most_confident_errors(y, s, ["ivory"], {"ivory": 0.5}, k=2)
    assert errors["ivory"]["false_positives"] == [1, 0]  # 0.95, then 0.7 (0.6 is cut by k)
    assert errors["ivory"]["false_negatives"] == [3, 4]  # 0.1, then 0.45; 0.9 is flagged, so not an error


def test_write_report_with_samples_adds_predictions_and_error_sheet(tmp_path):
    y = np.array([[1, 0], [0, 1], [0, 0], [1, 1]], dtype=np.float32)
    s = np.array([[0.9, 0.2], [0.8, 0.7], [0.1, 0.6], [0.3, 0.9]], dtype=np.float32)
    samples = _samples(4)
    make_photo(0, (60, 40)).save(tmp_path / "0.jpg")
    samples[1] = Sample(path=str(tmp_path / "0.jpg"), image="0.jpg", labels=(), split="val", extra={"source": "a"})
    rep = build_report(y, s, LABELS, {"ivory": 0.5, "live_animal": 0.5}, samples, ["source"])
    write_report(rep, y, s, tmp_path / "out", samples)  # rows 0, 2, 3 point at missing files: drawn as blanks
    rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
    assert [r["image"] for r in rows] == ["0.jpg", "0.jpg", "2.jpg", "3.jpg"]
    assert rows[1]["ivory_true"] == "0" and rows[1]["ivory_score"] == "0.800000" and rows[1]["ivory_flagged"] == "1"
    assert rows[3]["source"] == "a" and rows[3]["origin"] == "o3"
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["predictions"] == {"file": "predictions.csv", "schema_version": 1}
    assert saved["most_confident_errors"]["ivory"] == {"false_positives": ["0.jpg"], "false_negatives": ["3.jpg"]}
    assert saved["most_confident_errors"]["live_animal"] == {"false_positives": ["2.jpg"], "false_negatives": []}
    assert (tmp_path / "out" / "errors.png").stat().st_size > 0
    assert "![Most confident errors](errors.png)" in (tmp_path / "out" / "report.md").read_text()


def test_select_split_explains_missing_split():
    with pytest.raises(ValueError, match="--split all"):
        select_split(_samples(3), "test")
    assert len(select_split(_samples(3), "all")) == 3


def test_evaluate_onnx_with_the_tiny_model(tmp_path):
    model = make_tiny_model(tmp_path / "tiny.onnx")
    (tmp_path / "img").mkdir()
    rows = ["image,labels,split,source"]
    for i in range(12):
        make_photo(i, (48, 40)).save(tmp_path / "img" / f"{i}.jpg")
        rows.append(f"img/{i}.jpg,{'ivory' if i % 3 == 0 else 'live_animal' if i % 3 == 1 else ''},val,"
                    f"{'a' if i < 6 else 'b'}")
    (tmp_path / "img" / "bad.jpg").write_bytes(b"not a jpeg")
    rows.append("img/bad.jpg,,val,a")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    rep = evaluate_onnx(model, tmp_path / "m.csv", tmp_path / "out", split="val")
    assert rep["n_images"] == 12 and rep["skipped_images"] == 1
    assert rep["labels"] == LABELS and "source" in rep["slices"]
    assert rep["per_class"]["ivory"]["support"] == 4
    assert (tmp_path / "out" / "report.md").is_file()
    rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
    assert len(rows) == 13 and all(r["error"] == "" and r["ivory_score"] for r in rows[:12])
    assert rows[12]["image"] == "img/bad.jpg" and rows[12]["error"] and rows[12]["ivory_score"] == ""
    with pytest.raises(ValueError, match="not in the manifest"):
        evaluate_onnx(model, tmp_path / "m.csv", tmp_path / "out2", slice_by=["platform"])
