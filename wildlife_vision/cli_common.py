"""Helpers shared by the command plugins: the help formatter and the one way to report a failed command."""

from __future__ import annotations

import argparse
import sys
import textwrap

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
