"""`wildlife-vision adapt MODEL --data MANIFEST --output NEW.onnx`: add (or refit) labels on a model's frozen
embeddings and write one new self-describing ONNX file that scores old and new labels in one pass (see
docs/adapt.md). Torch-free: the core install plus the ``[adapt]`` extra (onnx, scikit-learn).

Steps: embed the manifest's train and val rows (:meth:`wildlife_vision.Model.embed_iter`, with a progress bar),
fit one head per label on train (:mod:`.heads`), choose thresholds and review bands on val with the rules of
`wildlife-vision calibrate` (:func:`~wildlife_vision.evaluation.calibrate.operating_points`), measure val metrics
with 95% intervals (:func:`~wildlife_vision.evaluation.evaluate.build_report`), rewrite the graph (:mod:`.graph`)
and the metadata (:func:`~wildlife_vision.metadata.write_metadata_bytes`), then load the new file back and check
that the parent's labels score exactly as before and the new ones as fitted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..cli_common import HelpFormatter, fail, fraction_arg, wrap
from ..exitcodes import EXIT_FAILURE, EXIT_MISSING_EXTRA, EXIT_MODEL, EXIT_OK, EXIT_USAGE, MissingExtraError

#: scores of the parent's labels in the adapted file may differ from the parent's by at most this
OLD_SCORE_TOLERANCE = 1e-6
#: new labels' scores from the file against the fitted heads' scores computed in numpy
NEW_SCORE_TOLERANCE = 1e-5


def _label_list(text: str) -> List[str]:
    return [t.strip() for t in text.replace(";", ",").split(",") if t.strip()]


def _cs(text: str) -> List[float]:
    try:
        values = [float(t) for t in _label_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--C must be comma-separated positive numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"--C must be comma-separated positive numbers, got {text!r}")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    from .heads import DEFAULT_CS, DEFAULT_FOLDS

    p = subparsers.add_parser(
        "adapt", help="add or refit labels on a model's frozen embeddings (no torch); write a new model file",
        description=wrap(
            "Fit a logistic-regression head per label on the model's frozen 'embedding' output for the manifest's "
            "train rows (features standardised and folded into the head; C chosen by seeded k-fold cross-validation "
            "on train), set its threshold and review band on the val rows exactly as `wildlife-vision calibrate` "
            "does, and write one new self-describing ONNX file scoring the parent's labels (unchanged) and the new "
            "ones in one pass. New labels are appended; a label the model already has is refused unless named "
            "with --refit, which replaces its head. Needs the [adapt] extra (onnx, scikit-learn); no torch."),
        epilog="examples:\n"
               "  wildlife-vision adapt model.onnx --data birds.csv --labels bird --output model+bird.onnx\n"
               "  wildlife-vision adapt model.onnx --data datasets/wildtrade-v2.csv --refit ivory --output m.onnx",
        formatter_class=HelpFormatter)
    p.add_argument("model", metavar="MODEL.onnx", help="parent model exported by `wildlife-vision export`")
    p.add_argument("--data", required=True, metavar="MANIFEST",
                   help="labelled manifest (CSV or folder tree) with train and val rows")
    p.add_argument("--output", "-o", required=True, metavar="NEW.onnx", help="the adapted model file to write")
    p.add_argument("--labels", type=_label_list, default=None, metavar="A,B",
                   help="new labels to add (default: the manifest's labels the model does not have)")
    p.add_argument("--refit", action="append", default=[], metavar="LABEL",
                   help="refit this existing label's head on the manifest (repeatable); its column is replaced")
    p.add_argument("--target-precision", type=fraction_arg("--target-precision"), default=0.95, metavar="P",
                   help="precision each new label's flags must reach on val")
    p.add_argument("--prevalence", type=fraction_arg("--prevalence", high_open=True), default=None, metavar="PI",
                   help="reach the target at this base rate instead of the val sample's own")
    p.add_argument("--review-recall", type=fraction_arg("--review-recall"), default=0.95, metavar="R",
                   help="flags plus the review band reach this val recall")
    p.add_argument("--C", dest="cs", type=_cs, default=list(DEFAULT_CS), metavar="C1,C2",
                   help="inverse L2 strengths tried by cross-validation (on standardised features); "
                        f"default {','.join(f'{c:g}' for c in DEFAULT_CS)}")
    p.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help="cross-validation folds on train")
    p.add_argument("--balanced", action=argparse.BooleanOptionalAction, default=True,
                   help="weight positives and negatives equally in the fit (class imbalance)")
    p.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds")
    p.add_argument("--name", default=None, help="the new model's name (default: the parent's)")
    p.add_argument("--model-version", default=None,
                   help="the new model's version (default: PARENT_VERSION+adapt.<manifest sha256 prefix>)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--batch-size", "-b", type=int, default=32, help="images per onnxruntime call")
    p.add_argument("--workers", "-j", type=int, default=2, help="decoding threads")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress output")
    p.set_defaults(func=run_adapt)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run `adapt` alone (``python -m wildlife_vision.adapt.cli MODEL ...``), as the `wildlife-vision` CLI would."""
    parser = argparse.ArgumentParser(prog="wildlife-vision")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["adapt", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return int(args.func(args) or 0)


def run_adapt(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except MissingExtraError as e:
        print(f"wildlife-vision adapt: {e}", file=sys.stderr)
        return EXIT_MISSING_EXTRA


def _manifest_labels(source: Path) -> Optional[List[str]]:
    """Every label named in a CSV manifest, in first-seen order (None for a folder tree: read_manifest knows)."""
    from ..data.manifest import read_manifest_table, split_labels

    if not source.is_file():
        return None
    seen: Dict[str, None] = {}
    for row in read_manifest_table(source).rows:
        for lab in split_labels(row.get("labels", "")):
            seen.setdefault(lab, None)
    return list(seen)


def _choose_labels(args: argparse.Namespace, parent: Sequence[str]) -> Tuple[Optional[List[str]], Optional[str]]:
    """(labels to fit: new ones then refits, or None) and the usage error, if any."""
    from ..data.manifest import ManifestError

    refit = list(dict.fromkeys(args.refit))
    not_there = [lab for lab in refit if lab not in parent]
    if not_there:
        return None, (f"--refit {', '.join(not_there)}: not a label of the model (its labels: {', '.join(parent)}); "
                      "to add a new label, name it with --labels")
    if args.labels is not None:
        new = list(dict.fromkeys(args.labels))
        present = [lab for lab in new if lab in parent and lab not in refit]
        if present:
            return None, (f"{', '.join(present)} {'is' if len(present) == 1 else 'are'} already a label of the model; "
                          f"its head is kept as it is unless you pass --refit {present[0]}")
        new = [lab for lab in new if lab not in refit]
    else:
        try:
            named = _manifest_labels(Path(args.data))
        except ManifestError as e:
            return None, str(e)
        new = [lab for lab in (named or []) if lab not in parent]
        if not new and not refit:
            return None, (f"every label in {args.data} ({', '.join(named or []) or 'none'}) is already a label of the "
                          f"model; pass --refit LABEL to refit one, or name new labels with --labels")
    labels = new + refit
    if not labels:
        return None, "nothing to fit: name new labels with --labels or existing ones with --refit"
    return labels, None


def _check_args(args: argparse.Namespace) -> Optional[str]:
    output = Path(args.output)
    if args.resamples < 0:
        return f"--resamples must be 0 or more, got {args.resamples}"
    if args.folds < 2:
        return f"--folds must be at least 2, got {args.folds}"
    if args.batch_size < 1 or args.workers < 1:
        return "--batch-size and --workers must be at least 1"
    if output.is_dir():
        return f"--output {output} is a folder; give the new model's file name"
    if output.exists() and not args.overwrite:
        return f"{output} already exists; pass --overwrite to replace it"
    if output.resolve() == Path(args.model).resolve():
        return "--output must not be the parent model itself"
    return None


def _run(args: argparse.Namespace) -> int:
    from ..exitcodes import require_extra

    problem = _check_args(args)
    if problem:
        return fail("adapt", problem)
    require_extra("adapt", "onnx", "sklearn")
    import numpy as np

    from .. import load_model
    from .._version import __version__
    from ..data.manifest import ManifestError, atomic_write_bytes, read_manifest, targets_for
    from ..errors import ModelLoadError
    from ..metadata import METADATA_KEY, scan_onnx, write_metadata_bytes
    from ..progress import Progress
    from .graph import GraphError, add_heads
    from .heads import fit_heads, planned_fits, sigmoid

    started = time.monotonic()
    model_path, output = Path(args.model), Path(args.output)
    try:
        parent = load_model(model_path, batch_size=args.batch_size)
        data = model_path.read_bytes()
        raw_meta = json.loads(scan_onnx(data, str(model_path))[METADATA_KEY])
    except ModelLoadError as e:
        return fail("adapt", str(e), EXIT_MODEL)
    except OSError as e:
        return fail("adapt", f"cannot read {model_path}: {e.strerror or e}", EXIT_MODEL)
    if not parent.has_embedding:
        return fail("adapt", f"{model_path} has no 'embedding' output, so there are no frozen features to fit heads "
                             "on; re-export it with `wildlife-vision export`", EXIT_MODEL)
    labels, problem = _choose_labels(args, parent.labels)
    if problem:
        return fail("adapt", problem)
    try:
        manifest = read_manifest(args.data, labels=labels, check_images=False, for_training=False)
    except ManifestError as e:
        print(str(e), file=sys.stderr)
        return EXIT_USAGE
    train = manifest.split("train")
    val = manifest.split("val")
    splits = sorted({s.split or "(none)" for s in manifest.samples})
    if not val:
        return fail("adapt", f"{args.data} has no val rows (splits present: {', '.join(splits)}): the new labels' "
                             "thresholds are set on val, never on the rows the heads learn from. Give some rows "
                             "split=val (e.g. with `wildlife-vision data split`)")
    if not train:
        return fail("adapt", f"{args.data} has no train rows (splits present: {', '.join(splits)}); the heads are "
                             "fitted on split=train rows")
    for name, rows in (("train", train), ("val", val)):
        y = targets_for(rows, labels)
        for j, lab in enumerate(labels):
            pos = int(y[:, j].sum())
            if pos == 0 or pos == len(rows):
                return fail("adapt", f"label '{lab}' has {'no positive' if pos == 0 else 'no negative'} {name} rows "
                                     f"in {args.data}; a head needs both in train and in val")

    # ---- embeddings: the one scoring loop, one pass over train + val ------------------------------------------
    rows = list(train) + list(val)
    t0 = time.monotonic()
    vectors: List[Any] = []
    kept: List[Any] = []
    failures: List[Tuple[str, str]] = []
    with Progress(len(rows), "adapt: embeddings", enabled=args.progress) as bar:
        for sample, emb in zip(rows, parent.embed_iter([s.path for s in rows], batch_size=args.batch_size,
                                                      workers=args.workers)):
            bar.update(1)
            if emb.ok:
                vectors.append(emb.vector)
                kept.append(sample)
            else:
                failures.append((sample.image, str(emb.error)))
    embed_s = time.monotonic() - t0
    for image, error in failures[:5]:
        print(f"wildlife-vision adapt: skipping unreadable {image}: {error}", file=sys.stderr)
    if len(failures) > 5:
        print(f"wildlife-vision adapt: ... and {len(failures) - 5} more unreadable images skipped", file=sys.stderr)
    if not vectors:
        return fail("adapt", f"none of the {len(rows)} train and val images could be read (first: "
                             f"{failures[0][0]}: {failures[0][1]}); nothing written")
    x = np.stack(vectors).astype(np.float32)
    is_train = np.array([s.split == "train" for s in kept], dtype=bool)
    train_kept = [s for s in kept if s.split == "train"]
    val_kept = [s for s in kept if s.split == "val"]
    y_train, y_val = targets_for(train_kept, labels), targets_for(val_kept, labels)
    for name, y in (("train", y_train), ("val", y_val)):
        for j, lab in enumerate(labels):
            if not 0 < int(y[:, j].sum()) < len(y):
                return fail("adapt", f"after skipping unreadable images, label '{lab}' lacks positives or negatives "
                                     f"in {name}; nothing written")

    # ---- heads on train ------------------------------------------------------------------------------------
    from ..evaluation.evaluate import group_ids

    t1 = time.monotonic()
    groups = group_ids(train_kept)
    with Progress(planned_fits(len(labels), args.cs, args.folds), "adapt: fitting heads", unit="fit",
                  enabled=args.progress) as bar:
        try:
            heads = fit_heads(x[is_train], y_train, labels, groups=groups, Cs=args.cs, folds=args.folds,
                              balanced=args.balanced, seed=args.seed, progress=bar)
        except ValueError as e:
            return fail("adapt", str(e))
    fit_s = time.monotonic() - t1
    w = np.stack([h.weight for h in heads]).astype(np.float32)
    b = np.array([h.bias for h in heads], dtype=np.float32)
    s_val = sigmoid(x[~is_train] @ w.T + b)

    # ---- thresholds and metrics on val, with the project's rules and intervals ---------------------------------
    from ..evaluation.calibrate import operating_points
    from ..evaluation.evaluate import build_report, summary

    quiet = logging.getLogger("wildlife_vision.evaluation.calibrate")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        result = operating_points(y_val, s_val, labels, args.target_precision, prevalence=args.prevalence,
                                  review_recall=args.review_recall, split="val", resamples=args.resamples,
                                  groups=group_ids(val_kept), seed=args.seed)
    finally:
        quiet.setLevel(level)
    for line in result["messages"]:
        print(line, file=sys.stderr)
    if result["unmet"]:
        return fail("adapt", f"no threshold reaches precision {args.target_precision:g} on val for "
                             f"{', '.join(result['unmet'])}; nothing written. Lower --target-precision, or add "
                             "more (or better separated) photos", EXIT_FAILURE)
    report = build_report(y_val, s_val, labels, result["thresholds"], val_kept, resamples=args.resamples,
                          review_bands=result["review_bands"], info={"split": "val"})
    metrics = summary(report)

    # ---- the new file ---------------------------------------------------------------------------------------
    heatmap = raw_meta.get("heatmap") or {}
    try:
        rewrite = add_heads(data, parent.labels, w, b, labels, scores=parent._output_name,
                            cam=heatmap.get("output") or None)
    except GraphError as e:
        return fail("adapt", str(e), EXIT_MODEL)
    parent_sha = hashlib.sha256(data).hexdigest()
    new_meta = _new_metadata(raw_meta, parent, rewrite, labels, heads, result, metrics, args, manifest,
                             parent_sha, {"train": train_kept, "val": val_kept}, len(failures),
                             {"embeddings_s": embed_s, "fit_s": fit_s}, __version__, started)
    try:
        new_bytes = write_metadata_bytes(rewrite.data, new_meta, str(model_path))
        atomic_write_bytes(output, new_bytes)
    except OSError as e:
        return fail("adapt", f"cannot write {output}: {e.strerror or e}", EXIT_FAILURE)
    problem = _check_written(output, parent, labels, val_kept, s_val, args.batch_size)
    if problem:
        return fail("adapt", f"{output} was written but does not score as fitted: {problem}", EXIT_FAILURE)
    print(format_summary(heads, result, metrics, rewrite, len(failures), embed_s, fit_s, len(rows),
                         time.monotonic() - started))
    print(f"wrote {output} ({len(new_bytes):,} bytes; sha256 {hashlib.sha256(new_bytes).hexdigest()[:16]}...); "
          f"labels {', '.join(rewrite.labels)}; see it with `wildlife-vision info {output}`")
    return EXIT_OK


def _new_metadata(raw: Dict[str, Any], parent: Any, rewrite: Any, labels: List[str], heads: List[Any],
                  result: Dict[str, Any], metrics: Dict[str, Any], args: argparse.Namespace, manifest: Any,
                  parent_sha: str, used: Dict[str, List[Any]], skipped: int, times: Dict[str, float],
                  version: str, started: float) -> Dict[str, Any]:
    """The adapted file's metadata: the parent's, with labels, thresholds, bands, calibration, metrics, heatmap
    and an ``adapt`` block in ``training`` saying what was fitted on what."""
    from ..data.manifest import targets_for
    from .heads import DEFAULT_CS

    meta = json.loads(json.dumps(raw))
    refit = [lab for lab in labels if lab in parent.labels]
    meta["labels"] = list(rewrite.labels)
    meta["thresholds"] = {**{k: float(v) for k, v in raw["thresholds"].items()}, **result["thresholds"]}
    bands = {lab: list(parent.review_bands[lab]) for lab in parent.labels}
    bands.update({k: [float(v[0]), float(v[1])] for k, v in result["review_bands"].items()})
    meta["review_bands"] = bands
    meta["name"] = args.name or raw.get("name") or parent.name
    meta["model_version"] = args.model_version or f"{raw.get('model_version', '0')}+adapt.{manifest.sha256[:8]}"
    meta["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta["package_version"] = version
    block = result["calibration"]
    block.update({"manifest": str(args.data), "manifest_sha256": manifest.sha256, "labels": list(labels)})
    cal = meta.get("calibration")
    if cal:  # the parent's calibration stays for its labels; adapted labels get theirs, named as such
        per_label = dict(cal.get("per_label") or {})
        for lab in labels:
            per_label[lab] = {**block["per_label"][lab], "source": "wildlife-vision adapt"}
        cal["per_label"] = per_label
        maps = cal.get("score_calibration")
        if maps:  # a refit head's scores are new: the parent's probability map for it no longer applies
            cal["score_calibration"] = {k: v for k, v in maps.items() if k not in labels}
        cal["adapt"] = {k: v for k, v in block.items() if k != "per_label"}
    else:
        cal = block
    meta["calibration"] = cal
    old_metrics = dict(meta.get("metrics") or {})
    per_class = dict(old_metrics.get("per_class") or {})
    before = {lab: per_class.pop(lab) for lab in refit if lab in per_class}
    for lab in labels:
        per_class[lab] = {**metrics["per_class"][lab], "split": "val", "source": "wildlife-vision adapt"}
    old_metrics["per_class"] = per_class
    old_metrics["adapt"] = {"split": "val", "n_images": metrics["n_images"], "labels": list(labels),
                            "macro": metrics["macro"], "micro": metrics["micro"],
                            "note": "the adapted labels' figures are on the val rows that also set their thresholds "
                                    "(optimistic); macro/micro outside this block are the parent's, over its labels; "
                                    "measure every label on held-out photos with `wildlife-vision evaluate`"}
    if before:
        old_metrics["before_adapt"] = before
    meta["metrics"] = old_metrics
    if rewrite.cam_kept:
        meta["heatmap"] = {**raw["heatmap"], "adapt": rewrite.cam_note}
    else:
        meta.pop("heatmap", None)
    sizes = {}
    for split, rows in used.items():
        y = targets_for(rows, labels)
        sizes[split] = {"images": len(rows), "positives": {lab: int(y[:, j].sum()) for j, lab in enumerate(labels)}}
    training = dict(meta.get("training") or {})
    training["adapt"] = {
        "method": "wildlife-vision adapt",
        "parent": {"name": raw.get("name"), "version": raw.get("model_version"), "sha256": parent_sha,
                   "file": os.path.basename(str(args.model)), "labels": list(parent.labels)},
        "added": [lab for lab in labels if lab not in parent.labels], "refit": refit,
        "manifest": str(args.data), "manifest_sha256": manifest.sha256, "sizes": sizes, "skipped_images": skipped,
        "head": "logistic regression on the frozen 'embedding' output; features standardised with the train "
                "mean/std, folded into the weights (one Gemm)",
        "regularisation": {"penalty": "l2", "C_grid": list(args.cs), "default_grid": list(DEFAULT_CS),
                           "class_weight": "balanced" if args.balanced else None,
                           "cv": {"folds": args.folds, "seed": args.seed, "score": "average precision",
                                  "grouped_by": "group" if any("group" in s.extra for s in used["train"]) else None},
                           "per_label": {h.label: h.to_dict() for h in heads}},
        "heatmap": rewrite.cam_note,
        "seconds": {**{k: round(v, 2) for k, v in times.items()}, "total": round(time.monotonic() - started, 2)},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "package_version": version,
        "created": meta["created"],
    }
    meta["training"] = training
    return meta


def _check_written(path: Path, parent: Any, labels: List[str], val: List[Any], s_val: Any,
                   batch_size: int) -> Optional[str]:
    """Load the new file as a platform would: parent labels score as the parent does (to 1e-6), adapted labels
    as the fitted heads do, on a few val photos."""
    import numpy as np

    from .. import load_model
    from ..errors import ModelLoadError

    try:
        m = load_model(path, batch_size=max(1, batch_size))
    except ModelLoadError as e:
        return str(e)
    few = [s.path for s in val[:8]]
    new = m.predict(few)
    old = parent.predict(few)
    if any(not p.ok for p in new):
        return next(p.error for p in new if not p.ok)
    kept = [lab for lab in parent.labels if lab not in labels]
    for a, o in zip(new, old):
        diff = max((abs(a.scores[lab] - o.scores[lab]) for lab in kept), default=0.0)
        if diff > OLD_SCORE_TOLERANCE:
            return f"a parent label's score moved by {diff:.2e} (> {OLD_SCORE_TOLERANCE:g})"
    plain = [j for j, lab in enumerate(labels) if lab not in m.score_maps]  # no probability map: raw scores
    got = np.array([[p.scores[labels[j]] for j in plain] for p in new], dtype=np.float32)
    want = np.asarray(s_val[:len(few)])[:, plain]
    if plain and not np.allclose(got, want, rtol=0, atol=NEW_SCORE_TOLERANCE):
        return "the adapted labels' scores differ from the fitted heads'"
    return None


def format_summary(heads: List[Any], result: Dict[str, Any], metrics: Dict[str, Any], rewrite: Any, skipped: int,
                   embed_s: float, fit_s: float, n: int, total_s: float) -> str:
    """What `adapt` prints: per label the chosen C, CV AP, val AP with its interval, threshold and what it reaches."""
    def num(v: Any, ci: Any = None) -> str:
        return "n/a" if v is None else f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    lines = [f"{n} photos embedded in {embed_s:.1f} s ({n / embed_s if embed_s > 0 else 0:.1f}/s)"
             + (f", {skipped} unreadable skipped" if skipped else "") + f"; heads fitted in {fit_s:.1f} s; "
             f"total {total_s:.1f} s"]
    for h in heads:
        m = metrics["per_class"][h.label]
        cal = result["calibration"]["per_label"][h.label]
        low, thr = result["review_bands"][h.label]
        at = cal.get("at_sample") or {}
        cv = h.cv.get(f"{h.C:g}")
        lines.append(f"  {h.label}: C {h.C:g}" + (f" (CV AP {cv:.3f}, {h.folds} folds)" if cv is not None else "")
                     + f"; train {h.positives}+/{h.negatives}-; val AP {num(m.get('ap'), (m.get('ci95') or {}).get('ap'))}"
                     f"; threshold {thr:.4f}, review band [{low:.4f}, {thr:.4f}); precision "
                     f"{num(at.get('precision'), at.get('precision_ci95'))}, recall "
                     f"{num(at.get('recall'), at.get('recall_ci95'))} (val, in-sample)"
                     + ("" if h.converged else "; warning: the solver did not converge"))
    lines.append(f"  heatmaps: {rewrite.cam_note}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
