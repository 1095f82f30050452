"""The INT8 twin of an exported model: static quantisation, its own thresholds and review bands, and the gate.

Quantising moves scores (by up to ~0.5 on a few photos of the shipped lite0 model), so the fp32 thresholds do
not fit the INT8 model: at them it flags fewer positives. :func:`write_int8` therefore

1. quantises the fp32 file (:func:`quantize_int8`, recipe :data:`DEFAULT_RECIPE`, calibrated on training photos),
2. scores both files through ``wildlife_vision.load_model`` (the runtime's one scoring loop) on the rows the fp32
   thresholds were chosen on (the run's val split),
3. chooses the INT8 model's own thresholds and review bands on its own scores with the run's calibration target
   (``wildlife_vision.evaluation.calibrate``) and writes them, its metrics (AP, precision, recall at its
   thresholds, 95% bootstrap intervals) and the ``int8_gate`` block into the INT8 file's metadata,
4. gates it per label (:func:`gate`): the AP drop, and at matched precision (each model at its own threshold for
   the run's target precision) the recall drop, and that the INT8 model reaches the target precision.

A failing INT8 model is not written unless ``allow_failing`` (then ``int8_gate.passed`` is false in its metadata).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from wildlife_vision.errors import ImageDecodeError
from wildlife_vision.evaluation.gate import (MAX_AP_DROP, MAX_RECALL_DROP, PRECISION_TOLERANCE, GateLimits,  # noqa: F401
                                            gate, operating_point)
from wildlife_vision.metadata import METADATA_KEY, ModelMetadata
from wildlife_vision.preprocess import PreprocessConfig, preprocess

if TYPE_CHECKING:  # the evaluation modules are imported where used: `export --help` reads the gate defaults here
    from wildlife_vision.data.manifest import Sample

log = logging.getLogger(__name__)

INPUT_NAME = "pixel_values"

#: the gate and its defaults (``export --int8-max-ap-drop``, ``--int8-max-recall-drop``,
#: ``--int8-precision-tolerance``) live in wildlife_vision.evaluation.gate, shared with `calibrate --profile`


# ---- quantisation ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QuantRecipe:
    """How the INT8 model is made (onnxruntime static QDQ quantisation, per-channel int8 weights, uint8
    activations); recorded in its metadata. The defaults are what measured closest to fp32 on the shipped lite0
    model without being unsafe on any x86 CPU (see docs/int8.md).

    ``keep_float``: parts left in fp32 besides the shape arithmetic (always kept, :func:`shape_arithmetic_nodes`):
    ``"head"`` (pooling, classifier, sigmoid: :func:`head_nodes`) and ``"stem"`` (the first convolution).
    ``reduce_range``: 7-bit weights for the convolutions that run on onnxruntime's u8s8 GEMM (see
    :data:`WEIGHTS_DESCRIPTION`); ``depthwise_full_range``: but full 8-bit weights for the depthwise ones, whose
    kernel widens to 16 bit before multiplying and cannot saturate.
    """

    method: str = "MinMax"             # activation ranges: onnxruntime CalibrationMethod MinMax, Entropy, Percentile
    percentile: float = 99.999         # Percentile only
    reduce_range: bool = True
    depthwise_full_range: bool = True
    keep_float: Tuple[str, ...] = ("head",)
    calibration_images: int = 128

    def describe(self) -> Dict[str, Any]:
        if not self.reduce_range:
            weights = "int8 per-channel, full 8-bit range (for CPUs with VNNI; may saturate on AVX2 without it)"
        else:
            weights = WEIGHTS_DESCRIPTION + (", full 8-bit range for depthwise convolutions (16-bit kernel)"
                                             if self.depthwise_full_range else "")
        acts = "uint8 " + self.method + (f" {self.percentile}th percentile" if self.method == "Percentile" else "")
        return {"method": "onnxruntime static QDQ", "weights": weights, "activations": acts,
                "kept_in_float": ["shape arithmetic", *self.keep_float]}


#: weights keep a 7-bit range (``reduce_range``): on x86 CPUs without VNNI (AVX2, AVX-512F) onnxruntime's u8s8
#: kernels add pairs of u8 x s8 products in saturating int16 (VPMADDUBSW), and with full-range weights the shipped
#: lite0 model lost 0.016 macro-AP on such a CPU (AMD Zen 3) while losing 0.003 on one with VNNI
WEIGHTS_DESCRIPTION = "int8 per-channel, 7-bit range (no u8s8 saturation on CPUs without VNNI)"

DEFAULT_RECIPE = QuantRecipe()


class _CalibrationReader:
    """onnxruntime CalibrationDataReader over preprocessed training images."""

    def __init__(self, batch: np.ndarray, chunk: int = 8):
        self._items = [{INPUT_NAME: batch[i:i + chunk]} for i in range(0, len(batch), chunk)]
        self._it = iter(self._items)

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._items)


KEEP_FLOAT_GROUPS = ("stem", "head")


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


#: ops between the last feature map and the pooled features
_POOLING = ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "Flatten", "Reshape", "Squeeze")


def head_nodes(model, pooled: str = "embedding") -> List[str]:
    """The head: the pooling that makes the ``pooled`` features (the ``embedding`` output, else the last global
    pooling's output), and every node downstream of them (classifier, sigmoid). Quantised, it rounds each score
    to a multiple of 1/255 and each logit to about 0.1 (the shipped lite0 INT8 model gave 64 distinct ivory
    scores on 480 photos) and the embedding to steps of 1/255 of its range; in fp32 it is a few thousand
    multiply-adds per photo."""
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    if pooled not in producer:
        pools = [n for n in nodes if n.op_type in _POOLING[:3]]
        if not pools:
            return []
        pooled = pools[-1].output[0]
    names, tensor = [], pooled
    while tensor in producer and producer[tensor].op_type in _POOLING:  # back through the pooling
        names.append(producer[tensor].name)
        tensor = producer[tensor].input[0]
    downstream = {pooled}
    for node in nodes:  # topological order
        if any(i in downstream for i in node.input):
            downstream.update(node.output)
            names.append(node.name)
    return names


def float_nodes(model, keep: Sequence[str] = ()) -> List[str]:
    """The nodes :func:`quantize_int8` leaves in fp32: the shape arithmetic and the groups named in ``keep``
    (``stem``: the first convolution; ``head``: :func:`head_nodes`)."""
    unknown = sorted(set(keep) - set(KEEP_FLOAT_GROUPS))
    if unknown:
        raise ValueError(f"unknown part(s) to keep in float: {unknown} (choose from {', '.join(KEEP_FLOAT_GROUPS)})")
    names = shape_arithmetic_nodes(model)
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    if "stem" in keep and convs:
        names.append(convs[0])
    if "head" in keep:
        names += [n for n in head_nodes(model) if n not in names]
    return names


def depthwise_weights(model) -> List[str]:
    """The weight initializers of the depthwise convolutions (one filter per input channel)."""
    import onnx

    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        group = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "group"), 1)
        if group > 1 and inits[node.input[1]][1] == 1:
            out.append(node.input[1])
    return out


def _set_metadata(model, meta: ModelMetadata) -> None:
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta.to_json()


def quantize_int8(fp32_path: Path, int8_path: Path, calib_batch: np.ndarray, meta: ModelMetadata,
                  recipe: QuantRecipe = DEFAULT_RECIPE) -> None:
    """Static INT8 quantisation of ``fp32_path`` to ``int8_path`` (metadata ``meta``) calibrated on
    ``calib_batch``, by ``recipe``. Deterministic: the same inputs give the same file."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    tmp_dir = int8_path.parent
    pre_path = tmp_dir / (int8_path.name + ".pre.tmp")
    raw_path = tmp_dir / (int8_path.name + ".raw.tmp")
    extra: Dict[str, Any] = {}
    if recipe.method == "Percentile":
        extra["CalibPercentile"] = recipe.percentile
    try:
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(fp32_path), str(pre_path), skip_symbolic_shape=True)
            source = pre_path
        except Exception as e:  # noqa: BLE001 - pre-processing is an optimisation; quantise the plain graph
            log.warning("quantisation pre-processing failed (%s); quantising the exported graph as is", e)
            source = fp32_path
        graph = onnx.load(str(source))
        if recipe.reduce_range and recipe.depthwise_full_range:
            extra["TensorQuantOverrides"] = {name: [{"axis": 0, "reduce_range": False}]
                                             for name in depthwise_weights(graph)}
        logging.disable(logging.INFO)  # onnxruntime.quantization logs one INFO line per rescaled bias on root
        try:
            quantize_static(str(source), str(raw_path), _CalibrationReader(calib_batch),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=getattr(CalibrationMethod, recipe.method),
                            reduce_range=recipe.reduce_range, extra_options=extra,
                            nodes_to_exclude=float_nodes(graph, recipe.keep_float))
        finally:
            logging.disable(logging.NOTSET)
        model = onnx.load(str(raw_path))
        _set_metadata(model, meta)
        onnx.save(model, str(int8_path))
    finally:
        for p in (pre_path, raw_path):
            if p.exists():
                p.unlink()


