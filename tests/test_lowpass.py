"""``train --input-lowpass SIGMA``: the Gaussian in front of the first convolution (training/lowpass.py), from its
taps to the exported graph: a numpy re-implementation from the metadata's words scores as the ONNX file does."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from wildlife_vision_train.lowpass import InputLowPass, add_input_lowpass, first_conv, lowpass_sigma, rule, taps  # noqa: E402

TINY = "test_efficientnet"


def reference_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """The filter as the metadata states it, written with numpy: separable, taps from the formula, edge replicated."""
    r = int(np.ceil(3 * sigma))
    k = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma ** 2))
    k /= k.sum()
    p = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (r, r), (r, r)), mode="edge")
    h, w = x.shape[2:]
    rows = sum(k[i] * p[:, :, :, i:i + w] for i in range(2 * r + 1))
    return sum(k[i] * rows[:, :, i:i + h, :] for i in range(2 * r + 1)).astype(np.float32)


def test_taps_are_a_normalised_symmetric_gaussian():
    for sigma, n in ((0.5, 5), (1.0, 7), (1.5, 11)):
        k = taps(sigma)
        assert len(k) == n and abs(k.sum() - 1) < 1e-6 and np.allclose(k, k[::-1])
        assert k.argmax() == n // 2
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sigma"):
            taps(bad)
    assert "sigma 1 px" in rule(1.0) and "[-3, 3]" in rule(1.0) and "replicated" in rule(1.0)


def test_filter_matches_its_description_and_keeps_flat_images():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 20, 17)).astype(np.float32)
    got = InputLowPass(1.0)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, reference_blur(x, 1.0), atol=1e-5)
    assert got.std() < 0.6 * x.std()  # it smooths
    flat = torch.full((1, 3, 9, 9), 0.37)
    np.testing.assert_allclose(InputLowPass(1.5)(flat).numpy(), 0.37, atol=1e-6)  # the border does not darken
    mirrored = InputLowPass(1.0)(torch.from_numpy(np.ascontiguousarray(x[..., ::-1]))).numpy()
    np.testing.assert_allclose(mirrored, got[..., ::-1], atol=1e-5)  # commutes with a mirror


def test_backbone_with_lowpass_keeps_its_keys_and_filters_what_the_first_conv_sees():
    from wildlife_vision_train.backbones import create_backbone

    plain, _ = create_backbone(TINY, 2, "none")
    model, _ = create_backbone(TINY, 2, "none", input_lowpass=1.0)
    assert set(model.state_dict()) == set(plain.state_dict())  # no weights: checkpoints and pretrained load as before
    model.load_state_dict(plain.state_dict())
    plain.eval(), model.eval()
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype(np.float32))
    with torch.no_grad():
        want = plain(torch.from_numpy(reference_blur(x.numpy(), 1.0)))
        np.testing.assert_allclose(model(x).numpy(), want.numpy(), atol=1e-5)
        np.testing.assert_allclose(model.forward_head(model.forward_features(x)).numpy(), want.numpy(), atol=1e-5)
        assert (model(x) - plain(x)).abs().max() > 1e-4
        ema = copy.deepcopy(model)  # timm's EMA deep-copies the model: the copy's hook must be the copy's filter
        hook = next(iter(first_conv(ema)._forward_pre_hooks.values()))
        assert hook.__self__ is ema.input_lowpass
        np.testing.assert_allclose(ema(x).numpy(), want.numpy(), atol=1e-5)
    assert lowpass_sigma(model) == 1.0 and lowpass_sigma(plain) == 0.0
    with pytest.raises(ValueError, match="already"):
        add_input_lowpass(model, 1.0)
    assert add_input_lowpass(plain, 0) is plain and lowpass_sigma(plain) == 0.0


def test_config_refuses_a_sigma_out_of_range(tmp_path, capsys):
    from wildlife_vision_train.cli import main

    assert main(["--data", str(tmp_path), "--input-lowpass", "-1", "--output", str(tmp_path / "r")]) == 2
    assert "--input-lowpass must be a sigma in pixels" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_trained_lowpass_is_in_the_exported_graph_and_described(tmp_path):
    """A run trained with --input-lowpass exports the filter inside the graph (the ONNX scores of x are the bare
    network's scores of the numpy-filtered x), the metadata describes it (the card prints ``graph_steps``:
    tests/test_model_card.py), and it composes with --mirror-canonical."""
    import wildlife_vision as wv
    from test_training_pipeline import train_args, write_synthetic_manifest
    from wildlife_vision_train.backbones import create_backbone
    from wildlife_vision_train.canonical import RULE
    from wildlife_vision_train.checkpoint import load_checkpoint
    from wildlife_vision_train.cli import main
    from wildlife_vision_train.export import export_run

    manifest = write_synthetic_manifest(tmp_path / "data", n_train=4, n_val=3)
    run = tmp_path / "run"
    assert main(train_args(manifest, run, "--epochs", "1", "--input-lowpass", "1.0")) == 0
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["config"]["model"]["input_lowpass"] == 1.0
    plain_path = export_run(run, tmp_path / "m.onnx", name="synthetic").path
    m = wv.load_model(plain_path)
    assert m.metadata.training["graph_steps"] == [rule(1.0)]
    # the TorchScript exporter takes it (its graph keeps GlobalAveragePool, so the heatmap output is exact)
    assert json.loads((tmp_path / "m.export.json").read_text())["check"]["exporter"] == "torchscript"
    assert m.has_heatmaps
    bare, _ = create_backbone(TINY, len(ckpt["labels"]), "none")
    bare.load_state_dict(ckpt["model"])
    bare.eval()
    h, w = m.metadata.preprocess.input_size
    x = np.random.default_rng(2).normal(size=(3, 3, h, w)).astype(np.float32)
    with torch.no_grad():
        want = torch.sigmoid(bare(torch.from_numpy(reference_blur(x, 1.0)))).numpy()
    np.testing.assert_allclose(m.run_batch(x), want, atol=1e-5)
    canon = wv.load_model(export_run(run, tmp_path / "c.onnx", name="synthetic", mirror_canonical=True).path)
    assert canon.metadata.training["graph_steps"] == [RULE, rule(1.0)]
