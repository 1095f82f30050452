"""Class activation maps as an output of the exported graph: ``cam`` (N, labels, h, w), computed with the scores.

For a backbone that ends in global average pooling and a linear head (every timm classifier that
`wildlife-vision export` writes: ``GlobalAveragePool -> Flatten -> Gemm -> Sigmoid``), the class activation map
is exact: the last feature map ``F`` (N, C, h, w) weighted by the label's classifier row, plus its bias,

    cam[n, l, y, x] = sum_c W[l, c] * F[n, c, y, x] + b[l]

and its spatial mean is the label's logit (pooling and the head are both linear), so the map decomposes the score
over the grid with nothing left over. It is added as a 1x1 convolution that reads the classifier's own weight
initializer through a Reshape (no copy of the weights), so ``scores`` and ``embedding`` are untouched and
onnxruntime computes ``cam`` only when it is asked for. The same rewrite works on the INT8 twin, whose pooled
feature map is dequantised float and whose head stays fp32.

The file's metadata gets a ``heatmap`` block (output name, method, grid, the pooled layer); the runtime's
:meth:`wildlife_vision.Model.explain` reads it. ``wildlife-vision heatmaps IN.onnx --output OUT.onnx`` (or
``python -m wildlife_vision_train.heatmap IN.onnx OUT.onnx``) adds the output to an existing file (its scores are
checked to be unchanged).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from wildlife_vision.metadata import METADATA_KEY

# onnx is imported inside the functions, so that loading the `heatmaps` command for --help needs no onnx

CAM_OUTPUT = "cam"


class HeatmapExportError(ValueError):
    """The graph does not end in pooling and a linear head, so its class activation map is not exact."""


def _producers(graph: "onnx.GraphProto") -> Dict[str, "onnx.NodeProto"]:  # noqa: F821
    return {out: node for node in graph.node for out in node.output}


def find_linear_head(graph: "onnx.GraphProto",  # noqa: F821
                     scores: str = "scores") -> Dict[str, Any]:
    """Locate ``F -> GlobalAveragePool -> Flatten -> Gemm(W, b) [-> Sigmoid] -> scores``; raise when absent."""
    from onnx import helper, numpy_helper

    prod = _producers(graph)
    node = prod.get(scores)
    if node is not None and node.op_type == "Sigmoid":
        node = prod.get(node.input[0])
    if node is None or node.op_type != "Gemm":
        raise HeatmapExportError(f"'{scores}' is not produced by a linear head (Gemm); class activation maps are "
                                 "exact only for pooled features and a linear classifier (use Grad-CAM in the trainer)")
    gemm = node
    attrs = {a.name: helper.get_attribute_value(a) for a in gemm.attribute}
    if attrs.get("transA", 0) or float(attrs.get("alpha", 1.0)) != 1.0 or float(attrs.get("beta", 1.0)) != 1.0:
        raise HeatmapExportError("the head's Gemm uses transA/alpha/beta; not supported for class activation maps")
    flat = prod.get(gemm.input[0])
    pool = prod.get(flat.input[0]) if flat is not None and flat.op_type in ("Flatten", "Reshape", "Squeeze") else flat
    if pool is None or pool.op_type != "GlobalAveragePool":
        raise HeatmapExportError("the head is not fed by global average pooling; the class activation map would "
                                 "not be exact for this graph")
    inits = {i.name: i for i in graph.initializer}
    if gemm.input[1] not in inits:
        raise HeatmapExportError("the classifier weight is not a constant initializer")
    weight = numpy_helper.to_array(inits[gemm.input[1]])
    bias_name = gemm.input[2] if len(gemm.input) > 2 and gemm.input[2] else None
    return {"gemm": gemm, "pool": pool, "features": pool.input[0], "weight_name": gemm.input[1],
            "weight_shape": tuple(weight.shape), "trans_b": int(attrs.get("transB", 0)), "bias_name": bias_name}


def add_cam_output(model: "onnx.ModelProto",  # noqa: F821
                   scores: str = "scores") -> Tuple["onnx.ModelProto", Dict[str, Any]]:  # noqa: F821
    """Add the ``cam`` output (class logits per feature-map cell) to ``model`` in place; return it and the
    ``heatmap`` metadata block. A model that already has the output is returned unchanged."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    head = find_linear_head(graph, scores)
    w_shape = head["weight_shape"]
    labels, channels = (w_shape[0], w_shape[1]) if head["trans_b"] else (w_shape[1], w_shape[0])
    info = {"output": CAM_OUTPUT, "method": "cam", "logits": True, "layer": head["features"],
            "channels": int(channels),
            "rule": "cam[label] = classifier weights of the label . last feature map + bias; its spatial mean "
                    "is the label's logit"}
    if any(o.name == CAM_OUTPUT for o in graph.output):
        return model, info
    weight = head["weight_name"]
    nodes = []
    if not head["trans_b"]:  # W is (C, L): the Conv wants (L, C, 1, 1)
        nodes.append(helper.make_node("Transpose", [weight], ["cam/weight_t"], perm=[1, 0], name="cam/Transpose"))
        weight = "cam/weight_t"
    shape_name = "cam/kernel_shape"
    graph.initializer.append(numpy_helper.from_array(np.array([labels, channels, 1, 1], dtype=np.int64), shape_name))
    nodes.append(helper.make_node("Reshape", [weight, shape_name], ["cam/kernel"], name="cam/Reshape"))
    conv_in = [head["features"], "cam/kernel"] + ([head["bias_name"]] if head["bias_name"] else [])
    nodes.append(helper.make_node("Conv", conv_in, [CAM_OUTPUT], kernel_shape=[1, 1], name="cam/Conv"))
    graph.node.extend(nodes)
    from wildlife_vision_train.canonical import unflip_cam

    if unflip_cam(graph, CAM_OUTPUT):  # a graph with mirror canonicalisation: cam back in the photo's orientation
        info["mirror_canonical"] = "cam is flipped back for the inputs the graph flipped"
    graph.output.append(helper.make_tensor_value_info(CAM_OUTPUT, onnx.TensorProto.FLOAT,
                                                      ["batch", int(labels), None, None]))
    onnx.checker.check_model(model)
    return model, info


