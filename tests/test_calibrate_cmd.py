"""`wildlife-vision calibrate`: thresholds for a target precision (at a base rate), score calibration, and the new
self-describing ONNX file written without the onnx package; all without torch."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from helpers import make_tiny_model, tiny_metadata, write_photos
from wildlife_vision.errors import MetadataError, ModelLoadError
from wildlife_vision.evaluation.probability import (apply_maps, ece, fit, fit_isotonic, fit_temperature, logit,
                                                    score_maps)
from wildlife_vision.metadata import METADATA_KEY, replace_metadata_prop, scan_onnx, write_metadata_bytes

LABELS = ["ivory", "live_animal"]

# the CLI with the training stack made unimportable, as on a platform that installed only the runtime
_NO_TORCH = textwrap.dedent("""
    import sys
    for name in ("torch", "timm", "albumentations", "torchvision"):
        sys.modules[name] = None   # importing them now raises ImportError
    from wildlife_vision.cli import main
    code = main(sys.argv[1:])
    assert "torch" not in sys.modules or sys.modules["torch"] is None
    sys.exit(code)
""")


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _NO_TORCH, *map(str, args)], capture_output=True, text=True,
                          timeout=180, cwd=cwd)


# ---- the metadata writer ---------------------------------------------------------------------------------

def _model_with_other_props(path: Path) -> Path:
    import onnx

    make_tiny_model(path)
    m = onnx.load(str(path))
    m.doc_string = "a doc string"
    meta = [(p.key, p.value) for p in m.metadata_props]
    del m.metadata_props[:]
    for k, v in [("before", "1"), *meta, ("after", "2")]:
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(m, str(path))
    return path


def _field(number: int, payload: bytes) -> bytes:
    def varint(v: int) -> bytes:
        out = b""
        while True:
            out += bytes([(v & 0x7F) | (0x80 if v > 0x7F else 0)])
            v >>= 7
            if not v:
                return out
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def test_the_writer_replaces_only_our_entry_and_keeps_every_other_byte(tmp_path):
    import onnx

    src = _model_with_other_props(tmp_path / "m.onnx")
    data = src.read_bytes()
    new = json.dumps(tiny_metadata(LABELS, thresholds={"ivory": 0.7, "live_animal": 0.3}))
    out = replace_metadata_prop(data, METADATA_KEY, new)
    a, b = onnx.load_from_string(data), onnx.load_from_string(out)
    assert [(p.key) for p in b.metadata_props] == ["before", METADATA_KEY, "after"]  # in place, others kept
    assert b.metadata_props[1].value == new and b.metadata_props[2].value == "2"
    assert b.graph.SerializeToString() == a.graph.SerializeToString() and b.doc_string == "a doc string"
    # byte for byte: the file is its old bytes with one metadata_props field (tag 14) swapped
    old_field = _field(14, [p for p in a.metadata_props if p.key == METADATA_KEY][0].SerializeToString())
    new_field = _field(14, b.metadata_props[1].SerializeToString())
    cut = data.index(old_field)
    assert out == data[:cut] + new_field + data[cut + len(old_field):]
    onnx.checker.check_model(b)
    assert scan_onnx(out)[METADATA_KEY] == new


def test_the_writer_appends_when_missing_and_drops_duplicates(tmp_path):
    import onnx

    bare = make_tiny_model(tmp_path / "bare.onnx", with_metadata=False).read_bytes()
    out = replace_metadata_prop(bare, METADATA_KEY, "{}")
    assert scan_onnx(out) == {METADATA_KEY: "{}"} and out.startswith(bare)
    m = onnx.load_from_string(out)
    for _ in range(2):
        e = m.metadata_props.add()
        e.key, e.value = METADATA_KEY, "dup"
    twice = replace_metadata_prop(m.SerializeToString(), METADATA_KEY, "x")
    assert [p.value for p in onnx.load_from_string(twice).metadata_props] == ["x"]


def test_the_writer_validates_before_writing(tmp_path):
    data = make_tiny_model(tmp_path / "m.onnx").read_bytes()
    bad = tiny_metadata(LABELS)
    bad["thresholds"] = {"ivory": 1.5, "live_animal": 0.5}
    with pytest.raises(MetadataError, match="thresholds"):
        write_metadata_bytes(data, bad)
    with pytest.raises(ModelLoadError, match="truncated"):
        write_metadata_bytes(data[:-10], tiny_metadata(LABELS))
    kept = {**tiny_metadata(LABELS), "a_future_key": {"x": 1}}  # keys this version does not know are kept
    assert json.loads(scan_onnx(write_metadata_bytes(data, kept))[METADATA_KEY])["a_future_key"] == {"x": 1}


# ---- probability calibration -----------------------------------------------------------------------------

def test_temperature_recovers_an_overconfident_models_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 20000)
    y = (rng.random(z.size) < 1 / (1 + np.exp(-z))).astype(float)
    over = 1 / (1 + np.exp(-3 * z))  # three times too confident
    t = fit_temperature(y, over)["temperature"]
    assert t == pytest.approx(3.0, rel=0.05)
    maps = score_maps({"score_calibration": {"ivory": fit("temperature", y, over)}}, ["ivory"])
    calibrated = apply_maps(maps, over[:, None], ["ivory"])[:, 0]
    assert ece(y, calibrated) < 0.02 < ece(y, over)
    assert np.all(np.diff(calibrated[np.argsort(over)]) >= 0)  # the order is kept (AP does not move)


def test_isotonic_is_pool_adjacent_violators():
    fitted = fit_isotonic([0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.5])
    assert fitted == {"x": [0.1, 0.2, 0.3, 0.4, 0.5], "y": [0.0, 0.5, 0.5, 1.0, 1.0]}
    maps = score_maps({"score_calibration": {"a": {"method": "isotonic", "params": fitted}}}, ["a"])
    got = apply_maps(maps, np.array([[0.0], [0.25], [0.35], [0.9]]), ["a"])[:, 0]
    assert got.tolist() == [0.0, 0.5, 0.75, 1.0]  # flat outside, linear between knots
    rng = np.random.default_rng(1)
    s = rng.random(500)
    y = (rng.random(500) < s ** 2).astype(float)
    k = fit_isotonic(y, s)
    assert np.all(np.diff(k["x"]) >= 0) and np.all(np.diff(k["y"]) >= 0)
    assert ece(y, np.interp(s, k["x"], k["y"])) < 1e-9  # in-sample, isotonic regression is calibrated per block


def test_ece_of_a_known_case():
    assert ece(np.r_[np.ones(50), np.zeros(50)], np.full(100, 0.8)) == pytest.approx(0.3)
    assert ece([], []) is None


def test_the_model_applies_a_stored_map_and_a_file_without_one_is_unchanged(tmp_path):
    import wildlife_vision as wv

    photos = [str(p) for p in write_photos(tmp_path / "p", 6)]
    plain = wv.load_model(make_tiny_model(tmp_path / "plain.onnx"))
    raw = np.array([[p.scores[lab] for lab in LABELS] for p in plain.predict(photos)])
    assert plain.score_maps == {}
    batch = np.stack([plain._empty_batch(1)[0] for _ in photos])
    from wildlife_vision.preprocess import preprocess

    for i, p in enumerate(photos):
        preprocess(p, plain.preprocess_config, out=batch[i])
    assert np.array_equal(raw.astype(np.float32), plain.run_batch(batch))  # as today: the network's scores
    meta = tiny_metadata(LABELS, calibration={"score_calibration": {
        "ivory": {"method": "temperature", "params": {"temperature": 2.0}}}})
    cal = wv.load_model(make_tiny_model(tmp_path / "cal.onnx", metadata=meta))
    got = np.array([[p.scores[lab] for lab in LABELS] for p in cal.predict(photos)])
    expected = 1 / (1 + np.exp(-logit(raw[:, 0]) / 2.0))
    assert np.allclose(got[:, 0], expected, atol=1e-6) and np.array_equal(got[:, 1], raw[:, 1])
    assert not np.allclose(got[:, 0], raw[:, 0])
    bad = tiny_metadata(LABELS, calibration={"score_calibration": {
        "ivory": {"method": "temperature", "params": {"temperature": -1}}}})
    with pytest.raises(MetadataError, match="temperature"):
        wv.load_model(make_tiny_model(tmp_path / "bad.onnx", metadata=bad))


# ---- the command, end to end, without torch ----------------------------------------------------------------

def _labelled_sample(tmp_path: Path, n: int = 80):
    """A tiny model and a manifest whose labels follow its scores (with some mistakes), so targets are reachable;
    every fifth photo comes from an 'everyday' source with no positives."""
    import wildlife_vision as wv

    model = make_tiny_model(tmp_path / "tiny.onnx")
    photos = write_photos(tmp_path / "photos", n)
    scores = np.array([[p.scores[lab] for lab in LABELS] for p in wv.load_model(model).predict(
        [str(p) for p in photos])])
    rng = np.random.default_rng(0)
    rows = ["image,labels,split,source"]
    for i, p in enumerate(photos):
        everyday = i % 5 == 0
        labs = [] if everyday else [lab for j, lab in enumerate(LABELS)
                                    if (scores[i, j] > np.median(scores[:, j])) != (rng.random() < 0.1)]
        rows.append(f"photos/{p.name},{';'.join(labs)},val,{'everyday' if everyday else 'market'}")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return model, manifest


def test_calibrate_then_evaluate_without_torch(tmp_path):
    model, manifest = _labelled_sample(tmp_path)
    out = tmp_path / "cal.onnx"
    proc = _cli("calibrate", model, "--data", manifest, "--split", "val", "--target-precision", "0.8",
                "--probability", "temperature", "--resamples", "200", "--output", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr and "wrote" in proc.stdout and "ivory: threshold" in proc.stdout
    import wildlife_vision as wv

    m = wv.load_model(out)
    block = m.metadata.calibration
    assert set(m.score_maps) == set(LABELS) and block["probability"] == "temperature"
    assert block["source_model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert block["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert block["split"] == "val" and block["n_images"] == 80 and block["target_precision"] == 0.8
    assert block["target_prevalence"] is None and block["created"]
    for lab in LABELS:
        pl = block["per_label"][lab]
        assert m.thresholds[lab] == pl["threshold"] and m.review_bands[lab][1] == pl["threshold"]
        assert pl["positives"] + pl["negatives"] == 80 and pl["at_sample"]["precision"] >= 0.8
        lo, hi = pl["at_sample"]["recall_ci95"]
        assert lo <= pl["at_sample"]["recall"] <= hi and pl["ece_before"] is not None
    assert wv.load_model(model).metadata.calibration == {}  # the input file is untouched
    # the file's metrics describe the new thresholds (and say on what), not the source model's
    mx = m.metadata.metrics
    assert mx["split"] == "val" and mx["source"] == "wildlife-vision calibrate"
    for lab in LABELS:
        assert mx["per_class"][lab]["precision"] == block["per_label"][lab]["at_sample"]["precision"]
    info = _cli("info", out)
    assert info.returncode == 0 and "calibration:" in info.stdout and "score_calibration" in info.stdout
    # evaluate the calibrated file on the same photos: it reproduces what calibrate says it achieves
    rep_dir = tmp_path / "report"
    ev = _cli("evaluate", "--model", out, "--data", manifest, "--split", "val", "--output", rep_dir, cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    report = json.loads((rep_dir / "report.json").read_text())
    assert report["model_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    for lab in LABELS:
        r, pl = report["per_class"][lab], block["per_label"][lab]
        assert r["precision"] == pytest.approx(pl["at_sample"]["precision"])
        assert r["recall"] == pytest.approx(pl["at_sample"]["recall"])
        assert r["review_rate"] == pytest.approx(pl["review_rate"])
        assert r["ece"] == pytest.approx(pl["ece"], abs=1e-6)
        assert [e["prevalence"] for e in r["base_rates"]] == [0.01, 0.001, 0.0001]
    everyday = report["negative_sources"]["everyday"]
    assert everyday["n_images"] == 16 and set(everyday["per_class"]) == set(LABELS)
    assert "market" not in report["negative_sources"]
    assert (rep_dir / "reliability.png").stat().st_size > 0
    md = (rep_dir / "report.md").read_text()
    assert "## At marketplace base rates" in md and "## Sources without positives" in md and "| everyday |" in md


def test_calibrate_at_a_prevalence_is_stricter_and_says_the_load(tmp_path):
    model, manifest = _labelled_sample(tmp_path)
    plain, rare = tmp_path / "plain.onnx", tmp_path / "rare.onnx"
    common = ["--data", manifest, "--target-precision", "0.6", "--resamples", "100"]
    assert _cli("calibrate", model, *common, "--output", plain).returncode == 0
    proc = _cli("calibrate", model, *common, "--prevalence", "0.05", "--output", rare)
    assert proc.returncode == 0, proc.stderr
    assert "at prevalence 0.05: precision" in proc.stdout and "per million listings:" in proc.stdout
    import wildlife_vision as wv

    a, b = wv.load_model(plain), wv.load_model(rare)
    assert b.metadata.calibration["target_prevalence"] == 0.05
    for lab in LABELS:
        assert b.thresholds[lab] >= a.thresholds[lab]
        assert b.metadata.calibration["per_label"][lab]["at_prevalence"]["precision"] >= 0.6


def test_unreachable_target_exits_1_and_writes_nothing(tmp_path):
    model, manifest = _labelled_sample(tmp_path, 40)
    out = tmp_path / "never.onnx"
    proc = _cli("calibrate", model, "--data", manifest, "--target-precision", "1.0", "--prevalence", "0.0001",
                "--resamples", "50", "--output", out)
    assert proc.returncode == 1 and "no threshold reaches precision 1" in proc.stderr and not out.exists()
    assert "Traceback" not in proc.stderr


def test_bad_inputs_have_the_shared_exit_codes(tmp_path):
    model, manifest = _labelled_sample(tmp_path, 20)
    existing = tmp_path / "exists.onnx"
    existing.write_bytes(b"x")
    proc = _cli("calibrate", model, "--data", manifest, "--target-precision", "0.5", "--output", existing)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr and existing.read_bytes() == b"x"
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    proc = _cli("calibrate", junk, "--data", manifest, "--target-precision", "0.5", "--output", tmp_path / "o.onnx")
    assert proc.returncode == 4 and "not an ONNX model" in proc.stderr
    proc = _cli("calibrate", model, "--data", manifest, "--target-precision", "1.5", "--output", tmp_path / "o.onnx")
    assert proc.returncode == 2 and "--target-precision must be in (0, 1]" in proc.stderr
    proc = _cli("calibrate", model, "--data", manifest, "--split", "test", "--target-precision", "0.5",
                "--output", tmp_path / "o.onnx")
    assert proc.returncode == 2 and "no rows with split 'test'" in proc.stderr


def test_recalibrating_keeps_or_replaces_the_score_map(tmp_path):
    import wildlife_vision as wv

    model, manifest = _labelled_sample(tmp_path, 60)
    first, kept, refit = tmp_path / "t.onnx", tmp_path / "kept.onnx", tmp_path / "iso.onnx"
    common = ["--data", manifest, "--target-precision", "0.6", "--resamples", "50"]
    assert _cli("calibrate", model, *common, "--probability", "temperature", "--output", first).returncode == 0
    proc = _cli("calibrate", first, *common, "--output", kept)  # --probability none: the map stays
    assert proc.returncode == 0, proc.stderr
    a, b = wv.load_model(first), wv.load_model(kept)
    assert b.metadata.calibration["probability"] == "kept"
    assert b.metadata.calibration["score_calibration"] == a.metadata.calibration["score_calibration"]
    assert b.thresholds == pytest.approx(a.thresholds)  # same scores, same rule, same thresholds
    proc = _cli("calibrate", first, *common, "--probability", "isotonic", "--output", refit)
    assert proc.returncode == 0, proc.stderr  # refitted on the network's own scores (checked on reload)
    c = wv.load_model(refit)
    assert {v["method"] for v in c.metadata.calibration["score_calibration"].values()} == {"isotonic"}
    assert c.metadata.calibration["source_model_sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()
