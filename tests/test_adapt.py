"""`wildlife-vision adapt`: new label heads on frozen embeddings, written into one self-describing ONNX file.

A tiny parent model (tests/helpers.py) and generated photos whose new label, ``blue``, is the photo's colour:
the head must learn it, the parent's labels must score exactly as before, and the adapted file must load,
predict, calibrate and explain like any other. No torch anywhere (one test blocks its import)."""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from helpers import make_photo, make_tiny_model, tiny_metadata

import wildlife_vision as wv
from wildlife_vision.evaluation.metrics import average_precision

pytest.importorskip("onnx", reason="adapt needs the [adapt] extra (onnx)")
pytest.importorskip("sklearn", reason="adapt needs the [adapt] extra (scikit-learn)")

from wildlife_vision.adapt.cli import main as adapt_main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPLITS = (("train", 80), ("val", 40), ("test", 40))


def _blue_photos(folder: Path, manifest: Path, label: str = "blue", splits=SPLITS, extra_rows=()) -> Path:
    """Photos whose base colour is blue (positives) or not (negatives), about a third positive, in a manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    rows = []
    i = 0
    for split, n in splits:
        for _ in range(n):
            positive = rng.random() < 0.35
            if positive:
                color = (int(rng.integers(0, 110)), int(rng.integers(0, 110)), int(rng.integers(160, 256)))
            else:
                color = (int(rng.integers(90, 256)), int(rng.integers(0, 256)), int(rng.integers(0, 150)))
            path = folder / f"p{i:04d}.jpg"
            make_photo(i, size=(48, 40), color=color).save(path, quality=92)
            rows.append({"image": str(path), "labels": label if positive else "", "split": split})
            i += 1
    rows += list(extra_rows)
    with manifest.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "labels", "split"])
        w.writeheader()
        w.writerows(rows)
    return manifest


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt")
    manifest = _blue_photos(root / "img", root / "manifest.csv")
    parent = make_tiny_model(root / "parent.onnx", embedding=True)
    return root, manifest, parent


def _rows(manifest: Path, split: str, label: str = "blue"):
    with manifest.open() as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == split]
    return [r["image"] for r in rows], np.array([r["labels"] == label for r in rows])


def _adapt(parent: Path, manifest: Path, out: Path, *extra: str) -> int:
    return adapt_main([str(parent), "--data", str(manifest), "--output", str(out), "--no-progress",
                       "--resamples", "50", "--target-precision", "0.8", *extra])


@pytest.fixture(scope="module")
def adapted(photos):
    root, manifest, parent = photos
    out = root / "adapted.onnx"
    assert _adapt(parent, manifest, out) == 0
    return out


def test_adapt_adds_a_label_that_learns_and_keeps_the_parents_scores(photos, adapted):
    root, manifest, parent = photos
    old, new = wv.load_model(parent), wv.load_model(adapted)
    assert new.labels == old.labels + ("blue",)
    assert {k: new.thresholds[k] for k in old.labels} == old.thresholds
    assert {k: new.review_bands[k] for k in old.labels} == old.review_bands
    paths, truth = _rows(manifest, "test")  # photos adapt never saw
    before, after = old.predict(paths), new.predict(paths)
    for a, b in zip(before, after):
        assert a.ok and b.ok
        assert max(abs(a.scores[k] - b.scores[k]) for k in old.labels) <= 1e-6
    blue = np.array([p.scores["blue"] for p in after])
    assert average_precision(truth.astype(float), blue) > 0.9
    # embeddings still there, unchanged
    assert np.array_equal(old.embed(paths[0]), new.embed(paths[0]))


def test_adapt_metadata_records_lineage_data_and_metrics(photos, adapted):
    root, manifest, parent = photos
    meta = wv.load_model(adapted).metadata
    block = meta.training["adapt"]
    import hashlib

    assert block["parent"]["sha256"] == hashlib.sha256(parent.read_bytes()).hexdigest()
    assert block["parent"]["name"] == "tiny-test-model" and block["parent"]["version"] == "0.0.1"
    assert block["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert block["added"] == ["blue"] and block["refit"] == []
    assert block["sizes"]["train"]["images"] == 80 and block["sizes"]["val"]["images"] == 40
    _, val_truth = _rows(manifest, "val")
    assert block["sizes"]["val"]["positives"]["blue"] == int(val_truth.sum())
    reg = block["regularisation"]["per_label"]["blue"]
    assert reg["C"] in block["regularisation"]["C_grid"] and reg["cv_folds"] == 5
    m = meta.metrics["per_class"]["blue"]
    assert m["split"] == "val" and 0.0 <= m["ap"] <= 1.0 and len(m["ci95"]["ap"]) == 2
    assert meta.calibration["per_label"]["blue"]["threshold"] == meta.thresholds["blue"]
    assert meta.model_version.startswith("0.0.1+adapt.")
    assert "heatmap" not in meta.to_dict()  # the tiny parent has no cam output


def test_an_adapted_model_calibrates_like_any_other(photos, adapted, tmp_path):
    from wildlife_vision.evaluation.cli_calibrate import register

    root, manifest, parent = photos
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    # every label needs positives to be calibrated: the parent's labels where the parent scores highest
    paths, truth = _rows(manifest, "test")
    parent_scores = wv.load_model(parent).predict(paths)
    with (tmp_path / "cal.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "labels", "split"])
        for path, blue, p in zip(paths, truth, parent_scores):
            labs = [lab for lab in ("ivory", "live_animal") if p.scores[lab] >= np.median(
                [q.scores[lab] for q in parent_scores])] + (["blue"] if blue else [])
            w.writerow([path, ";".join(labs), "test"])
    out = tmp_path / "cal.onnx"
    args = parser.parse_args(["calibrate", str(adapted), "--data", str(tmp_path / "cal.csv"), "--split", "test",
                              "--target-precision", "0.5", "--resamples", "20", "--output", str(out)])
    assert args.func(args) == 0
    cal = wv.load_model(out)
    assert cal.labels == wv.load_model(adapted).labels
    assert cal.predict(_rows(manifest, "test")[0][:3])[0].ok


def test_refit_replaces_one_column_and_keeps_the_other(photos, tmp_path):
    root, _, parent = photos
    manifest = _blue_photos(root / "img", tmp_path / "ivory.csv", label="ivory")
    out = tmp_path / "refit.onnx"
    assert _adapt(parent, manifest, out, "--refit", "ivory") == 0
    old, new = wv.load_model(parent), wv.load_model(out)
    assert new.labels == old.labels
    paths, truth = _rows(manifest, "test", "ivory")
    a, b = old.predict(paths), new.predict(paths)
    assert max(abs(x.scores["live_animal"] - y.scores["live_animal"]) for x, y in zip(a, b)) <= 1e-6
    assert average_precision(truth.astype(float), np.array([y.scores["ivory"] for y in b])) > 0.9
    assert new.metadata.training["adapt"]["refit"] == ["ivory"]
    assert new.metadata.metrics["per_class"]["ivory"]["source"] == "wildlife-vision adapt"
    assert new.thresholds["ivory"] == new.metadata.calibration["per_label"]["ivory"]["threshold"]
    assert new.thresholds["live_animal"] == old.thresholds["live_animal"]


def _cam_parent(path: Path) -> Path:
    """A tiny model shaped like an exported one: feature map -> GAP -> Flatten = embedding -> Gemm -> scores, and
    cam = 1x1 Conv of the head's weights over the feature map."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    c, labels = 6, ["ivory", "live_animal"]
    w1 = rng.normal(0, 1, (c, 3, 1, 1)).astype(np.float32)
    w = rng.normal(0, 1, (len(labels), c)).astype(np.float32)
    b = rng.normal(0, 0.3, (len(labels),)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["pixel_values", "W1"], ["feat"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["feat"], ["feat_act"]),
             helper.make_node("GlobalAveragePool", ["feat_act"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["embedding"], axis=1),
             helper.make_node("Gemm", ["embedding", "W", "B"], ["logits"], transB=1),
             helper.make_node("Sigmoid", ["logits"], ["scores"]),
             helper.make_node("Reshape", ["W", "kshape"], ["cam_kernel"]),
             helper.make_node("Conv", ["feat_act", "cam_kernel", "B"], ["cam"], kernel_shape=[1, 1])]
    graph = helper.make_graph(
        nodes, "tiny-cam", [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 2]),
         helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", c]),
         helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["batch", 2, "h", "w"])],
        initializer=[numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w, "W"),
                     numpy_helper.from_array(b, "B"),
                     numpy_helper.from_array(np.array([2, c, 1, 1], dtype=np.int64), "kshape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = tiny_metadata(labels, heatmap={"output": "cam", "method": "cam", "layer": "feat_act", "channels": c,
                                          "logits": True})
    entry = model.metadata_props.add()
    entry.key, entry.value = "wildlife_vision", json.dumps(meta)
    onnx.save(model, str(path))
    return path


