"""`wildlife-vision robustness`: how far an exported model's scores and flags move under benign seller edits
(mirror, small crops and shifts, JPEG re-encoding, rescaling, a text overlay) on one manifest split.

Writes the schema-versioned JSON (``wildlife-vision/robustness/v1``, :mod:`wildlife_vision.evaluation.robustness`)
and optionally a Markdown table. Exit codes: 0 measured (``--check``: and every edit and label meets the
targets), 1 ``--check`` and a target missed, or an output could not be written, 2 bad input (arguments,
manifest, split, no readable photo), 4 the model cannot be loaded. Imports nothing heavy until it runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..cli_common import HelpFormatter, fail, wrap
from ..exitcodes import EXIT_FAILURE, EXIT_MODEL, EXIT_OK

COMMAND = "robustness"


def _manifest_message(e) -> str:
    """A manifest error in one line."""
    report = getattr(e, "report", None)
    text = report.brief(max_errors=1) if report is not None else str(e)
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _check_args(args: argparse.Namespace) -> str:
    for flag, value, low in (("--limit", args.limit, 1), ("--batch-size", args.batch_size, 1),
                             ("--workers", args.workers, 1), ("--resamples", args.resamples, 100)):
        if value is not None and value < low:
            return f"{flag} must be at least {low}, got {value}"
    for flag, path in (("--output", args.output), ("--markdown", args.markdown)):
        if path is not None and Path(path).is_dir():
            return f"{flag} {path} is a folder; pass a file name"
    if args.markdown is not None and Path(args.markdown).resolve() == Path(args.output).resolve():
        return "--markdown and --output name the same file"
    return ""


def run_robustness(args: argparse.Namespace) -> int:
    problem = _check_args(args)
    if problem:
        return fail(COMMAND, problem)
    from ..data.manifest import ManifestError, atomic_write_text, read_manifest, targets_for
    from ..errors import ModelLoadError
    from ..model import load_model
    from .evaluate import group_ids, select_split
    from .robustness import measure_robustness, resolve_edits, to_markdown

    try:
        edits = resolve_edits(args.edits)
    except ValueError as e:
        return fail(COMMAND, f"--edits: {e}")
    try:
        model = load_model(args.model, batch_size=args.batch_size)
    except ModelLoadError as e:
        return fail(COMMAND, str(e), EXIT_MODEL)
    try:
        manifest = read_manifest(args.data, labels=model.labels, check_images=False, for_training=False)
    except ManifestError as e:
        return fail(COMMAND, f"--data: {_manifest_message(e)}")
    try:
        samples = select_split(manifest.samples, args.split)
    except ValueError as e:
        return fail(COMMAND, str(e))
    n_split = len(samples)
    if args.limit is not None and args.limit < n_split:
        import numpy as np

        # a seeded sample of the split (in manifest order), not its first rows: manifests are often sorted by source
        keep = np.sort(np.random.default_rng(args.seed).choice(n_split, size=args.limit, replace=False))
        samples = [samples[int(i)] for i in keep]
    groups = group_ids(samples)
    info = {"model": str(args.model), "model_name": model.name, "model_version": model.version,
            "manifest": str(args.data), "manifest_sha256": manifest.sha256, "split": args.split,
            "split_size": n_split, "limit": args.limit}
    try:
        result = measure_robustness(model, [s.path for s in samples], edits=edits, seed=args.seed,
                                    batch_size=args.batch_size, workers=args.workers, resamples=args.resamples,
                                    progress=not args.no_progress, groups=groups, info=info,
                                    targets=targets_for(samples, model.labels))
    except ValueError as e:
        return fail(COMMAND, str(e))
    by_path = {str(s.path): s.image for s in samples}
    for f in result["failures"]:  # as the manifest names them
        f["image"] = by_path.get(f["image"], f["image"])
    try:
        atomic_write_text(args.output, json.dumps(result, indent=2, allow_nan=False) + "\n")
        if args.markdown:
            atomic_write_text(args.markdown, to_markdown(result))
    except OSError as e:
        return fail(COMMAND, f"cannot write {e.filename or args.output}: {e.strerror or e}", EXIT_FAILURE)
    print(format_summary(result))
    print(f"robustness: {args.output}" + (f", {args.markdown}" if args.markdown else ""))
    missed = [(name, lab) for name, e in result["edits"].items() for lab, m in e["per_class"].items()
              if not m["meets_target"]]
    return EXIT_FAILURE if args.check and missed else EXIT_OK


def format_summary(result) -> str:
    """What the command prints: one line per edit and label."""
    lines = [f"{result['n_images']} photos (split {result.get('split', '?')}), {result['n_failed']} unreadable; "
             f"targets p95 |change| <= {result['targets']['p95_abs_change']}, flip rate <= "
             f"{100 * result['targets']['flip_rate']:.1f}%"]
    for name, e in result["edits"].items():
        for lab, m in e["per_class"].items():
            ci = m["ci95"]
            p95 = f"{m['p95_abs_change']:.4f}" + (f" [{ci['p95_abs_change'][0]:.4f}, {ci['p95_abs_change'][1]:.4f}]"
                                                 if ci.get("p95_abs_change") else "")
            fr = ci.get("flip_rate")
            rate = f"{100 * m['flip_rate']:.2f}%" + (f" [{100 * fr[0]:.2f}, {100 * fr[1]:.2f}]" if fr else "")
            cal = m.get("p95_abs_change_calibrated")
            lines.append(f"  {name:<10} {lab:<14} p95 |change| {p95}  flips {m['flips']}/{m['n']} = {rate}  "
                         f"{'pass' if m['meets_target'] else 'FAIL'}"
                         + (f"  (at calibrated scores {cal:.4f})" if cal is not None else ""))
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        COMMAND, help="how far scores and flags move under benign seller edits",
        description=wrap("Score each photo of a manifest split and edited versions of it (mirror, 1-4 px crops "
                         "and shifts, JPEG re-encoding at quality 60-90, rescaling by 0.8-1.25, a small "
                         "semi-transparent text overlay) with an exported model, at its own thresholds, and write "
                         "per edit and label the median, 95th percentile and largest |score change|, the flag flip "
                         "rate and review-band changes, with 95% bootstrap intervals. Targets: p95 |change| <= 0.04 "
                         "and flip rate <= 0.7%."),
        epilog="example:\n  wildlife-vision robustness model.onnx --data manifest.csv --split val --limit 400 "
               "--output robustness.json --markdown robustness.md",
        formatter_class=HelpFormatter)
    p.add_argument("model", metavar="MODEL.onnx", help="model exported by `wildlife-vision export`")
    p.add_argument("--data", required=True, metavar="MANIFEST", help="manifest CSV or folder-per-label tree")
    p.add_argument("--split", default="test", help="manifest split to measure (train, val, test), or 'all'")
    p.add_argument("--edits", default=None, metavar="EDIT,...",
                   help="comma-separated edits: mirror, crop, translate, jpeg, resize, overlay (default: all)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="measure a seeded random sample of N photos of the split (default: every photo)")
    p.add_argument("--seed", type=int, default=0, help="draws the edit parameters, the --limit sample and the "
                                                       "bootstrap resamples")
    p.add_argument("--batch-size", "-b", type=int, default=32, help="images per onnxruntime call")
    p.add_argument("--workers", "-j", type=int, default=1, help="decoding and editing threads")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per interval")
    p.add_argument("--output", "-o", required=True, metavar="ROBUSTNESS.json",
                   help="the JSON result (written atomically)")
    p.add_argument("--markdown", default=None, metavar="OUT.md", help="also write the Markdown table here")
    p.add_argument("--check", action="store_true", help="exit 1 when an edit and label misses a target")
    p.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    p.set_defaults(func=run_robustness)
