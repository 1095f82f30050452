"""`wildlife_vision.evaluation.robustness` and `wildlife-vision robustness`: the benign edits do what they say,
deterministically, and the score changes, flips and review changes are counted right (tiny ONNX models whose
response to the image is known exactly)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import make_photo, tiny_metadata
from synthetic import scene
from wildlife_vision import load_model
from wildlife_vision.cli import main as cli_main
from wildlife_vision.evaluation.robustness import (EDITS, SCHEMA_VERSION, apply_edit, compare_markdown, jpeg_roundtrip,
                                                   measure_robustness, resolve_edits, to_markdown)
from wildlife_vision.exitcodes import EXIT_MODEL, EXIT_OK, EXIT_USAGE
from wildlife_vision.metadata import METADATA_KEY
from wildlife_vision.preprocess import PreprocessConfig, load_image

SIZE = 32
KEYS = [f"photo-{i}" for i in range(40)]


# ---- models whose response is known ---------------------------------------------------------------------------

def linear_model(path: Path, weights: np.ndarray, bias: np.ndarray) -> Path:
    """sigmoid(flatten(input) @ weights + bias) on 32x32 inputs with crop_pct 1: a 32x32 photo reaches the
    network unresized, pixel for pixel (normalised to [-1, 1])."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n_out = weights.shape[1]
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["pixel_values"], ["flat"], axis=1),
         helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
         helper.make_node("Sigmoid", ["logits"], ["scores"])],
        "linear", [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", n_out])],
        initializer=[numpy_helper.from_array(weights.astype(np.float32), "W"),
                     numpy_helper.from_array(bias.astype(np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    pre = PreprocessConfig(input_size=(SIZE, SIZE), crop_pct=1.0, interpolation="bilinear", mean=(0.5, 0.5, 0.5),
                           std=(0.5, 0.5, 0.5))
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(tiny_metadata(preprocess=pre.to_dict()))
    onnx.save(model, str(path))
    return path


def constant_model(path: Path) -> Path:
    """Scores that ignore the image entirely."""
    return linear_model(path, np.zeros((3 * SIZE * SIZE, 2)), np.array([0.7, -1.2]))


K = 2.0


def left_right_model(path: Path) -> Path:
    """ivory: sigmoid(K * (mean of the left half - mean of the right half)), in normalised units; live_animal:
    always 0.5 (at its threshold, so flagged)."""
    w = np.zeros((3, SIZE, SIZE, 2))
    w[:, :, : SIZE // 2, 0] = K / (3 * SIZE * SIZE / 2)
    w[:, :, SIZE // 2:, 0] = -K / (3 * SIZE * SIZE / 2)
    return linear_model(path, w.reshape(-1, 2), np.zeros(2))


def halves(left: int, right: int) -> Image.Image:
    a = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    a[:, : SIZE // 2], a[:, SIZE // 2:] = left, right
    return Image.fromarray(a, "RGB")


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + np.exp(-x))


def mirror_change(left: int, right: int) -> float:
    x = K * ((left - right) / 255.0 / 0.5)
    return abs(sigmoid(x) - sigmoid(-x))


def save(img: Image.Image, path: Path, **kw) -> str:
    img.save(path, **kw)
    return str(path)


# ---- the edits ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return scene(3, (160, 120))


def test_every_edit_has_a_one_line_description():
    assert list(EDITS) == ["mirror", "crop", "translate", "jpeg", "resize", "overlay"]
    for e in EDITS.values():
        assert e.description and "\n" not in e.description and len(e.description) < 120


@pytest.mark.parametrize("name", list(EDITS))
def test_edits_are_deterministic_and_change_pixels(photo, name):
    a, pa = apply_edit(photo, name, seed=0, key="x")
    b, pb = apply_edit(photo, name, seed=0, key="x")
    assert pa == pb and np.array_equal(np.asarray(a), np.asarray(b))
    assert a.mode == "RGB" and not a.info  # no EXIF to turn it a second time
    assert a.size != photo.size or not np.array_equal(np.asarray(a), np.asarray(photo))
    if name != "mirror":  # parameters vary with the photo and the seed
        drawn = {json.dumps(apply_edit(photo, name, seed=s, key=k)[1], sort_keys=True)
                 for s in (0, 1) for k in KEYS[:8]}
        assert len(drawn) > 1


def test_mirror_is_a_horizontal_flip(photo):
    out, params = apply_edit(photo, "mirror", key="any")
    assert params == {} and np.array_equal(np.asarray(out), np.fliplr(np.asarray(photo)))


def test_crop_removes_1_to_4_px_per_side(photo):
    a = np.asarray(photo)
    h, w = a.shape[:2]
    seen = set()
    for key in KEYS:
        out, p = apply_edit(photo, "crop", key=key)
        sides = (p["left"], p["top"], p["right"], p["bottom"])
        assert all(1 <= s <= 4 for s in sides), p
        assert out.size == (w - p["left"] - p["right"], h - p["top"] - p["bottom"])
        assert np.array_equal(np.asarray(out), a[p["top"]:h - p["bottom"], p["left"]:w - p["right"]])
        seen.update(sides)
    assert seen == {1, 2, 3, 4}


def test_translate_shifts_1_to_4_px_with_the_border_repeated(photo):
    a = np.asarray(photo).astype(int)
    h, w = a.shape[:2]
    signs = set()
    for key in KEYS:
        out, p = apply_edit(photo, "translate", key=key)
        dx, dy = p["dx"], p["dy"]
        assert 1 <= abs(dx) <= 4 and 1 <= abs(dy) <= 4, p
        signs.add((np.sign(dx), np.sign(dy)))
        o = np.asarray(out).astype(int)
        assert o.shape == a.shape
        ys = np.clip(np.arange(h) - dy, 0, h - 1)
        xs = np.clip(np.arange(w) - dx, 0, w - 1)
        assert np.array_equal(o, a[ys][:, xs])
    assert len(signs) == 4


def test_jpeg_reencodes_at_a_quality_from_60_to_90(photo):
    qualities = set()
    for key in KEYS:
        out, p = apply_edit(photo, "jpeg", key=key)
        assert 60 <= p["quality"] <= 90
        assert np.array_equal(np.asarray(out), np.asarray(jpeg_roundtrip(photo, p["quality"])))
        qualities.add(p["quality"])
    assert len(qualities) > 5
    low, high = jpeg_roundtrip(photo, 60), jpeg_roundtrip(photo, 90)  # the quality really is used
    err = [np.abs(np.asarray(x, dtype=int) - np.asarray(photo, dtype=int)).mean() for x in (low, high)]
    assert err[0] > err[1] > 0


def test_resize_scales_by_0_8_to_1_25_bicubic(photo):
    w, h = photo.size
    scales = []
    for key in KEYS:
        out, p = apply_edit(photo, "resize", key=key)
        assert 0.8 <= p["scale"] <= 1.25
        assert out.size == (round(w * p["scale"]), round(h * p["scale"])) == tuple(p["size"])
        expected = photo.resize(out.size, Image.Resampling.BICUBIC)
        assert np.array_equal(np.asarray(out), np.asarray(expected))
        scales.append(p["scale"])
    assert min(scales) < 0.95 and max(scales) > 1.05


@pytest.mark.parametrize("size", [(160, 120), (640, 480), (32, 32)])
def test_overlay_is_small_semi_transparent_and_in_its_corner_box(size):
    img = scene(5, size)
    a = np.asarray(img).astype(int)
    corners = set()
    for key in KEYS[:12]:
        out, p = apply_edit(img, "overlay", key=key)
        assert p["area_fraction"] <= 0.05 and 110 <= p["alpha"] <= 180
        x0, y0, x1, y1 = p["box"]
        assert (x1 - x0) * (y1 - y0) <= 0.05 * size[0] * size[1]
        changed = np.any(np.asarray(out).astype(int) != a, axis=2)
        assert changed.any()
        ys, xs = np.nonzero(changed)
        assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
        corners.add(p["corner"])
        if size[0] >= 160:
            assert p["text"].startswith(("SALE", "+255", "WhatsApp"))
            # semi-transparent: no overlay pixel is pure white or pure black unless the photo was there already
            assert not np.all(np.asarray(out)[changed] == 255)
    assert len(corners) > 1


def test_resolve_edits():
    assert resolve_edits(None) == list(EDITS) == resolve_edits("all")
    assert resolve_edits("jpeg, mirror") == ["jpeg", "mirror"]
    with pytest.raises(ValueError, match="did you mean 'mirror'"):
        resolve_edits("miror")
    with pytest.raises(ValueError, match="twice"):
        resolve_edits(["jpeg", "jpeg"])


# ---- measuring ------------------------------------------------------------------------------------------------------

def test_a_model_that_ignores_the_image_moves_by_nothing(tmp_path):
    model = load_model(constant_model(tmp_path / "const.onnx"))
    paths = [save(make_photo(i, (96, 64)), tmp_path / f"p{i}.jpg") for i in range(6)]
    result = measure_robustness(model, paths, seed=1, resamples=200)
    assert result["schema_version"] == SCHEMA_VERSION and result["n_images"] == 6 and result["n_failed"] == 0
    assert set(result["edits"]) == set(EDITS)
    for e in result["edits"].values():
        for m in e["per_class"].values():
            assert m["p50_abs_change"] == m["p95_abs_change"] == m["max_abs_change"] == 0.0
            assert m["flips"] == m["review_changes"] == 0 and m["flip_rate"] == 0.0
            assert m["ci95"] == {"p95_abs_change": [0.0, 0.0], "flip_rate": [0.0, 0.0]}
            assert m["meets_target"]
    json.dumps(result, allow_nan=False)


def test_a_left_right_model_flips_under_mirror_and_counts_are_right(tmp_path):
    model = load_model(left_right_model(tmp_path / "lr.onnx"))
    # (left, right) grey levels: strongly left-bright, uniform, mildly left-bright (0.60 -> 0.40: into the review
    # band [0.3, 0.5)), uniform, strongly right-bright
    pairs = [(255, 0), (128, 128), (140, 115), (60, 60), (0, 255)]
    paths = [save(halves(l, r), tmp_path / f"h{i}.png") for i, (l, r) in enumerate(pairs)]
    result = measure_robustness(model, paths, edits=["mirror"], resamples=500)
    ivory = result["edits"]["mirror"]["per_class"]["ivory"]
    expected = np.array([mirror_change(l, r) for l, r in pairs])
    assert ivory["flips"] == 3 and ivory["flip_rate"] == pytest.approx(0.6)
    assert ivory["review_changes"] == 1
    assert ivory["max_abs_change"] == pytest.approx(expected.max(), abs=1e-5)
    assert ivory["p50_abs_change"] == pytest.approx(np.median(expected), abs=1e-5)
    assert ivory["p95_abs_change"] == pytest.approx(np.quantile(expected, 0.95), abs=1e-5)
    lo, hi = ivory["ci95"]["flip_rate"]
    assert 0.0 <= lo < 0.6 < hi <= 1.0
    assert not ivory["meets_target"]
    live = result["edits"]["mirror"]["per_class"]["live_animal"]
    assert live["max_abs_change"] == 0.0 and live["flips"] == 0
    md = to_markdown(result)
    assert "| mirror | ivory |" in md and "**fail**" in md and "| mirror | live_animal |" in md and "pass" in md
    assert "60.00 [" in md
    cmp = compare_markdown(result, result)
    assert "| mirror | ivory | 0." in cmp


def test_an_under_confident_model_moves_less_only_until_its_scores_are_calibrated(tmp_path):
    """Two models with the same decisions, one with logits 4x smaller: on its own scores the soft one moves less
    under a mirror; with one temperature fitted per label on the photos' labels (``targets``) both move alike."""

    def lr_model(path: Path, k: float) -> Path:
        w = np.zeros((3, SIZE, SIZE, 2))
        w[:, :, : SIZE // 2, 0], w[:, :, SIZE // 2:, 0] = k / (3 * SIZE * SIZE / 2), -k / (3 * SIZE * SIZE / 2)
        return linear_model(path, w.reshape(-1, 2), np.zeros(2))

    levels = [(150, 100), (140, 120), (135, 125), (170, 90), (100, 150), (120, 140), (125, 135), (90, 170),
              (145, 110), (110, 145), (131, 129), (129, 131)]
    paths = [save(halves(l, r), tmp_path / f"c{i}.png") for i, (l, r) in enumerate(levels)]
    y = np.array([[float(l > r), 0.0] for l, r in levels])
    y[2, 0], y[6, 0] = 0.0, 1.0  # not separable, so the fitted temperatures are finite
    got = {}
    for name, k in (("sharp", 8.0), ("soft", 2.0)):
        result = measure_robustness(load_model(lr_model(tmp_path / f"{name}.onnx", k)), paths, edits=["mirror"],
                                    resamples=0, targets=y)
        got[name] = result
    sharp, soft = (got[n]["edits"]["mirror"]["per_class"]["ivory"] for n in ("sharp", "soft"))
    assert soft["p95_abs_change"] < 0.6 * sharp["p95_abs_change"]
    assert soft["flips"] == sharp["flips"]  # the same decisions
    assert soft["p95_abs_change_calibrated"] == pytest.approx(sharp["p95_abs_change_calibrated"], abs=1e-4)
    t_sharp, t_soft = (got[n]["calibration_check"]["ivory"]["temperature"] for n in ("sharp", "soft"))
    assert t_sharp / t_soft == pytest.approx(4.0, rel=1e-3) and t_soft < 1.0
    # live_animal has one class here: nothing to fit, no calibrated figure
    assert "live_animal" not in got["soft"]["calibration_check"]
    assert "p95_abs_change_calibrated" not in got["soft"]["edits"]["mirror"]["per_class"]["live_animal"]
    md = to_markdown(got["soft"])
    assert "p95 at calibrated scores |" in md and f"{soft['p95_abs_change_calibrated']:.4f} |" in md
    assert "ivory 0." in md and "under-confident" in md
    assert "calibrated" not in to_markdown(measure_robustness(load_model(tmp_path / "soft.onnx"), paths,
                                                              edits=["mirror"], resamples=0))
    with pytest.raises(ValueError, match="targets of shape"):
        measure_robustness(load_model(tmp_path / "soft.onnx"), paths, edits=["mirror"], targets=y[:3])


def test_an_exif_rotated_photo_is_edited_upright_and_not_turned_twice(tmp_path):
    model = load_model(left_right_model(tmp_path / "lr.onnx"))
    upright = halves(255, 0)
    plain = save(upright, tmp_path / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 270 to view
    rotated = save(upright.transpose(Image.Transpose.ROTATE_90), tmp_path / "rotated.png", exif=exif)
    assert np.array_equal(np.asarray(load_image(rotated)), np.asarray(upright))
    a = measure_robustness(model, [plain], edits="mirror", resamples=0)
    b = measure_robustness(model, [rotated], edits="mirror", resamples=0)
    assert a["edits"]["mirror"]["per_class"]["ivory"]["max_abs_change"] > 0.9
    assert a["edits"] == b["edits"]


def test_same_seed_same_result_and_threads_change_nothing(tmp_path, tiny_model_path):
    model = load_model(tiny_model_path)
    paths = [save(scene(i, (120, 90)), tmp_path / f"s{i}.jpg", quality=90) for i in range(7)]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    paths.insert(3, str(bad))
    one = measure_robustness(model, paths, seed=4, batch_size=5, resamples=100)
    again = measure_robustness(model, paths, seed=4, batch_size=3, workers=3, resamples=100)
    assert one == again
    assert one["n_images"] == 7 and one["n_failed"] == 1 and one["failures"][0]["image"] == str(bad)
    other = measure_robustness(model, paths, seed=5, batch_size=5, resamples=100)
    assert other["edits"]["crop"] != one["edits"]["crop"]
    for e in one["edits"].values():
        for m in e["per_class"].values():
            assert 0 <= m["p50_abs_change"] <= m["p95_abs_change"] <= m["max_abs_change"]
            lo, hi = m["ci95"]["p95_abs_change"]
            assert lo <= hi
    with pytest.raises(ValueError, match="could be read"):
        measure_robustness(model, [str(bad)])


# ---- the command ----------------------------------------------------------------------------------------------------

def write_manifest(tmp_path: Path, n: int = 6) -> Path:
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(n):
        make_photo(i, (80, 60)).save(tmp_path / "img" / f"{i}.jpg")
        rows.append({"image": f"img/{i}.jpg", "labels": "ivory" if i % 2 else "", "split": "test" if i < 5 else "val"})
    (tmp_path / "img" / "bad.jpg").write_bytes(b"not an image")
    rows.append({"image": "img/bad.jpg", "labels": "", "split": "test"})
    path = tmp_path / "manifest.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "labels", "split"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_cli_writes_json_and_markdown(tmp_path, tiny_model_path, capsys):
    manifest = write_manifest(tmp_path)
    out, md = tmp_path / "out" / "robust.json", tmp_path / "robust.md"
    rc = cli_main(["robustness", str(tiny_model_path), "--data", str(manifest), "--edits", "mirror,jpeg",
                   "--output", str(out), "--markdown", str(md), "--resamples", "200", "--no-progress"])
    assert rc == EXIT_OK, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["schema_version"] == SCHEMA_VERSION and result["split"] == "test"
    assert result["n_images"] == 5 and result["n_failed"] == 1 and result["failures"][0]["image"] == "img/bad.jpg"
    assert list(result["edits"]) == ["mirror", "jpeg"] and result["labels"] == ["ivory", "live_animal"]
    assert result["thresholds"] == {"ivory": 0.5, "live_animal": 0.5}
    assert "| jpeg | live_animal |" in md.read_text()
    assert list(result["calibration_check"]) == ["ivory"]  # the split's only label with both classes
    printed = capsys.readouterr().out
    assert "(at calibrated scores 0." in printed
    assert "5 photos (split test)" in printed and "mirror" in printed
    limited = tmp_path / "limited.json"
    assert cli_main(["robustness", str(tiny_model_path), "--data", str(manifest), "--limit", "3", "--edits", "crop",
                     "--output", str(limited), "--no-progress"]) == EXIT_OK
    assert json.loads(limited.read_text())["n_images"] + json.loads(limited.read_text())["n_failed"] == 3


@pytest.mark.parametrize("case", ["missing manifest", "bad edit", "bad split", "bad limit", "missing model"])
def test_cli_fails_cleanly(tmp_path, tiny_model_path, capsys, case):
    manifest = write_manifest(tmp_path)
    out = tmp_path / "r.json"
    args = {"missing manifest": [str(tiny_model_path), "--data", str(tmp_path / "nope.csv")],
            "bad edit": [str(tiny_model_path), "--data", str(manifest), "--edits", "mirror,blur"],
            "bad split": [str(tiny_model_path), "--data", str(manifest), "--split", "holdout"],
            "bad limit": [str(tiny_model_path), "--data", str(manifest), "--limit", "0"],
            "missing model": [str(tmp_path / "none.onnx"), "--data", str(manifest)]}[case]
    rc = cli_main(["robustness", *args, "--output", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == (EXIT_MODEL if case == "missing model" else EXIT_USAGE)
    assert err.startswith("wildlife-vision robustness: ") and len(err.splitlines()) == 1, err
    assert not out.exists()
    if case == "missing manifest":
        assert "nope.csv" in err and "does not exist" in err


def test_evaluate_with_robustness_puts_the_block_in_the_report(tmp_path):
    """`evaluate --robustness` measures the same photos it evaluates and the report (JSON and Markdown) holds it."""
    pytest.importorskip("matplotlib")
    model = left_right_model(tmp_path / "lr.onnx")
    pairs = [(255, 0), (128, 128), (140, 115), (0, 255)]
    rows = []
    for i, (l, r) in enumerate(pairs):
        save(halves(l, r), tmp_path / f"h{i}.png")
        rows.append({"image": f"h{i}.png", "labels": "ivory" if l > r else "", "split": "test"})
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "labels", "split"])
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "rep"
    rc = cli_main(["evaluate", "--model", str(model), "--data", str(manifest), "--split", "test", "--output", str(out),
                   "--robustness", "mirror,jpeg"])
    assert rc == EXIT_OK
    report = json.loads((out / "report.json").read_text())
    rob = report["robustness"]
    assert rob["schema_version"] == SCHEMA_VERSION and rob["n_images"] == 4 and list(rob["edits"]) == ["mirror", "jpeg"]
    assert rob["edits"]["mirror"]["per_class"]["ivory"]["flips"] == 3  # every lopsided photo flips when mirrored
    assert "## Under a seller's benign edits" in (out / "report.md").read_text()
