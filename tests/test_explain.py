"""Heatmaps from the exported graph: the `cam` output, Model.explain aligned with the upright photo, the
deletion test, and files without heatmaps refused clearly."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import make_photo, make_tiny_model, tiny_metadata

import wildlife_vision as wv
from wildlife_vision.errors import ModelLoadError
from wildlife_vision.explain import grid_to_photo, normalized_grid, overlay
from wildlife_vision.preprocess import crop_box

onnx = pytest.importorskip("onnx", reason="the graph rewrite needs the onnx package (dev extra)")
from wildlife_vision_train.heatmap import (HeatmapExportError, add_cam_output, check_unchanged,  # noqa: E402
                                           with_heatmaps)


def red_detector(path: Path, size=(32, 32)) -> Path:
    """A tiny model whose 'ivory' logit is the mean redness (R - G - B) of its view: red pixels are hot."""
    make_tiny_model(path, input_size=size)
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        if init.name == "W":  # (3 channels, 2 labels): ivory = 4R - 2G - 2B, live_animal the reverse
            init.CopyFrom(onnx.numpy_helper.from_array(
                np.array([[4.0, -4.0], [-2.0, 2.0], [-2.0, 2.0]], dtype=np.float32), "W"))
        if init.name == "B":
            init.CopyFrom(onnx.numpy_helper.from_array(np.array([-1.0, 0.5], dtype=np.float32), "B"))
    path.write_bytes(with_heatmaps(model.SerializeToString()))
    return path


def test_cam_output_keeps_scores_and_decomposes_the_logit(tmp_path):
    plain = make_tiny_model(tmp_path / "tiny.onnx", embedding=True)
    before = plain.read_bytes()
    after = with_heatmaps(before)
    assert check_unchanged(before, after) == 0.0  # raises if scores moved or the mean is not the logit
    (tmp_path / "cam.onnx").write_bytes(after)
    m = wv.load_model(tmp_path / "cam.onnx")
    assert m.has_heatmaps and m.has_embedding
    meta = json.loads(onnx.load(str(tmp_path / "cam.onnx")).metadata_props[0].value)
    assert meta["heatmap"]["output"] == "cam" and meta["heatmap"]["method"] == "cam"
    batch = np.random.default_rng(1).normal(size=(3, 3, 32, 32)).astype(np.float32)
    scores, cam = m.run_outputs(batch, [None, "cam"])
    assert cam.shape == (3, 2, 32, 32)
    logits = cam.reshape(3, 2, -1).mean(axis=2)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), scores, atol=1e-5)
    np.testing.assert_array_equal(wv.load_model(plain).run_batch(batch), m.run_batch(batch))
    # idempotent: a second rewrite changes nothing
    assert with_heatmaps(after) == after or check_unchanged(after, with_heatmaps(after)) == 0.0


def test_a_head_that_is_not_pooled_and_linear_is_refused(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("ReduceMax", ["pixel_values"], ["m"], axes=[2, 3], keepdims=0),
                               helper.make_node("Sigmoid", ["m"], ["scores"])], "g",
                              [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["b", 3, 8, 8])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["b", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(HeatmapExportError, match="linear head"):
        add_cam_output(model)


def _exif_rotated_jpeg(upright: Image.Image) -> bytes:
    """Store ``upright`` turned 90 degrees, with EXIF orientation 6 saying how to turn it back."""
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise; orientation 6 = rotate CW to view
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def test_explain_maps_align_with_the_upright_exif_rotated_photo(tmp_path):
    model = wv.load_model(red_detector(tmp_path / "red.onnx"))
    # upright photo 60 wide x 100 tall, grey, with a red block in a known place inside the centre crop
    upright = np.full((100, 60, 3), 128, dtype=np.uint8)
    upright[40:60, 10:30] = (230, 20, 20)
    data = _exif_rotated_jpeg(Image.fromarray(upright))
    assert Image.open(io.BytesIO(data)).size == (100, 60)  # stored sideways
    ex = model.explain(data)
    assert ex.ok and ex.size == (60, 100)
    heat = ex.maps["ivory"]
    assert heat.shape == (100, 60) and heat.dtype == np.float32
    assert 0.0 <= heat.min() and heat.max() <= 1.0
    box = crop_box((60, 100), model.preprocess_config)
    inside = heat[40:60, 10:30]
    rest = heat.copy()
    rest[38:62, 8:32] = np.nan
    top, bottom = int(np.ceil(box[1])), int(np.floor(box[3]))
    assert inside[2:-2, 2:-2].min() > 0.8, "the red block is where the map is hot"
    assert np.nanmean(rest[top:bottom]) < 0.1, "the grey photo around it is cold"
    assert heat[:max(0, int(box[1]) - 1)].max() == 0.0, "outside what the model saw the map is 0"
    ys, xs = np.unravel_index(np.argmax(heat), heat.shape)
    assert 38 <= ys <= 62 and 8 <= xs <= 32
    # the same scores as predict, and a smaller map on request
    assert ex.prediction == model.predict(data)
    small = ex.heatmap("ivory", max_side=50)
    assert small.shape == (50, 30)
    # live_animal is the reverse detector: cold where ivory is hot
    assert ex.maps["live_animal"][45:55, 15:25].max() < 0.2


def test_explain_lists_labels_errors_and_keeps_the_photo(tmp_path):
    model = wv.load_model(red_detector(tmp_path / "red.onnx"))
    buf = io.BytesIO()
    make_photo(3, (80, 50)).save(buf, "PNG")
    out = model.explain([buf.getvalue(), b"not an image", make_photo(4)], label="ivory", keep_photo=40)
    assert [e.ok for e in out] == [True, False, True]
    assert out[1].error_kind == "not_an_image" and out[1].maps == {}
    assert set(out[0].maps) == {"ivory"} and out[0].photo.size == (40, 25)
    with pytest.raises(KeyError, match="unknown label"):
        model.explain(make_photo(1), label="tiger")
    with pytest.raises(TypeError):
        model.explain(42)


def test_a_model_without_heatmaps_says_how_to_get_them(tmp_path):
    model = wv.load_model(make_tiny_model(tmp_path / "plain.onnx"))
    assert not model.has_heatmaps
    with pytest.raises(ModelLoadError, match="no heatmap output.*wildlife-vision heatmaps"):
        model.explain(make_photo(0))


def test_grid_to_photo_and_overlay():
    grid = np.zeros((4, 4), dtype=np.float32)
    grid[0, 3] = 1.0
    heat = grid_to_photo(grid, (40, 20), (10.0, 0.0, 30.0, 20.0))  # the model saw the middle 20x20
    assert heat.shape == (20, 40)
    assert heat[:, :10].max() == 0 and heat[:, 31:].max() == 0
    assert np.unravel_index(np.argmax(heat), heat.shape)[1] in range(25, 31)
    assert normalized_grid(np.full((2, 2), 3.0)).max() == 0.0
    photo = Image.new("RGB", (40, 20), (100, 100, 100))
    ov = overlay(photo, heat)
    arr = np.asarray(ov).astype(int)
    assert ov.size == (40, 20)
    assert np.abs(arr[:, :10] - 100).max() == 0, "cold regions keep the photo"
    assert np.abs(arr[2, 27] - 100).max() > 30, "hot regions are coloured"


def test_deletion_test_on_a_faithful_detector(tmp_path):
    from wildlife_vision.evaluation.faithfulness import deletion_test, to_markdown

    model = wv.load_model(red_detector(tmp_path / "red.onnx"))
    paths = []
    rng = np.random.default_rng(0)
    for i in range(12):  # grey photos with one red block at a random place: the map should find it
        img = np.full((48, 48, 3), 120, dtype=np.uint8)
        y, x = rng.integers(6, 26, 2)
        img[y:y + 16, x:x + 16] = (240, 10, 10)
        p = tmp_path / f"p{i}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
    paths.append(tmp_path / "missing.png")
    res = deletion_test(model, paths, labels=["ivory"], draws=4, resamples=50)
    r = res["labels"]["ivory"]
    assert res["schema"] == "wildlife-vision/faithfulness/v1" and res["n_failed"] == 1
    assert r["n_flagged"] >= 8
    assert r["win_rate"] >= 0.9 and r["mean_drop_hot"] > r["mean_drop_random"]
    lo, hi = r["win_rate_ci95"]
    assert lo <= r["win_rate"] <= hi
    assert "| ivory |" in to_markdown(res)
    # the other protocol (hottest cells wherever they are, mean colour) scores the same photos
    res_cells = deletion_test(model, paths[:-1], labels=["ivory"], draws=4, resamples=0, mask="cells", fill="mean")
    assert res_cells["labels"]["ivory"]["n_flagged"] == r["n_flagged"]
    with pytest.raises(ValueError, match="mask must be"):
        deletion_test(model, paths, mask="circle")


def test_heatmap_module_cli_adds_the_output(tmp_path):
    plain = make_tiny_model(tmp_path / "plain.onnx")
    out = tmp_path / "with-cam.onnx"
    r = subprocess.run([sys.executable, "-m", "wildlife_vision_train.heatmap", str(plain), str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "scores unchanged" in r.stdout
    assert wv.load_model(out).has_heatmaps


def test_evaluate_faithfulness_and_the_page_with_mistake_heatmaps(tmp_path):
    """`evaluate --faithfulness` on a heatmap model: the report's deletion test, report.md's section, and
    report.html with the most confident mistakes' heatmaps written beside it."""
    from wildlife_vision.cli import main

    model = red_detector(tmp_path / "red.onnx")
    rows = ["image,labels,split"]
    rng = np.random.default_rng(2)
    for i in range(16):
        img = np.full((48, 64, 3), 120, dtype=np.uint8)
        red = i % 2 == 0
        if red or i % 5 == 0:  # some unlabelled photos are red too: confident false positives
            y, x = rng.integers(4, 24, 2)
            img[y:y + 18, x:x + 18] = (235, 15, 15)
        Image.fromarray(img).save(tmp_path / f"p{i}.png")
        rows.append(f"p{i}.png,{'ivory' if red else ''},test")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(model), "--data", str(tmp_path / "m.csv"), "--split", "test",
                 "--faithfulness", "--workers", "1", "--output", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    faith = report["faithfulness"]["labels"]["ivory"]
    assert faith["n_flagged"] >= 6 and 0.0 <= faith["win_rate"] <= 1.0
    assert "deletion test" in (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    overlays = sorted((out / "heatmaps").glob("*.jpg"))
    assert overlays, "the most confident mistakes got heatmaps"
    assert page.count("data:image/jpeg;base64") >= 2 and "http://" not in page.replace("http://www.w3.org", "")


def test_predict_explain_writes_overlays_for_flagged_and_review_rows(tmp_path, capsys):
    from wildlife_vision.cli import main

    model = red_detector(tmp_path / "red.onnx")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        img = np.full((40, 60, 3), 120, dtype=np.uint8)
        if i % 2 == 0:
            img[10:30, 15:40] = (235, 15, 15)
        Image.fromarray(img).save(photos / f"p{i}.png")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    out, heat = tmp_path / "preds.jsonl", tmp_path / "heat"
    assert main(["predict", str(photos), "--model", str(model), "--output", str(out), "--explain", str(heat),
                 "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 7 and all("heatmaps" in r for r in rows)
    for r in rows:
        wanted = set(r["flagged"]) | set(r["review"])
        assert set(r["heatmaps"]) == wanted
        for path in r["heatmaps"].values():
            with Image.open(path) as im:
                assert im.format == "JPEG" and im.size == (60, 40)  # the upright photo's shape
    assert any(r["heatmaps"] for r in rows) and next(r for r in rows if r["error"])["heatmaps"] == {}
    # CSV with --resume keeps its heatmaps column
    csv_out = tmp_path / "preds.csv"
    assert main(["predict", str(photos / "p0.png"), "--model", str(model), "--output", str(csv_out), "--explain",
                 str(heat), "--no-progress"]) == 0
    assert main(["predict", str(photos), "--model", str(model), "--output", str(csv_out), "--explain", str(heat),
                 "--resume", "--no-progress"]) == 0
    lines = csv_out.read_text().splitlines()
    assert lines[0].endswith(",heatmaps") and len(lines) == 8
    # a model without heatmaps is refused before anything is written
    plain = make_tiny_model(tmp_path / "plain.onnx")
    assert main(["predict", str(photos), "--model", str(plain), "--output", str(tmp_path / "x.jsonl"), "--explain",
                 str(heat), "--no-progress"]) == 4
    assert "no heatmap output" in capsys.readouterr().err