def test_cam_is_extended_and_explain_covers_the_new_label(photos, tmp_path):
    root, manifest, _ = photos
    parent = _cam_parent(tmp_path / "cam.onnx")
    out = tmp_path / "cam-adapted.onnx"
    assert _adapt(parent, manifest, out) == 0
    old, new = wv.load_model(parent), wv.load_model(out)
    assert new.has_heatmaps and "heatmap" in new.metadata.to_dict()
    paths, _ = _rows(manifest, "test")
    ex_new, ex_old = new.explain(paths[:4]), old.explain(paths[:4])
    for a, b in zip(ex_new, ex_old):
        for lab in old.labels:
            assert np.allclose(a.cam[lab], b.cam[lab], atol=1e-6)
        score = a.prediction.scores["blue"]
        # the CAM of a linear head on pooled features: its spatial mean is the label's logit
        assert float(np.mean(a.cam["blue"])) == pytest.approx(float(np.log(score / (1 - score))), abs=1e-3)


def test_the_label_must_be_new_unless_refit(photos, tmp_path, capsys):
    root, _, parent = photos
    manifest = _blue_photos(root / "img", tmp_path / "ivory.csv", label="ivory", splits=(("train", 20), ("val", 10)))
    assert _adapt(parent, manifest, tmp_path / "x.onnx") == 2
    assert "--refit" in capsys.readouterr().err
    assert _adapt(parent, manifest, tmp_path / "x.onnx", "--labels", "ivory") == 2
    err = capsys.readouterr().err
    assert "already a label" in err and "--refit ivory" in err
    assert _adapt(parent, manifest, tmp_path / "x.onnx", "--refit", "rhino_horn") == 2
    assert not (tmp_path / "x.onnx").exists()


