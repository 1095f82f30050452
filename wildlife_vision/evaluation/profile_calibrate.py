"""`wildlife-vision calibrate MODEL --profile NAME`: give another execution profile (bf16 on OpenVINO, ...) its
own operating point, gated against the file's own fp32 scores by the same rule as INT8 (evaluation/gate.py).

The split is scored twice, by the file's own profile and by ``NAME`` (no threshold of one is trusted for the
other); the profile's thresholds and review bands are chosen on its own scores with the same rules as
`calibrate` (:func:`~wildlife_vision.evaluation.calibrate.operating_points`), fp32's again on the same photos and
target (so that precision is matched), and the gate compares them: AP drop, recall drop at matched precision and
the profile's own precision, each with a paired 95% bootstrap interval. The new file is the input graph byte for
byte with ``profiles[NAME]`` added to its metadata (its top-level fp32 operating point unchanged). A failing gate
exits 1 and writes nothing, unless ``--keep-failing`` (then the profile is written marked as failing, and
``precision="auto"`` never takes it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from ..cli_common import fail
from ..exitcodes import EXIT_FAILURE, EXIT_MODEL, EXIT_OK, EXIT_USAGE


#: --fast-preprocess choices -> the profile's preprocessing overrides (PreprocessConfig.resampler, interpolation)
FAST_PREPROCESS = {"region": {"resampler": "pillow-region"}, "opencv": {"resampler": "opencv"},
                   "opencv-bilinear": {"resampler": "opencv", "interpolation": "bilinear"}}


def _fast(choice: Any) -> Dict[str, Any]:
    return dict(FAST_PREPROCESS.get(choice or "", {}))


def _feed(spec: Any) -> Dict[str, Any]:
    """OpenVINO profiles are calibrated (and so run) on uint8 crops normalised inside the graph: the same
    normalisation, without numpy's float pass over every photo (docs/profiles.md)."""
    from ..profiles import UINT8_INPUT

    return {"input": UINT8_INPUT} if spec.runtime == "openvino" else {}


