"""Export a training run to one self-describing ONNX file, check it against torch, optionally quantise to INT8.

The graph takes ``pixel_values`` (N, 3, H, W) float32 — only the batch axis is dynamic — and returns ``scores``
(N, labels; sigmoid probabilities), ``embedding`` (N, D; pooled pre-logits features) and, for heatmaps, ``cam``
(N, labels, h, w; the class activation maps, added last by :mod:`wildlife_vision_train.heatmap`). The file's
``metadata_props["wildlife_vision"]`` holds :class:`wildlife_vision.metadata.ModelMetadata` JSON: labels,
thresholds, review bands, preprocessing, backbone, training provenance (manifest and config hashes), the
validation summary, the package version and the creation time.

After writing, the export loads the file with ``wildlife_vision.load_model`` (as a platform will), runs it on real
manifest photos preprocessed by ``wildlife_vision.preprocess`` (``Model.run_batch``, both outputs) and fails if
any output differs from torch by more than :data:`TOLERANCE`; it also checks that ``Model.predict(path)`` gives
torch's scores.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from wildlife_vision._version import __version__
from wildlife_vision.data.manifest import Sample, atomic_write_text, read_manifest
from wildlife_vision.data.splits import fill_missing_splits
from wildlife_vision.errors import ImageDecodeError
from wildlife_vision.evaluation.evaluate import summary
from wildlife_vision.metadata import METADATA_KEY, ModelMetadata
from wildlife_vision.preprocess import PreprocessConfig, preprocess

from wildlife_vision_train.backbones import ScoresAndEmbedding, check_wrapper
from wildlife_vision_train.checkpoint import build_model_from_checkpoint, load_checkpoint
from wildlife_vision_train.config import TrainConfig
# the INT8 twin lives in int8.py; quantize_int8 and friends stay importable from here (the benchmark uses them)
from wildlife_vision_train.int8 import (DEFAULT_RECIPE, WEIGHTS_DESCRIPTION, GateLimits, QuantRecipe,  # noqa: F401
                                        quantize_int8, shape_arithmetic_nodes, write_int8)
log = logging.getLogger(__name__)

TOLERANCE = 1e-4
DEFAULT_OPSET = 17
INPUT_NAME, SCORES, EMBEDDING = "pixel_values", "scores", "embedding"
#: the export record MODEL.export.json
EXPORT_RECORD_SCHEMA = "wildlife-vision/export/v1"


class ExportCheckError(RuntimeError):
    """The exported ONNX model does not reproduce the torch model (or cannot be loaded by wildlife_vision)."""


@dataclass
class ExportResult:
    path: Path
    check: Dict[str, Any]
    int8_path: Optional[Path] = None
    int8: Dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    removed: List[Path] = field(default_factory=list)   # stale files of an earlier export, removed (--overwrite)
    heatmaps: Dict[str, Any] = field(default_factory=dict)  # per written file: was the 'cam' output added

    @property
    def int8_gate(self) -> Optional[Dict[str, Any]]:
        """The INT8 gate (``passed``, ``failures``, per label), or None without ``--int8``."""
        return self.int8.get("gate") if self.int8 else None


def _read_json(path: Path, what: str) -> Dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {what}. Is this a finished `wildlife-vision train` run folder?")
    return json.loads(path.read_text(encoding="utf-8"))


def _export_graph(wrapper: torch.nn.Module, size: Tuple[int, int], opset: int) -> Tuple[bytes, str]:
    """ONNX bytes of ``wrapper`` with a dynamic batch axis; the TorchScript exporter first, then torch.export."""
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    try:
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (x,), buf, input_names=[INPUT_NAME], output_names=[SCORES, EMBEDDING],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, SCORES: {0: "batch"}, EMBEDDING: {0: "batch"}},
                              opset_version=opset, do_constant_folding=True, dynamo=False)
        return buf.getvalue(), "torchscript"
    except Exception as e:  # noqa: BLE001 - fall back to the torch.export-based exporter
        log.warning("TorchScript ONNX export failed (%s: %s); trying the torch.export-based exporter",
                    type(e).__name__, str(e)[:200])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(wrapper, (x,), None, input_names=[INPUT_NAME], output_names=[SCORES, EMBEDDING],
                                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                                    opset_version=max(opset, 18), dynamo=True, verbose=False)
    return program.model_proto.SerializeToString(), "torch.export"


def _with_metadata(onnx_bytes: bytes, meta: ModelMetadata):
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta.to_json()
    model.producer_name = "wildlife-vision"
    model.producer_version = __version__
    model.doc_string = f"{meta.name} {meta.model_version}: {', '.join(meta.labels)} ({meta.backbone})"
    onnx.checker.check_model(model)
    return model


def add_heatmaps(paths: Sequence[Path]) -> Dict[str, Any]:
    """Add the class-activation-map output (:mod:`wildlife_vision_train.heatmap`) to each written model file, after
    its checks and the INT8 quantisation (so neither sees the extra node); scores are checked to be unchanged.
    A graph whose head is not pooling + linear keeps its file as it is (logged; ``Model.explain`` then says so)."""
    from wildlife_vision.data.manifest import atomic_write_bytes
    from wildlife_vision_train.heatmap import HeatmapExportError, check_unchanged, with_heatmaps

    done: Dict[str, Any] = {}
    for path in paths:
        before = Path(path).read_bytes()
        try:
            after = with_heatmaps(before)
            change = check_unchanged(before, after)
        except HeatmapExportError as e:
            log.warning("%s gets no heatmap output: %s", path, e)
            done[Path(path).name] = {"added": False, "why": str(e)}
            continue
        atomic_write_bytes(Path(path), after)
        done[Path(path).name] = {"added": True, "output": "cam", "max_score_change": change}
    return done


def _preprocess_samples(samples: Sequence[Sample], cfg: PreprocessConfig, limit: int
                        ) -> Tuple[np.ndarray, List[Sample]]:
    """Up to ``limit`` decodable samples through ``wildlife_vision.preprocess`` -> (N, 3, H, W) float32."""
    arrays, kept = [], []
    for s in samples:
        if len(kept) >= limit:
            break
        try:
            arrays.append(preprocess(s.path, cfg))
            kept.append(s)
        except ImageDecodeError as e:
            log.warning("skipping unreadable image %s: %s", s.image, e)
    h, w = cfg.input_size
    return (np.stack(arrays) if arrays else np.zeros((0, 3, h, w), np.float32)), kept


def check_against_torch(path: Path, wrapper: torch.nn.Module, batch: np.ndarray, paths: Sequence[str],
                        tolerance: float = TOLERANCE) -> Dict[str, Any]:
    """Compare the file, loaded as the library loads it (``wildlife_vision.load_model``), with torch: both outputs
    on ``batch`` (``Model.run_batch``, at batch sizes N and 1) and ``Model.predict`` on the photos ``paths``."""
    from wildlife_vision import load_model

    with torch.no_grad():
        ref_s, ref_e = (t.numpy() for t in wrapper(torch.from_numpy(batch)))
    lib = load_model(path)
    got_s, got_e = lib.run_batch(batch), lib.run_batch(batch, output=EMBEDDING)
    one_s = lib.run_batch(batch[:1])
    preds = lib.predict(list(paths[:4]))
    lib_scores = np.array([[p.scores[lab] for lab in lib.labels] for p in preds], dtype=np.float32)
    diffs = {"scores": float(np.abs(got_s - ref_s).max()),
             "embedding": float(np.abs(got_e - ref_e.reshape(len(ref_e), -1)).max()),
             "scores_batch1": float(np.abs(one_s - ref_s[:1]).max()),
             "load_model_predict": float(np.abs(lib_scores - ref_s[:len(lib_scores)]).max())}
    worst = max(diffs.values())
    check = {"images": int(len(batch)), "tolerance": tolerance, "max_abs_diff": diffs, "passed": worst <= tolerance}
    if not check["passed"]:
        raise ExportCheckError(f"the ONNX model differs from torch by up to {worst:.2e} (> {tolerance:g}) on real "
                               f"images: {diffs}. The file was not kept.")
    return check


def _stale_int8(output: Path, int8_path: Optional[Path]) -> Optional[Path]:
    """``MODEL.int8.onnx`` beside ``output`` when it exists and this export will not rewrite it: it would sit
    beside the new model as its INT8 twin (the benchmark picks it up) while quantising the old one."""
    sibling = output.with_name(output.stem + ".int8.onnx")
    if not sibling.exists() or (int8_path is not None and int8_path.resolve() == sibling.resolve()):
        return None
    return sibling


def _refuse_existing(output: Path, int8_path: Optional[Path], stale: Optional[Path], overwrite: bool) -> None:
    if overwrite:
        return
    existing = [p for p in (output, int8_path) if p is not None and p.exists()]
    if existing:
        one = len(existing) == 1
        raise FileExistsError(f"{', '.join(map(str, existing))} already exist{'s' if one else ''}; pass --overwrite "
                              f"to replace {'it' if one else 'them'}, or choose another --output")
    if stale is not None:
        raise FileExistsError(f"{stale} is left from an earlier export and would sit beside the new model as its "
                              "INT8 copy; pass --overwrite to remove it (or --int8 to write a new one), or choose "
                              "another --output")


def _calibration_rows(samples: Sequence[Sample], cfg: TrainConfig, cal: Dict[str, Any], own_manifest: bool
                       ) -> List[Sample]:
    """The val rows the run's thresholds were chosen on: the val split, subset as training subset it
    (``--max-val-images``); warns when they cannot be the same rows (another manifest, another count)."""
    from wildlife_vision_train.train import _subset  # the training's own subset rule, not a copy of it

    val = [s for s in samples if s.split == "val"]
    if not val:
        log.warning("the manifest has no val rows: the INT8 model is calibrated and compared on all %d rows",
                    len(samples))
        return list(samples)
    val = _subset(val, cfg.data.max_val_images, cfg.run.seed, "val")
    n_cal = (cal.get("calibration") or {}).get("n_images")
    if not own_manifest or (n_cal is not None and n_cal != len(val)):
        log.warning("the INT8 thresholds are chosen on %d val rows of %s, not on the %s rows the fp32 thresholds "
                    "came from", len(val), "another manifest (--data)" if not own_manifest else "this manifest",
                    n_cal if n_cal is not None else "unknown")
    return val


def export_run(run_dir: Path, output: Path, int8: bool = False, int8_output: Optional[Path] = None,
               name: Optional[str] = None, version: str = "1.0.0", opset: int = DEFAULT_OPSET,
               data: Optional[Path] = None, check_images: int = 16, calib_images: Optional[int] = None,
               tolerance: float = TOLERANCE, overwrite: bool = False, int8_limits: GateLimits = GateLimits(),
               int8_allow_failing: bool = False, int8_recipe: QuantRecipe = DEFAULT_RECIPE,
               mirror_canonical: bool = False) -> ExportResult:
    """Export ``run_dir``'s best checkpoint to ``output`` (and optionally an INT8 copy); see module docstring.

    The INT8 copy gets its own thresholds and review bands (chosen on its own scores on the run's val rows, for
    the run's calibration target) and is gated against fp32 (``int8_limits``, see
    :func:`wildlife_vision_train.int8.gate`): a failing one is not written unless ``int8_allow_failing``;
    ``result.int8_gate["passed"]`` says how it went. The fp32 model is written either way.

    ``mirror_canonical``: the graph flips each input crop to its canonical orientation first
    (:mod:`wildlife_vision_train.canonical`), and the fp32 thresholds, review bands and val metrics are chosen again
    on the file's own scores on the same val rows (the run chose them for the network without the step).

    Existing files are refused (``FileExistsError``) unless ``overwrite``: the model, the INT8 model, and a
    ``MODEL.int8.onnx`` from an earlier export that this export would leave beside a new model it does not
    match (with ``overwrite`` that file is removed once the new model is written; ``result.removed`` names it,
    as it names an earlier INT8 model at the INT8 path when the new one fails its gate and is not written).
    """
    t0 = time.time()
    run_dir, output = Path(run_dir), Path(output)
    if opset < 17:
        raise ValueError(f"--opset must be 17 or newer, got {opset}")
    if calib_images is not None:
        int8_recipe = dataclasses.replace(int8_recipe, calibration_images=calib_images)
    if int8_recipe.calibration_images < 1:
        raise ValueError(f"--calib-images must be at least 1, got {int8_recipe.calibration_images}")
    int8_path = (Path(int8_output) if int8_output else output.with_name(output.stem + ".int8.onnx")) if int8 else None
    stale = _stale_int8(output, int8_path)
    _refuse_existing(output, int8_path, stale, overwrite)
    best = load_checkpoint(run_dir / "best.pt")
    cal = _read_json(run_dir / "calibration.json", "thresholds are chosen at the end of training")
    report = _read_json(run_dir / "eval" / "report.json", "the validation report is written at the end of training")
    cfg = TrainConfig.from_dict(best["config"])
    labels = list(best["labels"])
    model, pre_cfg = build_model_from_checkpoint(best)
    check_wrapper(model, pre_cfg.input_size[0])
    wrapper = ScoresAndEmbedding(model).eval()
    if mirror_canonical:
        from wildlife_vision_train.canonical import MirrorCanonical

        wrapper = MirrorCanonical(wrapper, pre_cfg.input_size[1]).eval()

    # real images for the check, calibration and the INT8 comparison, through wildlife_vision.preprocess
    manifest_path = Path(data) if data is not None else Path(cfg.data.manifest)
    if not manifest_path.exists():
        raise FileNotFoundError(f"the training manifest {manifest_path} is not here; export checks the model on "
                                "real photos: pass --data MANIFEST (any manifest with a few photos will do)")
    manifest = read_manifest(manifest_path, labels=labels, check_images=False)
    samples, _ = fill_missing_splits(manifest.samples, cfg.data.val_fraction)
    val = [s for s in samples if s.split == "val"] or list(samples)
    check_batch, check_kept = _preprocess_samples(val, pre_cfg, check_images)
    if not len(check_batch):
        raise ExportCheckError(f"no readable photo in {manifest_path} to check the exported model with")

    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    training_block = {
        "manifest": str(cfg.data.manifest), "manifest_sha256": best["manifest_sha256"],
        "config_sha256": best["config_sha256"], "config": best["config"], "backbone": cfg.model.name,
        "pretrained": best["pretrained"], "epochs": cfg.optim.epochs, "best_epoch": int(best["epoch"]) + 1,
        "seed": cfg.run.seed, **best["counts"], "torch_version": torch.__version__,
    }
    if cfg.model.input_lowpass:  # a layer of the network, described so that it can be re-implemented
        from wildlife_vision_train.lowpass import rule

        training_block["graph_steps"] = [rule(cfg.model.input_lowpass)]
    meta = ModelMetadata(
        labels=tuple(labels), thresholds=cal["thresholds"],
        review_bands={k: tuple(v) for k, v in cal["review_bands"].items()}, preprocess=pre_cfg,
        name=name or f"wildlife-vision-{cfg.model.name}", model_version=version, backbone=cfg.model.name,
        input_name=INPUT_NAME, output_name=SCORES, calibration=cal["calibration"], training=training_block,
        metrics=summary(report), package_version=__version__, created=created)
    ModelMetadata.from_json(meta.to_json())  # the library's own validation must accept it

    # the run's calibration target and the val rows its thresholds came from: the mirror-canonical and INT8 models
    # get their own thresholds on the same rows, for the same target
    calib = {"target": cfg.calib.target, "value": cfg.calib.value, "review_recall": cfg.calib.review_recall,
             **{k: v for k, v in cal["calibration"].items() if k in ("target", "value", "review_recall", "split")}}
    rows = (_calibration_rows(samples, cfg, cal, data is None or manifest_path.resolve() ==
                              Path(cfg.data.manifest).resolve()) if mirror_canonical or int8_path else [])
    onnx_bytes, exporter = _export_graph(wrapper, pre_cfg.input_size, opset)
    model_proto = _with_metadata(onnx_bytes, meta)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    import onnx

    onnx.save(model_proto, str(tmp))
    try:
        check = check_against_torch(tmp, wrapper, check_batch, [s.path for s in check_kept], tolerance)
        if mirror_canonical:  # the thresholds of the network behind the step, on its own val scores
            from wildlife_vision_train.canonical import recalibrate_on_val

            meta = recalibrate_on_val(tmp, meta, rows, calib)
            ModelMetadata.from_json(meta.to_json())
            model_proto = _with_metadata(model_proto.SerializeToString(), meta)
            onnx.save(model_proto, str(tmp))
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, output)
    check.update({"exporter": exporter, "opset": opset, "mirror_canonical": bool(mirror_canonical)})
    log.info("exported %s (%s exporter, opset %d); onnxruntime vs torch max abs diff %.2e on %d real images",
             output, exporter, opset, max(check["max_abs_diff"].values()), check["images"])
    result = ExportResult(path=output, check=check)

    if stale is not None:  # refused above unless overwrite: it belongs to the model this export replaced
        stale.unlink()
        result.removed.append(stale)
        log.info("removed %s, left by an earlier export: it is not an INT8 copy of the new model", stale)
    if int8_path is not None:
        result.int8 = write_int8(output, int8_path, meta, samples, rows, cfg.run.seed, calib=calib,
                                 limits=int8_limits, allow_failing=int8_allow_failing, recipe=int8_recipe)
        if result.int8["written"]:
            result.int8_path = int8_path
        elif int8_path.exists():  # refused above unless overwrite: the INT8 copy of the model this one replaced
            int8_path.unlink()
            result.removed.append(int8_path)

    result.heatmaps = add_heatmaps([output] + ([result.int8_path] if result.int8_path else []))
    if result.int8_path:  # the fp32 file names its twin as its int8 profile (precision="auto" may take it)
        from wildlife_vision.evaluation.profile_calibrate import link_twin

        link_twin(output, result.int8_path, output)
    result.seconds = time.time() - t0
    record = {"schema_version": EXPORT_RECORD_SCHEMA, "model": str(output), "created": created, "check": check,
              "int8_model": str(result.int8_path or ""), "int8": result.int8, "heatmaps": result.heatmaps,
              "seconds": round(result.seconds, 2)}
    atomic_write_text(output.with_name(output.stem + ".export.json"), json.dumps(record, indent=2))
    from wildlife_vision_train.tracking import log_exported_model  # a no-op unless RUN_DIR was tracked with MLflow

    for path in [output] + ([result.int8_path] if result.int8_path else []):
        log_exported_model(run_dir, path)
    return result


def _pr(point: Dict[str, Any]) -> str:
    """'precision P [lo, hi] / recall R [lo, hi]' of one label's metrics block."""
    ci = point.get("ci95") or {}
    parts = []
    for k in ("precision", "recall"):
        v, iv = point.get(k), ci.get(k)
        parts.append("n/a" if v is None else f"{v:.3f}" + (f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else ""))
    return " / ".join(parts)


