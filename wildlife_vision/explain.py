"""Heatmaps: where in the photo the model found each label, from the model's own ``cam`` output (no torch).

A model exported with heatmaps (`wildlife-vision export` does it; ``wildlife-vision heatmaps`` adds it
to an older file) returns, beside its scores, the class activation map ``cam`` (labels, h, w): the label's logit
contributed by each cell of the last feature map over the model's input crop. Its spatial mean *is* the logit, so
the map splits the score over the grid exactly. :class:`Explanation` maps that grid back onto the **upright
photo** (EXIF orientation applied, the resize and centre crop undone through
:func:`wildlife_vision.preprocess.crop_box`): ``explanation.maps[label]`` is a float32 array of the photo's height
and width, in [0, 1] (min-max over the grid), 0 outside the region the model saw. :func:`overlay` colours it
over the photo for people.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple, Union

import numpy as np
from PIL import Image

# the Prediction type lives in model.py, which imports this module: annotations only, no import (no cycle)
#: colour stops of the overlay's colour map (dark blue -> cyan -> yellow -> red), position in [0, 1] and RGB
_STOPS = ((0.0, (48, 18, 59)), (0.25, (41, 135, 247)), (0.5, (39, 221, 161)), (0.7, (220, 221, 46)),
          (0.85, (250, 124, 26)), (1.0, (180, 20, 10)))


def _lut() -> np.ndarray:
    x = np.linspace(0.0, 1.0, 256)
    pos = [p for p, _ in _STOPS]
    return np.stack([np.interp(x, pos, [c[i] for _, c in _STOPS]) for i in range(3)], axis=1).astype(np.uint8)


_LUT = _lut()


def normalized_grid(cam: np.ndarray) -> np.ndarray:
    """Min-max a (h, w) logit grid into [0, 1] (all zeros for a constant grid)."""
    cam = np.asarray(cam, dtype=np.float32)
    lo, hi = float(cam.min()), float(cam.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo <= 1e-12:
        return np.zeros_like(cam, dtype=np.float32)
    return ((cam - lo) / (hi - lo)).astype(np.float32)


def grid_to_photo(grid: np.ndarray, size: Tuple[int, int], box: Tuple[float, float, float, float],
                  out_size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Resample a [0, 1] (h, w) grid over ``box`` (photo coordinates) onto a (height, width) photo-sized map.

    ``size`` is the photo's (width, height); ``out_size`` (width, height), when given, a smaller map of the
    same photo (coordinates scaled). Bilinear between cell centres; 0 outside ``box``.
    """
    w, h = size
    ow, oh = out_size or size
    sx, sy = ow / w, oh / h
    left, top, right, bottom = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
    gh, gw = grid.shape
    # photo pixel centres in grid-cell coordinates (cell centres at 0.5, 1.5, ...)
    xs = (np.arange(ow, dtype=np.float64) + 0.5 - left) / max(right - left, 1e-9) * gw - 0.5
    ys = (np.arange(oh, dtype=np.float64) + 0.5 - top) / max(bottom - top, 1e-9) * gh - 0.5
    inside_x = (xs >= -0.5) & (xs <= gw - 0.5)
    inside_y = (ys >= -0.5) & (ys <= gh - 0.5)
    xc, yc = np.clip(xs, 0, gw - 1), np.clip(ys, 0, gh - 1)
    x0 = np.floor(xc).astype(int)
    y0 = np.floor(yc).astype(int)
    x1, y1 = np.minimum(x0 + 1, gw - 1), np.minimum(y0 + 1, gh - 1)
    fx, fy = (xc - x0)[None, :], (yc - y0)[:, None]
    g = np.asarray(grid, dtype=np.float64)
    top_row = g[y0][:, x0] * (1 - fx) + g[y0][:, x1] * fx
    bot_row = g[y1][:, x0] * (1 - fx) + g[y1][:, x1] * fx
    out = top_row * (1 - fy) + bot_row * fy
    out *= inside_y[:, None] & inside_x[None, :]
    return np.clip(out, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True, eq=False)