def run_profile_calibration(args: argparse.Namespace) -> int:
    from ..data.manifest import ManifestError, atomic_write_bytes, read_manifest, targets_for
    from ..errors import ModelLoadError
    from ..metadata import METADATA_KEY, scan_onnx, write_metadata_bytes
    from ..model import Model
    from ..profiles import SPECS, Choice, own_profile
    from .bootstrap import resample_indices
    from .calibrate import operating_points
    from .evaluate import group_ids, select_split
    from .gate import GateLimits, gate

    cmd = "calibrate"
    name = args.profile
    model_path, output = Path(args.model), Path(args.output)
    spec = SPECS.get(name)
    if spec is None:
        return fail(cmd, f"--profile {name!r} is not a known profile ({', '.join(SPECS)})")
    try:
        ref = Model(model_path, batch_size=max(1, args.batch_size))
        if name == own_profile(ref.metadata):
            return fail(cmd, f"{model_path} is already calibrated for {name} (its own thresholds); calibrate it "
                             "without --profile to change them")
        if spec.precision == "int8":
            if not args.twin:
                return fail(cmd, "the int8 profile is a twin file made by `wildlife-vision export --int8`, with its "
                                 "own operating point and gate: link it with --twin MODEL.int8.onnx")
            entry = twin_entry(model_path, Path(args.twin))
            if not entry["gate"]["passed"] and not args.keep_failing:
                return fail(cmd, f"the twin {args.twin} failed its INT8 gate ({'; '.join(entry['gate']['failures'])}); "
                                 "nothing written (--keep-failing links it marked as failing)", EXIT_FAILURE)
            link_twin(model_path, Path(args.twin), output, getattr(args, "set_version", None), entry)
            print(f"wrote {output} with profile 'int8' -> {entry['file']} (gate "
                  f"{'passed' if entry['gate']['passed'] else 'FAILED'})")
            return EXIT_OK if entry["gate"]["passed"] else EXIT_FAILURE
        from ..cpu import cpu_info

        reason = spec.cpu_reason(cpu_info())
        if reason:
            return fail(cmd, f"cannot calibrate profile '{name}' here: {reason}", EXIT_MODEL)
        cand = Model(model_path, batch_size=max(1, args.batch_size),
                     profile=Choice(name, spec.runtime, spec.precision, model_path,
                                    {"draft": bool(args.draft), **_fast(args.fast_preprocess), **_feed(spec)}))
        data = model_path.read_bytes()
        raw_meta = json.loads(scan_onnx(data, str(model_path))[METADATA_KEY])
    except ModelLoadError as e:
        return fail(cmd, str(e), EXIT_MODEL)
    try:
        manifest = read_manifest(args.data, labels=ref.labels, check_images=False, for_training=False)
        samples = select_split(manifest.samples, args.split)
    except ManifestError as e:
        print(str(e), file=sys.stderr)
        return EXIT_USAGE
    except ValueError as e:
        return fail(cmd, str(e))
    from .evaluate import score_onnx

    s_ref, kept_ref, _ = score_onnx(ref, samples, batch_size=args.batch_size, workers=args.workers)
    s_new, kept_new, failures = score_onnx(cand, samples, batch_size=args.batch_size, workers=args.workers)
    both = {s.image for s in kept_ref} & {s.image for s in kept_new}
    keep_r = [i for i, s in enumerate(kept_ref) if s.image in both]
    keep_n = [i for i, s in enumerate(kept_new) if s.image in both]
    kept = [kept_ref[i] for i in keep_r]
    if not kept:
        return fail(cmd, f"none of the {len(samples)} image(s) in split '{args.split}' could be read")
    s_ref, s_new = s_ref[keep_r], s_new[keep_n]
    y = targets_for(kept, ref.labels)
    groups = group_ids(kept)
    kw = dict(prevalence=args.prevalence, review_recall=args.review_recall, split=args.split,
              resamples=args.resamples, groups=groups)
    op_new = operating_points(y, s_new, ref.labels, args.target_precision, **kw)
    op_ref = operating_points(y, s_ref, ref.labels, args.target_precision, **{**kw, "resamples": 0})
    unmet = sorted(set(op_new["unmet"]) | set(op_ref["unmet"]))
    if unmet:
        return fail(cmd, f"no threshold reaches precision {args.target_precision:g} for {', '.join(unmet)} "
                         "(fp32 or the profile); nothing written", EXIT_FAILURE)
    draws = resample_indices(len(kept), groups, args.resamples, 0) if args.resamples else []
    g = gate(y, s_ref, s_new, list(ref.labels), op_ref["thresholds"], op_new["thresholds"], "precision",
             args.target_precision, GateLimits(), draws, split=args.split, name=name)
    g["max_abs_score_diff"] = float(np.abs(s_ref - s_new).max())
    block: Dict[str, Any] = {
        "runtime": spec.runtime, "precision": spec.precision, "draft": bool(args.draft),
        **_fast(args.fast_preprocess), **_feed(spec),
        "thresholds": op_new["thresholds"],
        "review_bands": {k: list(v) for k, v in op_new["review_bands"].items()},
        "calibration": {**{k: v for k, v in op_new["calibration"].items() if k != "scores"},
                        "manifest": str(args.data), "manifest_sha256": manifest.sha256, "split": args.split,
                        "skipped_images": len(failures)},
        "gate": g, "fp32_thresholds_on_this_sample": op_ref["thresholds"],
        "source_model_sha256": hashlib.sha256(data).hexdigest(),
        "note": "thresholds and gate on the calibration split; measure the profile on other photos with "
                f"`wildlife-vision evaluate MODEL --precision {spec.precision} --split test`"}
    for line in g["failures"]:
        print(f"gate: {line}", file=sys.stderr)
    for lab in ref.labels:
        pl = g["per_label"].get(lab, {})
        if pl.get("gated"):
            print(f"  {lab}: fp32 threshold {pl['fp32']['threshold']:.4f} (P {pl['fp32']['precision']:.3f}, R "
                  f"{pl['fp32']['recall']:.3f}); {name} threshold {pl[name]['threshold']:.4f} (P "
                  f"{pl[name]['precision']:.3f}, R {pl[name]['recall']:.3f}); AP drop {pl['ap_drop']:+.4f}, recall "
                  f"drop {pl['recall_drop']:+.3f}")
    print(f"profile {name}: gate {'passed' if g['passed'] else 'FAILED'} on {len(kept)} photos ({args.split}); "
          f"largest score change vs fp32 {g['max_abs_score_diff']:.4f}")
    if not g["passed"] and not args.keep_failing:
        return fail(cmd, f"profile '{name}' failed its gate; nothing written (--keep-failing writes it marked as "
                         "failing; auto never uses it)", EXIT_FAILURE)
    new_meta = {**raw_meta, "profiles": {**(raw_meta.get("profiles") or {}), name: block}}
    if getattr(args, "set_version", None):
        new_meta["model_version"] = args.set_version
    try:
        atomic_write_bytes(output, write_metadata_bytes(data, new_meta, str(model_path)))
    except OSError as e:
        return fail(cmd, f"cannot write {output}: {e.strerror or e}", EXIT_FAILURE)
    print(f"wrote {output} with profile '{name}'; use it with load_model(path, precision='{spec.precision}') or "
          f"--precision {spec.precision}")
    return EXIT_OK if g["passed"] else EXIT_FAILURE


