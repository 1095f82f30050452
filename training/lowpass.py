"""A fixed Gaussian low-pass on the network's input (``wildlife-vision train --input-lowpass SIGMA``).

Re-encoding a photo as JPEG changes mostly its fine detail: quantised high-frequency DCT coefficients, halved
chroma resolution, 8 x 8 block edges. A CNN fine-tuned on sharp crops reads some of that detail, so its score moves
with the quality a seller picks. A low-pass filter in front of the first convolution removes most of what JPEG
changes; trained with it, the network learns from what the filter passes, and it ships in the exported graph (the
filter is a layer, not preprocessing, so every runtime and caller runs it and the preprocessing metadata is
unchanged). The filter is symmetric, so it commutes with a mirror and with the mirror canonicalisation in front of
it (:mod:`wildlife_vision_train.canonical`).

The filter: each channel of the normalised (N, C, H, W) input is convolved with a separable Gaussian of standard
deviation ``sigma`` pixels, taps ``exp(-x^2 / (2 sigma^2))`` for integer x in [-R, R], R = ceil(3 sigma), normalised to
sum 1, with the border replicated. It is linear and sums to 1, so filtering the normalised input equals normalising
the filtered pixels. It has no weights (a non-persistent buffer), so checkpoints and pretrained weights keep their
keys; it is attached as a forward pre-hook on the model's first convolution (timm's ``pretrained_cfg["first_conv"]``),
which every path through the model (``model(x)``, ``forward_features``, the export wrapper) passes.

Measured on wildtrade-v2's val split (docs/robustness.md, "After v4"): inserted untrained in front of v4's network,
sigma 0.8 took the ivory p95 |score change| under JPEG from 0.047 to 0.037 (ivory AP -0.005). Trained with it (sigma 1,
v4's recipe), the network learned to read what the filter passes: JPEG stayed at 0.047. Resize fell from 0.027 to
0.012, and ivory recall at precision 0.95 fell from 0.929 to 0.858. The photos there are small, and JPEG's blocks
reach the network at 5-10 px, below what a 1 px Gaussian removes. Not used by the shipped model.
"""

from __future__ import annotations

import math
from typing import Any, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: the name of the filter's submodule on the model it is attached to
ATTRIBUTE = "input_lowpass"


def taps(sigma: float) -> np.ndarray:
    """The filter's 1-D taps for ``sigma`` (odd length 2 * ceil(3 sigma) + 1, symmetric, sum 1)."""
    if not sigma > 0 or not math.isfinite(sigma):
        raise ValueError(f"the low-pass sigma must be a positive number of pixels, got {sigma}")
    radius = int(math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-x ** 2 / (2 * sigma ** 2))
    return (k / k.sum()).astype(np.float32)


def rule(sigma: float) -> str:
    """What the metadata says about the filter (``training["graph_steps"]``), enough to re-implement it."""
    radius = len(taps(sigma)) // 2
    return (f"input low-pass (the network's first layer, trained with it): each channel of the normalised input "
            f"convolved with a separable Gaussian, sigma {sigma:g} px, taps exp(-x^2 / (2 sigma^2)) for integer x in "
            f"[-{radius}, {radius}] normalised to sum 1, border replicated")


class InputLowPass(nn.Module):
    """The separable Gaussian above as a module: (N, C, H, W) -> (N, C, H, W), same dtype and device."""

    def __init__(self, sigma: float, channels: int = 3):
        super().__init__()
        self.sigma = float(sigma)
        k = torch.from_numpy(taps(sigma))
        # fixed-shape depthwise kernels (the TorchScript ONNX exporter needs a kernel of known shape)
        self.register_buffer("rows", k.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), persistent=False)
        self.register_buffer("cols", k.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), persistent=False)
        self.radius = (k.numel() - 1) // 2
        self.channels = int(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.radius
        x = F.pad(x, (r, r, r, r), mode="replicate")
        x = F.conv2d(x, self.rows.to(dtype=x.dtype), groups=self.channels)  # along the rows
        return F.conv2d(x, self.cols.to(dtype=x.dtype), groups=self.channels)  # along the columns

    def pre_hook(self, module: nn.Module, args: Tuple[Any, ...]) -> Tuple[Any, ...]:
        return (self(args[0]),) + tuple(args[1:])

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:g}, taps={2 * self.radius + 1}, channels={self.channels}"


def first_conv(model: nn.Module) -> nn.Module:
    """The model's first convolution: timm's ``pretrained_cfg["first_conv"]``, else the first ``nn.Conv2d``."""
    name = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv")
    if isinstance(name, str) and name:
        try:
            return model.get_submodule(name)
        except AttributeError:
            pass
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module
    raise ValueError(f"{type(model).__name__} has no Conv2d to put an input low-pass in front of")


def add_input_lowpass(model: nn.Module, sigma: float) -> nn.Module:
    """Put the filter in front of ``model``'s first convolution (in place; ``sigma`` 0 leaves it as it is)."""
    if not sigma:
        return model
    if hasattr(model, ATTRIBUTE):
        raise ValueError("the model already has an input low-pass")
    conv = first_conv(model)
    lowpass = InputLowPass(sigma, int(getattr(conv, "in_channels", 3)))
    model.add_module(ATTRIBUTE, lowpass)
    conv.register_forward_pre_hook(lowpass.pre_hook)
    return model


def lowpass_sigma(model: nn.Module) -> float:
    """The sigma of ``model``'s input low-pass, 0 when it has none."""
    lowpass = getattr(model, ATTRIBUTE, None)
    return float(lowpass.sigma) if isinstance(lowpass, InputLowPass) else 0.0
