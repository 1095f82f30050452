"""Decoding and eval-time preprocessing: the one implementation used everywhere.

Inference (:mod:`wildlife_vision.model`), evaluation, calibration and export in ``training/`` all
call :func:`load_image` and :func:`preprocess`. Augmentation is train-only and lives in
``training/``.

The eval-time transform is timm's (torchvision's ``Resize`` + ``CenterCrop``): resize the shorter side to
``floor(size / crop_pct)`` with the configured interpolation, the longer side to
``int(shorter_target * long / short)`` (truncated), centre-crop ``size`` at offset
``int(round((resized - crop) / 2))`` (Python rounding, half to even), scale to [0, 1], normalise with mean and std,
and lay out as CHW float32. (When the resized whole would be huge, an extreme aspect ratio, only the region that
ends up in the crop is resampled.) Models exported before this rule say ``geometry: "ceil-floor"`` or nothing
(both sides rounded up, offset rounded down) and keep the geometry they were calibrated on.

Decoding treats every input as hostile: anything that goes wrong while decoding one input raises
:class:`~wildlife_vision.errors.ImageDecodeError` (with a ``kind``), never another exception type, and
nothing here changes Pillow's process-wide settings.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import stat as _stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageDecodeError

#: Extensions read from folders (case-insensitive), by every command that lists folders. Files named
#: explicitly are always read, whatever their name.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".gif", ".webp", ".bmp", ".dib", ".tif", ".tiff",
    ".avif", ".heic", ".heif", ".jp2", ".j2k", ".jpx", ".jxl", ".ico", ".ppm", ".pgm", ".pbm", ".pnm", ".tga",
    ".mpo", ".psd", ".pcx", ".qoi", ".dds", ".svg",
})

#: Largest canvas (width * height) we agree to decode: Pillow's default decompression-bomb limit (about
#: 89.5 megapixels). Checked on the size in the file's header, before any pixel memory is allocated.
#: Pillow's own, process-wide ``Image.MAX_IMAGE_PIXELS`` is left alone; the lower of the two applies
#: (Pillow refuses anything over twice its value). Lower it to be stricter: ``preprocess.MAX_IMAGE_PIXELS = ...``.
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
#: PreprocessConfig.resampler values (see its docstring)
RESAMPLERS = ("pillow", "pillow-region", "opencv")
#: cv2 interpolation flags for the model's interpolation (INTER_NEAREST, LINEAR, CUBIC, AREA, LANCZOS4)
_CV2_INTERPOLATION = {"nearest": 0, "bilinear": 1, "bicubic": 2, "box": 3, "lanczos": 4}

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]

#: EXIF orientation -> the transpose that makes the image upright (same table as ImageOps.exif_transpose).
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


#: the resize/crop rules, written into every model's metadata (``preprocess.geometry_rule``)
GEOMETRIES = {
    "torchvision": "shorter side -> resize_shorter; longer side -> int(resize_shorter * long / short) (truncated); "
                   "then crop input_size at left = int(round((resized_w - crop_w) / 2)), top likewise (Python round, "
                   "half to even): torchvision Resize(int) + CenterCrop, as in timm's eval transform",
    "ceil-floor": "scale = resize_shorter / short; both sides -> ceil(side * scale); then crop at "
                  "left = (resized_w - crop_w) // 2, top likewise (models exported before wildlife-vision 0.3)",
}


@dataclass(frozen=True)
class PreprocessConfig:
    """Frozen eval-time preprocessing, stored in every exported model's metadata.

    ``input_size`` is (height, width). ``crop_pct`` follows timm: the shorter side is resized to
    ``floor(min(input_size) / crop_pct)`` and the centre ``input_size`` is cropped; ``crop_pct=1``
    resizes straight to the crop's shorter side. ``draft`` (off by default) lets JPEG decoding run at a
    reduced DCT scale when the photo is at least twice the size needed: several times faster on large
    photos, but pixels then differ by rounding from a full decode, which moves scores by up to about 1e-2
    (measured on the shipped model), more than the 1e-3 every default fast path keeps. Training turns it
    on for its augmented decodes, where the exact pixels do not matter. ``resampler`` picks the resize implementation:
    ``"pillow"`` (the default, what every model is trained and calibrated with), ``"pillow-region"`` (Pillow
    resamples only the source region that lands in the crop, ``Image.resize(box=...)``: about a third less work,
    pixels differ by rounding) or ``"opencv"`` (``cv2.resize``, SIMD, several times faster, but without Pillow's
    antialiasing when downscaling). Only execution profiles calibrated on their own scores with one of the faster
    resamplers use them (``calibrate --profile bf16 --fast-preprocess``).
    """

    input_size: Tuple[int, int] = (224, 224)
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: Tuple[float, float, float] = (0.229, 0.224, 0.225)
    draft: bool = False
    geometry: str = "torchvision"
    resampler: str = "pillow"

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
            if len(v) != 3 or not all(math.isfinite(x) for x in v):
                raise ValueError(f"{name} must have 3 finite values (R, G, B), got {getattr(self, name)!r}")
            object.__setattr__(self, name, v)
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {sorted(GEOMETRIES)}, got {self.geometry!r}")
        if self.resampler not in RESAMPLERS:
            raise ValueError(f"resampler must be one of {RESAMPLERS}, got {self.resampler!r}")
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
            "geometry": self.geometry,
            "geometry_rule": GEOMETRIES[self.geometry],
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "draft": self.draft,
            **({"resampler": self.resampler} if self.resampler != "pillow" else {}),
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
            draft=bool(d.get("draft", False)),
            # files written before the torchvision rule have no key and keep the geometry they were calibrated on
            geometry=str(d.get("geometry", "ceil-floor")),
            resampler=str(d.get("resampler", "pillow")),
        )


# ---- recognising what a file is, for errors that name the format ----------------------------------

def _sniff_format(head: bytes) -> Tuple[str, str]:
    """Name the format of some bytes Pillow could not identify: (error kind, human description)."""
    if not head:
        return "empty", "an empty file"
    h = head.lstrip()[:64].lower()
    box = head[4:12]
    if h.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "not_an_image", "an HTML document (an error page saved as an image?)"
    if h.startswith(b"<svg") or (h.startswith(b"<?xml") and b"<svg" in head[:1024].lower()):
        return "unsupported_format", "an SVG vector image (rasterise it first; SVG is not supported)"
    if h.startswith(b"<?xml"):
        return "not_an_image", "an XML document"
    if head[:4] == b"%PDF":
        return "not_an_image", "a PDF document"
    if box in (b"ftypheic", b"ftypheix", b"ftyphevc", b"ftypheim", b"ftypheis", b"ftyphevm", b"ftypmif1",
               b"ftypmsf1"):
        return "unsupported_format", "a HEIC/HEIF image (not supported by this Pillow; install pillow-heif)"
    if box in (b"ftypavif", b"ftypavis"):
        return "unsupported_format", "an AVIF image (not supported by this Pillow build)"
    if head[:2] == b"\xff\x0a" or head[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n":
        return "unsupported_format", "a JPEG XL image (not supported by this Pillow)"
    if box[:4] == b"ftyp":
        return "not_an_image", "an MP4/MOV video"
    if head[:4] == b"RIFF" and head[8:12] != b"WEBP":
        return "not_an_image", f"a RIFF {head[8:12].decode('latin-1').strip()} file (audio/video)"
    if head[:4] == b"PK\x03\x04":
        return "not_an_image", "a ZIP archive"
    if head[:2] == b"\x1f\x8b":
        return "not_an_image", "a gzip archive"
    if head[:4] == b"\x7fELF" or head[:2] == b"MZ":
        return "not_an_image", "an executable"
    # image signatures Pillow normally reads: it refused the header, so the file is damaged
    for sig, name in ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"),
                      (b"GIF89a", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF")):
        if head.startswith(sig):
            return "corrupt", f"a {name} file with a corrupt header"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "corrupt", "a WebP file with a corrupt header"
    try:
        head[:512].decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < min(len(head), 512) - 4:  # not just a multi-byte character cut at the end
            return "not_an_image", "unrecognised binary data"
    if h.startswith((b"{", b"[")):
        return "not_an_image", "a JSON/text file"
    return "not_an_image", "a text file"


# ---- decoding ----------------------------------------------------------------------------------------

def _check_pixels(size: Tuple[int, int], fmt: Any) -> None:
    w, h = int(size[0]), int(size[1])
    if w < 1 or h < 1:
        raise ImageDecodeError(f"the {fmt or 'image'} has zero width or height ({w}x{h})", kind="empty")
    if w * h > MAX_IMAGE_PIXELS:
        raise ImageDecodeError(
            f"image too large: the {fmt or 'image'} header says {w}x{h} = {w * h:,} pixels, over the "
            f"decompression-bomb limit of {MAX_IMAGE_PIXELS:,} pixels; refused without decoding. Downscale it first",
            kind="too_large")


def _read_source(source: Any) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageDecodeError("empty input (0 bytes)", kind="empty")
        if len(data) > MAX_FILE_BYTES:
            raise ImageDecodeError(f"input is {len(data):,} bytes, over the {MAX_FILE_BYTES:,}-byte limit",
                                   kind="too_large")
        return data
    path = Path(source)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageDecodeError("file not found (missing, or a dangling symlink)", kind="not_found") from None
    except OSError as e:
        raise ImageDecodeError(f"cannot access the file: {e.strerror or e}", kind="unreadable") from None
    if _stat.S_ISDIR(st.st_mode):
        raise ImageDecodeError("is a folder, not a file (pass --recursive to the CLI to read folders)",
                               kind="unreadable")
    if not _stat.S_ISREG(st.st_mode):
        raise ImageDecodeError("not a regular file (a device, socket or pipe)", kind="unreadable")
    if st.st_size == 0:
        raise ImageDecodeError("empty file (0 bytes)", kind="empty")
    if st.st_size > MAX_FILE_BYTES:
        raise ImageDecodeError(f"file is {st.st_size:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit",
                               kind="too_large")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ImageDecodeError(f"cannot read the file: {e.strerror or e}", kind="unreadable") from None
    if not data:
        raise ImageDecodeError("empty file (0 bytes)", kind="empty")
    if len(data) > MAX_FILE_BYTES:
        raise ImageDecodeError(f"file grew over the {MAX_FILE_BYTES:,}-byte limit while being read", kind="too_large")
    return data


def _target_for(size: Tuple[int, int], cfg: PreprocessConfig) -> Tuple[int, int]:
    """(width, height) the whole image is resized to before the centre crop (see :data:`GEOMETRIES`)."""
    w, h = size
    short, long_ = (w, h) if w <= h else (h, w)
    short = max(1, short)
    if cfg.geometry == "torchvision":
        new_short, new_long = cfg.resize_shorter, max(1, int(cfg.resize_shorter * long_ / short))
    else:  # "ceil-floor"
        scale = cfg.resize_shorter / short
        new_short, new_long = max(1, math.ceil(short * scale)), max(1, math.ceil(long_ * scale))
    return (new_short, new_long) if w <= h else (new_long, new_short)


def _crop_offset(resized: int, crop: int, geometry: str) -> int:
    if geometry == "torchvision":
        return int(round((resized - crop) / 2.0))
    return (resized - crop) // 2


def load_image(source: ImageInput, cfg: PreprocessConfig | None = None) -> Image.Image:
    """Decode ``source`` into an RGB :class:`PIL.Image.Image`, upright.

    Accepts a path, encoded bytes, a PIL image or an HxWx3 uint8 RGB (HxWx4 RGBA, or HxW grayscale)
    array. EXIF orientation is applied; every Pillow mode is converted to RGB (transparent areas are
    composited on white; 16-bit images are scaled to 8 bits); the first frame of animated or multi-page
    files is used (a PIL image is used at the frame it is on); images over :data:`MAX_IMAGE_PIXELS` are
    refused from their header, before their pixels are allocated; truncated files raise (unless the
    application has set Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES``, which this library leaves alone).
    With ``cfg`` and ``cfg.draft`` (off by default), large JPEGs are decoded at a reduced scale that still
    leaves at least the resolution ``cfg`` needs (faster, not pixel-identical: see :class:`PreprocessConfig`).

    Raises :class:`ImageDecodeError` (with ``.kind``) for anything wrong with the input itself, and
    :class:`TypeError` for an input of an unsupported Python type.
    """
    if isinstance(source, Image.Image):
        try:
            _check_size_nonzero(source)
            if getattr(source, "tile", None):  # opened lazily (Image.open) and not decoded yet: same limit as files
                _check_pixels(source.size, getattr(source, "format", None))
            return _to_rgb(_upright(source))
        except ImageDecodeError:
            raise
        except MemoryError:
            raise ImageDecodeError("not enough memory to convert this image", kind="too_large") from None
        except Exception as e:  # noqa: BLE001 - a lazily opened PIL image may still fail to decode
            raise _decode_failure(e, getattr(source, "format", None)) from None
    if isinstance(source, np.ndarray):
        return _array_to_image(source)
    if not isinstance(source, (bytes, bytearray, memoryview, str, os.PathLike)):
        raise TypeError(
            f"cannot read an image from {type(source).__name__}; pass a path, bytes, a PIL.Image.Image "
            "or an HxWx3 uint8 numpy array")

    data = _read_source(source)
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(f"image too large (decompression-bomb limit): {str(e).rstrip('.')}; refused "
                               "without decoding",
                               kind="too_large") from None
    except UnidentifiedImageError:
        kind, what = _sniff_format(data[:1024])
        lead = {"corrupt": "cannot read the image: it is", "unsupported_format": "unsupported image format: it is",
                "empty": "not an image: it is"}.get(kind, "not an image: it looks like")
        raise ImageDecodeError(f"{lead} {what}", kind=kind) from None
    except MemoryError:
        raise ImageDecodeError("not enough memory to open this image", kind="too_large") from None
    except Exception as e:  # noqa: BLE001 - plugins raise many exception types on hostile headers
        raise _decode_failure(e, None) from None
    fmt = img.format
    try:
        _check_pixels(img.size, fmt)
        target = _draft_target(img.size, cfg) if fmt in ("JPEG", "MPO") else None
        if target is not None:
            img.draft("RGB", target)
        img.load()
        _check_pixels(img.size, fmt)  # ICO/ICNS pick their frame size at load time
        return _to_rgb(_upright(img))
    except ImageDecodeError:
        raise
    except MemoryError:
        raise ImageDecodeError("not enough memory to decode this image", kind="too_large") from None
    except Exception as e:  # noqa: BLE001 - decoders raise OSError, ValueError, SyntaxError, EOFError, ...
        raise _decode_failure(e, fmt) from None


def _decode_failure(e: BaseException, fmt: Any) -> ImageDecodeError:
    msg = " ".join(str(e).split()) or type(e).__name__
    what = fmt or "image"
    if isinstance(e, Image.DecompressionBombError):
        return ImageDecodeError(f"image too large (decompression-bomb limit): {msg}", kind="too_large")
    low = msg.lower()
    if "truncated" in low or isinstance(e, EOFError) or "premature end" in low or "not enough data" in low:
        return ImageDecodeError(f"truncated {what} file: {msg}", kind="truncated")
    if "decoder" in low and "not available" in low:
        return ImageDecodeError(f"cannot decode this {what} file: {msg} (this Pillow lacks the codec)",
                                kind="unsupported_format")
    return ImageDecodeError(f"corrupt {what} data: {msg}", kind="corrupt")


def _check_size_nonzero(img: Image.Image) -> None:
    if img.size[0] < 1 or img.size[1] < 1:
        raise ImageDecodeError(f"the image has zero width or height ({img.size[0]}x{img.size[1]})", kind="empty")


def _orientation_transpose(img: Image.Image) -> Any:
    """The transpose that turns ``img`` upright by its EXIF orientation tag, or None (a broken EXIF block is
    ignored rather than losing the photo)."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - corrupt EXIF must not lose the photo
        orientation = 1
    return _ORIENTATION_TRANSPOSE.get(orientation) if isinstance(orientation, int) else None


