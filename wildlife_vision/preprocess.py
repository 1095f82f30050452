"""Decoding and eval-time preprocessing: the one implementation used everywhere.

Inference (:mod:`wildlife_vision.model`), evaluation, calibration and export in ``training/`` all
call :func:`load_image` and :func:`preprocess`. Augmentation is train-only and lives in
``training/``.

The eval-time transform is timm's: resize the shorter side to ``floor(size / crop_pct)`` with the
configured interpolation, centre-crop ``size``, scale to [0, 1], normalise with mean and std, and
lay out as CHW float32.
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ImageDecodeError

# Never decode half a file silently: a truncated upload is an error for that input.
ImageFile.LOAD_TRUNCATED_IMAGES = False

#: Largest canvas (width * height) we agree to decode; Pillow's own default (about 89.5 megapixels).
MAX_IMAGE_PIXELS = 89_478_485
#: Inputs larger than this many bytes are refused before decoding.
MAX_FILE_BYTES = 256 * 1024 * 1024

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]


@dataclass(frozen=True)
class PreprocessConfig:
    """Frozen eval-time preprocessing, stored in every exported model's metadata.

    ``input_size`` is (height, width). ``crop_pct`` follows timm: the shorter side is resized to
    ``floor(min(input_size) / crop_pct)`` and the centre ``input_size`` is cropped; ``crop_pct=1``
    resizes straight to the crop's shorter side. ``draft`` lets JPEG decoding run at a reduced DCT
    scale when the photo is at least twice the size needed (much faster on large photos).
    """

    input_size: Tuple[int, int] = (224, 224)
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: Tuple[float, float, float] = (0.229, 0.224, 0.225)
    draft: bool = True

    def __post_init__(self) -> None:
        size = tuple(int(s) for s in self.input_size)
        if len(size) != 2 or min(size) < 8 or max(size) > 4096:
            raise ValueError(f"input_size must be (height, width) between 8 and 4096 pixels, got {self.input_size!r}")
        if not 0.1 <= float(self.crop_pct) <= 1.0:
            raise ValueError(f"crop_pct must be in [0.1, 1], got {self.crop_pct!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}")
        for name in ("mean", "std"):
            v = tuple(float(x) for x in getattr(self, name))
            if len(v) != 3:
                raise ValueError(f"{name} must have 3 values (R, G, B), got {getattr(self, name)!r}")
            object.__setattr__(self, name, v)
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std!r}")
        object.__setattr__(self, "input_size", size)
        object.__setattr__(self, "crop_pct", float(self.crop_pct))

    @property
    def resize_shorter(self) -> int:
        """Length the shorter image side is resized to before the centre crop."""
        return int(math.floor(min(self.input_size) / self.crop_pct))

    def to_dict(self) -> Dict[str, Any]:
        return {
            "input_size": list(self.input_size),
            "resize": "shorter_side_then_center_crop",
            "resize_shorter": self.resize_shorter,
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "draft": self.draft,
            "layout": "NCHW",
            "color": "RGB",
            "dtype": "float32",
            "scale": "1/255 then (x - mean) / std",
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "PreprocessConfig":
        if not isinstance(d, dict):
            raise TypeError(f"preprocess must be an object, got {type(d).__name__}")
        return cls(
            input_size=tuple(d["input_size"]),
            crop_pct=d.get("crop_pct", 1.0),
            interpolation=d.get("interpolation", "bilinear"),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            draft=bool(d.get("draft", True)),
        )


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"<{type(source).__name__}>"


def _open(data_or_path: Any) -> Image.Image:
    """Open (lazily) with Pillow, translating every failure into ImageDecodeError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(data_or_path)
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(f"image too large (decompression-bomb limit of {MAX_IMAGE_PIXELS} pixels): {e}") from None
    except Image.DecompressionBombWarning as e:
        raise ImageDecodeError(f"image too large (decompression-bomb limit of {MAX_IMAGE_PIXELS} pixels): {e}") from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image Pillow can read (unknown or corrupt format)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageDecodeError(f"cannot open image: {e}") from None