def format_int8_summary(path: Path, t: Dict[str, Any]) -> List[str]:
    """The INT8 part of the export summary: AP change and both operating points per label, and the gate."""
    g, ops = t["gate"], t["operating_points"]
    where = f"{path} ({t['size_bytes_int8'] / 1e6:.1f} MB)" if t["written"] else f"{path} (not written)"
    lines = [f"INT8 model {where}, on {t['val_images']} {t['split']} images, each model at its own thresholds for "
             f"{g['target']} {g['value']:g} (95% bootstrap intervals):",
             f"  {'label':<14} {'AP fp32 -> INT8 (change)':<28} {'fp32: threshold, precision / recall':<52} "
             "INT8: threshold, precision / recall"]
    for lab, row in t["per_label"].items():
        if row["ap_fp32"] is None:
            lines.append(f"  {lab:<14} n/a (no positives)")
            continue
        f, q = ops["fp32"][lab], ops["int8"][lab]
        ap = f"{row['ap_fp32']:.4f} -> {row['ap_int8']:.4f} ({row['change']:+.4f})"
        lines.append(f"  {lab:<14} {ap:<28} {f['threshold']:.3f}, {_pr(f):<45} {q['threshold']:.3f}, {_pr(q)}")
    m = t["macro"]
    if m["ap_fp32"] is not None:
        lines.append(f"  {'macro':<14} {m['ap_fp32']:.4f} -> {m['ap_int8']:.4f} ({m['change']:+.4f})")
    if g["passed"]:
        lines.append(f"INT8 gate passed ({g['rule']})")
    else:
        lines.append("INT8 gate FAILED: " + "; ".join(g["failures"]))
        lines.append("  the INT8 model was written anyway (--int8-allow-failing); its metadata says "
                     "int8_gate.passed = false" if t["written"] else
                     "  the INT8 model was not written (--int8-allow-failing writes it, marked as failing)")
    return lines


def format_export_summary(result: ExportResult) -> str:
    lines = [f"exported {result.path} ({result.path.stat().st_size / 1e6:.1f} MB); onnxruntime vs torch on "
             f"{result.check['images']} real images: max abs diff {max(result.check['max_abs_diff'].values()):.2e} "
             f"(tolerance {result.check['tolerance']:g})"]
    for path in result.removed:
        lines.append(f"removed {path}: an INT8 model from an earlier export, not a copy of this one")
    if result.int8:
        lines += format_int8_summary(Path(result.int8["path"] or result.int8_path or "MODEL.int8.onnx"), result.int8)
    lines.append(f"use it: python -c \"import wildlife_vision as wv; print(wv.load_model('{result.path}')"
                 ".predict('photo.jpg'))\"")
    return "\n".join(lines)
