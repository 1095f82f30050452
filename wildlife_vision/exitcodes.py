"""The one exit-code table shared by every `wildlife-vision` command, and the missing-extra error.

| code | meaning |
|---|---|
| 0 | the command ran (``predict``: even if some inputs failed; their rows carry the error) |
| 1 | the command ran and failed: a gate failed, ``data check`` found leaks, training diverged, output unwritable |
| 2 | usage error: bad arguments, missing or malformed input files, an output that would be overwritten |
| 3 | an optional dependency group (extra) is not installed |
| 4 | the model cannot be loaded (missing, not ONNX, truncated, bad metadata) |
| 130 | interrupted (Ctrl-C) |
| 141 | the reader of standard output went away (``| head``) |
"""

from __future__ import annotations

import importlib

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_MISSING_EXTRA = 3
EXIT_MODEL = 4
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class MissingExtraError(RuntimeError):
    """Raised by a command that needs an optional dependency group that is not installed."""

    def __init__(self, extra: str, module: str):
        super().__init__(
            f"this command needs the '{extra}' extra (could not import {module}); install it with:\n"
            f"    pip install 'wildlife-vision[{extra}]'")
        self.extra = extra
        self.module = module


def require_extra(extra: str, *modules: str) -> None:
    """Import ``modules`` or raise :class:`MissingExtraError` naming ``extra``."""
    for mod in modules:
        try:
            importlib.import_module(mod)
        except ImportError:
            raise MissingExtraError(extra, mod) from None


__all__ = ["EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_MISSING_EXTRA", "EXIT_MODEL", "EXIT_INTERRUPTED",
           "EXIT_BROKEN_PIPE", "MissingExtraError", "require_extra"]
