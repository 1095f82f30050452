"""`wildlife-vision predict`: score photos in bulk, one output row per input, and print a summary.

Behaviour (exit codes, output records, resume) is documented in docs/predict.md. This module may print;
the library modules it drives never do. Which files a run reads is :mod:`wildlife_vision.inputs`; its
progress output is :mod:`wildlife_vision.progress`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from collections import Counter
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from .exitcodes import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_MODEL, EXIT_OK, EXIT_USAGE
from .cli_common import add_profile_options
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
    add_profile_options(p)
    p.add_argument("--explain", metavar="DIR",
                   help="write a heatmap overlay (JPEG, the photo with where the model found the label) into DIR for "
                        "each flagged or review-band label of each row, and add their paths to the records "
                        "('heatmaps'); needs a model with the heatmap output (see docs/heatmaps.md)")
    eng = p.add_argument_group("engines and sharding", "see docs/batch.md")
    eng.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="local (default): this process; ray: Ray Data actors on a local Ray instance or a cluster, "
                          "writing numbered JSONL part files into --output DIR/ (needs the [ray] extra)")
    eng.add_argument("--shard", metavar="I/N",
                     help="score only shard I of N (I is 0-based: 0 <= I < N), a fixed split by a hash of each "
                          "input's path, for job arrays (Slurm, Kubernetes indexed jobs); every shard writes its "
                          "own --output, and together they hold every input once")
    eng.add_argument("--ray-address", metavar="ADDR",
                     help="Ray cluster to run on (default: $RAY_ADDRESS, else a new local instance with this "
                          "machine's CPUs)")
    eng.add_argument("--ray-actors", type=int, metavar="N",
                     help="number of actors, one model each (default: the cluster's CPUs divided by "
                          "--ray-cpus-per-actor, or its GPUs divided by --ray-gpus-per-actor)")
    eng.add_argument("--ray-cpus-per-actor", type=float, metavar="C",
                     help="CPUs reserved per actor, also its onnxruntime and decoding threads (default 1)")
    eng.add_argument("--ray-gpus-per-actor", type=float, metavar="G",
                     help="GPUs per actor, e.g. 1 or 0.5, with --providers cuda (default 0)")
    eng.add_argument("--rows-per-part", type=int, metavar="N",
                     help="inputs per part file, the unit that --resume skips or redoes (default 1000; "
                          "fixed for a job)")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=True,
                      help="show progress on stderr (the default): a bar on a terminal, else a line every 10 s")
    prog.add_argument("--no-progress", dest="progress", action="store_false", help="no progress output")
    p.set_defaults(func=cmd_predict)


# ---- predict --------------------------------------------------------------------------------------------

def _err(msg: str) -> None:
    print(f"wildlife-vision predict: {msg}", file=sys.stderr)


def _bad_sizes(args: argparse.Namespace) -> bool:
    """Say so and return True when --batch-size or --threads is out of range (both engines)."""
    if args.batch_size < 1:
        _err(f"--batch-size must be at least 1, got {args.batch_size}")
        return True
    if args.threads < 0:
        _err(f"--threads must be 0 (automatic) or more, got {args.threads}")
        return True
    return False


def _load_model(path: Optional[str], providers: Optional[List[str]], threads: int, batch_size: int, cmd: str,
                draft: Optional[bool] = None, runtime: Optional[str] = None, precision: Optional[str] = None):
    """Load the model, printing its warnings; returns (model, None) or (None, exit code)."""
    from .errors import ModelLoadError
    from .model import load_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = load_model(path, providers=providers, threads=threads or None, batch_size=batch_size,
                               draft=draft, runtime=runtime, precision=precision)
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
    shard = None
    if getattr(args, "shard", None) is not None:
        from .batch.shard import parse_shard

        try:
            shard = parse_shard(args.shard)
        except ValueError as e:
            _err(str(e))
            return EXIT_USAGE
    explain_dir: Optional[str] = getattr(args, "explain", None)
    if getattr(args, "engine", "local") == "ray":
        if explain_dir:
            _err("--explain works with the local engine only (use --shard I/N to split a job with heatmaps)")
            return EXIT_USAGE
        return _cmd_predict_ray(args, shard)
    ray_only = [f for f, v in (("--ray-address", "ray_address"), ("--ray-actors", "ray_actors"),
                               ("--ray-cpus-per-actor", "ray_cpus_per_actor"),
                               ("--ray-gpus-per-actor", "ray_gpus_per_actor"), ("--rows-per-part", "rows_per_part"))
                if getattr(args, v, None) is not None]
    if ray_only:
        _err(f"{', '.join(ray_only)} only apply to --engine ray")
        return EXIT_USAGE
    if _bad_sizes(args):
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
    model, code = _load_model(args.model, providers, args.threads, args.batch_size, "predict", args.draft,
                              args.runtime, args.precision)
    if model is None:
        return code
    if explain_dir and not model.has_heatmaps:
        _err(f"--explain: {model.path} has no heatmap output (it was exported before heatmaps); add it with "
             "`wildlife-vision heatmaps MODEL.onnx --output NEW.onnx` or re-export the model")
        return EXIT_MODEL
    if explain_dir and os.path.exists(explain_dir) and not os.path.isdir(explain_dir):
        _err(f"--explain {explain_dir!r} is a file; name a folder")
        return EXIT_USAGE
    encoder = RecordEncoder(fmt, model.labels, model.name, model.version, heatmaps=bool(explain_dir),
                            profile=model.profile)

    # -- inputs and what is already done ------------------------------------------------------------------
    inputs = expand_inputs(args.paths, recursive=args.recursive)
    listed = len(inputs.paths)
    if shard is not None:
        inputs.paths = shard.select(inputs.paths)
    done: Set[str] = set()
    resumed_rows = 0
    need_header = fmt == "csv"
    if args.resume and exists:
        try:
            existing = read_existing(output, fmt, model.labels, heatmaps=bool(explain_dir))
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
        if existing.profiles - {model.profile}:
            _err(f"{output} has rows scored by profile(s) {', '.join(sorted(existing.profiles))}, not "
                 f"{model.profile}; their flags came from other thresholds, so resuming would mix decisions. Resume "
                 "with the same --precision/--runtime, write to another --output, or pass --overwrite")
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
            for pred, ex in _predictions(model, todo, inputs.problems, args.batch_size, workers, explain_dir):
                stats.add(pred)
                heat = None
                if ex is not None and pred.ok and (pred.flagged or pred.review):
                    from .explain import write_overlays

                    heat = write_overlays(ex, explain_dir, [*pred.flagged, *pred.review])
                pending.append(encoder.encode(pred, heat))
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
        notes = [f"shard:   {shard}: {len(inputs.paths)} of {listed} inputs"] if shard is not None else []
        _print_summary(stats, seconds, model, inputs, already, resumed_rows, output, status, notes=notes)
    return status


# ---- predict --engine ray ----------------------------------------------------------------------------------

def _ray_settings(args: argparse.Namespace, providers: Optional[List[str]]):
    """RaySettings from the flags, or an error message."""
    from .batch.ray_engine import RaySettings

    cpus = 1.0 if args.ray_cpus_per_actor is None else args.ray_cpus_per_actor
    gpus = 0.0 if args.ray_gpus_per_actor is None else args.ray_gpus_per_actor
    if not cpus > 0:
        return None, f"--ray-cpus-per-actor must be more than 0, got {args.ray_cpus_per_actor}"
    if not gpus >= 0:
        return None, f"--ray-gpus-per-actor must be 0 or more, got {args.ray_gpus_per_actor}"
    if args.ray_actors is not None and args.ray_actors < 1:
        return None, f"--ray-actors must be at least 1, got {args.ray_actors}"
    if args.rows_per_part is not None and args.rows_per_part < 1:
        return None, f"--rows-per-part must be at least 1, got {args.rows_per_part}"
    if args.workers is not None and args.workers < 1:
        return None, f"--workers must be at least 1, got {args.workers}"
    return RaySettings(address=args.ray_address, actors=args.ray_actors, cpus_per_actor=cpus, gpus_per_actor=gpus,
                       batch_size=args.batch_size, threads=args.threads or None, workers=args.workers,
                       providers=providers, draft=args.draft), None


def _ray_inputs(args: argparse.Namespace) -> Inputs:
    """Local PATHs through :func:`expand_inputs`, URIs (s3://...) through pyarrow's filesystems."""
    from .batch.uris import expand_uris, is_uri

    local = [a for a in args.paths if not is_uri(a)]
    inputs = expand_inputs(local, recursive=args.recursive)
    uris = [a for a in args.paths if is_uri(a)]
    if uris:
        found, non_images, subfolders = expand_uris(uris, recursive=args.recursive)
        seen = set(inputs.paths)
        for key in found:
            if key in seen:
                inputs.duplicates += 1
            else:
                seen.add(key)
                inputs.paths.append(key)
        inputs.skipped_non_images += non_images
        inputs.skipped_subfolders += subfolders
    return inputs


def _cmd_predict_ray(args: argparse.Namespace, shard: Any) -> int:
    """`predict --engine ray --output DIR/`: the job folder, Ray, the part files and the summary."""
    import json

    from .batch.job import FolderLock, Job, JobError, prepare, write_part
    from .batch.ray_engine import RayRun, RaySession, default_actors, require_ray
    from .model import PROVIDER_ALIASES, Prediction
    from .progress import Progress

    # -- arguments ---------------------------------------------------------------------------------
    if _bad_sizes(args):
        return EXIT_USAGE
    if args.output is None:
        _err("--engine ray needs --output DIR/: it writes numbered JSONL part files into that folder")
        return EXIT_USAGE
    if (args.format or "jsonl") != "jsonl":
        _err("--engine ray writes JSONL part files; --format csv is for the local engine")
        return EXIT_USAGE
    if args.resume and args.overwrite:
        _err("--resume and --overwrite contradict each other; pick one")
        return EXIT_USAGE
    providers = [p for item in args.providers for p in item.split(",") if p] if args.providers else None
    known = set(PROVIDER_ALIASES) | set(PROVIDER_ALIASES.values()) | {"auto", "CPUExecutionProvider"}
    unknown = [p for p in providers or [] if p not in known and p.lower() not in known]
    if unknown:
        _err(f"unknown execution provider(s) {unknown}; short names: {', '.join(sorted(PROVIDER_ALIASES))}")
        return EXIT_USAGE
    settings, problem = _ray_settings(args, providers)
    if settings is None:
        _err(problem)
        return EXIT_USAGE
    folder = args.output
    if os.path.exists(folder) and not os.path.isdir(folder):
        _err(f"--output {folder!r} is a file; --engine ray writes a folder of part files: name a folder")
        return EXIT_USAGE
    require_ray()

    # -- model (checked here, on CPU, before Ray starts; the actors load their own copy) --------------------
    model, code = _load_model(args.model, ["cpu"], 1, args.batch_size, "predict", args.draft, args.runtime,
                              args.precision)
    if model is None:
        return code
    try:
        model_bytes = model.path.read_bytes()
    except OSError as e:
        _err(f"cannot read the model file {model.path}: {e.strerror or e}")
        return EXIT_MODEL

    # -- inputs and the job folder -------------------------------------------------------------------------
    try:
        inputs = _ray_inputs(args)
    except (OSError, ValueError) as e:
        _err(f"cannot list the inputs: {e}")
        return EXIT_USAGE
    listed = len(inputs.paths)
    keys = shard.select(inputs.paths) if shard is not None else inputs.paths
    job = Job(keys, model.name, model.version, rows_per_part=args.rows_per_part or 1000,
              shard=None if shard is None else str(shard))
    stats = _Stats(model.labels)
    status = EXIT_OK
    try:
        with FolderLock(folder):
            plan = prepare(folder, job, resume=args.resume, overwrite=args.overwrite,
                           rows_per_part_given=args.rows_per_part is not None)
            if plan.stale_temps:
                _err(f"removed {plan.stale_temps} temporary files left in {folder} by an interrupted run")
            todo_rows = len(job.keys) - plan.done_rows
            progress = Progress(todo_rows, "predict", unit="photo", enabled=False)
            start = time.monotonic()
            session = RaySession(settings.address)
            actors = written = 0
            run = None
            try:
                if plan.todo:
                    with session:
                        actors = settings.actors or default_actors(settings, session.resources())
                        start = time.monotonic()
                        progress = Progress(todo_rows, "predict", unit="photo", enabled=args.progress is not False)
                        run = RayRun(plan, model_bytes, settings, problems=inputs.problems, actors=actors)
                        actors = run.actors
                        for b, lines in run.blocks(on_rows=progress.update):
                            write_part(plan, b, lines)
                            written += 1
                            for line in lines:
                                rec = json.loads(line)
                                stats.add(Prediction(input=rec["input"], scores=rec["scores"],
                                                     flagged=tuple(rec["flagged"]), review=tuple(rec["review"]),
                                                     error=rec["error"], error_kind=rec["error_kind"]))
            except KeyboardInterrupt:
                status = EXIT_INTERRUPTED
            except OSError as e:
                progress.close()
                _err(f"cannot write {folder}: {e.strerror or e}; the part files written so far are complete, rerun "
                     "with --resume once fixed")
                return EXIT_FAILURE
            except Exception as e:  # noqa: BLE001 - a Ray failure (lost node, actor that cannot start)
                progress.close()
                logging.getLogger("wildlife_vision.cli").debug("the Ray job failed", exc_info=True)  # -vv
                msg = str(e).strip().splitlines()
                _err(f"the Ray job failed ({type(e).__name__}: {msg[-1] if msg else ''}); the {written} part files "
                     "written in this run are complete, rerun with --resume to finish")
                return EXIT_FAILURE
            progress.close()
            seconds = time.monotonic() - start
    except JobError as e:
        _err(str(e))
        return EXIT_USAGE
    except OSError as e:
        _err(f"cannot use the output folder {folder}: {e.strerror or e}")
        return EXIT_FAILURE

    if not getattr(args, "quiet", False) or status != EXIT_OK:
        address = settings.address or os.environ.get("RAY_ADDRESS")
        where = (f"the cluster at {address}" if session.started and address else
                 "a local instance" if session.started else "the Ray instance this process already runs")
        gpus = f", {settings.gpus_per_actor:g} GPU" if settings.gpus_per_actor else ""
        notes = [f"shard:   {shard}: {len(job.keys)} of {listed} inputs"] if shard is not None else []
        if plan.todo:
            notes.append(f"ray:     {actors} actors x {settings.cpus_per_actor:g} CPU{gpus} on {where}, connected in "
                         f"{session.seconds:.1f} s; {written} of {len(plan.todo)} parts to do written")
        done_parts = len(plan.done) + written
        run_provider = ", ".join(sorted(run.providers)) if run is not None and run.providers else None
        _print_summary(stats, seconds, model, inputs, plan.done_rows, plan.done_rows, folder, status,
                       provider=run_provider or "Ray", notes=notes,
                       output_line=f"{folder} ({plan.done_rows + stats.scored + stats.failed} rows in {done_parts} "
                                   f"of {job.n_parts} part files)")
    return status


def _predictions(model: Any, todo: List[str], problems: Dict[str, Tuple[str, str]], batch_size: int,
                 workers: int, explain: Optional[str] = None) -> Iterator[Tuple[Any, Any]]:
    """(prediction, explanation or None) for ``todo`` in order; inputs known to be broken up front get their error
    without decoding. With ``explain``, scores and heatmaps come from one pass (``Model.explain_iter``)."""
    from .explain import OVERLAY_SIDE
    from .model import Prediction

    def score(run: List[str]) -> Iterator[Tuple[Any, Any]]:
        if explain:
            for ex in model.explain_iter(run, batch_size=batch_size, workers=workers, names=run,
                                         keep_photo=OVERLAY_SIDE):
                yield ex.prediction, ex
        else:
            for pred in model.predict_iter(run, batch_size=batch_size, workers=workers, names=run):
                yield pred, None

    if not problems:
        yield from score(todo)
        return
    run: List[str] = []
    for path in todo:
        if path in problems:
            if run:
                yield from score(run)
                run = []
            msg, kind = problems[path]
            yield Prediction(input=path, error=msg, error_kind=kind), None
        else:
            run.append(path)
    if run:
        yield from score(run)


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
                   output: Optional[str], status: int, provider: Optional[str] = None,
                   output_line: Optional[str] = None, notes: Sequence[str] = ()) -> None:
    """The summary on stderr (docs/predict.md); --engine ray passes its actors' ``provider``, its own
    ``output_line`` and ``notes`` (shard, Ray) printed before the output line."""
    total = stats.scored + stats.failed
    rate = total / seconds if seconds > 0 else 0.0

    def per_label(c: Counter) -> str:
        return ", ".join(f"{lab} {c.get(lab, 0)}" for lab in stats.labels)

    lines = [f"{'interrupted after' if status == EXIT_INTERRUPTED else 'done:'} {total} inputs: {stats.scored} "
             f"scored, {stats.failed} failed, in {seconds:.1f} s ({rate:.1f} photos/s) on {provider or model.provider} "
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
    lines.extend(f"  {note}" for note in notes)
    if output_line is not None:
        lines.append(f"  output:  {output_line}")
    elif output is not None:
        lines.append(f"  output:  {output} ({resumed_rows + total} rows)")
    if status == EXIT_INTERRUPTED and output is not None:
        lines.append("  rerun the same command with --resume to finish")
    print("\n".join(lines), file=sys.stderr)
