"""Exceptions raised by wildlife_vision. Each message says what went wrong and what to do about it."""

from __future__ import annotations

from typing import Optional


class WildlifeVisionError(Exception):
    """Base class for every error this package raises on purpose."""


class ModelLoadError(WildlifeVisionError):
    """A model file could not be used: missing, not ONNX, truncated, or inconsistent with its metadata."""


class MetadataError(ModelLoadError):
    """The model's embedded wildlife_vision metadata is missing, malformed or from a newer schema."""


class EmbeddingUnavailable(ModelLoadError):
    """The model has no ``embedding`` output, so :meth:`wildlife_vision.Model.embed` cannot be used with it."""


#: Stable, machine-readable categories of per-input failures (``ImageDecodeError.kind`` and the
#: ``error_kind`` field of prediction records). Documented in docs/predict.md.
ERROR_KINDS = (
    "not_found",           # the path does not exist (or is a dangling symlink)
    "unreadable",          # exists but cannot be read: permissions, I/O error, symlink loop, not a regular file
    "empty",               # zero bytes, or an image with zero width or height
    "too_large",           # over the byte limit or the decompression-bomb pixel limit
    "not_an_image",        # text, HTML, PDF, archives, unknown binary data
    "unsupported_format",  # an image format this Pillow cannot decode (HEIC, JPEG XL, SVG, ...)
    "truncated",           # the file ends before the image data does
    "corrupt",             # the image data is damaged
    "bad_array",           # a numpy input with the wrong dtype or shape
    "unsupported_type",    # an input of a Python type the library does not accept (streaming API only)
    "inference_failed",    # onnxruntime failed on this input
    "internal_error",      # a bug: please report it with the input that caused it
)


class ImageDecodeError(WildlifeVisionError, ValueError):
    """One input could not be turned into an image (corrupt, truncated, too large, not an image).

    ``kind`` is one of :data:`ERROR_KINDS`, for grouping and routing failures without parsing messages.
    """

    def __init__(self, message: str, kind: Optional[str] = "corrupt"):
        super().__init__(message)
        self.kind = kind if kind in ERROR_KINDS else "corrupt"
