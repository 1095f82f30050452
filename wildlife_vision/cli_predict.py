"""`wildlife-vision predict`: score photos in bulk, one output row per input, and print a summary.

Behaviour (exit codes, output records, resume) is documented in docs/predict.md. This module may print;
the library modules it drives never do. Which files a run reads is :mod:`wildlife_vision.inputs`; its
progress output is :mod:`wildlife_vision.progress`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections import Counter
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from .exitcodes import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_MODEL, EXIT_OK, EXIT_USAGE
from .inputs import Inputs, expand_inputs


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "predict", help="score photos (files or folders); one output row per input",
        description="Score photos with a wildlife_vision model and write exactly one row per input, failures "
                    "included. Folders are read for image files (by extension); files named explicitly are always "
                    "read. Exit status 0 when the run completed even if some inputs failed, 2 for usage errors, "
                    "4 when the model cannot be loaded. See docs/predict.md.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders")
    p.add_argument("--model", "-m", metavar="MODEL.onnx", help="model file (default: the shipped default model)")
    p.add_argument("--recursive", "-r", action="store_true", help="descend into subfolders of folder PATHs")
    p.add_argument("--output", "-o", metavar="FILE",
                   help="output file, .jsonl (default format) or .csv; default: JSONL on stdout")
    p.add_argument("--format", choices=("jsonl", "csv"), help="output format (default: from --output's extension)")
    p.add_argument("--resume", action="store_true",
                   help="append to an existing --output, skipping inputs already in it")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per inference call (default 32)")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="onnxruntime intra-op threads (default 0: onnxruntime's choice)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="image decoding threads (default: min(4, CPU count))")
    p.add_argument("--draft", action=argparse.BooleanOptionalAction, default=None,
                   help="decode large JPEGs at a reduced DCT scale: faster on photos several times the model's "
                        "input size, but scores move by up to about 1e-2 (default: as the model file says; off "
                        "for models exported by this version)")
    p.add_argument("--providers", nargs="+", metavar="P",
                   help="execution providers in order of preference, e.g. `--providers cuda cpu` "
                        "(default: CUDA when available, else CPU)")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=True,
                      help="show progress on stderr (the default): a bar on a terminal, else a line every 10 s")
    prog.add_argument("--no-progress", dest="progress", action="store_false", help="no progress output")
    p.set_defaults(func=cmd_predict)


# ---- predict --------------------------------------------------------------------------------------------

def _err(msg: str) -> None:
    print(f"wildlife-vision predict: {msg}", file=sys.stderr)


def _load_model(path: Optional[str], providers: Optional[List[str]], threads: int, batch_size: int, cmd: str,
                draft: Optional[bool] = None):
    """Load the model, printing its warnings; returns (model, None) or (None, exit code)."""
    from .errors import ModelLoadError
    from .model import load_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = load_model(path, providers=providers, threads=threads or None, batch_size=batch_size,
                               draft=draft)
        except ModelLoadError as e:
            print(f"wildlife-vision {cmd}: cannot load the model: {e}", file=sys.stderr)
            return None, EXIT_MODEL
        except (ValueError, TypeError) as e:  # bad --providers, --threads, --batch-size
            print(f"wildlife-vision {cmd}: {e}", file=sys.stderr)
            return None, EXIT_USAGE
    for w in caught:
        print(f"wildlife-vision {cmd}: warning: {w.message}", file=sys.stderr)
    return model, None


def cmd_predict(args: argparse.Namespace) -> int:
    from .progress import Progress
    from .records import OutputFormatError, RecordEncoder, RecordWriter, format_for, read_existing

    # -- arguments ---------------------------------------------------------------------------------
    if args.batch_size < 1:
        _err(f"--batch-size must be at least 1, got {args.batch_size}")
        return EXIT_USAGE
    if args.threads < 0:
        _err(f"--threads must be 0 (automatic) or more, got {args.threads}")
        return EXIT_USAGE
    workers = args.workers if args.workers is not None else max(1, min(4, os.cpu_count() or 1))
    if workers < 1:
        _err(f"--workers must be at least 1, got {workers}")
        return EXIT_USAGE
    providers = [p for item in args.providers for p in item.split(",") if p] if args.providers else None
    output: Optional[str] = args.output
    fmt = args.format
    if output is not None and fmt is None:
        fmt = format_for(output)
        if fmt is None:
            _err(f"cannot tell the output format from {output!r}: name it .jsonl or .csv, or pass --format")
            return EXIT_USAGE
    fmt = fmt or "jsonl"
    if args.resume and args.overwrite:
        _err("--resume and --overwrite contradict each other; pick one")
        return EXIT_USAGE
    if (args.resume or args.overwrite) and output is None:
        _err("--resume and --overwrite need --output FILE")
        return EXIT_USAGE
    exists = output is not None and os.path.exists(output)
    if exists and os.path.isdir(output):
        _err(f"--output {output!r} is a folder; name a file")
        return EXIT_USAGE
    if exists and not (args.resume or args.overwrite) and os.path.getsize(output) > 0:
        _err(f"{output} already exists; pass --resume to skip the inputs already in it, or --overwrite to replace it")
        return EXIT_USAGE

    # -- model ---------------------------------------------------------------------------------------
    model, code = _load_model(args.model, providers, args.threads, args.batch_size, "predict", args.draft)
    if model is None:
        return code
    encoder = RecordEncoder(fmt, model.labels, model.name, model.version)

    # -- inputs and what is already done ------------------------------------------------------------------
    inputs = expand_inputs(args.paths, recursive=args.recursive)
    done: Set[str] = set()
    resumed_rows = 0
    need_header = fmt == "csv"
    if args.resume and exists:
        try:
            existing = read_existing(output, fmt, model.labels)
        except OutputFormatError as e:
            _err(str(e))
            return EXIT_USAGE
        except OSError as e:
            _err(f"cannot read {output} to resume it: {e.strerror or e}")
            return EXIT_FAILURE
        others = existing.models - {encoder.model_id()}
        if others:
            found = ", ".join(f"{n} {v}" for n, v in sorted(others))
            _err(f"{output} has rows from model(s) {found}, not {model.name} {model.version}; resuming would mix "
                 "results. Resume with the same --model, write to another --output, or pass --overwrite")
            return EXIT_USAGE
        done, resumed_rows = existing.done, existing.rows
        need_header = fmt == "csv" and not existing.has_header
        if existing.dropped_bytes:
            print(f"wildlife-vision predict: dropping an incomplete last line ({existing.dropped_bytes} bytes) "
                  f"left in {output} by an interrupted run", file=sys.stderr)
            try:
                os.truncate(output, existing.valid_bytes)
            except OSError as e:
                _err(f"cannot repair {output}: {e.strerror or e}")
                return EXIT_FAILURE
    todo = [p for p in inputs.paths if encoder.key(p) not in done]
    already = len(inputs.paths) - len(todo)

    # -- output ----------------------------------------------------------------------------------------
    try:
        if output is None:
            writer = RecordWriter(sys.stdout.buffer)
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0)
            if args.overwrite or not args.resume:
                flags |= os.O_TRUNC
            writer = RecordWriter(os.open(output, flags, 0o644))
        if need_header:
            writer.write_raw(encoder.header())
    except OSError as e:
        _err(f"cannot write {output}: {e.strerror or e}")
        return EXIT_FAILURE

    # -- run ---------------------------------------------------------------------------------------------
    progress = Progress(len(todo), "predict", unit="photo", enabled=args.progress is not False and bool(todo))
    stats = _Stats(model.labels)
    start = time.monotonic()
    status = EXIT_OK
    pending: List[bytes] = []

    def flush() -> None:
        if pending:
            writer.write_lines(pending)
            progress.update(len(pending))
            pending.clear()

    try:
        with warnings.catch_warnings():
            # Pillow warns about damaged files and near-limit canvases; each input's row already says what happened
            warnings.filterwarnings("ignore", module=r"PIL(\..*)?$")
            from PIL import Image as _Image

            warnings.filterwarnings("ignore", category=_Image.DecompressionBombWarning)
            for pred in _predictions(model, todo, inputs.problems, args.batch_size, workers):
                stats.add(pred)
                pending.append(encoder.encode(pred))
                if len(pending) >= args.batch_size:
                    flush()
            flush()
    except KeyboardInterrupt:
        try:
            flush()  # rows already computed are complete: keep them
        except OSError:
            pass
        status = EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout closed early, e.g. `| head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the interpreter's final flush
        except OSError:
            pass
        status = EXIT_FAILURE
    except OSError as e:
        progress.close()
        _err(f"cannot write {output or 'stdout'}: {e.strerror or e}; rows written so far are complete, rerun "
             "with --resume once fixed")
        return EXIT_FAILURE
    finally:
        try:
            writer.close()
        except OSError:
            pass
    progress.close()
    seconds = time.monotonic() - start
    if not getattr(args, "quiet", False) or status != EXIT_OK:
        _print_summary(stats, seconds, model, inputs, already, resumed_rows, output, status)
    return status


def _predictions(model: Any, todo: List[str], problems: Dict[str, Tuple[str, str]], batch_size: int,
                 workers: int) -> Iterator[Any]:
    """Predictions for ``todo`` in order; inputs known to be broken up front get their error without decoding."""
    from .model import Prediction

    if not problems:
        yield from model.predict_iter(todo, batch_size=batch_size, workers=workers, names=todo)
        return
    run: List[str] = []
    for path in todo:
        if path in problems:
            if run:
                yield from model.predict_iter(run, batch_size=batch_size, workers=workers, names=run)
                run = []
            msg, kind = problems[path]
            yield Prediction(input=path, error=msg, error_kind=kind)
        else:
            run.append(path)
    if run:
        yield from model.predict_iter(run, batch_size=batch_size, workers=workers, names=run)


class _Stats:
    def __init__(self, labels: Sequence[str]):
        self.labels = list(labels)
        self.scored = self.failed = self.any_flagged = self.any_review = 0
        self.flagged: Counter = Counter()
        self.review: Counter = Counter()
        self.errors: Counter = Counter()

    def add(self, pred: Any) -> None:
        if pred.error is not None:
            self.failed += 1
            self.errors[pred.error_kind or "error"] += 1
            return
        self.scored += 1
        self.flagged.update(pred.flagged)
        self.review.update(pred.review)
        self.any_flagged += bool(pred.flagged)
        self.any_review += bool(pred.review)


def _print_summary(stats: _Stats, seconds: float, model: Any, inputs: Inputs, already: int, resumed_rows: int,
                   output: Optional[str], status: int) -> None:
    total = stats.scored + stats.failed
    rate = total / seconds if seconds > 0 else 0.0

    def per_label(c: Counter) -> str:
        return ", ".join(f"{lab} {c.get(lab, 0)}" for lab in stats.labels)

    lines = [f"{'interrupted after' if status == EXIT_INTERRUPTED else 'done:'} {total} inputs: {stats.scored} "
             f"scored, {stats.failed} failed, in {seconds:.1f} s ({rate:.1f} photos/s) on {model.provider} "
             f"with {model.name} {model.version}",
             f"  flagged: {per_label(stats.flagged)} ({stats.any_flagged} photos with a flag)",
             f"  review:  {per_label(stats.review)} ({stats.any_review} photos to review)"]
    if stats.errors:
        lines.append("  failed:  " + ", ".join(f"{k} {n}" for k, n in sorted(stats.errors.items())))
    skipped = []
    if already:
        skipped.append(f"{already} already in {output} (--resume)")
    if inputs.duplicates:
        skipped.append(f"{inputs.duplicates} duplicate paths")
    if inputs.skipped_non_images:
        skipped.append(f"{inputs.skipped_non_images} non-image files in folders")
    if inputs.skipped_subfolders:
        skipped.append(f"{inputs.skipped_subfolders} subfolders (use --recursive)")
    if inputs.skipped_loops:
        skipped.append(f"{inputs.skipped_loops} folders reached twice through symlinks")
    if skipped:
        lines.append("  skipped: " + "; ".join(skipped))
    if output is not None:
        lines.append(f"  output:  {output} ({resumed_rows + total} rows)")
    if status == EXIT_INTERRUPTED and output is not None:
        lines.append("  rerun the same command with --resume to finish")
    print("\n".join(lines), file=sys.stderr)