def _sniff_format(head: bytes) -> str:
    """Name a few common non-image or unsupported formats from their first bytes, for better errors."""
    h = head.lstrip()[:64].lower()
    if not head:
        return "empty file"
    if h.startswith((b"<!doctype html", b"<html")):
        return "HTML document"
    if h.startswith(b"<?xml") or h.startswith(b"<svg"):
        return "SVG/XML document"
    if head[:4] == b"%PDF":
        return "PDF document"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1", b"ftyphevc"):
        return "HEIC/HEIF image (install pillow-heif to read it)"
    if head[4:12] == b"ftypavif":
        return "AVIF image (needs Pillow >= 11.3 or pillow-avif-plugin)"
    if head[:4] == b"PK\x03\x04":
        return "ZIP archive"
    try:
        head[:256].decode("utf-8")
        return "text file"
    except UnicodeDecodeError:
        return "unrecognised binary data"


def _target_for(size: Tuple[int, int], cfg: PreprocessConfig) -> Tuple[int, int]:
    w, h = size
    scale = cfg.resize_shorter / max(1, min(w, h))
    return (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale)))


def load_image(source: ImageInput, cfg: PreprocessConfig | None = None) -> Image.Image:
    """Decode ``source`` into an RGB :class:`PIL.Image.Image`, upright.

    Accepts a path, encoded bytes, a PIL image or an HWC uint8 RGB (or HW grayscale) array.
    EXIF orientation is applied; every Pillow mode is converted to RGB (transparent areas are
    composited on white); the first frame of animated or multi-page files is used; images over
    :data:`MAX_IMAGE_PIXELS` are refused before their pixels are allocated; truncated files raise.
    With ``cfg`` (and ``cfg.draft``), large JPEGs are decoded at a reduced scale that still leaves
    at least the resolution ``cfg`` needs. Any failure raises :class:`ImageDecodeError`.
    """
    if isinstance(source, Image.Image):
        img = source
        return _to_rgb(_first_frame_upright(img))
    if isinstance(source, np.ndarray):
        return _array_to_image(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageDecodeError("empty input (0 bytes)")
        if len(data) > MAX_FILE_BYTES:
            raise ImageDecodeError(f"input is {len(data)} bytes, over the {MAX_FILE_BYTES}-byte limit")
        fp: Any = io.BytesIO(data)
        head = data[:512]
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ImageDecodeError(f"file not found: {path}") from None
        except OSError as e:
            raise ImageDecodeError(f"cannot access {path}: {e.strerror or e}") from None
        if not path.is_file():
            raise ImageDecodeError(f"not a regular file: {path}")
        if st.st_size == 0:
            raise ImageDecodeError("empty file (0 bytes)")
        if st.st_size > MAX_FILE_BYTES:
            raise ImageDecodeError(f"file is {st.st_size} bytes, over the {MAX_FILE_BYTES}-byte limit")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ImageDecodeError(f"cannot read {path}: {e.strerror or e}") from None
        fp = io.BytesIO(data)
        head = data[:512]
    else:
        raise TypeError(
            f"cannot read an image from {type(source).__name__}; pass a path, bytes, a PIL.Image.Image "
            "or an HxWx3 uint8 numpy array"
        )

    try:
        img = _open(fp)
    except ImageDecodeError as e:
        if "unknown or corrupt format" in str(e):
            raise ImageDecodeError(f"not an image Pillow can read: looks like {_sniff_format(head)}") from None
        raise
    try:
        if cfg is not None and cfg.draft and img.format == "JPEG":
            target = _target_for(img.size, cfg)
            if img.size[0] >= 2 * target[0] and img.size[1] >= 2 * target[1]:
                img.draft("RGB", target)
        img = _first_frame_upright(img)
        img.load()
        return _to_rgb(img)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(f"image too large: {e}") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error) as e:
        msg = str(e) or type(e).__name__
        if "truncated" in msg.lower():
            raise ImageDecodeError(f"truncated image file ({img.format}): {msg}") from None
        raise ImageDecodeError(f"corrupt {img.format or 'image'} data: {msg}") from None


