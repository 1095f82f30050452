"""`wildlife-vision calibrate`: set a model's thresholds and review bands on a labelled sample, for a target
precision (optionally at a stated base rate), optionally turning its scores into calibrated probabilities, and
write a new self-describing ONNX file (torch-free; see docs/calibrate.md).

The new file is the input graph byte for byte with new metadata: thresholds, review bands and a ``calibration``
block saying how they were chosen and what they achieve, with 95% bootstrap intervals.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..cli_common import HelpFormatter, fail, fraction_arg, wrap
from ..exitcodes import EXIT_FAILURE, EXIT_MODEL, EXIT_OK, EXIT_USAGE

def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "calibrate", help="set thresholds for a target precision on a labelled sample; write a new model file",
        description=wrap(
            "Score one split of a labelled manifest with an exported ONNX model (exactly as load_model does), "
            "choose per label the lowest threshold whose precision reaches --target-precision (at the base rate "
            "--prevalence when given: precision = pi*recall / (pi*recall + (1-pi)*FPR)) and a review band below "
            "it reaching --review-recall, optionally fit a score calibration (--probability), and write a new "
            "ONNX file: the same graph with the new thresholds, review bands and a 'calibration' block (data "
            "hash, counts, achieved precision, recall and false-positive rate with 95% bootstrap intervals). "
            "Exit 1, writing nothing, when a label cannot reach the target."),
        epilog="examples:\n"
               "  wildlife-vision calibrate model.onnx --data manifest.csv --split val --target-precision 0.95 "
               "--output model.cal.onnx\n"
               "  wildlife-vision calibrate model.onnx --data manifest.csv --target-precision 0.9 --prevalence "
               "0.001 --probability temperature --output model.cal.onnx",
        formatter_class=HelpFormatter)
    p.add_argument("model", metavar="MODEL.onnx", help="model exported by `wildlife-vision export` (or calibrated)")
    p.add_argument("--data", metavar="MANIFEST", help="labelled manifest CSV or folder-per-label tree (required, except "
                                                    "with --profile int8 --twin)")
    p.add_argument("--split", default="val", help="manifest split to calibrate on (train, val, test), or 'all'")
    p.add_argument("--target-precision", type=fraction_arg("--target-precision"), metavar="P",
                   help="precision each label's flags must reach, e.g. 0.95")
    p.add_argument("--prevalence", type=fraction_arg("--prevalence", high_open=True), default=None, metavar="PI",
                   help="reach the target at this base rate (share of positive listings, e.g. 0.001) instead of "
                        "at the sample's own share of positives")
    p.add_argument("--review-recall", type=fraction_arg("--review-recall"), default=0.95, metavar="R",
                   help="flags plus the review band below the threshold reach this recall")
    p.add_argument("--probability", choices=("none", "temperature", "isotonic"), default="none",
                   help="fit a per-label map making the scores calibrated probabilities (stored in the file and "
                        "applied by load_model; thresholds are then on the calibrated scores); 'none' keeps the "
                        "model's scores (and a map from an earlier calibrate)")
    p.add_argument("--output", "-o", required=True, metavar="NEW.onnx", help="the calibrated model file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--batch-size", "-b", type=int, default=32, help="images per onnxruntime call")
    p.add_argument("--workers", "-j", type=int, default=2, help="decoding threads")
    p.add_argument("--profile", metavar="NAME",
                   help="calibrate another execution profile instead (bf16: OpenVINO bf16): its own thresholds on "
                        "its own scores, gated against fp32 (recall within 0.03 at matched precision); the file's "
                        "fp32 operating point is kept")
    p.add_argument("--draft", action="store_true", help="with --profile: the profile decodes JPEGs in draft mode")
    p.add_argument("--fast-preprocess", choices=("region", "opencv", "opencv-bilinear"), default=None,
                   help="with --profile: a faster resize for the profile, its thresholds set on it: region (Pillow "
                        "resamples only what lands in the crop), opencv (cv2.resize, the model's interpolation, no "
                        "antialiasing; needs opencv-python-headless), opencv-bilinear")
    p.add_argument("--set-version", metavar="V", help="model_version of the new file (default: unchanged)")
    p.add_argument("--twin", metavar="MODEL.int8.onnx",
                   help="with --profile int8: the INT8 twin from `export --int8` (beside MODEL) to link as the int8 "
                        "profile (its own thresholds and gate)")
    p.add_argument("--keep-failing", action="store_true",
                   help="with --profile: write a profile that fails its gate, marked as failing (exit 1 still)")
    p.set_defaults(func=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    import hashlib
    import json

    from .. import load_model
    from ..data.manifest import ManifestError, atomic_write_bytes, read_manifest
    from ..errors import ModelLoadError
    from ..metadata import METADATA_KEY, scan_onnx, write_metadata_bytes

    model_path, output = Path(args.model), Path(args.output)
    if args.resamples < 0:
        return fail("calibrate", f"--resamples must be 0 or more, got {args.resamples}")
    if output.is_dir():
        return fail("calibrate", f"--output {output} is a folder; give the new model's file name")
    if output.exists() and not args.overwrite:
        return fail("calibrate", f"{output} already exists; pass --overwrite to replace it")
    if not (args.profile == "int8" and args.twin) and (not args.data or args.target_precision is None):
        return fail("calibrate", "--data and --target-precision are required")
    if args.profile:
        if args.probability != "none":
            return fail("calibrate", "--probability does not apply to --profile")
        from .profile_calibrate import run_profile_calibration

        return run_profile_calibration(args)
    try:
        model = load_model(model_path, batch_size=max(1, args.batch_size))
        data = model_path.read_bytes()
        raw_meta = json.loads(scan_onnx(data, str(model_path))[METADATA_KEY])
    except ModelLoadError as e:
        return fail("calibrate", str(e), EXIT_MODEL)
    except OSError as e:
        return fail("calibrate", f"cannot read {model_path}: {e.strerror or e}", EXIT_MODEL)
    try:
        manifest = read_manifest(args.data, labels=model.labels, check_images=False, for_training=False)
    except ManifestError as e:
        print(str(e), file=sys.stderr)
        return EXIT_USAGE
    from .evaluate import group_ids, score_onnx, select_split

    try:
        samples = select_split(manifest.samples, args.split)
    except ValueError as e:
        return fail("calibrate", str(e))
    previous_maps = dict((model.metadata.calibration or {}).get("score_calibration") or {})
    if args.probability != "none":
        model.score_maps = {}  # fit on the network's own scores; an earlier map is replaced
    scores, kept, failures = score_onnx(model, samples, batch_size=max(1, args.batch_size),
                                        workers=max(1, args.workers))
    if not kept:
        return fail("calibrate", f"none of the {len(samples)} image(s) in split '{args.split}' could be read")
    from ..data.manifest import targets_for
    from .calibrate import operating_points

    y = targets_for(kept, model.labels)
    groups = group_ids(kept)
    quiet = logging.getLogger("wildlife_vision.evaluation.calibrate")  # its warnings are in result["messages"]
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        result = operating_points(y, scores, model.labels, args.target_precision, prevalence=args.prevalence,
                                  review_recall=args.review_recall, probability=args.probability,
                                  split=args.split,
                                  resamples=args.resamples, groups=groups, previous_maps=previous_maps)
    finally:
        quiet.setLevel(level)
    for line in result["messages"]:
        print(line, file=sys.stderr)
    print(format_summary(result, len(failures)))
    if result["unmet"]:
        return fail("calibrate", "no threshold reaches precision " f"{args.target_precision:g}"
                    + (f" at prevalence {args.prevalence:g}" if args.prevalence else " on this sample")
                    + f" for {', '.join(result['unmet'])}; nothing written. Lower --target-precision, or calibrate "
                      "on more (or better separated) photos", EXIT_FAILURE)
    block = result["calibration"]
    block.update({"manifest": str(args.data), "manifest_sha256": manifest.sha256,
                  "skipped_images": len(failures),
                  "source_model": str(model_path), "source_model_sha256": hashlib.sha256(data).hexdigest(),
                  "source_thresholds": dict(model.thresholds),
                  "source_review_bands": {k: list(v) for k, v in model.review_bands.items()}})
    new_meta = {**raw_meta, "thresholds": result["thresholds"],
                "review_bands": {k: list(v) for k, v in result["review_bands"].items()}, "calibration": block,
                "metrics": _metrics_at_new_thresholds(block, args.split, len(kept))}
    if args.set_version:
        new_meta["model_version"] = args.set_version
    if raw_meta.get("metrics"):  # measured at the old thresholds: kept, named as such
        new_meta["metrics_before_calibration"] = raw_meta["metrics"]
    try:
        new_bytes = write_metadata_bytes(data, new_meta, str(model_path))
        atomic_write_bytes(output, new_bytes)
    except OSError as e:
        return fail("calibrate", f"cannot write {output}: {e.strerror or e}", EXIT_FAILURE)
    problem = _check_written(output, result, kept, args.batch_size)
    if problem:
        return fail("calibrate", f"{output} was written but does not load back as calibrated: {problem}",
                    EXIT_FAILURE)
    print(f"wrote {output} ({len(new_bytes):,} bytes; sha256 {hashlib.sha256(new_bytes).hexdigest()[:16]}...); "
          f"see it with `wildlife-vision info {output}`")
    return EXIT_OK


def _metrics_at_new_thresholds(block: Dict[str, Any], split: str, n: int) -> Dict[str, Any]:
    """The file's ``metrics`` after recalibration: what the new thresholds achieve on the calibration sample (which
    chose them, so these figures are optimistic; measure on other photos with `evaluate`)."""
    per_class = {}
    for lab, c in (block.get("per_label") or {}).items():
        at = c.get("at_sample") or {}
        per_class[lab] = {"precision": at.get("precision"), "recall": at.get("recall"),
                          "ci95": {"precision": at.get("precision_ci95"), "recall": at.get("recall_ci95")}}
    return {"split": split, "n_images": n, "source": "wildlife-vision calibrate",
            "note": "on the calibration sample that set these thresholds (optimistic); the file's earlier metrics, "
                    "at its earlier thresholds, are in metrics_before_calibration",
            "per_class": per_class}


def _check_written(path: Path, result: Dict[str, Any], kept: List[Any], batch_size: int) -> Optional[str]:
    """Load the new file as a platform would and score a few of the photos: the thresholds must be the new ones
    and the scores the calibrated ones the thresholds were chosen on."""
    import numpy as np

    from .. import load_model
    from ..errors import ModelLoadError

    try:
        m = load_model(path, batch_size=max(1, batch_size))
    except ModelLoadError as e:
        return str(e)
    if m.thresholds != result["thresholds"]:
        return f"thresholds {m.thresholds} differ from {result['thresholds']}"
    few = min(8, len(kept))
    preds = m.predict([s.path for s in kept[:few]])
    got = np.array([[p.scores[lab] for lab in m.labels] for p in preds], dtype=np.float32)
    want = np.asarray(result["scores"][:few], dtype=np.float32)
    if got.shape != want.shape or not np.allclose(got, want, rtol=0, atol=1e-6):
        return "its scores differ from the calibrated scores the thresholds were chosen on"
    return None


def _ci(ci: Optional[List[float]]) -> str:
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def _num(v: Optional[float], ci: Optional[List[float]] = None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}{_ci(ci)}"


def format_summary(result: Dict[str, Any], skipped: int = 0) -> str:
    """What `calibrate` prints: per label the threshold, review band and what they achieve, with intervals."""
    cal = result["calibration"]
    prevalence = cal.get("target_prevalence")
    lines = [f"{cal['n_images']} photos ({cal['split']})" + (f", {skipped} unreadable skipped" if skipped else "")
             + f"; target precision {cal['target_precision']:g}"
             + (f" at prevalence {prevalence:g}" if prevalence else " on this sample")
             + f"; review band to recall {cal['review_recall']:g}"
             + ("" if cal["probability"] == "none" else f"; scores: {cal['probability']} calibration")]
    for lab, m in cal["per_label"].items():
        low, thr = result["review_bands"][lab]
        lines.append(f"  {lab}: threshold {thr:.4f}, review band " + (f"[{low:.4f}, {thr:.4f})" if thr > low else "-")
                     + f"; {m['positives']} positives, {m['negatives']} negatives (sample prevalence "
                     f"{_num(m['sample_prevalence'])})")
        a = m.get("at_sample")
        if a:
            lines.append(f"    on the sample: precision {_num(a['precision'], a['precision_ci95'])}, recall "
                         f"{_num(a['recall'], a['recall_ci95'])}, false-positive rate "
                         f"{_num(a['fpr'], a['fpr_ci95'], 4)}, review rate {_num(m['review_rate'])}, ECE "
                         f"{_num(m['ece'])}" + (f" (before: {_num(m['ece_before'])})" if "ece_before" in m else ""))
        p = m.get("at_prevalence")
        if p:
            lines.append(f"    at prevalence {p['prevalence']:g}: precision {_num(p['precision'], p['precision_ci95'])}"
                         f"; {p['text']}" + (f"; {p['note']}" if p.get("note") else ""))
    return "\n".join(lines)
