"""The benchmark's one error type."""

from __future__ import annotations


class BenchmarkError(ValueError):
    """The benchmark cannot run as asked (a missing model or photo folder, no photos); the message says why.

    ``wildlife-vision benchmark`` prints it and exits with the usage-error code (2).
    """
