"""Export a training run to one self-describing ONNX file, check it against torch, optionally quantise to INT8.

The graph takes ``pixel_values`` (N, 3, H, W) float32 — only the batch axis is dynamic — and returns ``scores``
(N, labels; sigmoid probabilities) and ``embedding`` (N, D; pooled pre-logits features). The file's
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
from wildlife_vision.errors import ImageDecodeError
from wildlife_vision.metadata import METADATA_KEY, ModelMetadata
from wildlife_vision.preprocess import PreprocessConfig, preprocess

from wildlife_vision_train.backbones import ScoresAndEmbedding, check_wrapper
from wildlife_vision_train.config import TrainConfig
from wildlife_vision.evaluation.evaluate import score_onnx, summary
from wildlife_vision.data.manifest import Sample, read_manifest, targets_for
from wildlife_vision.data.splits import fill_missing_splits
from wildlife_vision.evaluation.metrics import average_precision, macro_ap
from wildlife_vision_train.checkpoint import build_model_from_checkpoint, load_checkpoint

log = logging.getLogger(__name__)

TOLERANCE = 1e-4
DEFAULT_OPSET = 17
INPUT_NAME, SCORES, EMBEDDING = "pixel_values", "scores", "embedding"


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


class _CalibrationReader:
    """onnxruntime CalibrationDataReader over preprocessed training images."""

    def __init__(self, batch: np.ndarray, chunk: int = 8):
        self._items = [{INPUT_NAME: batch[i:i + chunk]} for i in range(0, len(batch), chunk)]
        self._it = iter(self._items)

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._items)


def shape_arithmetic_nodes(model) -> List[str]:
    """Names of the nodes that compute shapes, not pixels: everything downstream of a ``Shape`` node that does
    not also read image data (TF-"same" padding in tf_efficientnet computes its pad widths in float Sub/Mul/Add
    nodes). Quantising those rounds the pad widths and shifts feature maps: keep them in float."""
    data = {i.name for i in model.graph.input}
    out = []
    for node in model.graph.node:  # ONNX graphs are stored in topological order
        if node.op_type != "Shape" and any(i in data for i in node.input):
            data.update(node.output)
        else:
            out.append(node.name)
    return out


#: weights keep a 7-bit range (``reduce_range``): on x86 CPUs without VNNI (AVX2, AVX-512F) onnxruntime's u8s8
#: kernels add pairs of u8 x s8 products in saturating int16 (VPMADDUBSW), and with full-range weights the shipped
#: lite0 model lost 0.016 macro-AP on such a CPU (AMD Zen 3) while losing 0.003 on one with VNNI
WEIGHTS_DESCRIPTION = "int8 per-channel, 7-bit range (no u8s8 saturation on CPUs without VNNI)"


def quantize_int8(fp32_path: Path, int8_path: Path, calib_batch: np.ndarray, meta: ModelMetadata) -> None:
    """Static INT8 quantisation (QDQ, per-channel 7-bit-range weights, MinMax activations) calibrated on
    ``calib_batch``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    tmp_dir = int8_path.parent
    pre_path = tmp_dir / (int8_path.name + ".pre.tmp")
    raw_path = tmp_dir / (int8_path.name + ".raw.tmp")
    try:
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(fp32_path), str(pre_path), skip_symbolic_shape=True)
            source = pre_path
        except Exception as e:  # noqa: BLE001 - pre-processing is an optimisation; quantise the plain graph
            log.warning("quantisation pre-processing failed (%s); quantising the exported graph as is", e)
            source = fp32_path
        logging.disable(logging.INFO)  # onnxruntime.quantization logs one INFO line per rescaled bias on root
        try:
            quantize_static(str(source), str(raw_path), _CalibrationReader(calib_batch),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                            reduce_range=True,
                            nodes_to_exclude=shape_arithmetic_nodes(onnx.load(str(source))))
        finally:
            logging.disable(logging.NOTSET)
        model = onnx.load(str(raw_path))
        del model.metadata_props[:]
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, meta.to_json()
        onnx.save(model, str(int8_path))
    finally:
        for p in (pre_path, raw_path):
            if p.exists():
                p.unlink()


def write_int8(fp32_path: Path, int8_path: Path, meta: ModelMetadata, samples: Sequence[Sample],
               val: Sequence[Sample], seed: int, calib_images: int = 128) -> Dict[str, Any]:
    """Quantise ``fp32_path`` (whose metadata is ``meta``) to ``int8_path``, calibrated on ``calib_images``
    training photos drawn with ``seed``; score both on ``val`` and record the AP comparison in the INT8 file.
    Returns the comparison table."""
    import onnx

    from wildlife_vision import load_model

    pre_cfg, labels = meta.preprocess, list(meta.labels)
    train_samples = [s for s in samples if s.split == "train"] or list(samples)
    rng = np.random.default_rng(seed)
    pick = [train_samples[i] for i in rng.permutation(len(train_samples))[:calib_images * 2]]
    calib_batch, calib_kept = _preprocess_samples(pick, pre_cfg, calib_images)
    training = {k: v for k, v in dict(meta.training).items() if k != "quantization"}
    int8_meta = dataclasses.replace(meta, name=meta.name + "-int8", training={
        **training, "quantization": {"method": "onnxruntime static QDQ", "weights": WEIGHTS_DESCRIPTION,
                                     "activations": "uint8 MinMax", "calibration_images": len(calib_kept),
                                     "source": fp32_path.name}})
    log.info("quantising to INT8 with %d training images", len(calib_kept))
    quantize_int8(fp32_path, int8_path, calib_batch, int8_meta)
    # both models through wildlife_vision.load_model, streaming over the val split
    fp32_scores, val_kept, _ = score_onnx(load_model(fp32_path), val)
    int8_scores, _, _ = score_onnx(load_model(int8_path), val_kept)
    table = _ap_table(targets_for(val_kept, labels), fp32_scores, int8_scores, labels)
    table.update({"val_images": len(val_kept), "calibration_images": len(calib_kept),
                  "size_bytes_fp32": fp32_path.stat().st_size, "size_bytes_int8": int8_path.stat().st_size})
    # record the comparison inside the INT8 file too
    final_meta = dataclasses.replace(int8_meta, metrics={**int8_meta.metrics, "int8_vs_fp32": table})
    model8 = onnx.load(str(int8_path))
    for p in model8.metadata_props:
        if p.key == METADATA_KEY:
            p.value = final_meta.to_json()
    onnx.save(model8, str(int8_path))
    log.info("INT8 model %s: macro-AP %s -> %s", int8_path, table["macro"]["ap_fp32"], table["macro"]["ap_int8"])
    return table


