"""`wildlife-vision` command line: predict, info, train, evaluate, export, benchmark, data.

Each group of subcommands lives beside the code it drives and registers itself here through a
``register(subparsers)`` function. Modules that need the ``train`` extra import torch only inside
their command functions, so ``--help`` always works and a missing extra is reported as such.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import List, Optional

from ._version import __version__

#: modules that add subcommands; each has ``register(subparsers)``
COMMAND_MODULES = (
    "wildlife_vision.cli_predict",   # predict, info
    "training.cli",                  # train, evaluate, export
    "training.benchmark",            # benchmark
    "training.model_card",           # model-card
    "training.curation.cli",         # data dedup|split|check|stats|labelstudio-import|labelstudio-export
)

EXIT_OK = 0
EXIT_FAILURE = 1       # the command ran and failed (e.g. training diverged, validation found errors)
EXIT_USAGE = 2         # bad arguments (argparse's own convention)
EXIT_MISSING_EXTRA = 3 # an optional dependency group is not installed


class MissingExtraError(RuntimeError):
    """Raised by a command that needs an optional dependency group that is not installed."""

    def __init__(self, extra: str, module: str):
        super().__init__(
            f"this command needs the '{extra}' extra (could not import {module}); install it with:\n"
            f"    pip install 'wildlife-vision[{extra}]'")


def require_extra(extra: str, *modules: str) -> None:
    """Import ``modules`` or raise :class:`MissingExtraError` naming ``extra``."""
    for mod in modules:
        try:
            importlib.import_module(mod)
        except ImportError:
            raise MissingExtraError(extra, mod) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wildlife-vision",
        description="Find illegal wildlife products (ivory, rhino horn, pangolin scales, tiger parts, live wild "
                    "animals) in marketplace listing photos.",
        epilog="Run `wildlife-vision COMMAND --help` for the flags of each command.",
    )
    parser.add_argument("--version", action="version", version=f"wildlife-vision {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue  # that command group is not part of this installation
            raise
        module.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except MissingExtraError as e:
        print(f"wildlife-vision {args.command}: {e}", file=sys.stderr)
        return EXIT_MISSING_EXTRA
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`wildlife-vision info | head`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
