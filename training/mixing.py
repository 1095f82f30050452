"""Mixup and CutMix for multi-label batches (timm's ``--mixup`` / ``--cutmix``, for target vectors).

Each batch is mixed with itself in reverse order: Mixup blends whole images, CutMix pastes a box of the partner
photo. The targets are blended with the same weight (for CutMix, the box's actual area), so a label present in
both photos stays 1 and one present in either becomes a soft target between 0 and 1, which the BCE, focal and
asymmetric losses accept. Train-only, like the rest of the augmentation.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from wildlife_vision_train.config import AugCfg


class BatchMixer:
    """Mix a batch ``(images NCHW, targets NC)`` with Mixup or CutMix, with probability ``prob`` per batch."""

    def __init__(self, mixup_alpha: float, cutmix_alpha: float, prob: float = 1.0, seed: int = 0):
        if mixup_alpha < 0 or cutmix_alpha < 0 or not 0.0 <= prob <= 1.0:
            raise ValueError("mixup and cutmix alphas must be >= 0 and prob in [0, 1]")
        self.mixup_alpha, self.cutmix_alpha, self.prob = mixup_alpha, cutmix_alpha, prob
        self.rng = np.random.default_rng(seed)

    @classmethod
    def from_config(cls, cfg: AugCfg, seed: int) -> Optional["BatchMixer"]:
        """The mixer the augmentation config asks for, or None when both alphas are 0."""
        if cfg.mixup <= 0 and cfg.cutmix <= 0:
            return None
        return cls(cfg.mixup, cfg.cutmix, cfg.mixup_prob, seed)

    def _cut_box(self, lam: float, h: int, w: int) -> Tuple[int, int, int, int]:
        ratio = np.sqrt(1.0 - lam)
        ch, cw = int(h * ratio), int(w * ratio)
        cy, cx = int(self.rng.integers(h)), int(self.rng.integers(w))
        y0, y1 = np.clip([cy - ch // 2, cy + ch // 2], 0, h)
        x0, x1 = np.clip([cx - cw // 2, cx + cw // 2], 0, w)
        return int(y0), int(y1), int(x0), int(x1)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if len(images) < 2 or self.rng.random() >= self.prob:
            return images, targets
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or self.rng.random() < 0.5)
        lam = float(self.rng.beta(*(2 * [self.cutmix_alpha if use_cutmix else self.mixup_alpha])))
        partner = images.flip(0)
        if use_cutmix:
            h, w = images.shape[-2:]
            y0, y1, x0, x1 = self._cut_box(lam, h, w)
            images = images.clone()
            images[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
        else:
            images = images * lam + partner * (1.0 - lam)
        return images, targets * lam + targets.flip(0) * (1.0 - lam)
