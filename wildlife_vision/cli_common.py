"""Helpers shared by the command plugins: the help formatter and the one way to report a failed command."""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Any, List

from .exitcodes import EXIT_USAGE


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks; appends a flag's default only when there is one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text.lower() or not action.option_strings or action.default is None
                or action.default is False or action.default is argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


def wrap(text: str) -> str:
    return textwrap.fill(" ".join(text.split()), width=100)


def fail(command: str, message: str, code: int = EXIT_USAGE) -> int:
    """Print ``wildlife-vision COMMAND: message`` on stderr and return ``code`` (default: usage error, 2)."""
    print(f"wildlife-vision {command}: {message}", file=sys.stderr)
    return code


def entry_points_in(group: str) -> List[Any]:
    """The installed entry points of ``group``, once per name (an editable and a regular install of the same
    distribution may both list one)."""
    from importlib.metadata import entry_points

    try:
        eps = entry_points(group=group)
    except TypeError:  # Python < 3.10
        eps = entry_points().get(group, [])  # type: ignore[attr-defined]
    seen = {}
    for ep in eps:
        seen.setdefault(ep.name, ep)
    return list(seen.values())


def fraction_arg(name: str, low_open: bool = True, high_open: bool = False):
    """An argparse ``type`` for a number in (0, 1] (``low_open``/``high_open`` choose the open ends)."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        ok = (v > 0.0 if low_open else v >= 0.0) and (v < 1.0 if high_open else v <= 1.0)
        if not ok:
            raise argparse.ArgumentTypeError(
                f"{name} must be in {'(' if low_open else '['}0, 1{')' if high_open else ']'}, got {text}")
        return v
    return parse


def add_profile_options(p: argparse.ArgumentParser) -> None:
    """--runtime and --precision: the execution profile (see wildlife_vision.profiles and docs/benchmark.md)."""
    p.add_argument("--runtime", choices=("auto", "onnxruntime", "openvino"), default=None,
                   help="inference runtime (default: onnxruntime; openvino needs the [openvino] extra)")
    p.add_argument("--precision", choices=("auto", "fp32", "int8", "bf16"), default=None,
                   help="execution profile, each with its own calibrated thresholds (default: the model file's own, "
                        "fp32 for an exported model: exact on every CPU); auto: the fastest profile this CPU "
                        "supports natively that was calibrated and passed its gate")

