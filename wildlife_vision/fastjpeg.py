"""The scoring loop's JPEG fast path: libjpeg-turbo straight into a numpy array, through OpenCV or ``simplejpeg``.

Pillow's JPEG decoder is libjpeg-turbo too, so the pixels are the same; what the fast path saves is Pillow's image
object and its copies (about 0.2 ms of 0.6 ms per 450 px photo on the machines measured, docs/benchmark.md), and,
with OpenCV, the GIL: ``cv2.imdecode`` releases it while it decodes, ``simplejpeg`` does not, so two decoding
threads ran at 2.25x one thread's photos/s with OpenCV and at 0.74x with simplejpeg (docs/benchmark.md). OpenCV
(``opencv-python-headless``) is tried first, then simplejpeg (both in the ``[openvino]`` extra). The fast path is
used only where it is exact, and falls back to :func:`wildlife_vision.preprocess.load_image` everywhere else:

- only when a self-check at first use finds the decoder pixel-identical to this Pillow on generated JPEGs (4:2:0,
  4:2:2, 4:4:4, grayscale, progressive, odd sizes); a decoder built on another libjpeg-turbo that rounds
  differently is never used;
- only for baseline or progressive JPEG/MPO files in RGB or grayscale (CMYK, YCCK and everything else go to
  Pillow), within the same pixel limit, and not when the model asks for Pillow's draft (reduced-scale) decode;
- bad data goes to Pillow, so a bad file gets exactly Pillow's error, and a file Pillow accepts is never refused
  here: simplejpeg decodes ``strict`` (any libjpeg warning sends the photo to Pillow); OpenCV does not report
  libjpeg's warnings, so it takes only files that end in the end-of-image marker (a truncated file does not) and
  sends every file it cannot decode to Pillow (a file damaged before that marker decodes as Pillow decodes it,
  and libjpeg prints its warning on stderr);
- EXIF orientation is applied with the same transposes as :func:`load_image`.

``WILDLIFE_VISION_FAST_JPEG=0`` turns it off; ``=opencv`` or ``=simplejpeg`` chooses the decoder.
"""

from __future__ import annotations

import io
import os
from functools import lru_cache
from typing import Any, Callable, Dict, NamedTuple, Optional, Union

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


class Decoder(NamedTuple):
    """A fast JPEG decoder: ``decode(data)`` is the RGB (H, W, 3) uint8 array, or None to let Pillow decide."""

    name: str
    decode: Callable[[bytes], Optional[np.ndarray]]


def _opencv() -> Decoder:
    import cv2

    rgb = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.11: libjpeg writes RGB, no conversion after
    flags = (cv2.IMREAD_COLOR if rgb is None else rgb) | cv2.IMREAD_IGNORE_ORIENTATION  # load_image's transposes

    def decode(data: bytes) -> Optional[np.ndarray]:
        if data.rstrip(b"\0")[-2:] != b"\xff\xd9":
            return None  # no end-of-image marker (truncated, or trailing data): Pillow decides
        arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
        if arr is None or arr.ndim != 3 or arr.shape[2] != 3:
            return None
        return arr if rgb is not None else cv2.cvtColor(arr, cv2.COLOR_BGR2RGB, dst=arr)

    return Decoder("opencv", decode)


def _simplejpeg() -> Decoder:
    import simplejpeg

    def decode(data: bytes) -> Optional[np.ndarray]:
        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
        except Exception:  # noqa: BLE001 - warnings and errors: Pillow's path decides
            return None

    return Decoder("simplejpeg", decode)


_DECODERS: Dict[str, Callable[[], Decoder]] = {"opencv": _opencv, "simplejpeg": _simplejpeg}


def _selfcheck(dec: Decoder) -> bool:
    """True when ``dec`` decodes like this Pillow, pixel for pixel, on a few generated JPEGs."""
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
                got = dec.decode(data)
                if got is None or got.shape != want.shape or not np.array_equal(got, want):
                    return False
    except Exception:  # noqa: BLE001 - a broken decoder is simply not used
        return False
    return True


@lru_cache(maxsize=1)
def decoder() -> Optional[Decoder]:
    """The fast decoder in use here (OpenCV, else simplejpeg; ``WILDLIFE_VISION_FAST_JPEG`` may choose one or turn
    the path off), or None when none is installed and exact here."""
    choice = os.environ.get("WILDLIFE_VISION_FAST_JPEG", "1").strip().lower()
    if choice in ("0", "false", "no", "off"):
        return None
    names = [choice] if choice in _DECODERS else list(_DECODERS)
    for name in names:
        try:
            dec = _DECODERS[name]()
        except ImportError:
            continue
        if _selfcheck(dec):
            return dec
    return None


def _fast(data: bytes, cfg: Optional[PreprocessConfig], dec: Decoder) -> Optional[np.ndarray]:
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
    arr = dec.decode(data)
    if arr is None or arr.shape[:2] != (img.size[1], img.size[0]):
        return None
    method = _orientation_transpose(img)
    if method is not None:
        arr = np.ascontiguousarray(_NUMPY_TRANSPOSE[method](arr))
    return arr


def load_pixels(source: Any, cfg: Optional[PreprocessConfig] = None) -> Union[np.ndarray, Image.Image]:
    """The upright RGB photo: an (H, W, 3) uint8 array from the fast path where it is exact (see the module
    docstring), else :func:`~wildlife_vision.preprocess.load_image`'s image as it is (no copy into an array:
    :func:`~wildlife_vision.preprocess.resize_and_crop_rgb` takes either). Same errors as ``load_image``."""
    dec = decoder()
    if dec is not None and isinstance(source, (bytes, bytearray, memoryview, str, os.PathLike)):
        data = _read_source(source)
        if data[:3] == b"\xff\xd8\xff":
            arr = _fast(data, cfg, dec)
            if arr is not None:
                return arr
        source = data
    return load_image(source, cfg)


def load_rgb(source: Any, cfg: Optional[PreprocessConfig] = None) -> np.ndarray:
    """:func:`load_pixels` as an upright (H, W, 3) uint8 RGB array."""
    return np.asarray(load_pixels(source, cfg), dtype=np.uint8)


__all__ = ["Decoder", "load_pixels", "load_rgb", "decoder"]
