"""`wildlife-vision` command line.

Commands are plugins: each group registers itself under the entry-point group ``wildlife_vision.commands``
(``pyproject.toml``) with a ``register(subparsers)`` function. The runtime knows only that group's name,
never the trainer's modules, so a user's own ``training/`` package cannot hide a command, and a broken or
missing plugin costs only its own commands (with a warning), never the others. Modules that need an extra
import it inside their command functions, so ``--help`` never imports torch and a missing extra is
reported as such.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, List, Optional, Tuple

from ._version import __version__
from .cli_common import entry_points_in
from .exitcodes import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_MISSING_EXTRA, EXIT_USAGE, MissingExtraError

#: the entry-point group that command plugins register under
COMMAND_GROUP = "wildlife_vision.commands"

log = logging.getLogger("wildlife_vision.cli")


def command_plugins() -> List[Tuple[str, Callable]]:
    """(name, register function) for every installed command plugin, in a stable order.

    A plugin that fails to import is reported on stderr and left out; the rest still work.
    """
    seen = {ep.name: ep for ep in entry_points_in(COMMAND_GROUP)}
    out: List[Tuple[str, Callable]] = []
    for name in sorted(seen, key=lambda n: (n != "predict", n)):
        try:
            out.append((name, seen[name].load()))
        except Exception as e:  # noqa: BLE001 - one broken plugin must not take every command down
            print(f"wildlife-vision: the '{name}' commands are unavailable: plugin {seen[name].value} failed to "
                  f"load ({type(e).__name__}: {e})", file=sys.stderr)
    return out


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
    plugins = command_plugins()
    if not plugins:
        parser.epilog = ("No commands are installed: wildlife-vision's entry points are missing. Install the "
                         "package (`pip install wildlife-vision`, or `pip install -e .` in a checkout).")
    for _, register in plugins:
        register(sub)
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
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`wildlife-vision info | head`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