def test_a_manifest_without_val_rows_is_refused(photos, tmp_path, capsys):
    root, _, parent = photos
    manifest = _blue_photos(root / "img", tmp_path / "noval.csv", splits=(("train", 30), ("test", 10)))
    assert _adapt(parent, manifest, tmp_path / "x.onnx") == 2
    assert "no val rows" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_an_existing_output_is_kept(photos, adapted, capsys):
    root, manifest, parent = photos
    before = adapted.read_bytes()
    assert _adapt(parent, manifest, adapted) == 2
    assert adapted.read_bytes() == before and "--overwrite" in capsys.readouterr().err


def test_a_missing_adapt_extra_exits_3_naming_it(photos, tmp_path, monkeypatch, capsys):
    root, manifest, parent = photos
    monkeypatch.setitem(sys.modules, "sklearn", None)  # `import sklearn` now raises ImportError
    assert _adapt(parent, manifest, tmp_path / "x.onnx") == 3
    assert "[adapt]" in capsys.readouterr().err


BLOCKED = ("torch", "torchvision", "timm", "albumentations", "wildlife_vision_train")


def test_adapt_runs_with_torch_and_timm_unavailable(photos, tmp_path):
    root, manifest, parent = photos
    out = tmp_path / "blocked.onnx"
    code = textwrap.dedent("""
        import sys, importlib.abc
        BLOCKED = %r
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError("blocked by the test: " + name)
        sys.meta_path.insert(0, Block())
        for m in list(sys.modules):
            if m.split(".")[0] in BLOCKED:
                del sys.modules[m]
        from wildlife_vision.adapt.cli import main
        rc = main(sys.argv[1:])
        import wildlife_vision as wv
        print("LABELS:" + ",".join(wv.load_model(sys.argv[5]).labels))
        print("LOADED:" + ",".join(sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED))))
        sys.exit(rc)
    """) % (BLOCKED,)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code, str(parent), "--data", str(manifest), "--output", str(out),
                        "--no-progress", "--resamples", "20", "--target-precision", "0.8"],
                       capture_output=True, text=True, env=env, timeout=300, cwd=str(ROOT))
    assert r.returncode == 0, r.stderr
    assert "LABELS:ivory,live_animal,blue" in r.stdout
    assert "LOADED:\n" in r.stdout + "\n"


def test_the_folded_head_equals_the_head_on_standardised_features():
    from wildlife_vision.adapt.heads import fit_heads, fold_standardisation, standardisation

    rng = np.random.default_rng(3)
    x = rng.normal(5.0, [0.1, 3.0, 1.0, 0.0], size=(200, 4)).astype(np.float32)  # a constant feature too
    y = (x[:, 1] + 0.5 * rng.normal(size=200) > 5.0).astype(float)[:, None]
    mu, sd = standardisation(x)
    assert sd[3] == 1.0
    coef = rng.normal(size=4)
    w, b = fold_standardisation(coef, 0.7, mu, sd)
    assert np.allclose(x.astype(np.float64) @ w + b, ((x - mu) / sd) @ coef + 0.7, atol=1e-4)
    (head,) = fit_heads(x, y, ["a"], Cs=(0.01, 1.0), folds=3, seed=0)
    again = fit_heads(x, y, ["a"], Cs=(0.01, 1.0), folds=3, seed=0)[0]
    assert np.array_equal(head.weight, again.weight) and head.C == again.C  # deterministic
    assert set(head.cv) == {"0.01", "1"} and head.folds == 3
    assert average_precision(y[:, 0], head.logits(x)) > 0.9