def twin_entry(model_path: Path, twin_path: Path) -> Dict[str, Any]:
    """The ``profiles["int8"]`` block that points a model at its INT8 twin: the twin's file name (beside the model),
    sha256 and gate result (from the twin's own metadata, set by `export --int8`)."""
    from ..data.manifest import file_sha256
    from ..errors import ModelLoadError
    from ..metadata import read_model_metadata

    model_path, twin_path = Path(model_path), Path(twin_path)
    if twin_path.resolve().parent != model_path.resolve().parent:
        raise ModelLoadError(f"the twin {twin_path} must lie beside {model_path} (profiles name it relative to it)")
    meta = read_model_metadata(twin_path)
    if not (meta.training or {}).get("quantization"):
        raise ModelLoadError(f"{twin_path} is not an INT8 twin (no training.quantization in its metadata)")
    gate = dict((meta.metrics or {}).get("int8_gate") or {})
    return {"runtime": "onnxruntime", "precision": "int8", "file": twin_path.name,
            "sha256": file_sha256(twin_path),
            "gate": {"passed": gate.get("passed") is True, "failures": gate.get("failures") or
                     ([] if gate.get("passed") else ["the twin has no passing int8_gate in its metadata"]),
                     "split": gate.get("split")},
            "note": "thresholds, review bands and metrics are the twin's own (its metadata)"}


def link_twin(model_path: Path, twin_path: Path, output: Path, version: Any = None,
              entry: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Write ``output``: ``model_path`` with ``profiles["int8"]`` pointing at ``twin_path`` (``entry``: its
    :func:`twin_entry`, made here when not given; ``version`` as the model_version when given); returns the block."""
    from ..data.manifest import atomic_write_bytes
    from ..metadata import METADATA_KEY, scan_onnx, write_metadata_bytes

    data = Path(model_path).read_bytes()
    raw = json.loads(scan_onnx(data, str(model_path))[METADATA_KEY])
    entry = entry or twin_entry(model_path, twin_path)
    new = {**raw, "profiles": {**(raw.get("profiles") or {}), "int8": entry}}
    if version:
        new["model_version"] = str(version)
    atomic_write_bytes(Path(output), write_metadata_bytes(data, new, str(model_path)))
    return entry


__all__ = ["run_profile_calibration", "twin_entry", "link_twin"]
