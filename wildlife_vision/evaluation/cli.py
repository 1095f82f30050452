"""`wildlife-vision evaluate`: score one manifest split with a model and write the report folder (torch-free
for ONNX models; a training run folder or checkpoint is scored by the trainer's checkpoint scorer)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli_common import HelpFormatter, add_profile_options, fail, wrap
from ..exitcodes import EXIT_MODEL, EXIT_OK, EXIT_USAGE, require_extra


#: the base rate whose precision and load `evaluate` prints (the report has 1/100, 1/1,000 and 1/10,000)
SUMMARY_PREVALENCE = 0.001


def _ci(m, key: str) -> str:
    ci = (m.get("ci95") or {}).get(key)
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def format_summary(report, split: str) -> str:
    """What `evaluate` prints: per label only the figures that the sample defines, with their intervals."""
    macro = report["macro"]["ap"]
    lines = [f"{report['n_images']} images ({split}); macro AP "
             + ("n/a (no label has positives in this sample)" if macro is None else f"{macro:.4f}")
             + " at the model's thresholds"]
    for lab, r in report["per_class"].items():
        negatives = r.get("negatives", r["fp"] + r["tn"])
        text = f"  {lab:<16} "
        if r["support"]:
            text += (f"AP {r['ap']:.4f}{_ci(r, 'ap')}  precision {r['precision']:.3f}{_ci(r, 'precision')}  "
                     f"recall {r['recall']:.3f}{_ci(r, 'recall')}  positives {r['support']}")
        else:
            text += "no positives in this sample"
        if negatives:
            text += (f"; false-positive rate {r['fp'] / negatives:.4f}{_ci(r, 'fpr')} ({r['fp']} of "
                     f"{negatives} negatives)")
        lines.append(text)
        for e in r.get("base_rates", []):
            if e["prevalence"] != SUMMARY_PREVALENCE:
                continue
            p = e["precision"]
            ci = e.get("precision_ci95")
            lines.append(f"  {'':<16} at 1 in {round(1 / e['prevalence']):,} listings: precision "
                         + ("n/a" if p is None else f"{p:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
                         + f"; {e['text']}")
    for src, g in (report.get("negative_sources") or {}).items():
        rates = ", ".join(f"{lab} {c['flag_rate']:.4f}" + (f" [{c['ci95']['flag_rate'][0]:.4f}, "
                                                          f"{c['ci95']['flag_rate'][1]:.4f}]"
                                                          if c["ci95"]["flag_rate"] else "")
                          for lab, c in g["per_class"].items())
        lines.append(f"  source {src!r} ({g['n_images']} photos, no positives): flag rate {rates}")
    return "\n".join(lines)


def run_evaluate(args: argparse.Namespace) -> int:
    model = Path(args.model)
    if model.is_dir() or model.suffix == ".pt":
        require_extra("train", "torch", "timm")
    require_extra("eval", "matplotlib")
    from ..data.manifest import ManifestError
    from ..errors import ModelLoadError
    from .evaluate import evaluate_model

    try:
        report = evaluate_model(model, Path(args.data), Path(args.output), split=args.split,
                                slice_by=args.slice_by, batch_size=args.batch_size, workers=args.workers,
                                robustness=args.robustness.split(",") if args.robustness else None,
                                faithfulness=args.faithfulness, runtime=args.runtime, precision=args.precision)
    except ManifestError as e:
        print(str(e), file=sys.stderr)
        return EXIT_USAGE
    except ModelLoadError as e:
        return fail("evaluate", str(e), EXIT_MODEL)
    except (ValueError, FileNotFoundError) as e:
        return fail("evaluate", str(e))
    print(format_summary(report, args.split))
    print(f"report: {Path(args.output) / 'report.md'}")
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="evaluate an exported model on a manifest split",
        description=wrap("Score one split of a manifest with an exported ONNX model (the same decoding and "
                    "preprocessing as `wildlife_vision.load_model`) and write report.json, report.md, "
                    "pr_curves.png, confusion.png and reliability.png: per-label precision, recall, F1 at the "
                    "model's thresholds, average precision, ROC-AUC, support, review rate, calibration error (ECE), "
                    "precision and flags per million listings at base rates 1/100, 1/1,000 and 1/10,000, macro and "
                    "micro averages, the same by manifest column (e.g. source), and flag rates of sources without "
                    "positives; every figure with a 95% bootstrap interval."),
        epilog="example:\n  wildlife-vision evaluate --model model.onnx --data manifest.csv --split val "
               "--output reports/val",
        formatter_class=HelpFormatter)
    p.add_argument("--model", required=True, metavar="MODEL.onnx",
                   help="model exported by `wildlife-vision export` (scored exactly as wildlife_vision.load_model "
                        "does, at its own thresholds); a training RUN_DIR or .pt checkpoint also works (torch, "
                        "thresholds from the run's calibration.json)")
    p.add_argument("--data", required=True, metavar="MANIFEST", help="manifest CSV or folder-per-label tree")
    p.add_argument("--split", default="val", help="manifest split to evaluate (train, val, test), or 'all'")
    p.add_argument("--output", "-o", required=True, metavar="REPORT_DIR", help="folder for the report (created)")
    p.add_argument("--slice-by", action="append", default=None, metavar="COLUMN",
                   help="also report metrics per value of this manifest column (repeatable); default: every extra "
                        "column with 2-20 distinct values")
    p.add_argument("--batch-size", "-b", type=int, default=32, help="images per onnxruntime call")
    p.add_argument("--workers", "-j", type=int, default=2, help="decoding threads")
    add_profile_options(p)
    p.add_argument("--robustness", nargs="?", const="all", default=None, metavar="EDITS",
                   help="also measure how scores and flags move under a seller's benign edits on the same photos "
                        "(comma-separated edit names, or all when given alone: mirror, crop, translate, jpeg, "
                        "resize, overlay; see `wildlife-vision robustness`); stored as the report's robustness "
                        "block, which the model card shows. About 7x the scoring time")
    p.add_argument("--faithfulness", action="store_true",
                   help="also test the heatmaps (models with a heatmap output): on each flagged photo, hide the "
                        "hottest quarter of the model's view and random quarters, and compare the score drops; "
                        "stored as the report's faithfulness block, which the model card shows")
    p.set_defaults(func=run_evaluate)