def _ap_table(y: np.ndarray, fp32: np.ndarray, int8: np.ndarray, labels: Sequence[str]) -> Dict[str, Any]:
    per = {}
    for j, lab in enumerate(labels):
        a, b = average_precision(y[:, j], fp32[:, j]), average_precision(y[:, j], int8[:, j])
        per[lab] = {"ap_fp32": a, "ap_int8": b, "change": (b - a) if a is not None and b is not None else None}
    ma, mb = macro_ap(y, fp32), macro_ap(y, int8)
    return {"per_label": per, "macro": {"ap_fp32": ma, "ap_int8": mb,
                                        "change": (mb - ma) if ma is not None and mb is not None else None},
            "max_abs_score_diff": float(np.abs(fp32 - int8).max()) if len(y) else None}


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


def export_run(run_dir: Path, output: Path, int8: bool = False, int8_output: Optional[Path] = None,
               name: Optional[str] = None, version: str = "1.0.0", opset: int = DEFAULT_OPSET,
               data: Optional[Path] = None, check_images: int = 16, calib_images: int = 128,
               tolerance: float = TOLERANCE, overwrite: bool = False) -> ExportResult:
    """Export ``run_dir``'s best checkpoint to ``output`` (and optionally an INT8 copy); see module docstring.

    Existing files are refused (``FileExistsError``) unless ``overwrite``: the model, the INT8 model, and a
    ``MODEL.int8.onnx`` from an earlier export that this export would leave beside a new model it does not
    match (with ``overwrite`` that file is removed once the new model is written; ``result.removed`` names it).
    """
    t0 = time.time()
    run_dir, output = Path(run_dir), Path(output)
    if opset < 17:
        raise ValueError(f"--opset must be 17 or newer, got {opset}")
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
    meta = ModelMetadata(
        labels=tuple(labels), thresholds=cal["thresholds"],
        review_bands={k: tuple(v) for k, v in cal["review_bands"].items()}, preprocess=pre_cfg,
        name=name or f"wildlife-vision-{cfg.model.name}", model_version=version, backbone=cfg.model.name,
        input_name=INPUT_NAME, output_name=SCORES, calibration=cal["calibration"], training=training_block,
        metrics=summary(report), package_version=__version__, created=created)
    ModelMetadata.from_json(meta.to_json())  # the library's own validation must accept it

    onnx_bytes, exporter = _export_graph(wrapper, pre_cfg.input_size, opset)
    model_proto = _with_metadata(onnx_bytes, meta)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    import onnx

    onnx.save(model_proto, str(tmp))
    try:
        check = check_against_torch(tmp, wrapper, check_batch, [s.path for s in check_kept], tolerance)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, output)
    check.update({"exporter": exporter, "opset": opset})
    log.info("exported %s (%s exporter, opset %d); onnxruntime vs torch max abs diff %.2e on %d real images",
             output, exporter, opset, max(check["max_abs_diff"].values()), check["images"])
    result = ExportResult(path=output, check=check)

    if stale is not None:  # refused above unless overwrite: it belongs to the model this export replaced
        stale.unlink()
        result.removed.append(stale)
        log.info("removed %s, left by an earlier export: it is not an INT8 copy of the new model", stale)
    if int8_path is not None:
        result.int8_path, result.int8 = int8_path, write_int8(output, int8_path, meta, samples, val, cfg.run.seed,
                                                              calib_images)

    result.seconds = time.time() - t0
    record = {"model": str(output), "created": created, "check": check, "int8_model": str(result.int8_path or ""),
              "int8": result.int8, "seconds": round(result.seconds, 2)}
    output.with_name(output.stem + ".export.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    return result


def format_export_summary(result: ExportResult) -> str:
    lines = [f"exported {result.path} ({result.path.stat().st_size / 1e6:.1f} MB); onnxruntime vs torch on "
             f"{result.check['images']} real images: max abs diff {max(result.check['max_abs_diff'].values()):.2e} "
             f"(tolerance {result.check['tolerance']:g})"]
    for path in result.removed:
        lines.append(f"removed {path}: an INT8 model from an earlier export, not a copy of this one")
    if result.int8_path:
        t = result.int8
        lines.append(f"INT8 model {result.int8_path} ({t['size_bytes_int8'] / 1e6:.1f} MB), val AP change vs fp32 on "
                     f"{t['val_images']} images:")
        for lab, row in list(t["per_label"].items()) + [("macro", t["macro"])]:
            if row["ap_fp32"] is None:
                lines.append(f"  {lab:<16} n/a (no positives)")
            else:
                lines.append(f"  {lab:<16} {row['ap_fp32']:.4f} -> {row['ap_int8']:.4f} ({row['change']:+.4f})")
    lines.append(f"use it: python -c \"import wildlife_vision as wv; print(wv.load_model('{result.path}')"
                 ".predict('photo.jpg'))\"")
    return "\n".join(lines)
