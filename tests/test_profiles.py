"""Execution profiles: selection from (simulated) CPU features, refusal of uncalibrated or failing profiles, the
OpenVINO runtime, `calibrate --profile`, and records that name the profile that scored them."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from helpers import make_tiny_model, tiny_metadata, write_photos

import wildlife_vision as wv
from wildlife_vision.cli import main
from wildlife_vision.cpu import cpu_info
from wildlife_vision.metadata import read_model_metadata
from wildlife_vision.profiles import ProfileError, choose_profile, profiles_table

AVX2 = "fpu sse2 avx avx2 fma"
VNNI = AVX2 + " avx512f avx512_vnni"
BF16 = VNNI + " avx512_bf16"
AMX = BF16 + " amx_tile amx_bf16 amx_int8"
PASSED = {"passed": True, "failures": []}


def _ov_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def test_cpu_families_come_from_the_flags(monkeypatch):
    assert cpu_info(AVX2).family == "avx2" and not cpu_info(AVX2).vnni
    assert cpu_info(VNNI).family == "avx512_vnni" and cpu_info(VNNI).vnni and not cpu_info(VNNI).bf16
    assert cpu_info(BF16).family == "avx512_bf16" and cpu_info(BF16).bf16
    assert cpu_info(AMX).family == "amx"
    assert cpu_info("sse2").family == "baseline"
    monkeypatch.setenv("WILDLIFE_VISION_CPU_FLAGS", "avx2,fma")
    got = cpu_info()
    assert got.family == "avx2" and got.source == "$WILDLIFE_VISION_CPU_FLAGS"
    d = got.to_dict()
    assert d["features"] == ["avx2", "fma"] and d["fp32_flops_per_cycle_per_core"] in (32, 64)


@pytest.fixture
def family(tmp_path):
    """An fp32 model with an INT8 twin (its own thresholds) and a calibrated bf16 profile."""
    twin = make_tiny_model(tmp_path / "m.int8.onnx", metadata=tiny_metadata(
        thresholds={"ivory": 0.3, "live_animal": 0.3}, training={"quantization": {"method": "test"}}), seed=1)
    sha = hashlib.sha256(twin.read_bytes()).hexdigest()
    profiles = {"int8": {"runtime": "onnxruntime", "precision": "int8", "file": twin.name, "sha256": sha,
                         "gate": PASSED},
                "bf16": {"runtime": "openvino", "precision": "bf16", "thresholds": {"ivory": 0.7, "live_animal": 0.7},
                         "review_bands": {"ivory": [0.6, 0.7], "live_animal": [0.6, 0.7]}, "gate": PASSED}}
    model = make_tiny_model(tmp_path / "m.onnx", metadata=tiny_metadata(profiles=profiles))
    return model, twin


def _choose(model, cpu, have_openvino=True, **kw):
    return choose_profile(read_model_metadata(model), model, cpu=cpu_info(cpu), have_openvino=have_openvino, **kw)


def test_auto_takes_the_fastest_profile_this_cpu_supports(family):
    model, twin = family
    assert _choose(model, BF16, precision="auto").name == "bf16"
    assert _choose(model, AMX, precision="auto").name == "bf16"
    c = _choose(model, VNNI, precision="auto")
    assert c.name == "int8" and c.file == twin
    assert _choose(model, AVX2, precision="auto").name == "int8"
    assert _choose(model, "sse2", precision="auto").name == "fp32"
    c = _choose(model, BF16, precision="auto", have_openvino=False)
    assert c.name == "int8" and "openvino" in c.skipped[0].lower()
    assert _choose(model, BF16, runtime="onnxruntime", precision="auto").name == "int8"
    assert _choose(model, BF16, precision="fp32").name == "fp32"


def test_profiles_that_cannot_be_trusted_are_refused(family, tmp_path):
    model, twin = family
    with pytest.raises(ProfileError, match="avx512_bf16"):
        _choose(model, AVX2, precision="bf16")
    plain = make_tiny_model(tmp_path / "plain.onnx")
    with pytest.raises(ProfileError, match=r"no calibrated operating point.*wildlife-vision calibrate .*--profile bf16"):
        _choose(plain, BF16, precision="bf16")
    assert _choose(plain, BF16, precision="auto").name == "fp32", "auto falls back to the exact profile"
    failing = make_tiny_model(tmp_path / "failing.onnx", metadata=tiny_metadata(profiles={
        "bf16": {"runtime": "openvino", "precision": "bf16", "thresholds": {"ivory": 0.5, "live_animal": 0.5},
                 "gate": {"passed": False, "failures": ["ivory: recall drops 0.080 > 0.03"]}}}))
    with pytest.raises(ProfileError, match="failed its gate.*recall drops"):
        _choose(failing, BF16, precision="bf16")
    assert _choose(failing, BF16, precision="auto").name == "fp32"
    twin.write_bytes(twin.read_bytes() + b"\0")  # not the twin the model was shipped with
    with pytest.raises(ProfileError, match="sha256"):
        _choose(model, VNNI, precision="int8")
    rows = {r["profile"]: r for r in profiles_table(read_model_metadata(failing), failing, cpu_info(BF16))}
    assert rows["fp32"]["usable"] and rows["bf16"]["gate_passed"] is False and not rows["bf16"]["usable"]


def test_a_model_and_its_records_name_their_profile(family, tmp_path, monkeypatch, capsys):
    model, twin = family
    monkeypatch.setenv("WILDLIFE_VISION_CPU_FLAGS", AVX2)
    photos = write_photos(tmp_path / "photos", 3)
    m = wv.load_model(model, precision="auto")
    assert m.profile == "int8" and m.path == twin and m.thresholds == {"ivory": 0.3, "live_animal": 0.3}
    assert wv.load_model(model).profile == "fp32"
    out = tmp_path / "p.jsonl"
    assert main(["predict", str(tmp_path / "photos"), "--model", str(model), "--precision", "auto", "--output",
                 str(out), "--no-progress"]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == len(photos) and {r["profile"] for r in recs} == {"int8"}
    assert all(r["flagged"] == [lab for lab in ("ivory", "live_animal") if r["scores"][lab] >= 0.3] for r in recs)
    assert main(["predict", str(photos[0]), "--model", str(model), "--precision", "bf16", "--no-progress"]) == 4
    assert "avx512_bf16" in capsys.readouterr().err
    # --resume never mixes profiles in one output: their flags come from other thresholds
    for fmt in ("jsonl", "csv"):
        part = tmp_path / f"part.{fmt}"
        assert main(["predict", str(photos[0]), "--model", str(model), "--precision", "int8", "--output", str(part),
                     "--no-progress"]) == 0
        capsys.readouterr()
        assert main(["predict", str(tmp_path / "photos"), "--model", str(model), "--output", str(part), "--resume",
                     "--no-progress"]) == 2
        assert "profile(s) int8, not fp32" in capsys.readouterr().err
        assert main(["predict", str(tmp_path / "photos"), "--model", str(model), "--precision", "int8", "--output",
                     str(part), "--resume", "--no-progress"]) == 0


@pytest.mark.skipif(not _ov_available(), reason="needs OpenVINO (the [openvino] extra, in [dev])")
def test_openvino_fp32_matches_onnxruntime_and_calibrate_profile_gates_it(tmp_path):
    """calibrate --profile on the OpenVINO fp32 profile (runs on any CPU): its own thresholds on its own scores,
    the gate passes (the scores agree to float rounding), and load_model(runtime='openvino') then runs it."""
    model = make_tiny_model(tmp_path / "tiny.onnx", embedding=True)
    photos = write_photos(tmp_path / "photos", 40)
    ref = wv.load_model(model)
    scores = np.array([[p.scores[lab] for lab in ref.labels] for p in ref.predict([str(p) for p in photos])])
    rows = ["image,labels,split"]
    for i, p in enumerate(photos):
        labs = [lab for j, lab in enumerate(ref.labels) if scores[i, j] >= np.median(scores[:, j])]
        rows.append(f"photos/{p.name},{';'.join(labs)},val")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "ov.onnx"
    assert main(["calibrate", str(model), "--data", str(tmp_path / "m.csv"), "--target-precision", "0.7",
                 "--profile", "openvino-fp32", "--resamples", "50", "--output", str(out)]) == 0
    entry = read_model_metadata(out).profiles["openvino-fp32"]
    assert entry["gate"]["passed"] and entry["gate"]["max_abs_score_diff"] < 1e-5
    assert read_model_metadata(out).thresholds == ref.thresholds, "the file's own fp32 operating point is kept"
    ov = wv.load_model(out, runtime="openvino", precision="fp32")
    assert ov.profile == "openvino-fp32" and ov.providers == ["OpenVINO:CPU:fp32"]
    assert ov.thresholds == entry["thresholds"]
    # OpenVINO profiles are calibrated and run on uint8 crops normalised in the graph; a float batch still runs
    assert entry["input"] == "uint8-nhwc" and ov.takes_uint8 and not ref.takes_uint8
    crops = ov._empty_batch(3)
    for i in range(3):
        assert ov.prepare(str(photos[i]), crops[i])[0] is None
    assert crops.dtype == np.uint8 and crops.shape[-1] == 3
    floats = ref._empty_batch(3)
    for i in range(3):
        ref.prepare(str(photos[i]), floats[i])
    assert np.allclose(ov.run_batch(crops), ov.run_batch(floats), atol=1e-5)
    assert np.allclose(ref.run_batch(crops), ref.run_batch(floats), atol=1e-6), "crops into a float session"
    got = np.array([[p.scores[lab] for lab in ov.labels] for p in ov.predict([str(p) for p in photos])])
    assert np.allclose(got, scores, atol=1e-5)
    emb = ov.embed([str(photos[0])])[0]
    assert emb.ok and np.allclose(emb.vector, ref.embed(str(photos[0])), atol=1e-5)

    # evaluate the profile, and the card shows it beside fp32 (a report of another profile is refused)
    own, prof = tmp_path / "own", tmp_path / "prof"
    assert main(["evaluate", "--model", str(out), "--data", str(tmp_path / "m.csv"), "--split", "val",
                 "--output", str(own)]) == 0
    assert main(["evaluate", "--model", str(out), "--runtime", "openvino", "--precision", "fp32", "--data",
                 str(tmp_path / "m.csv"), "--split", "val", "--output", str(prof)]) == 0
    rep = json.loads((prof / "report.json").read_text())
    assert rep["profile"] == "openvino-fp32" and rep["thresholds"] == entry["thresholds"]
    card = tmp_path / "card.md"
    assert main(["model-card", str(out), "--report", str(own / "report.json"), "--profile-report",
                 f"openvino-fp32={prof / 'report.json'}", "--output", str(card)]) == 0
    text = card.read_text()
    assert "## Execution profiles" in text and "| **openvino-fp32** | openvino fp32 (uint8 input, normalised in the graph) | passed" in text
    assert main(["model-card", str(out), "--report", str(own / "report.json"), "--profile-report",
                 f"openvino-fp32={own / 'report.json'}", "--output", str(card)]) == 2, "the fp32 report is refused"


@pytest.mark.skipif(not _ov_available() or not cpu_info().bf16,
                    reason="needs OpenVINO and a CPU with native bf16 (avx512_bf16 or amx_bf16)")
def test_bf16_on_openvino_stays_close_to_fp32(tmp_path):
    from wildlife_vision.model import Model
    from wildlife_vision.profiles import Choice

    model = make_tiny_model(tmp_path / "tiny.onnx")
    photos = [str(p) for p in write_photos(tmp_path / "photos", 8)]
    ref = wv.load_model(model).predict(photos)
    bf = Model(model, profile=Choice("bf16", "openvino", "bf16", model)).predict(photos)
    diff = max(abs(a.scores[lab] - b.scores[lab]) for a, b in zip(ref, bf) for lab in a.scores)
    assert 0 <= diff < 0.05


def test_faster_resamplers_keep_the_geometry():
    """A profile's faster resize (PreprocessConfig.resampler) gives the same crop of the same photo, close to
    Pillow's pixels; the setting survives the metadata; an extreme strip falls back to the region path."""
    import dataclasses

    from helpers import make_photo

    from wildlife_vision.preprocess import PreprocessConfig, resize_and_crop_rgb

    cfg = PreprocessConfig(input_size=(64, 64), interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3)
    img = make_photo(3, size=(150, 110))
    ref = resize_and_crop_rgb(img, cfg).astype(np.float32)
    for name in ("pillow-region", "opencv"):
        c = dataclasses.replace(cfg, resampler=name)
        assert PreprocessConfig.from_dict(c.to_dict()) == c
        got = resize_and_crop_rgb(img, c).astype(np.float32)
        assert got.shape == ref.shape == (64, 64, 3)
        assert np.abs(got - ref).mean() < 4.0, name
    assert "resampler" not in cfg.to_dict(), "the default writes the metadata it always wrote"
    strip = make_photo(1, size=(4000, 3))
    assert resize_and_crop_rgb(strip, dataclasses.replace(cfg, resampler="opencv")).shape == (64, 64, 3)
    with pytest.raises(ValueError):
        dataclasses.replace(cfg, resampler="magic")