def _metadata(model: "onnx.ModelProto") -> Dict[str, Any]:  # noqa: F821
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    raise HeatmapExportError(f"the model has no '{METADATA_KEY}' metadata")


def set_heatmap_metadata(model: "onnx.ModelProto",  # noqa: F821
                         info: Dict[str, Any]) -> None:
    """Write ``info`` as the ``heatmap`` block of the model's wildlife_vision metadata."""
    meta = _metadata(model)
    meta["heatmap"] = dict(info)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            prop.value = json.dumps(meta, sort_keys=True, allow_nan=False)


def with_heatmaps(data: bytes, scores: str = "scores") -> bytes:
    """The bytes of a model file with the ``cam`` output and its metadata block added."""
    import onnx

    model = onnx.load_from_string(data)
    model, info = add_cam_output(model, scores)
    set_heatmap_metadata(model, info)
    return model.SerializeToString()


def check_unchanged(before: bytes, after: bytes, batch: Optional[np.ndarray] = None, tol: float = 0.0) -> float:
    """Run both files on ``batch`` (random by default); return the largest score change, raise if over ``tol``.
    Also checks that the spatial mean of ``cam`` reproduces the logits."""
    import onnxruntime as ort

    a = ort.InferenceSession(before, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(after, providers=["CPUExecutionProvider"])
    inp = a.get_inputs()[0]
    if batch is None:
        h, w = inp.shape[2], inp.shape[3]
        batch = np.random.default_rng(0).normal(size=(2, 3, h, w)).astype(np.float32)
    s_a = a.run(["scores"], {inp.name: batch})[0]
    s_b, cam = b.run(["scores", CAM_OUTPUT], {inp.name: batch})
    diff = float(np.max(np.abs(s_a - s_b)))
    if diff > tol:
        raise HeatmapExportError(f"adding the heatmap output changed the scores by {diff:g}")
    logits = np.log(np.clip(s_b, 1e-7, 1 - 1e-7) / np.clip(1 - s_b, 1e-7, 1))
    mean = cam.reshape(cam.shape[0], cam.shape[1], -1).mean(axis=2)
    ok = np.abs(s_b - 1 / (1 + np.exp(-mean))) <= 1e-4
    if not np.all(ok | (np.abs(logits) > 15)):  # saturated sigmoids carry no logit to compare
        raise HeatmapExportError("the heatmap's spatial mean does not reproduce the scores; the head is not linear")
    return diff


def add_to_file(model: Path, output: Path) -> int:
    """Add the output to the file ``model``, writing ``output``; the exit code (1 when the graph cannot have it)."""
    before = Path(model).read_bytes()
    try:
        after = with_heatmaps(before)
        diff = check_unchanged(before, after)
    except HeatmapExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    from wildlife_vision.data.manifest import atomic_write_bytes

    atomic_write_bytes(Path(output), after)
    print(f"wrote {output}: 'cam' output added, scores unchanged (max change {diff:g})")
    return 0


def register(subparsers: Any) -> None:
    """`wildlife-vision heatmaps MODEL.onnx --output NEW.onnx` (the train extra: it needs the onnx package)."""
    p = subparsers.add_parser("heatmaps", help="add the heatmap output ('cam') to an exported model file",
                              description="Add the class-activation-map output that Model.explain and predict "
                                          "--explain read to a model exported before heatmaps. The scores stay "
                                          "exactly the same (checked).")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--output", "-o", required=True, metavar="NEW.onnx", help="the new file (may be MODEL itself)")
    p.set_defaults(func=lambda args: add_to_file(Path(args.model), Path(args.output)))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wildlife_vision_train.heatmap",
                                description="Add the class-activation-map output ('cam') to an exported model file.")
    p.add_argument("model", help="an exported wildlife-vision ONNX file")
    p.add_argument("output", help="where to write the new file (may equal MODEL)")
    args = p.parse_args(argv)
    return add_to_file(Path(args.model), Path(args.output))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
