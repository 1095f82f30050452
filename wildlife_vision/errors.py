"""Exceptions raised by wildlife_vision. Each message says what went wrong and what to do about it."""

from __future__ import annotations


class WildlifeVisionError(Exception):
    """Base class for every error this package raises on purpose."""


class ModelLoadError(WildlifeVisionError):
    """A model file could not be used: missing, not ONNX, without or with invalid metadata."""


class MetadataError(ModelLoadError):
    """The model's embedded wildlife_vision metadata is missing, malformed or from a newer schema."""


class ImageDecodeError(WildlifeVisionError, ValueError):
    """One input could not be turned into an image (corrupt, truncated, too large, not an image)."""