def _draft_target(size: Tuple[int, int], cfg: PreprocessConfig | None) -> Tuple[int, int] | None:
    """The size a JPEG of ``size`` is draft-decoded to (``cfg.draft``: at least twice the resize target on both
    sides), or None when it is decoded at full scale."""
    if cfg is None or not cfg.draft:
        return None
    target = _target_for(size, cfg)
    return target if size[0] >= 2 * target[0] and size[1] >= 2 * target[1] else None


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag (a broken EXIF block is ignored rather than losing the photo)."""
    method = _orientation_transpose(img)
    if method is None:
        return img
    out = img.transpose(method)
    # transpose copies img.info, EXIF block included: drop it, or the upright image fed back in (predict on the
    # PIL image load_image returned) would be turned a second time
    out.info.pop("exif", None)
    return out


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(arr.min(initial=0.0)), float(arr.max(initial=1.0))
        if lo >= 0.0 and hi <= 1.0:
            arr = arr * 255.0
        elif not (lo >= 0.0 and hi <= 255.0):
            arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "La":  # premultiplied L + alpha: Pillow cannot convert it to RGBA directly
        img = img.convert("LA")
        mode = "LA"
    if mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _array_to_image(arr: np.ndarray) -> Image.Image:
    if arr.dtype != np.uint8:
        raise ImageDecodeError(f"numpy images must be uint8 (HxWx3 RGB or HxW grayscale), got dtype {arr.dtype}; "
                               "convert with arr.astype(np.uint8) after scaling to 0..255", kind="bad_array")
    if arr.ndim in (2, 3) and (arr.shape[0] < 1 or arr.shape[1] < 1):
        raise ImageDecodeError(f"numpy image has zero width or height (shape {arr.shape})", kind="empty")
    if arr.ndim in (2, 3) and arr.shape[0] * arr.shape[1] > MAX_IMAGE_PIXELS:
        raise ImageDecodeError(f"numpy image has {arr.shape[0] * arr.shape[1]:,} pixels, over the "
                               f"{MAX_IMAGE_PIXELS:,}-pixel limit", kind="too_large")
    if arr.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(arr), "L").convert("RGB")
    if arr.ndim == 3 and arr.shape[2] == 3:
        return Image.fromarray(np.ascontiguousarray(arr), "RGB")
    if arr.ndim == 3 and arr.shape[2] == 4:
        return _to_rgb(Image.fromarray(np.ascontiguousarray(arr), "RGBA"))
    if arr.ndim == 3 and arr.shape[2] == 1:
        return Image.fromarray(np.ascontiguousarray(arr[:, :, 0]), "L").convert("RGB")
    raise ImageDecodeError(f"numpy images must be HxWx3 (RGB), HxWx4 (RGBA) or HxW, got shape {arr.shape}",
                           kind="bad_array")


# ---- the eval transform ------------------------------------------------------------------------------

#: resize the whole image when the result is at most this many times the crop's pixels, else only the crop's box
_FULL_RESIZE_FACTOR = 16


def _layout(size: Tuple[int, int], cfg: PreprocessConfig) -> Tuple[int, int, int, int]:
    """(resized width, resized height, crop left, crop top) for an image of ``size``; never a crop larger than the
    resized image (an extreme-aspect image still yields the full crop)."""
    w, h = size
    if w < 1 or h < 1:
        raise ImageDecodeError(f"the image has zero width or height ({w}x{h})", kind="empty")
    out_h, out_w = cfg.input_size
    target_w, target_h = _target_for((w, h), cfg)
    target_w, target_h = max(target_w, out_w), max(target_h, out_h)
    return target_w, target_h, _crop_offset(target_w, out_w, cfg.geometry), _crop_offset(target_h, out_h, cfg.geometry)


def resize_and_crop(img: Image.Image, cfg: PreprocessConfig) -> Image.Image:
    """Resize the shorter side to ``cfg.resize_shorter`` and centre-crop ``cfg.input_size``.

    Always returns exactly ``input_size``. When the resized whole would be much larger than the crop (an
    extreme aspect ratio: a 1x100000 strip would become 36x3.6 million pixels), only the source region that
    ends up in the crop is resampled (``Image.resize(box=...)``): the same mapping, without the huge
    intermediate (pixel values may differ slightly from resize-then-crop through rounding).
    """
    out_h, out_w = cfg.input_size
    w, h = img.size
    target_w, target_h, left, top = _layout((w, h), cfg)
    if (target_w, target_h) == (w, h):
        if (left, top, out_w, out_h) == (0, 0, w, h):
            return img
        return img.crop((left, top, left + out_w, top + out_h))
    if cfg.resampler == "pillow" and target_w * target_h <= _FULL_RESIZE_FACTOR * out_w * out_h:
        img = img.resize((target_w, target_h), INTERPOLATIONS[cfg.interpolation])
        if (left, top, out_w, out_h) != (0, 0, target_w, target_h):
            img = img.crop((left, top, left + out_w, top + out_h))
        return img
    sx, sy = w / target_w, h / target_h
    box = (left * sx, top * sy, (left + out_w) * sx, (top + out_h) * sy)
    return img.resize((out_w, out_h), INTERPOLATIONS[cfg.interpolation], box=box)


def resize_and_crop_rgb(img: Union[Image.Image, np.ndarray], cfg: PreprocessConfig) -> np.ndarray:
    """:func:`resize_and_crop` as an HxWx3 uint8 array (the scoring loop's path); ``img`` is an RGB image or an
    upright HxWx3 uint8 array (:func:`wildlife_vision.fastjpeg.load_rgb`). With ``cfg.resampler == "opencv"`` the
    resize runs in ``cv2.resize`` (the model's interpolation: bilinear or bicubic; no antialiasing), on the whole
    photo, then the same centre crop; an extreme aspect ratio falls back to Pillow's region path."""
    if cfg.resampler != "opencv":
        if isinstance(img, np.ndarray):
            img = Image.fromarray(img, "RGB")
        return np.asarray(resize_and_crop(img, cfg), dtype=np.uint8)
    import cv2

    out_h, out_w = cfg.input_size
    w, h = (img.shape[1], img.shape[0]) if isinstance(img, np.ndarray) else img.size
    target_w, target_h, left, top = _layout((w, h), cfg)
    if target_w * target_h > _FULL_RESIZE_FACTOR * out_w * out_h:
        if isinstance(img, np.ndarray):
            img = Image.fromarray(img, "RGB")
        return np.asarray(resize_and_crop(img, dataclasses.replace(cfg, resampler="pillow-region")), dtype=np.uint8)
    src = img if isinstance(img, np.ndarray) else np.asarray(img, dtype=np.uint8)
    if (target_w, target_h) != (w, h):
        src = cv2.resize(src, (target_w, target_h), interpolation=_CV2_INTERPOLATION.get(cfg.interpolation,
                                                                                      cv2.INTER_LINEAR))
    return np.ascontiguousarray(src[top:top + out_h, left:left + out_w])


def crop_box(size: Tuple[int, int], cfg: PreprocessConfig) -> Tuple[float, float, float, float]:
    """The region ``(left, top, right, bottom)`` of an upright image of ``size`` (width, height) that
    :func:`resize_and_crop` turns into the model's input, in that image's pixel coordinates (fractional).

    What the model sees maps back onto the photo through this box: a heatmap over the input crop covers exactly
    this box of the photo, and nothing outside it was seen.
    """
    out_h, out_w = cfg.input_size
    w, h = size
    target_w, target_h = _target_for((w, h), cfg)
    target_w, target_h = max(target_w, out_w), max(target_h, out_h)
    left = _crop_offset(target_w, out_w, cfg.geometry)
    top = _crop_offset(target_h, out_h, cfg.geometry)
    sx, sy = w / target_w, h / target_h
    return (left * sx, top * sy, (left + out_w) * sx, (top + out_h) * sy)


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


def normalize_batch(crops: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """(N, H, W, 3) uint8 crops -> the (N, 3, H, W) float32 batch :func:`normalize` makes of each."""
    out = np.empty((crops.shape[0], 3, crops.shape[1], crops.shape[2]), dtype=np.float32)
    for i in range(crops.shape[0]):
        normalize(crops[i], cfg, out=out[i])
    return out


def preprocess(source: ImageInput, cfg: PreprocessConfig, out: np.ndarray | None = None) -> np.ndarray:
    """Decode ``source`` and return the model input for it: float32 array of shape (3, H, W)."""
    rgb = resize_and_crop_rgb(load_image(source, cfg), cfg)
    if rgb.shape != (cfg.input_size[0], cfg.input_size[1], 3):  # pragma: no cover - guarded above
        raise ImageDecodeError(f"internal error: preprocessed image has shape {rgb.shape}", kind="internal_error")
    return normalize(rgb, cfg, out=out)


def preprocess_batch(sources: Sequence[ImageInput], cfg: PreprocessConfig) -> np.ndarray:
    """Preprocess several inputs into one (N, 3, H, W) array; any failure raises for the whole call."""
    h, w = cfg.input_size
    batch = np.empty((len(sources), 3, h, w), dtype=np.float32)
    for i, s in enumerate(sources):
        preprocess(s, cfg, out=batch[i])
    return batch


__all__ = ["PreprocessConfig", "load_image", "resize_and_crop", "crop_box", "normalize", "normalize_batch", "preprocess", "preprocess_batch",
           "MAX_IMAGE_PIXELS", "MAX_FILE_BYTES", "INTERPOLATIONS", "ImageInput", "ImageDecodeError"]