def _first_frame_upright(img: Image.Image) -> Image.Image:
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    try:
        exif_orientation = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - broken EXIF must not lose the photo
        exif_orientation = 1
    if exif_orientation in (2, 3, 4, 5, 6, 7, 8):
        img = ImageOps.exif_transpose(img)
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr, initial=0.0)), float(np.nanmax(arr, initial=1.0))
        arr = np.nan_to_num((arr - lo) / max(hi - lo, 1e-12) * 255.0)
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _array_to_image(arr: np.ndarray) -> Image.Image:
    if arr.dtype != np.uint8:
        raise ImageDecodeError(f"numpy images must be uint8 (HxWx3 RGB or HxW grayscale), got dtype {arr.dtype}")
    if arr.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(arr), "L").convert("RGB")
    if arr.ndim == 3 and arr.shape[2] == 3:
        return Image.fromarray(np.ascontiguousarray(arr), "RGB")
    if arr.ndim == 3 and arr.shape[2] == 4:
        return _to_rgb(Image.fromarray(np.ascontiguousarray(arr), "RGBA"))
    if arr.ndim == 3 and arr.shape[2] == 1:
        return Image.fromarray(np.ascontiguousarray(arr[:, :, 0]), "L").convert("RGB")
    raise ImageDecodeError(f"numpy images must be HxWx3 (RGB), HxWx4 (RGBA) or HxW, got shape {arr.shape}")


def resize_and_crop(img: Image.Image, cfg: PreprocessConfig) -> Image.Image:
    """Resize the shorter side to ``cfg.resize_shorter`` and centre-crop ``cfg.input_size``."""
    out_h, out_w = cfg.input_size
    w, h = img.size
    target_w, target_h = _target_for((w, h), cfg)
    # never crop more than the image has: an extreme-aspect image still yields the full crop
    target_w, target_h = max(target_w, out_w), max(target_h, out_h)
    if (target_w, target_h) != (w, h):
        img = img.resize((target_w, target_h), INTERPOLATIONS[cfg.interpolation])
    left = (target_w - out_w) // 2
    top = (target_h - out_h) // 2
    if (left, top, out_w, out_h) != (0, 0, target_w, target_h):
        img = img.crop((left, top, left + out_w, top + out_h))
    return img


def normalize(rgb: np.ndarray, cfg: PreprocessConfig, out: np.ndarray | None = None) -> np.ndarray:
    """HWC uint8 RGB -> CHW float32, scaled and normalised; writes into ``out`` when given."""
    scale = (1.0 / (255.0 * np.asarray(cfg.std, dtype=np.float32))).reshape(3, 1, 1)
    offset = (-np.asarray(cfg.mean, dtype=np.float32) / np.asarray(cfg.std, dtype=np.float32)).reshape(3, 1, 1)
    chw = rgb.transpose(2, 0, 1)
    if out is None:
        out = np.empty(chw.shape, dtype=np.float32)
    np.multiply(chw, scale, out=out, casting="unsafe")
    out += offset
    return out


def preprocess(source: ImageInput, cfg: PreprocessConfig, out: np.ndarray | None = None) -> np.ndarray:
    """Decode ``source`` and return the model input for it: float32 array of shape (3, H, W)."""
    img = resize_and_crop(load_image(source, cfg), cfg)
    return normalize(np.asarray(img, dtype=np.uint8), cfg, out=out)


def preprocess_batch(sources: Sequence[ImageInput], cfg: PreprocessConfig) -> np.ndarray:
    """Preprocess several inputs into one (N, 3, H, W) array; any failure raises for the whole call."""
    h, w = cfg.input_size
    batch = np.empty((len(sources), 3, h, w), dtype=np.float32)
    for i, s in enumerate(sources):
        preprocess(s, cfg, out=batch[i])
    return batch
