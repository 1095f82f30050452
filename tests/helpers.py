"""Shared test fixtures: a tiny random-weight ONNX model with valid metadata, and generated photos.

The tiny model is built with the `onnx` helper API (no torch): global average pool -> linear -> sigmoid,
so it is a few hundred bytes, loads in milliseconds and gives scores that depend on the image colours.
With ``embedding=True`` it also has an ``embedding`` output, as exported models do: the input average-pooled
to 4x4 per channel and flattened (48 values at 32x32).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from wildlife_vision.metadata import METADATA_KEY, SCHEMA_VERSION
from wildlife_vision.preprocess import PreprocessConfig

DEFAULT_LABELS = ("ivory", "live_animal")


def tiny_metadata(labels: Sequence[str] = DEFAULT_LABELS, input_size: Tuple[int, int] = (32, 32),
                  thresholds: Optional[Dict[str, float]] = None, **overrides) -> dict:
    labels = list(labels)
    thresholds = thresholds or {lab: 0.5 for lab in labels}
    pre = PreprocessConfig(input_size=input_size, crop_pct=0.875, interpolation="bilinear",
                           mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    meta = {
        "schema_version": SCHEMA_VERSION,
        "name": "tiny-test-model",
        "model_version": "0.0.1",
        "backbone": "tiny-linear",
        "labels": labels,
        "thresholds": thresholds,
        "review_bands": {lab: [max(0.0, t - 0.2), t] for lab, t in thresholds.items()},
        "preprocess": pre.to_dict(),
        "input_name": "pixel_values",
        "output_name": "scores",
    }
    meta.update(overrides)
    return meta


def make_tiny_model(path: Path, labels: Sequence[str] = DEFAULT_LABELS, input_size: Tuple[int, int] = (32, 32),
                    metadata: Optional[dict] = None, n_outputs: Optional[int] = None, seed: int = 0,
                    with_metadata: bool = True, embedding: bool = False) -> Path:
    """Write a tiny ONNX classifier to ``path``. ``n_outputs`` != len(labels) makes an inconsistent file;
    ``embedding`` adds the second output ``embedding`` (N, 3 * (H/8) * (W/8))."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n_out = len(labels) if n_outputs is None else n_outputs
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 2.0, size=(3, n_out)).astype(np.float32)
    b = rng.normal(0, 0.5, size=(n_out,)).astype(np.float32)
    h, wd = input_size
    nodes = [
        helper.make_node("GlobalAveragePool", ["pixel_values"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
    ]
    outputs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", n_out])]
    if embedding:
        nodes += [helper.make_node("AveragePool", ["pixel_values"], ["pooled4"], kernel_shape=[8, 8], strides=[8, 8]),
                  helper.make_node("Flatten", ["pooled4"], ["embedding"], axis=1)]
        outputs.append(helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 3 * (h // 8) * (wd // 8)]))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, h, wd])],
        outputs,
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if with_metadata:
        meta = metadata if metadata is not None else tiny_metadata(labels, input_size)
        text = meta if isinstance(meta, str) else json.dumps(meta)
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, text
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_photo(seed: int = 0, size: Tuple[int, int] = (96, 64), color: Optional[Tuple[int, int, int]] = None) -> Image.Image:
    """A small RGB image with structure (gradient + noise + a rectangle), deterministic per seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.array(color if color is not None else rng.integers(0, 256, 3), dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = base + 40 * np.sin(xx / max(w, 1) * 6.28)[..., None] + rng.normal(0, 12, (h, w, 3))
    x0, y0 = rng.integers(0, max(1, w // 2)), rng.integers(0, max(1, h // 2))
    img[y0:y0 + h // 3, x0:x0 + w // 3] = rng.integers(0, 256, 3)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def write_photos(folder: Path, n: int, fmt: str = "JPEG", size: Tuple[int, int] = (96, 64), start: int = 0):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[fmt]
    paths = []
    for i in range(start, start + n):
        p = folder / f"photo_{i:04d}.{ext}"
        make_photo(i, size).save(p, fmt)
        paths.append(p)
    return paths


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wildtrade-v1"


def shared_manifest() -> Optional[Path]:
    """The real wildtrade-v1 manifest when ../shared is present beside the checkout, else None."""
    import os

    override = os.environ.get("WILDTRADE_DIR")
    root = Path(override) if override else SHARED_DATA
    m = root / "manifest.csv"
    return m if m.is_file() else None