class Explanation:
    """Heatmaps for one input: its :class:`~wildlife_vision.Prediction` and, per label asked for, where it was seen.

    ``cam[label]`` is the raw logit grid (h, w) over the input crop; ``maps[label]`` the [0, 1] map over the whole
    upright photo (computed on first access; a large photo gives a large array: :meth:`heatmap` with
    ``max_side`` gives a smaller one). ``size`` is the upright photo's (width, height) and ``crop_box`` the
    region of it the model saw. ``photo`` is a copy of the upright photo reduced to at most
    ``Model.explain(..., keep_photo=N)`` pixels on its longer side (None unless asked for). On failure ``error``
    is set and the maps are empty.
    """

    input: str
    prediction: "Prediction"  # noqa: F821 - wildlife_vision.model.Prediction
    cam: Dict[str, np.ndarray] = field(default_factory=dict)
    size: Tuple[int, int] = (0, 0)
    crop_box: Tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    photo: Optional[Image.Image] = None

    @property
    def ok(self) -> bool:
        return self.prediction.ok

    @property
    def error(self) -> Optional[str]:
        return self.prediction.error

    @property
    def error_kind(self) -> Optional[str]:
        return self.prediction.error_kind

    @property
    def scores(self) -> Dict[str, float]:
        return self.prediction.scores

    @functools.cached_property
    def maps(self) -> Dict[str, np.ndarray]:
        return {label: self.heatmap(label) for label in self.cam}

    def heatmap(self, label: str, max_side: Optional[int] = None) -> np.ndarray:
        """The [0, 1] map of ``label`` over the upright photo, (height, width); with ``max_side``, scaled down so
        that its longer side is at most that (same aspect)."""
        if label not in self.cam:
            raise KeyError(f"no heatmap for {label!r}; this explanation has {sorted(self.cam)}")
        out = None
        w, h = self.size
        if max_side and max(w, h) > max_side:
            s = max_side / max(w, h)
            out = (max(1, round(w * s)), max(1, round(h * s)))
        return grid_to_photo(normalized_grid(self.cam[label]), self.size, self.crop_box, out)


def colorize(heat: np.ndarray) -> np.ndarray:
    """(H, W) [0, 1] -> (H, W, 3) uint8 colours of the overlay's colour map."""
    return _LUT[np.clip(np.rint(np.asarray(heat) * 255), 0, 255).astype(np.uint8)]


def overlay(photo: Image.Image, heat: np.ndarray, alpha: float = 0.55) -> Image.Image:
    """``heat`` (any size, [0, 1]) coloured over ``photo`` (RGB): hot cells opaque up to ``alpha``, cold ones clear."""
    photo = photo.convert("RGB")
    if heat.shape != (photo.height, photo.width):
        heat = np.asarray(Image.fromarray(np.asarray(heat, dtype=np.float32), mode="F")
                          .resize(photo.size, Image.BILINEAR))
    heat = np.clip(heat, 0.0, 1.0)
    base = np.asarray(photo, dtype=np.float32)
    a = (alpha * np.sqrt(heat))[..., None]
    mixed = base * (1 - a) + colorize(heat).astype(np.float32) * a
    return Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8), mode="RGB")


#: longer side of the overlay images `predict --explain` writes
OVERLAY_SIDE = 768


def overlay_name(input_name: str, label: str) -> str:
    """The overlay's file name for one input and label: a readable stem and a hash of the whole input name, so
    that names are stable across runs (``--resume``) and never collide or leave the folder."""
    digest = hashlib.sha1(input_name.encode("utf-8", errors="surrogateescape")).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(input_name).stem)[:40].strip("._") or "input"
    safe_label = re.sub(r"[^A-Za-z0-9._-]+", "_", label)
    return f"{stem}-{digest}.{safe_label}.jpg"


def write_overlays(ex: Explanation, folder: Union[str, os.PathLike], labels: Iterable[str],
                   max_side: int = OVERLAY_SIDE) -> Dict[str, str]:
    """Write a JPEG overlay of each of ``labels``' heatmaps over the photo into ``folder``; return {label: path}.

    Uses the explanation's kept photo (``keep_photo``); an explanation without one is refused (ValueError)."""
    if ex.photo is None:
        raise ValueError("the explanation kept no photo; call explain(..., keep_photo=N)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    photo = ex.photo
    if max(photo.size) > max_side:
        photo = photo.copy()
        photo.thumbnail((max_side, max_side), Image.BILINEAR)
    out: Dict[str, str] = {}
    for label in labels:
        heat = grid_to_photo(normalized_grid(ex.cam[label]), ex.size, ex.crop_box, photo.size)
        path = folder / overlay_name(ex.input, label)
        tmp = path.with_name(path.name + ".tmp")
        overlay(photo, heat).save(tmp, "JPEG", quality=85)
        os.replace(tmp, path)
        out[label] = os.fspath(path)
    return out


__all__ = ["Explanation", "overlay", "write_overlays", "overlay_name", "OVERLAY_SIDE", "colorize", "grid_to_photo", "normalized_grid"]
