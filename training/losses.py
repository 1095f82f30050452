"""Multi-label losses on logits: BCE (optional positive weights), focal, and asymmetric (ASL, Ridnik et al. 2021)."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wildlife_vision_train.config import LossCfg


def auto_pos_weight(targets: np.ndarray, cap: float = 20.0) -> np.ndarray:
    """Per-label ``negatives / positives`` (clipped to [1, cap]); labels without positives get 1."""
    pos = targets.sum(axis=0)
    neg = targets.shape[0] - pos
    w = np.where(pos > 0, neg / np.maximum(pos, 1), 1.0)
    return np.clip(w, 1.0, cap).astype(np.float32)


class BCELoss(nn.Module):
    def __init__(self, pos_weight: Optional[torch.Tensor] = None):
        super().__init__()
        self.register_buffer("pos_weight", pos_weight if pos_weight is not None else None, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self.pos_weight)


class FocalLoss(nn.Module):
    """Binary focal loss ``-(1 - p_t)^gamma log(p_t)``, optionally positive-weighted, averaged over elements."""

    def __init__(self, gamma: float = 2.0, pos_weight: Optional[torch.Tensor] = None):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("pos_weight", pos_weight if pos_weight is not None else None, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p = torch.sigmoid(logits)
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = (1 - p_t).pow(self.gamma) * bce
        if self.pos_weight is not None:
            loss = loss * (1 + (self.pos_weight - 1) * targets)
        return loss.mean()


class AsymmetricLoss(nn.Module):
    """ASL: focusing ``gamma_neg`` on negatives, ``gamma_pos`` on positives, and probability shifting ``clip``
    that discards very easy negatives. Suited to many negatives per label."""

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8):
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        p_neg = (p - self.clip).clamp(min=0) if self.clip > 0 else p
        loss_pos = targets * torch.log(p.clamp(min=self.eps)) * (1 - p).pow(self.gamma_pos)
        loss_neg = (1 - targets) * torch.log((1 - p_neg).clamp(min=self.eps)) * p_neg.pow(self.gamma_neg)
        return -(loss_pos + loss_neg).mean()


def build_loss(cfg: LossCfg, train_targets: np.ndarray) -> nn.Module:
    pos_weight = torch.from_numpy(auto_pos_weight(train_targets)) if cfg.pos_weight == "auto" else None
    if cfg.kind == "bce":
        return BCELoss(pos_weight)
    if cfg.kind == "focal":
        return FocalLoss(cfg.focal_gamma, pos_weight)
    return AsymmetricLoss(cfg.asl_gamma_neg, cfg.asl_gamma_pos, cfg.asl_clip)
