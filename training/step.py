"""The one optimisation step of ``wildlife-vision train``, and the optimiser, schedule and EMA it uses.

:class:`TrainStep` is a training step: optional batch mixing, channels-last input, forward (under autocast when
mixed precision is on), loss, backward (through the gradient scaler for float16), gradient clipping, the
optimiser and scheduler steps and the EMA update. ``train`` runs it over its epochs, and the benchmark's
training-throughput measurement (``wildlife-vision benchmark``, ``benchmarks/train_throughput.py``) times the
very same step, so what is measured is what trains.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from wildlife_vision_train.config import OptimCfg


def param_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """AdamW parameter groups: weight decay on weights, none on biases and normalisation parameters."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


_param_groups = param_groups  # the earlier private name


class WarmupCosine:
    """Per-step multiplier: linear warmup to 1, then cosine decay to ``min_ratio``."""

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float):
        self.warmup, self.total, self.min_ratio = max(0, warmup_steps), max(1, total_steps), min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, optim: OptimCfg) -> torch.optim.Optimizer:
    """AdamW with decay groups at the configured peak learning rate."""
    return torch.optim.AdamW(param_groups(model, optim.weight_decay), lr=optim.lr)


def make_schedule(optim: OptimCfg, steps_per_epoch: int) -> WarmupCosine:
    """The warmup-cosine multiplier over the configured epochs of ``steps_per_epoch`` steps."""
    return WarmupCosine(int(optim.warmup_epochs * steps_per_epoch), optim.epochs * steps_per_epoch,
                        optim.min_lr_ratio)


def make_ema(model: nn.Module, optim: OptimCfg):
    """timm's weight EMA when ``optim.ema`` is on, else None."""
    if not optim.ema:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=optim.ema_decay, use_warmup=True)


class TrainStep:
    """One optimisation step on a batch; call it with ``(images, targets)``, it returns the batch's loss.

    ``amp_dtype``: autocast dtype (``torch.float16`` on CUDA trains through a gradient scaler; ``torch.bfloat16``
    needs none), or None for float32. ``mixer``: a :class:`~wildlife_vision_train.mixing.BatchMixer` or None.
    ``global_step`` counts the steps taken (the EMA's warmup follows it); set it when resuming.
    ``model`` may be wrapped in DistributedDataParallel (training under torchrun): the step is the same, DDP
    averages the gradients over the processes during ``backward``, and the EMA follows the wrapped module.
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 device: torch.device, *, amp_dtype: Optional[torch.dtype] = None, channels_last: bool = False,
                 grad_clip: float = 0.0, ema: Any = None, mixer: Any = None, global_step: int = 0,
                 consistency: float = 0.0, teacher: Optional[nn.Module] = None):
        self.model, self.loss_fn, self.optimizer, self.scheduler = model, loss_fn, optimizer, scheduler
        self.consistency = float(consistency)
        self.teacher = teacher  # frozen, eval mode: the consistency target (teacher_kl) instead of JS
        self.last_consistency = 0.0  # the last step's Jensen-Shannon term (0 without twins)
        self.device, self.amp_dtype, self.channels_last = device, amp_dtype, channels_last
        self.grad_clip, self.ema, self.mixer, self.global_step = grad_clip, ema, mixer, global_step
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16 and device.type == "cuda")

    @property
    def module(self) -> nn.Module:
        """The model itself, without a DistributedDataParallel wrapper."""
        from torch.nn.parallel import DistributedDataParallel

        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    @property
    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()

    def __call__(self, images: torch.Tensor, targets: torch.Tensor, twins: Optional[torch.Tensor] = None,
                 twin_of: Optional[torch.Tensor] = None) -> float:
        """``twins`` (optional): edited twins of ``images[twin_of]``; with ``consistency`` > 0 the step adds that
        weight times the Jensen-Shannon divergence between each original's and its twin's predictions."""
        x = images.to(self.device, non_blocking=True)
        y = targets.to(self.device, non_blocking=True)
        use_twins = twins is not None and twin_of is not None and self.consistency > 0 and self.mixer is None
        n = len(x)
        if use_twins:  # one forward pass over originals and twins together
            x = torch.cat([x, twins.to(self.device, non_blocking=True)])
        if self.mixer is not None:
            x, y = self.mixer(x, y)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            logits = self.model(x)
        loss = self.loss_fn(logits[:n].float(), y)
        self.last_consistency = 0.0
        if use_twins:
            from wildlife_vision_train.consistency import bernoulli_js, teacher_kl

            idx = twin_of.to(self.device)
            if self.teacher is not None:
                with torch.no_grad(), self._autocast():
                    t = self.teacher(x)
                term = teacher_kl(logits[:n][idx], logits[n:], t[:n][idx], t[n:])
            else:
                term = bernoulli_js(logits[:n][idx], logits[n:])
            self.last_consistency = float(term.detach())
            loss = loss + self.consistency * term
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"the loss became {value}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.global_step += 1
        if self.ema is not None:
            self.ema.update(self.module, step=self.global_step)
        return value
