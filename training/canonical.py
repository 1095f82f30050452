"""Mirror canonicalisation inside the exported graph (``wildlife-vision export --mirror-canonical``).

A seller's mirror image is the cheapest edit there is, and a CNN's score is not mirror-invariant. Averaging a
photo with its mirror would make it so at twice the network's work; this step makes it so at the cost of one
reduction over the input crop: the normalised crop is flipped left-right when its horizontal first moment of
intensity is negative,

    s = sum over (c, y, x) of x_norm[c, y, x] * r[x],   r[x] = (x - (W - 1) / 2) / (W / 2),

so a photo and its mirror reach the network in the same orientation (``r`` sums to 0, so the crop's mean does not
matter). The heatmap output ``cam`` (:mod:`wildlife_vision_train.heatmap`) is flipped back for the photos that were
flipped, so it still lies over the photo as it is. The step sits in the graph, in front of the network: every
runtime, precision and caller (the library, ``evaluate``, ``calibrate``, the service) scores through it, and the
thresholds written with it are chosen on its own scores (:func:`recalibrate_on_val`).

Measured on wildtrade-v2's test split (docs/robustness.md): ivory p95 |score change| under a mirror 0.055 -> 0.0055.
A photo whose moment is near 0 can change orientation under other edits; with a network trained for edit
consistency that costs few flips (the same document).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

#: what the metadata says about the step (``training["graph_steps"]``), enough to re-implement it
RULE = ("mirror canonicalisation: the normalised (N, 3, H, W) input is flipped left-right where "
        "sum over (c, y, x) of input[c, y, x] * r[x] < 0, r[x] = (x - (W - 1) / 2) / (W / 2); cam is flipped back "
        "for those rows")


def ramp(width: int) -> np.ndarray:
    """The moment's weights ``r`` over the crop's columns (exactly symmetric, sums to 0)."""
    return ((np.arange(width) - (width - 1) / 2) / (width / 2)).astype(np.float32)


class MirrorCanonical(nn.Module):
    """``inner`` (pixel_values -> outputs) behind the flip rule above; exported with it into ONNX.

    Both the moment and the flip are matrix products (``x @ r`` summed, and ``x @ J`` with ``J`` the W x W
    anti-diagonal permutation; each output element of ``x @ J`` is one input element, so it is exact): OpenVINO
    runs a reversing ``Slice`` slowly, and with it this step halved bf16 model-only photos/s on the AMX machine
    (0.50x the network alone) where the matrix products cost 0.85x; onnxruntime fp32: 0.92x either way
    (docs/robustness.md)."""

    def __init__(self, inner: nn.Module, width: int):
        super().__init__()
        self.inner = inner
        self.register_buffer("ramp", torch.from_numpy(ramp(width)).view(width, 1), persistent=False)
        self.register_buffer("reverse", torch.flip(torch.eye(width), dims=[1]), persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        moment = torch.matmul(pixel_values, self.ramp).sum(dim=(1, 2, 3), keepdim=True)  # C x the rule's sum
        x = torch.where(moment < 0, torch.matmul(pixel_values, self.reverse), pixel_values)
        return self.inner(x)


def flip_condition(graph: Any) -> Optional[str]:
    """The name of the (N, 1, 1, 1) boolean 'this row was flipped' tensor of a graph exported with
    :class:`MirrorCanonical`, or None for a graph without the step: the condition of the ``Where`` that chooses
    between the graph's input and its flipped copy."""
    if not graph.input:
        return None
    name = graph.input[0].name
    for node in graph.node:
        if node.op_type == "Where" and len(node.input) == 3 and node.input[2] == name:
            return node.input[0]
    return None


def unflip_cam(graph: Any, cam: str) -> bool:
    """Flip the ``cam`` output back for the rows the step flipped (in place); False for a graph without the step."""
    from onnx import helper, numpy_helper

    cond = flip_condition(graph)
    if cond is None:
        return False
    raw = cam + "/in_network_orientation"
    for node in graph.node:
        node.output[:] = [raw if o == cam else o for o in node.output]
    for n, v in (("starts", -1), ("ends", np.iinfo(np.int64).min), ("axes", 3), ("steps", -1)):
        graph.initializer.append(numpy_helper.from_array(np.array([v], dtype=np.int64), f"cam/unflip_{n}"))
    graph.node.extend([
        helper.make_node("Slice", [raw] + [f"cam/unflip_{n}" for n in ("starts", "ends", "axes", "steps")],
                         [cam + "/flipped"], name="cam/unflip_Slice"),
        helper.make_node("Where", [cond, cam + "/flipped", raw], [cam], name="cam/unflip_Where"),
    ])
    return True


def recalibrate_on_val(path: Path, meta: Any, val: Sequence[Any], calib: Mapping[str, Any],
                       resamples: int = 1000) -> Any:
    """``meta`` with thresholds, review bands, calibration record and val metrics chosen on the exported file's own
    scores on ``val`` (the rows the run's thresholds came from): the network behind the step is not the network the
    run calibrated."""
    from wildlife_vision import load_model
    from wildlife_vision.evaluation.calibrate import calibrate
    from wildlife_vision.evaluation.evaluate import build_report, score_onnx, summary
    from wildlife_vision.data.manifest import targets_for

    labels = list(meta.labels)
    scores, kept, _ = score_onnx(load_model(path), val)
    y = targets_for(kept, labels)
    split = str(calib.get("split", "val"))
    thresholds, bands, calibration = calibrate(y, scores, labels, str(calib.get("target", "precision")),
                                               float(calib.get("value", 0.95)),
                                               float(calib.get("review_recall", 0.95)), split)
    calibration.update({"scores": "this file's own (mirror canonicalisation in the graph)",
                        "network_thresholds": dict(meta.thresholds)})
    report = build_report(y, scores, labels, thresholds, kept, info={"split": split, "model": Path(path).name},
                          resamples=resamples)
    log.info("mirror canonicalisation: thresholds chosen again on %d %s rows on the file's own scores: %s", len(kept),
             split, {k: round(v, 4) for k, v in thresholds.items()})
    training: Dict[str, Any] = {**meta.training, "graph_steps": [RULE, *meta.training.get("graph_steps", [])]}
    return dataclasses.replace(meta, thresholds=thresholds, review_bands=bands, calibration=calibration,
                               metrics=summary(report), training=training)
