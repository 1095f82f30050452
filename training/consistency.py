"""Edit-consistency training: decisions that survive a seller's benign edits.

A share of each training batch (``aug.consistency_fraction``) gets an *edited twin*: the same photo after one of the
runtime's benign edits (:data:`wildlife_vision.evaluation.robustness.EDITS`: mirror, 1-4 px crop or shift, JPEG
re-encoding at quality 60-90, mild rescaling, a seller's text overlay), drawn at random, then put through the very
same augmentation draw as the original (same albumentations seed), so the two views differ by the edit only. The
step adds ``aug.consistency`` times the Jensen-Shannon divergence between the two views' per-label Bernoulli
predictions (as AugMix does for its views) to the supervised loss on the originals. The edits are the ones
``wildlife-vision robustness`` measures, from the same module, so what is trained for is what is measured.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

TWIN_EDITS: Tuple[str, ...] = ("mirror", "crop", "translate", "jpeg", "resize", "overlay")


def twin_rng(seed: int) -> np.random.Generator:
    """Randomness of the twin of the sample drawn with ``seed`` (independent of the augmentation's own stream)."""
    return np.random.default_rng([int(seed), 7919])


def edited_twin(img: Image.Image, seed: int, fraction: float,
                edits: Sequence[str] = TWIN_EDITS) -> Optional[Tuple[Image.Image, str]]:
    """The edited twin of ``img`` and the edit's name, or None for the ``1 - fraction`` of samples without one."""
    from wildlife_vision.evaluation.robustness import EDITS

    rng = twin_rng(seed)
    if fraction <= 0 or rng.random() >= fraction:
        return None
    name = edits[int(rng.integers(len(edits)))]
    out, _ = EDITS[name].apply(img, rng)
    return out.convert("RGB"), name


def bernoulli_js(logits_a: torch.Tensor, logits_b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean (over samples and labels) Jensen-Shannon divergence between Bernoulli(sigmoid(a)) and
    Bernoulli(sigmoid(b)); 0 when the two views agree, at most log 2."""
    pa = torch.sigmoid(logits_a.float()).clamp(eps, 1 - eps)
    pb = torch.sigmoid(logits_b.float()).clamp(eps, 1 - eps)
    pm = 0.5 * (pa + pb)

    def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))

    return (0.5 * (kl(pa, pm) + kl(pb, pm))).mean()


def teacher_kl(student_a: torch.Tensor, student_b: torch.Tensor, teacher_a: torch.Tensor, teacher_b: torch.Tensor,
               eps: float = 1e-6) -> torch.Tensor:
    """Mean (over samples, labels and the two views) Bernoulli KL(t || student), t = the frozen teacher's mean
    probability over the two views: both views are pulled to one confident target. Symmetric JS between the two
    student views can also be lowered by softening both; this cannot (``train --consistency-teacher``)."""
    t = (0.5 * (torch.sigmoid(teacher_a.float()) + torch.sigmoid(teacher_b.float()))).clamp(eps, 1 - eps).detach()

    def kl(logits: torch.Tensor) -> torch.Tensor:
        q = torch.sigmoid(logits.float()).clamp(eps, 1 - eps)
        return t * torch.log(t / q) + (1 - t) * torch.log((1 - t) / (1 - q))

    return 0.5 * (kl(student_a) + kl(student_b)).mean()