def calibration_photos(samples: Sequence["Sample"], cfg: PreprocessConfig, n: int, seed: int
                       ) -> Tuple[np.ndarray, List["Sample"]]:
    """Up to ``n`` readable training photos (all samples when there is no train split), drawn with ``seed``,
    preprocessed by ``wildlife_vision.preprocess`` -> ((N, 3, H, W) float32, the photos)."""
    train = [s for s in samples if s.split == "train"] or list(samples)
    order = np.random.default_rng(seed).permutation(len(train))
    arrays, kept = [], []
    for i in order:
        if len(kept) >= n:
            break
        try:
            arrays.append(preprocess(train[i].path, cfg))
            kept.append(train[i])
        except ImageDecodeError as e:
            log.warning("skipping unreadable image %s: %s", train[i].image, e)
    h, w = cfg.input_size
    return (np.stack(arrays) if arrays else np.zeros((0, 3, h, w), np.float32)), kept


# ---- the INT8 model's own operating points and the gate ---------------------------------------------------

def _ap_table(y: np.ndarray, fp32: np.ndarray, int8: np.ndarray, labels: Sequence[str]) -> Dict[str, Any]:
    from wildlife_vision.evaluation.metrics import average_precision, macro_ap

    per = {}
    for j, lab in enumerate(labels):
        a, b = average_precision(y[:, j], fp32[:, j]), average_precision(y[:, j], int8[:, j])
        per[lab] = {"ap_fp32": a, "ap_int8": b, "change": (b - a) if a is not None and b is not None else None}
    ma, mb = macro_ap(y, fp32), macro_ap(y, int8)
    return {"per_label": per, "macro": {"ap_fp32": ma, "ap_int8": mb,
                                        "change": (mb - ma) if ma is not None and mb is not None else None},
            "max_abs_score_diff": float(np.abs(fp32 - int8).max()) if len(y) else None}


