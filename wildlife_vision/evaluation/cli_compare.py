"""`wildlife-vision compare`: several models on the same photos of one manifest split, with paired bootstrap
intervals for every difference, speeds measured in the same run, slices and (optionally) robustness.

Writes ``compare.json`` (``wildlife-vision/compare/v1``), ``compare.md`` and the plots into ``--output``
(:mod:`wildlife_vision.evaluation.compare`). Exit codes: 0 compared, 1 the output could not be written, 2 bad
input (arguments, manifest, split, column, no photo every model can read), 3 a missing extra (``[train]`` for a
run folder or checkpoint), 4 a model cannot be loaded. Imports nothing heavy until it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli_common import HelpFormatter, fail, wrap
from ..exitcodes import EXIT_FAILURE, EXIT_MODEL, EXIT_OK, require_extra

COMMAND = "compare"


def _manifest_message(e) -> str:
    report = getattr(e, "report", None)
    text = report.brief(max_errors=3) if report is not None else str(e)
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def format_summary(result) -> str:
    """What the command prints: per label each model's AP and each pair's difference, with intervals."""
    r = result
    lines = [f"{r['n_photos']} photos (split {r['split']}), {r['dropped']['n']} dropped; "
             f"{r['bootstrap']['resamples']} paired resamples of {r['bootstrap']['unit']}s"]
    for m in r["models"]:
        s = m["speed"]
        lines.append(f"  {m['id']}: macro AP " + ("n/a" if m["macro"]["ap"] is None else f"{m['macro']['ap']:.4f}")
                     + (f", {s['photos_per_s']:.1f} photos/s" if s.get("photos_per_s") else ""))
    for lab in r["labels"]:
        for m in r["models"]:
            c = m["labels"][lab]
            ci = c["ap_ci95"]
            lines.append(f"  {lab:<16} {m['id']:<28} AP " + ("n/a" if c["ap"] is None else f"{c['ap']:.4f}")
                         + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
        for p in r["pairs"]:
            d = p["labels"][lab]
            ci = d["ap_diff_ci95"]
            if d["ap_diff"] is None:
                continue
            lines.append(f"  {'':<16} {p['b_id']} - {p['a_id']}: {d['ap_diff']:+.4f}"
                         + (f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "")
                         + ("  no interval" if not ci else "  real (excludes 0)" if d["significant"]
                            else "  within noise"))
    mc = r["multiple_comparisons"]
    if mc["comparisons"] > 1:
        lines.append(f"  {mc['comparisons']} comparisons: {mc['significant']} exclude 0 "
                     f"(about {mc['expected_by_chance']:g} expected by chance), {mc['significant_holm']} after Holm")
    if r["interval_check"]["outside"]:
        lines.append(f"  note: {len(r['interval_check']['outside'])} interval(s) do not contain their estimate")
    return "\n".join(lines)


def run_compare(args: argparse.Namespace) -> int:
    if any(Path(m).is_dir() or Path(m).suffix == ".pt" for m in args.models):
        require_extra("train", "torch", "timm")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        return fail(COMMAND, f"--output {out} is a file; pass a folder")
    if not 0 <= args.at_precision <= 1:
        return fail(COMMAND, f"--at-precision must be in [0, 1] (0: none), got {args.at_precision}")
    from ..data.manifest import ManifestError
    from ..errors import ModelLoadError
    from .compare import compare_models

    robustness = None
    if args.robustness is not None:
        from .robustness import resolve_edits

        try:
            robustness = resolve_edits(args.robustness)
        except ValueError as e:
            return fail(COMMAND, f"--robustness: {e}")
    if len(args.models) == 1:
        print(f"wildlife-vision {COMMAND}: one model: its figures and speed, no pairs to compare",
              file=sys.stderr)
    try:
        result = compare_models(args.models, args.data, split=args.split, output_dir=out,
                                slice_by=args.slice_by or (), at_precision=args.at_precision or None,
                                resamples=args.resamples, seed=args.seed, limit=args.limit,
                                speed_photos=args.speed_photos, speed_rounds=args.speed_rounds,
                                robustness=robustness, batch_size=args.batch_size, workers=args.workers,
                                progress=not args.no_progress, plots=not args.no_plots)
    except ModelLoadError as e:
        return fail(COMMAND, str(e), EXIT_MODEL)
    except ManifestError as e:
        return fail(COMMAND, f"--data: {_manifest_message(e)}")
    except ValueError as e:
        return fail(COMMAND, str(e))
    except OSError as e:
        return fail(COMMAND, f"cannot write {e.filename or out}: {e.strerror or e}", EXIT_FAILURE)
    print(format_summary(result))
    if result.get("plots", {}).get("skipped"):
        print(f"plots skipped: {result['plots']['skipped']}", file=sys.stderr)
    print(f"comparison: {out / 'compare.md'}, {out / 'compare.json'}")
    return EXIT_OK


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _non_negative(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {v}")
    return v


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        COMMAND, help="compare models on the same photos, with paired intervals and speeds",
        description=wrap("Score every model once on the same photos of one manifest split (a photo any model "
                         "cannot read is dropped for all, and counted) and write compare.json, compare.md and "
                         "plots: per label each model's AP, and precision, recall and false-positive rate at its "
                         "own threshold, recall at a common precision, with 95% bootstrap intervals; for every "
                         "pair the differences with paired intervals (the same resampled photos, or groups when "
                         "the manifest has a group column, for both models) and whether they exclude 0; photos/s "
                         "of each model measured in this run on the same photos; optional slices by manifest "
                         "column and robustness to benign edits."),
        epilog="example:\n  wildlife-vision compare exported_models/wildtrade-lite0-v4.onnx "
               "exported_models/wildtrade-lite0-v4.int8.onnx \\\n      --data datasets/wildtrade-v2.csv "
               "--split test --slice-by source --output reports/compare-fp32-int8",
        formatter_class=HelpFormatter)
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="exported .onnx models (each at its own thresholds); a training RUN_DIR or .pt checkpoint "
                        "also works with the [train] extra (torch; not timed). Pairs are b - a in the order given")
    p.add_argument("--data", required=True, metavar="MANIFEST", help="manifest CSV or folder-per-label tree")
    p.add_argument("--split", default="test", help="manifest split (train, val, test), or 'all'")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="folder for compare.json, compare.md "
                                                                       "and the plots (created)")
    p.add_argument("--slice-by", action="append", default=None, metavar="COLUMN",
                   help="also compare per value of this manifest column (repeatable)")
    p.add_argument("--at-precision", type=float, default=0.95, metavar="P",
                   help="the common operating point: each model's recall where its precision reaches P (0: none)")
    p.add_argument("--resamples", type=_non_negative, default=1000, help="bootstrap resamples (0: no intervals)")
    p.add_argument("--seed", type=int, default=0, help="draws the resamples, the --limit sample and the edits")
    p.add_argument("--limit", type=_positive, default=None, metavar="N",
                   help="compare on a seeded random sample of N photos of the split (default: every photo)")
    p.add_argument("--speed-photos", type=_non_negative, default=200, metavar="N",
                   help="photos timed per model (0: no timing)")
    p.add_argument("--speed-rounds", type=_positive, default=3, metavar="R",
                   help="interleaved timing rounds; the median is reported")
    p.add_argument("--robustness", nargs="?", const="all", default=None, metavar="EDITS",
                   help="also measure p95 score change and flip rate under benign edits per model on the same "
                        "photos (comma-separated edit names, or all when given alone; slow: about 7x scoring)")
    p.add_argument("--batch-size", "-b", type=_positive, default=32, help="images per onnxruntime call")
    p.add_argument("--workers", "-j", type=_positive, default=2, help="decoding threads")
    p.add_argument("--no-plots", action="store_true", help="write no plots")
    p.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    p.set_defaults(func=run_compare)
