"""Losses, positive weights, augmentation determinism and the LR schedule."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("albumentations")

from wildlife_vision_train.augment import build_train_transform  # noqa: E402
from wildlife_vision_train.config import AugCfg, LossCfg  # noqa: E402
from wildlife_vision_train.data import EpochSampler  # noqa: E402
from wildlife_vision_train.losses import AsymmetricLoss, FocalLoss, auto_pos_weight, build_loss  # noqa: E402
from wildlife_vision_train.step import WarmupCosine  # noqa: E402

LOGITS = torch.tensor([[2.0, -1.0], [-0.5, 0.3], [0.1, 4.0]])
TARGETS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])


def test_focal_with_gamma_zero_is_bce():
    bce = torch.nn.functional.binary_cross_entropy_with_logits(LOGITS, TARGETS)
    assert FocalLoss(gamma=0.0)(LOGITS, TARGETS).item() == pytest.approx(bce.item(), rel=1e-6)
    assert FocalLoss(gamma=2.0)(LOGITS, TARGETS).item() < bce.item()


def test_asl_without_focusing_or_clipping_is_bce():
    bce = torch.nn.functional.binary_cross_entropy_with_logits(LOGITS, TARGETS)
    asl = AsymmetricLoss(gamma_neg=0.0, gamma_pos=0.0, clip=0.0)(LOGITS, TARGETS)
    assert asl.item() == pytest.approx(bce.item(), rel=1e-5)
    assert torch.isfinite(AsymmetricLoss()(LOGITS * 100, TARGETS))


def test_auto_pos_weight():
    y = np.array([[1, 0], [0, 0], [0, 0], [1, 0]], dtype=np.float32)
    assert auto_pos_weight(y).tolist() == [1.0, 1.0]  # 2 neg / 2 pos = 1; no positives -> 1
    y = np.zeros((100, 1), np.float32)
    y[0] = 1
    assert auto_pos_weight(y).tolist() == [20.0]  # 99, capped


@pytest.mark.parametrize("kind", ["bce", "focal", "asl"])
def test_build_loss_kinds_backpropagate(kind):
    loss_fn = build_loss(LossCfg(kind=kind, pos_weight="auto"), TARGETS.numpy())
    logits = LOGITS.clone().requires_grad_(True)
    loss = loss_fn(logits, TARGETS)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad is not None


def test_augmentation_is_deterministic_per_seed_and_sized():
    t = build_train_transform(48, AugCfg())
    img = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    t.set_random_seed(7)
    a = t(image=img)["image"]
    t.set_random_seed(7)
    b = t(image=img)["image"]
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8 and np.array_equal(a, b)


def test_epoch_sampler_depends_only_on_seed_and_epoch():
    s = EpochSampler(10, seed=3)
    s.set_epoch(1)
    first = list(s)
    s.set_epoch(2)
    assert list(s) != first
    s.set_epoch(1)
    assert list(s) == first and sorted(i for i, _ in first) == list(range(10))


def test_warmup_then_cosine():
    f = WarmupCosine(warmup_steps=4, total_steps=14, min_ratio=0.1)
    assert [round(f(i), 3) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0) and f(14) == pytest.approx(0.1) and f(9) == pytest.approx(0.55)
