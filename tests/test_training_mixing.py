"""Mixup / CutMix for multi-label batches: images and target vectors are mixed with the same weight."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from wildlife_vision_train.config import AugCfg, ConfigError, TrainConfig  # noqa: E402
from wildlife_vision_train.mixing import BatchMixer  # noqa: E402


def _batch(n=4, h=16, w=12):
    x = torch.stack([torch.full((3, h, w), float(i)) for i in range(n)])  # photo i is the constant i
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])[:n]
    return x, y


def test_mixup_blends_images_and_targets_with_one_weight():
    x, y = _batch()
    xm, ym = BatchMixer(mixup_alpha=0.4, cutmix_alpha=0.0, seed=3)(x, y)
    lam = float(xm[0, 0, 0, 0] - 3.0) / (0.0 - 3.0)  # photo 0 blended with photo 3 (the batch reversed)
    assert 0.0 < lam < 1.0
    assert torch.allclose(xm[0], torch.full_like(xm[0], lam * 0 + (1 - lam) * 3))
    assert torch.allclose(ym, lam * y + (1 - lam) * y.flip(0))
    assert torch.equal(x, _batch()[0])  # the input batch is not modified


def test_cutmix_pastes_a_box_and_weights_targets_by_its_area():
    x, y = _batch()
    for seed in range(5):
        xm, ym = BatchMixer(mixup_alpha=0.0, cutmix_alpha=1.0, seed=seed)(x, y)
        pasted = float((xm[0, 0] == 3.0).float().mean())  # share of photo 0 now showing photo 3
        assert set(torch.unique(xm[0]).tolist()) <= {0.0, 3.0}
        assert torch.allclose(ym[0], (1 - pasted) * y[0] + pasted * y[3], atol=1e-6)
        assert torch.all((ym >= 0) & (ym <= 1))


def test_probability_zero_and_single_photo_batches_are_untouched():
    x, y = _batch()
    xm, ym = BatchMixer(0.2, 1.0, prob=0.0, seed=0)(x, y)
    assert xm is x and ym is y
    xm, ym = BatchMixer(0.2, 1.0, prob=1.0, seed=0)(x[:1], y[:1])
    assert xm is x[:1] or torch.equal(xm, x[:1])


def test_same_seed_same_mixing():
    x, y = _batch()
    a = BatchMixer(0.2, 1.0, seed=7)
    b = BatchMixer(0.2, 1.0, seed=7)
    for _ in range(4):
        (xa, ya), (xb, yb) = a(x, y), b(x, y)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_config_off_by_default_validated_and_hash_stable():
    assert BatchMixer.from_config(AugCfg(), seed=0) is None
    assert BatchMixer.from_config(AugCfg(cutmix=1.0), seed=0) is not None
    with pytest.raises(ConfigError, match="--mixup-prob"):
        AugCfg(mixup=0.2, mixup_prob=1.5).validate()
    with pytest.raises(ConfigError, match="--cutmix"):
        AugCfg(cutmix=-1.0).validate()


def test_shipped_configs_hash_as_their_model_cards_say():
    """Configs written before mixing existed (no mixup keys) keep the hash their model cards print."""
    root = Path(__file__).resolve().parents[1] / "exported_models"
    configs = sorted(root.glob("*.training-config.yaml"))
    assert configs, "exported_models/ holds no training config"
    for path in configs:
        cfg = TrainConfig.load_yaml(path)
        assert cfg.aug.mixup == 0.0 and cfg.aug.cutmix == 0.0
        card = (root / path.name.replace(".training-config.yaml", ".md")).read_text(encoding="utf-8")
        assert f"config sha256 `{cfg.sha256()}`" in card, path.name
        assert cfg.replace("aug", cutmix=1.0).sha256() != cfg.sha256()