def write_int8(fp32_path: Path, int8_path: Path, meta: ModelMetadata, samples: Sequence["Sample"],
               val: Sequence["Sample"], seed: int, calib_images: Optional[int] = None,
               calib: Optional[Mapping[str, Any]] = None, limits: GateLimits = GateLimits(),
               allow_failing: bool = False, recipe: QuantRecipe = DEFAULT_RECIPE,
               resamples: Optional[int] = None) -> Dict[str, Any]:
    """Quantise ``fp32_path`` (metadata ``meta``), give the INT8 model its own thresholds and review bands on
    ``val`` (the rows the fp32 thresholds came from; ``calib``: their target, value and review_recall, default
    ``meta.calibration``), gate it against fp32 and write it to ``int8_path`` when it passes (or
    ``allow_failing``). Returns the comparison table: AP per label, both operating points, the gate
    (``table["gate"]["passed"]``) and whether the file was written (``table["written"]``)."""
    import onnx

    from wildlife_vision import load_model
    from wildlife_vision.data.manifest import targets_for
    from wildlife_vision.evaluation.bootstrap import DEFAULT_RESAMPLES, resample_indices
    from wildlife_vision.evaluation.calibrate import calibrate
    from wildlife_vision.evaluation.evaluate import build_report, group_ids, score_onnx, summary

    resamples = DEFAULT_RESAMPLES if resamples is None else resamples
    if calib_images is not None:
        recipe = dataclasses.replace(recipe, calibration_images=calib_images)
    calib = dict(calib or meta.calibration)
    target, value = str(calib.get("target", "precision")), float(calib.get("value", 0.95))
    review_recall = float(calib.get("review_recall", 0.95))
    split = str(calib.get("split", "val"))
    labels = list(meta.labels)
    calib_batch, calib_kept = calibration_photos(samples, meta.preprocess, recipe.calibration_images, seed)
    if not len(calib_batch):
        raise ValueError("no readable training photo to calibrate the INT8 quantisation with")
    training = {k: v for k, v in dict(meta.training).items() if k != "quantization"}
    quant = {**recipe.describe(), "calibration_images": len(calib_kept), "calibration_split": "train",
             "source": fp32_path.name}
    int8_meta = dataclasses.replace(meta, name=meta.name + "-int8", training={**training, "quantization": quant})
    tmp = int8_path.with_name(int8_path.name + ".tmp")
    log.info("quantising to INT8 with %d training images", len(calib_kept))
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        quantize_int8(fp32_path, tmp, calib_batch, int8_meta, recipe)
        # both models through wildlife_vision.load_model (the runtime's scoring loop), on the calibration rows
        fp32_scores, kept, _ = score_onnx(load_model(fp32_path), val)
        int8_scores, kept8, _ = score_onnx(load_model(tmp), kept)
        if len(kept8) != len(kept):
            raise RuntimeError("the INT8 model could not score photos the fp32 model scored")
        y = targets_for(kept, labels)
        thresholds, bands, calibration = calibrate(y, int8_scores, labels, target, value, review_recall, split)
        calibration.update({"scores": "this INT8 model's own", "fp32_thresholds": dict(meta.thresholds),
                            "fp32_review_bands": {k: list(v) for k, v in meta.review_bands.items()}})
        groups = group_ids(kept)
        draws = resample_indices(len(kept), groups, resamples) if resamples else []
        verdict = gate(y, fp32_scores, int8_scores, labels, meta.thresholds, thresholds, target, value, limits,
                       draws, split)
        info = {"split": split, "model": int8_path.name}
        int8_report = build_report(y, int8_scores, labels, thresholds, kept, info=info, resamples=resamples)
        fp32_report = build_report(y, fp32_scores, labels, meta.thresholds, kept,
                                   info={"split": split, "model": fp32_path.name}, resamples=resamples)
        table = _ap_table(y, fp32_scores, int8_scores, labels)
        table.update({"split": split, "val_images": len(kept), "calibration_images": len(calib_kept),
                      "size_bytes_fp32": fp32_path.stat().st_size, "size_bytes_int8": tmp.stat().st_size,
                      "operating_points": {"fp32": summary(fp32_report)["per_class"],
                                           "int8": summary(int8_report)["per_class"]}})
        final_meta = dataclasses.replace(
            int8_meta, thresholds=thresholds, review_bands=bands, calibration=calibration,
            metrics={**summary(int8_report), "int8_vs_fp32": {k: v for k, v in table.items()
                                                              if k != "operating_points"}, "int8_gate": verdict})
        ModelMetadata.from_json(final_meta.to_json())  # the library's own validation must accept it
        written = verdict["passed"] or allow_failing
        if written:
            model8 = onnx.load(str(tmp))
            _set_metadata(model8, final_meta)
            onnx.save(model8, str(tmp))
            os.replace(tmp, int8_path)
    finally:
        tmp.unlink(missing_ok=True)
    table.update({"gate": verdict, "written": written, "path": str(int8_path) if written else "",
                  "recipe": quant})
    log.info("INT8 model %s: macro-AP %s -> %s; gate %s", int8_path, table["macro"]["ap_fp32"],
             table["macro"]["ap_int8"], "passed" if verdict["passed"] else "FAILED: " + "; ".join(verdict["failures"]))
    return table
