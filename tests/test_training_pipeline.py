"""Smoke test of the whole path on generated photos: train -> run folder -> resume -> export -> onnxruntime.

Tiny random-init timm model (test_efficientnet) at 32 px; photo colours depend on the labels so there is
something to learn. The whole module runs in well under a minute on a 2-core CPU.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("albumentations")

from helpers import make_photo  # noqa: E402

COLOURS = {"ivory": (235, 225, 200), "live_animal": (40, 160, 60), "": (40, 60, 200),
           "ivory;live_animal": (150, 200, 120)}


def write_synthetic_manifest(root: Path, n_train: int = 12, n_val: int = 6, corrupt: int = 0) -> Path:
    """A manifest whose photo colours depend on the labels; ``corrupt`` extra training rows are broken JPEGs."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = ["image,labels,split,source"]
    i = 0
    for split, n in (("train", n_train), ("val", n_val)):
        for labels, colour in COLOURS.items():
            for k in range(n):
                name = f"img/{split}_{i:04d}.jpg"
                make_photo(i, (64, 48), color=colour).save(root / name, "JPEG", quality=90)
                rows.append(f"{name},{labels},{split},{'shop-a' if k % 2 else 'shop-b'}")
                i += 1
    for k in range(corrupt):
        name = f"img/corrupt_{k}.jpg"
        good = (root / "img" / "train_0000.jpg").read_bytes()
        (root / name).write_bytes(good[: len(good) // 3])  # truncated JPEG
        rows.append(f"{name},ivory,train,shop-a")
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return manifest


def train_args(manifest: Path, out: Path, *extra: str):
    return ["--data", str(manifest), "--model", "test_efficientnet", "--pretrained", "none", "--image-size", "32",
            "--batch-size", "12", "--workers", "0", "--lr", "3e-3", "--warmup-epochs", "0.2",
            "--calibrate-precision", "0.9", "--output", str(out), *extra]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_synthetic_manifest(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def run_dir(synth, tmp_path_factory):
    from wildlife_vision_train.cli import main

    out = tmp_path_factory.mktemp("runs") / "run"
    t0 = time.time()
    assert main(train_args(synth, out, "--epochs", "3")) == 0
    assert time.time() - t0 < 60
    return out


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    from wildlife_vision_train.export import export_run

    out = tmp_path_factory.mktemp("export") / "model.onnx"
    # a 3-epoch model of 32 px photos may well fail the real INT8 gate (tests/test_export_int8_gate.py covers it):
    # written anyway and marked, so the INT8 file's plumbing is tested here
    result = export_run(run_dir, out, int8=True, name="synthetic", version="0.1.0", calib_images=24,
                        int8_allow_failing=True)
    return result


def test_run_folder_holds_everything(run_dir):
    from wildlife_vision_train.config import TrainConfig
    from wildlife_vision_train.checkpoint import CHECKPOINT_FORMAT

    for name in ("config.yaml", "metrics.jsonl", "train.log", "last.pt", "best.pt", "calibration.json",
                 "eval/report.json", "eval/report.md", "eval/pr_curves.png", "eval/confusion.png",
                 "eval/predictions.csv", "eval/errors.png"):
        assert (run_dir / name).is_file(), name
    assert len((run_dir / "eval/predictions.csv").read_text().splitlines()) == 1 + 4 * 6  # header + every val photo
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert all(e["train_images_per_sec"] > 0 and e["train_images"] > 0 for e in epochs)
    cfg = TrainConfig.load_yaml(run_dir / "config.yaml")
    assert cfg.data.labels == ("ivory", "live_animal") and cfg.model.name == "test_efficientnet"
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(run_dir / name, map_location="cpu", weights_only=True)
        assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["labels"] == ["ivory", "live_animal"]
        assert len(ckpt["manifest_sha256"]) == 64
    cal = json.loads((run_dir / "calibration.json").read_text())
    for lab, (low, high) in cal["review_bands"].items():
        assert 0 <= low <= high == cal["thresholds"][lab] <= 1
    assert "epoch 3/3" in (run_dir / "train.log").read_text()


def test_it_learns_the_colours(run_dir):
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    assert report["macro"]["ap"] > 0.8
    assert set(report["slices"]["source"]) == {"shop-a", "shop-b"}


def test_resume_continues_and_extends(run_dir, tmp_path):
    from wildlife_vision_train.cli import main

    copy = tmp_path / "resumed"
    shutil.copytree(run_dir, copy)
    assert main(["--resume", "--output", str(copy), "--epochs", "4", "--workers", "0"]) == 0
    epochs = [json.loads(line)["epoch"] for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]
    assert torch.load(copy / "last.pt", weights_only=True)["epoch"] == 3


def test_test_image_size_is_used_for_validation_calibration_and_export(synth, tmp_path):
    """Train at 32 px, validate and export at 40 px (timm's test_input_size); the weights' hash ignores it."""
    import onnx

    from wildlife_vision_train.config import TrainConfig
    from wildlife_vision_train.export import export_run
    from wildlife_vision_train.cli import main

    out = tmp_path / "fixres"
    assert main(train_args(synth, out, "--epochs", "1", "--test-image-size", "40", "--test-crop-pct", "0.9")) == 0
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    assert best["preprocess"]["input_size"] == [40, 40] and best["preprocess"]["crop_pct"] == 0.9
    assert best["config"]["data"]["image_size"] == 32 and best["config"]["data"]["test_image_size"] == 40
    plain = TrainConfig.from_dict({**best["config"], "data": {**best["config"]["data"], "test_image_size": None,
                                                              "test_crop_pct": None}})
    assert best["config_sha256"] == plain.sha256()
    assert "validating, calibrating and exporting at 40 px" in (out / "train.log").read_text()
    model = export_run(out, tmp_path / "fixres.onnx").path
    dims = [d.dim_value for d in onnx.load(str(model)).graph.input[0].type.tensor_type.shape.dim[1:]]
    assert dims == [3, 40, 40]


def test_resume_of_a_finished_run_with_a_new_test_size_recalibrates(run_dir, tmp_path):
    from wildlife_vision_train.cli import main

    copy = tmp_path / "retest"
    shutil.copytree(run_dir, copy)
    before = json.loads((copy / "calibration.json").read_text())
    assert main(["--resume", "--output", str(copy), "--test-image-size", "48", "--workers", "0"]) == 0
    epochs = [json.loads(line)["epoch"] for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]  # no training, only the evaluation again
    best = torch.load(copy / "best.pt", map_location="cpu", weights_only=True)
    assert best["preprocess"]["input_size"] == [48, 48] and best["config"]["data"]["test_image_size"] == 48
    orig = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(best["model"][k], v) for k, v in orig["model"].items())  # same weights
    after = json.loads((copy / "calibration.json").read_text())
    assert after["thresholds"] != before["thresholds"]  # scores at 48 px differ, so do the thresholds
    assert "re-evaluated at 48 px" in (copy / "train.log").read_text()


def test_classifier_refit_of_a_finished_run_at_a_new_size(run_dir, synth, tmp_path):
    """--pretrained RUN/best.pt with --freeze-epochs == --epochs: the backbone's weights stay as they were, its
    BatchNorm statistics adapt to the new size, a new classifier is trained, and the lineage is recorded."""
    from wildlife_vision_train.cli import main

    out = tmp_path / "refit"
    assert main(train_args(synth, out, "--pretrained", str(run_dir / "best.pt"), "--image-size", "40",
                           "--epochs", "1", "--freeze-epochs", "1")) == 0
    parent = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    child = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    weights = [k for k, v in parent["model"].items() if v.is_floating_point() and "running_" not in k
               and not k.startswith("classifier.")]
    assert weights and all(torch.equal(parent["model"][k], child["model"][k]) for k in weights)
    stats = [k for k in parent["model"] if k.endswith("running_mean")]
    assert any(not torch.equal(parent["model"][k], child["model"][k]) for k in stats)
    assert not torch.equal(parent["model"]["classifier.weight"], child["model"]["classifier.weight"])
    assert child["preprocess"]["input_size"] == [40, 40]
    lineage = child["pretrained"]["parent"]
    assert child["pretrained"]["source"] == "file"
    assert lineage["image_size"] == 32 and lineage["epochs"] == 3 and lineage["pretrained"]["source"] == "none"
    assert lineage["manifest_sha256"] == parent["manifest_sha256"]


def test_training_with_mixup_and_cutmix(synth, tmp_path):
    from wildlife_vision_train.config import TrainConfig
    from wildlife_vision_train.cli import main

    out = tmp_path / "mixed"
    assert main(train_args(synth, out, "--epochs", "1", "--mixup", "0.2", "--cutmix", "1.0", "--mixup-prob", "0.8")) == 0
    assert "mixing training batches: mixup alpha 0.2, cutmix alpha 1, 80% of batches" in (out / "train.log").read_text()
    cfg = TrainConfig.load_yaml(out / "config.yaml")
    assert (cfg.aug.mixup, cfg.aug.cutmix, cfg.aug.mixup_prob) == (0.2, 1.0, 0.8)
    assert np.isfinite(json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["train_loss"])


def test_export_graph_and_metadata(exported, run_dir):
    import onnx

    from wildlife_vision import load_model
    from wildlife_vision.metadata import METADATA_KEY, ModelMetadata

    proto = onnx.load(str(exported.path))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,) = proto.graph.input
    assert inp.name == "pixel_values"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    assert [o.name for o in proto.graph.output] == ["scores", "embedding", "cam"]
    for out in proto.graph.output:
        d = out.type.tensor_type.shape.dim
        assert d[0].dim_param and d[1].dim_value > 0
    assert [d.dim_value for d in proto.graph.output[2].type.tensor_type.shape.dim][1] == 2  # cam: (N, labels, h, w)
    meta = ModelMetadata.from_json({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
    assert meta.labels == ("ivory", "live_animal") and meta.name == "synthetic" and meta.model_version == "0.1.0"
    assert meta.backbone == "test_efficientnet" and meta.package_version and meta.created
    assert len(meta.training["manifest_sha256"]) == 64 and len(meta.training["config_sha256"]) == 64
    assert meta.training["seed"] == 42 and meta.training["train_images"] == 48
    assert meta.metrics["macro"]["ap"] is not None and meta.calibration["target"] == "precision"
    cal = json.loads((run_dir / "calibration.json").read_text())
    assert dict(meta.thresholds) == pytest.approx(cal["thresholds"])
    assert exported.check["passed"] and max(exported.check["max_abs_diff"].values()) <= 1e-4
    model = load_model(exported.path)
    assert model.labels == ("ivory", "live_animal")
    assert model.has_heatmaps and meta.heatmap["output"] == "cam"  # export adds the heatmap output
    assert exported.heatmaps[exported.path.name]["added"] and exported.heatmaps[exported.path.name]["max_score_change"] == 0
    if exported.int8_path:
        assert load_model(exported.int8_path).has_heatmaps


def test_numpy_preprocessing_and_exported_model_agree(exported, run_dir, synth):
    """torch on wildlife_vision.preprocess() == onnxruntime on it == load_model(exported).predict(path)."""
    import onnxruntime as ort

    from wildlife_vision_train.backbones import ScoresAndEmbedding
    from wildlife_vision_train.checkpoint import build_model_from_checkpoint, load_checkpoint
    from wildlife_vision import load_model
    from wildlife_vision.preprocess import preprocess

    model, pre_cfg = build_model_from_checkpoint(load_checkpoint(run_dir / "best.pt"))
    lib = load_model(exported.path)
    assert lib.preprocess_config == pre_cfg
    paths = sorted((synth.parent / "img").glob("val_*.jpg"))[:5]
    batch = np.stack([preprocess(p, pre_cfg) for p in paths])
    with torch.no_grad():
        ref_scores, ref_emb = (t.numpy() for t in ScoresAndEmbedding(model)(torch.from_numpy(batch)))
    sess = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    got_scores, got_emb = sess.run(["scores", "embedding"], {"pixel_values": batch})
    assert np.abs(got_scores - ref_scores).max() <= 1e-4
    assert np.abs(got_emb - ref_emb).max() <= 1e-4
    preds = lib.predict([str(p) for p in paths])
    lib_scores = np.array([[p.scores[lab] for lab in lib.labels] for p in preds])
    assert np.abs(lib_scores - ref_scores).max() <= 1e-4


def test_int8_model_and_ap_change(exported):
    from wildlife_vision import load_model

    assert exported.int8_path.is_file()
    int8 = load_model(exported.int8_path)
    assert int8.labels == ("ivory", "live_animal")
    assert "int8_vs_fp32" in int8.metadata.metrics and "passed" in int8.metadata.metrics["int8_gate"]
    table = exported.int8
    assert set(table["per_label"]) == {"ivory", "live_animal"}
    assert table["macro"]["change"] is not None and abs(table["macro"]["change"]) < 0.5
    record = json.loads(exported.path.with_name("model.export.json").read_text())
    assert record["check"]["passed"]


def test_evaluate_command_on_the_exported_model(exported, synth, tmp_path, capsys):
    from wildlife_vision.cli import main

    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(exported.path), "--data", str(synth), "--split", "val",
                 "--slice-by", "source", "--output", str(out)]) == 0
    for name in ("report.json", "report.md", "pr_curves.png", "confusion.png"):
        assert (out / name).is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["n_images"] == 24 and report["split"] == "val"
    assert "macro AP" in capsys.readouterr().out


def test_corrupt_image_met_during_training_is_skipped_and_counted(tmp_path, monkeypatch):
    import wildlife_vision_train.train as train_mod

    manifest = write_synthetic_manifest(tmp_path / "data", n_train=4, n_val=2, corrupt=2)
    real = train_mod.read_manifest
    # the up-front validation would refuse these rows; simulate files that break after validation
    monkeypatch.setattr(train_mod, "read_manifest", lambda *a, **k: real(*a, **{**k, "check_images": False}))
    out = tmp_path / "run"
    from wildlife_vision_train.cli import main
    assert main(train_args(manifest, out, "--epochs", "1")) == 0
    (epoch,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epoch["train_skipped"] == 2
    assert "skipping unreadable image" in (out / "train.log").read_text()


def test_invalid_manifest_gives_one_report_and_exit_code_2(tmp_path, capsys):
    from wildlife_vision.cli import main

    (tmp_path / "m.csv").write_text("image,labels\nmissing.jpg,ivory\nalso_missing.jpg,dragon\n")
    code = main(["train", "--data", str(tmp_path / "m.csv"), "--model", "test_efficientnet", "--pretrained", "none",
                 "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2  # bad input is a usage error, as in every command
    assert "missing file" in err and "unknown label" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "best.pt").exists()


def test_checkpoint_and_exported_model_evaluate_alike(exported, run_dir, synth, tmp_path):
    from wildlife_vision.evaluation.evaluate import evaluate_model

    torch_report = evaluate_model(run_dir, synth, tmp_path / "pt", workers=0)
    onnx_report = evaluate_model(exported.path, synth, tmp_path / "onnx")
    assert torch_report["macro"]["ap"] == pytest.approx(onnx_report["macro"]["ap"], abs=1e-6)
    for lab in ("ivory", "live_animal"):
        a, b = torch_report["per_class"][lab], onnx_report["per_class"][lab]
        assert (a["tp"], a["fp"], a["fn"], a["tn"]) == (b["tp"], b["fp"], b["fn"], b["tn"])
        assert a["threshold"] == pytest.approx(b["threshold"])
    # and both equal what training wrote for its best checkpoint
    train_report = json.loads((run_dir / "eval" / "report.json").read_text())
    assert train_report["macro"]["ap"] == pytest.approx(onnx_report["macro"]["ap"], abs=1e-6)


def test_an_existing_run_is_not_overwritten_by_accident(run_dir, synth, capsys):
    from wildlife_vision_train.cli import main

    before = (run_dir / "best.pt").read_bytes()
    assert main(train_args(synth, run_dir, "--epochs", "1")) == 2
    err = capsys.readouterr().err
    assert "already holds a training run" in err and "--resume" in err and "--exist-ok" in err
    assert (run_dir / "best.pt").read_bytes() == before


def test_export_refuses_to_overwrite_and_removes_a_stale_int8_model_with_overwrite(run_dir, tmp_path, capsys):
    from wildlife_vision.cli import main

    out = tmp_path / "model.onnx"
    out.write_bytes(b"an earlier model")
    assert main(["export", str(run_dir), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and "Traceback" not in err
    assert out.read_bytes() == b"an earlier model"

    out.unlink()
    stale = tmp_path / "model.int8.onnx"
    stale.write_bytes(b"an INT8 copy of the earlier model")
    assert main(["export", str(run_dir), "--output", str(out)]) == 2  # it would sit beside the new model
    assert "model.int8.onnx" in capsys.readouterr().err and stale.exists() and not out.exists()

    assert main(["export", str(run_dir), "--output", str(out), "--overwrite"]) == 0
    assert "removed " + str(stale) in capsys.readouterr().out
    assert not stale.exists() and out.stat().st_size > 1000
    assert main(["export", str(run_dir), "--output", str(out), "--overwrite"]) == 0  # replaces its own output


def test_mirror_canonical_export_scores_a_photo_and_its_mirror_alike(run_dir, synth, tmp_path):
    """export --mirror-canonical: the graph flips each crop to its canonical orientation (scores of a photo and its
    mirror agree), the heatmap is flipped back (it follows the photo), and the fp32 thresholds are chosen on the
    file's own val scores; a plain export of the same run is not mirror-invariant."""
    import onnx

    import wildlife_vision as wv
    from wildlife_vision_train.canonical import RULE, flip_condition
    from wildlife_vision_train.export import export_run

    canon = export_run(run_dir, tmp_path / "canon.onnx", name="synthetic", mirror_canonical=True).path
    plain = export_run(run_dir, tmp_path / "plain.onnx", name="synthetic").path
    assert flip_condition(onnx.load(str(canon)).graph) and flip_condition(onnx.load(str(plain)).graph) is None
    m, p = wv.load_model(canon), wv.load_model(plain)
    meta = m.metadata
    assert meta.training["graph_steps"] == [RULE] and "own" in meta.calibration["scores"]
    assert meta.metrics["split"] == "val" and m.has_heatmaps and "mirror_canonical" in meta.heatmap
    rng = np.random.default_rng(0)
    h, w = meta.preprocess.input_size
    x = rng.normal(size=(6, 3, h, w)).astype(np.float32)
    x[:, :, :, : w // 2] += np.linspace(-2, 2, 6, dtype=np.float32)[:, None, None, None]  # both orientations
    mx = np.ascontiguousarray(x[:, :, :, ::-1])
    s, cam = m.run_outputs(x, [None, "cam"])
    ms, mcam = m.run_outputs(mx, [None, "cam"])
    np.testing.assert_allclose(s, ms, atol=1e-5)
    np.testing.assert_allclose(cam, mcam[..., ::-1], atol=1e-4)  # the map follows the photo, not the network
    assert np.abs(p.run_batch(x) - p.run_batch(mx)).max() > 1e-4, "the plain network is not mirror-invariant"
    # rows already in canonical orientation score as the plain network scores them
    g = x.mean(axis=1)
    r = (np.arange(w) - (w - 1) / 2) / (w / 2)
    keep = (g * r).sum(axis=(1, 2)) >= 0
    assert 0 < keep.sum() < len(x)
    np.testing.assert_allclose(s[keep], p.run_batch(x)[keep], atol=1e-5)
