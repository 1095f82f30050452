"""The scoring loop's JPEG fast path: libjpeg-turbo through ``simplejpeg`` straight into a numpy array.

Pillow's JPEG decoder is libjpeg-turbo too, so the pixels are the same; what the fast path saves is Pillow's image
object and its copies (about 0.2 ms of 0.6 ms per 450 px photo on the machines measured, docs/benchmark.md). It is
used only where it is exact, and falls back to :func:`wildlife_vision.preprocess.load_image` everywhere else:

- only when ``simplejpeg`` is installed (the ``[openvino]`` extra) **and** a self-check at first use finds it
  pixel-identical to this Pillow on generated JPEGs (4:2:0, 4:2:2, 4:4:4, grayscale, progressive, odd sizes);
  a decoder built on another libjpeg-turbo that rounds differently is never used;
- only for baseline or progressive JPEG/MPO files in RGB or grayscale (CMYK, YCCK and everything else go to
  Pillow), within the same pixel limit, and not when the model asks for Pillow's draft (reduced-scale) decode;
- ``strict`` decoding: any libjpeg warning (truncated or corrupt data) sends the photo to Pillow, so a bad file
  gets exactly Pillow's error, and a file Pillow accepts is never refused here;
- EXIF orientation is applied with the same transposes as :func:`load_image`.

``WILDLIFE_VISION_FAST_JPEG=0`` turns it off.
"""

from __future__ import annotations

import io
import os
from functools import lru_cache
from typing import Any, Callable, Dict, Optional, Union

import numpy as np
from PIL import Image

from .preprocess import (PreprocessConfig, _check_pixels, _draft_target, _orientation_transpose, _read_source,
                         load_image)

_T = Image.Transpose
#: PIL transpose -> the same permutation of an (H, W, 3) array
_NUMPY_TRANSPOSE: Dict[Any, Callable[[np.ndarray], np.ndarray]] = {
    _T.FLIP_LEFT_RIGHT: lambda a: a[:, ::-1],
    _T.ROTATE_180: lambda a: a[::-1, ::-1],
    _T.FLIP_TOP_BOTTOM: lambda a: a[::-1],
    _T.TRANSPOSE: lambda a: a.transpose(1, 0, 2),
    _T.ROTATE_270: lambda a: np.rot90(a, -1),
    _T.TRANSVERSE: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    _T.ROTATE_90: lambda a: np.rot90(a, 1),
}


def _selfcheck(sj: Any) -> bool:
    """True when ``simplejpeg`` decodes like this Pillow, pixel for pixel, on a few generated JPEGs."""
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8), np.ones((5, 5, 1), dtype=np.uint8))
    noisy = np.clip(smooth.astype(np.int16) + rng.integers(-40, 41, smooth.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(noisy[:43, :57])
    cases = [dict(quality=q, subsampling=s) for q, s in ((75, 2), (90, 1), (95, 0))]
    cases.append(dict(quality=80, progressive=True))
    try:
        for kw in cases:
            for im in (img, img.convert("L")):
                buf = io.BytesIO()
                im.save(buf, "JPEG", **kw)
                data = buf.getvalue()
                want = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
                got = sj.decode_jpeg(data, colorspace="RGB", strict=True)
                if got.shape != want.shape or not np.array_equal(got, want):
                    return False
    except Exception:  # noqa: BLE001 - a broken decoder is simply not used
        return False
    return True


@lru_cache(maxsize=1)
def decoder() -> Optional[Any]:
    """The ``simplejpeg`` module when the fast path is available and exact here, else None."""
    if os.environ.get("WILDLIFE_VISION_FAST_JPEG", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        import simplejpeg
    except ImportError:
        return None
    return simplejpeg if _selfcheck(simplejpeg) else None


def _fast(data: bytes, cfg: Optional[PreprocessConfig], sj: Any) -> Optional[np.ndarray]:
    """The upright RGB array of a JPEG that the fast path may decode, or None (then Pillow decides)."""
    try:
        img = Image.open(io.BytesIO(data))  # the header only: size, mode, EXIF
    except Exception:  # noqa: BLE001 - Pillow's own path gives the error
        return None
    if img.format not in ("JPEG", "MPO") or img.mode not in ("RGB", "L"):
        return None
    _check_pixels(img.size, img.format)  # the same refusal as load_image, before any pixel is allocated
    if _draft_target(img.size, cfg) is not None:
        return None  # Pillow's reduced-scale decode, as calibrated
    try:
        arr = sj.decode_jpeg(data, colorspace="RGB", strict=True)
    except Exception:  # noqa: BLE001 - warnings and errors: Pillow's path decides
        return None
    if arr.shape[:2] != (img.size[1], img.size[0]):
        return None
    method = _orientation_transpose(img)
    if method is not None:
        arr = np.ascontiguousarray(_NUMPY_TRANSPOSE[method](arr))
    return arr


def load_pixels(source: Any, cfg: Optional[PreprocessConfig] = None) -> Union[np.ndarray, Image.Image]:
    """The upright RGB photo: an (H, W, 3) uint8 array from the fast path where it is exact (see the module
    docstring), else :func:`~wildlife_vision.preprocess.load_image`'s image as it is (no copy into an array:
    :func:`~wildlife_vision.preprocess.resize_and_crop_rgb` takes either). Same errors as ``load_image``."""
    sj = decoder()
    if sj is not None and isinstance(source, (bytes, bytearray, memoryview, str, os.PathLike)):
        data = _read_source(source)
        if data[:3] == b"\xff\xd8\xff":
            arr = _fast(data, cfg, sj)
            if arr is not None:
                return arr
        source = data
    return load_image(source, cfg)


def load_rgb(source: Any, cfg: Optional[PreprocessConfig] = None) -> np.ndarray:
    """:func:`load_pixels` as an upright (H, W, 3) uint8 RGB array."""
    return np.asarray(load_pixels(source, cfg), dtype=np.uint8)


__all__ = ["load_pixels", "load_rgb", "decoder"]
