"""`wildlife-vision report`: the review page of a predictions file, one self-contained HTML file.

The page (:mod:`wildlife_vision.evaluation.review_page`) shows the flagged and review-band photos as a grid of
thumbnails (heatmap overlays where the rows name them), their scores against the thresholds, filters by label
and band, sorting and pages, and the rows that could not be scored. It loads nothing from the network.

Exit codes: 0 written, 1 the page could not be written, 2 bad input (arguments, a missing or unreadable
records file, a file that is not prediction records, an output that is not a page this command wrote and no
``--overwrite``), 4 the ``--model`` file cannot be read. Imports nothing heavy until it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli_common import HelpFormatter, fail, wrap
from ..exitcodes import EXIT_FAILURE, EXIT_MODEL, EXIT_OK

COMMAND = "report"


def _is_our_page(path: Path) -> bool:
    from .review_page import GENERATOR

    try:
        with open(path, "rb") as f:
            head = f.read(2048)
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR}">'.encode() in head


def _check_args(args: argparse.Namespace) -> str:
    records, output = Path(args.predictions), Path(args.output)
    if not records.exists():
        return f"{records}: no such file"
    if not records.is_file():
        return f"{records} is not a file; pass the JSONL (or CSV) file `wildlife-vision predict --output` wrote"
    if args.max_rows is not None and args.max_rows < 1:
        return f"--max-rows must be at least 1, got {args.max_rows}"
    if args.workers < 1:
        return f"--workers must be at least 1, got {args.workers}"
    if not 64 <= args.thumb_size <= 512:
        return f"--thumb-size must be between 64 and 512 pixels, got {args.thumb_size}"
    if args.root is not None and not Path(args.root).is_dir():
        return f"--root {args.root} is not a folder"
    if output.is_dir():
        return f"--output {output} is a folder; pass a file name such as review.html"
    if output.exists() and output.resolve() == records.resolve():
        return "--output names the predictions file itself"
    if output.exists() and not args.overwrite and not _is_our_page(output):
        return f"{output} exists and is not a review page written by this command; pass --overwrite to replace it"
    return ""


def run_report(args: argparse.Namespace) -> int:
    problem = _check_args(args)
    if problem:
        return fail(COMMAND, problem)
    from ..errors import ModelLoadError
    from .review_page import RecordsError, build_review_page

    try:
        text, summary = build_review_page(
            args.predictions, root=args.root, model=args.model, include_all=args.all, max_rows=args.max_rows,
            thumb_size=args.thumb_size, workers=args.workers, progress=not args.no_progress, title=args.title)
    except RecordsError as e:
        return fail(COMMAND, str(e))
    except ModelLoadError as e:  # MetadataError is one too
        return fail(COMMAND, f"--model: {e}", EXIT_MODEL)
    except OSError as e:
        return fail(COMMAND, f"cannot read {e.filename or args.predictions}: {e.strerror or e}")
    from ..data.manifest import atomic_write_text

    try:
        atomic_write_text(args.output, text)
    except OSError as e:
        return fail(COMMAND, f"cannot write {e.filename or args.output}: {e.strerror or e}", EXIT_FAILURE)
    for note in summary.notes:
        print(f"wildlife-vision {COMMAND}: note: {note}", file=sys.stderr)
    size = len(text.encode("utf-8"))
    print(f"{summary.n_records:,} rows, {summary.n_errors:,} could not be scored; {summary.n_shown:,} of "
          f"{summary.n_candidates:,} {'scored' if args.all else 'flagged or review-band'} photos in the page "
          f"({summary.n_images:,} distinct images, {summary.n_unreadable:,} shown as a placeholder, "
          f"{summary.n_heatmaps:,} heatmaps); thresholds: {summary.thresholds_source}")
    print(f"report: {args.output} ({size / 1e6:.1f} MB)")
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    from .review_page import DEFAULT_MAX_ROWS

    p = subparsers.add_parser(
        COMMAND, help="an offline HTML review page of a predictions file",
        description=wrap("Write one self-contained HTML page (images inlined, no network loads: a "
                         "Content-Security-Policy forbids them) of the photos `wildlife-vision predict` flagged or "
                         "put in a review band: a grid of thumbnails, heatmap overlays on hover or toggle where "
                         "the rows have them (`predict --explain`), each score against its threshold, filters by "
                         "label and band, sorting and pages; and a table of the rows that could not be scored. "
                         "Thresholds come from --model, or from the shipped default model when the rows name it."),
        epilog="example:\n  wildlife-vision predict photos/ --output preds.jsonl\n"
               "  wildlife-vision report preds.jsonl --output review.html",
        formatter_class=HelpFormatter)
    p.add_argument("predictions", metavar="PREDICTIONS.jsonl",
                   help="records written by `wildlife-vision predict --output` (JSONL, or CSV)")
    p.add_argument("--output", "-o", required=True, metavar="REVIEW.html", help="the page (written atomically)")
    p.add_argument("--model", "-m", default=None, metavar="MODEL.onnx",
                   help="show this model's thresholds and review bands (default: the shipped default model's, when "
                        "the rows name it)")
    p.add_argument("--root", default=None, metavar="DIR",
                   help="folder the rows' relative photo and heatmap paths are under (default: the current folder, "
                        "then the predictions file's folder)")
    p.add_argument("--all", action="store_true", help="also show photos neither flagged nor in a review band")
    p.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS, metavar="N",
                   help="at most N photos in the page, flagged first, then review band, highest scores first; "
                        "the page says when rows were left out")
    p.add_argument("--thumb-size", type=int, default=184, metavar="PX", help="longest side of the thumbnails")
    p.add_argument("--workers", "-j", type=int, default=2, help="decoding threads")
    p.add_argument("--title", default=None, help="the page title (default: 'Review: <file name>')")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --output even when it is not a review page this command wrote")
    p.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    p.set_defaults(func=run_report)
