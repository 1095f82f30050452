"""The ONNX rewrite behind `wildlife-vision adapt`: new label heads on the ``embedding`` output, in the same graph.

The parent's graph is kept node for node; only its ``scores`` (and ``cam``) outputs are renamed inside the graph
and rebuilt from them::

    embedding -> Gemm(W_new, b_new) -> Sigmoid --+
    parent scores ------------------------------+-> Concat(axis 1) [-> Gather(axis 1)] -> scores

``Gather`` (a plain copy) appears only when a refit label replaces a parent column, so the parent's labels keep
their scores exactly. The ``cam`` output is extended the same way with a 1x1 ``Conv`` of the new weights over
the feature map that the ``embedding`` pools, which is exact for a linear head on pooled features (its spatial
mean is the new label's logit). When the graph does not have that shape (``embedding`` is not
``Flatten(GlobalAveragePool(feature map of cam))``), the ``cam`` output is dropped and the caller drops the
metadata's ``heatmap`` block. Needs the ``onnx`` package (the ``[adapt]`` extra), imported lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

PREFIX = "wildlife_vision_adapt/"


class GraphError(ValueError):
    """The parent graph lacks what the rewrite needs (an ``embedding`` output, the scores output)."""


@dataclass
class Rewrite:
    """What :func:`add_heads` did: the new file's bytes, its label order, and whether ``cam`` was kept."""

    data: bytes
    labels: List[str]
    cam_kept: bool
    cam_note: str


def _producer(graph, name: str):
    for node in graph.node:
        if name in node.output:
            return node
    return None


def _cam_feature_map(graph, cam: str, embedding: str) -> Optional[str]:
    """The feature map the ``cam`` Conv reads, when ``embedding`` is exactly its pooled, flattened copy."""
    conv = _producer(graph, cam)
    flat = _producer(graph, embedding)
    if conv is None or conv.op_type != "Conv" or flat is None or flat.op_type != "Flatten":
        return None
    pool = _producer(graph, flat.input[0])
    if pool is None or pool.op_type != "GlobalAveragePool" or pool.input[0] != conv.input[0]:
        return None
    return conv.input[0]


def _rename_output(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]


def add_heads(data: bytes, parent_labels: Sequence[str], heads_w: np.ndarray, heads_b: np.ndarray,
              head_labels: Sequence[str], scores: str = "scores", embedding: str = "embedding",
              cam: Optional[str] = None) -> Rewrite:
    """The parent model ``data`` with heads ``heads_w`` (K, D), ``heads_b`` (K,) for ``head_labels`` added.

    A head label that is a parent label replaces that label's column (refit); the others are appended after the
    parent's labels, in order. Returns a :class:`Rewrite` (``labels``: the new file's label order). The
    metadata is not touched here (the caller writes it with :func:`wildlife_vision.metadata.write_metadata_bytes`).
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(bytes(data))
    graph = model.graph
    outputs = {o.name: o for o in graph.output}
    if embedding not in outputs:
        raise GraphError(f"the model has no '{embedding}' output (its outputs: {list(outputs)}); adapt needs a model "
                         "exported by `wildlife-vision export`, which adds the pooled features as 'embedding'")
    if scores not in outputs:
        raise GraphError(f"the model has no '{scores}' output (its outputs: {list(outputs)})")
    w = np.asarray(heads_w, dtype=np.float32)
    b = np.asarray(heads_b, dtype=np.float32).reshape(-1)
    k = len(head_labels)
    if w.ndim != 2 or w.shape[0] != k or b.shape != (k,):
        raise ValueError(f"heads of shape {w.shape} / {b.shape} for {k} labels")
    parent = list(parent_labels)
    labels = parent + [lab for lab in head_labels if lab not in parent]
    # column j of the new output: a parent column (index < len(parent)) or a head (len(parent) + its index)
    order = [len(parent) + list(head_labels).index(lab) if lab in head_labels else parent.index(lab)
             for lab in labels]
    identity = order == list(range(len(labels)))

    def rebuild(out_name: str, new_piece: str, tag: str) -> None:
        parent_name = PREFIX + "parent_" + tag
        _rename_output(graph, out_name, parent_name)
        joined = PREFIX + "joined_" + tag if not identity else out_name
        graph.node.append(helper.make_node("Concat", [parent_name, new_piece], [joined], axis=1,
                                           name=PREFIX + "concat_" + tag))
        if not identity:
            graph.node.append(helper.make_node("Gather", [joined, PREFIX + "order"], [out_name], axis=1,
                                               name=PREFIX + "gather_" + tag))
        dims = outputs[out_name].type.tensor_type.shape.dim
        if len(dims) >= 2:
            dims[1].Clear()
            dims[1].dim_value = len(labels)

    graph.initializer.extend([numpy_helper.from_array(w, PREFIX + "W"), numpy_helper.from_array(b, PREFIX + "B"),
                              numpy_helper.from_array(np.asarray(order, dtype=np.int64), PREFIX + "order")])
    graph.node.extend([
        helper.make_node("Gemm", [embedding, PREFIX + "W", PREFIX + "B"], [PREFIX + "logits"], transB=1,
                         name=PREFIX + "gemm"),
        helper.make_node("Sigmoid", [PREFIX + "logits"], [PREFIX + "scores"], name=PREFIX + "sigmoid"),
    ])
    rebuild(scores, PREFIX + "scores", "scores")

    cam_kept, note = False, "the parent has no heatmap output"
    if cam and cam in outputs:
        feature_map = _cam_feature_map(graph, cam, embedding)
        if feature_map is None:
            graph.output.remove(outputs[cam])
            note = (f"dropped: the parent's '{embedding}' output is not the pooled feature map of '{cam}', so a "
                    "heatmap of the new heads would not be exact")
        else:
            graph.initializer.append(numpy_helper.from_array(w.reshape(k, w.shape[1], 1, 1), PREFIX + "cam_W"))
            graph.node.append(helper.make_node("Conv", [feature_map, PREFIX + "cam_W", PREFIX + "B"],
                                               [PREFIX + "cam"], kernel_shape=[1, 1], name=PREFIX + "cam_conv"))
            rebuild(cam, PREFIX + "cam", "cam")
            cam_kept, note = True, "extended: the new heads' 1x1 Conv over the same feature map"
    elif cam:
        note = f"the parent's metadata names a heatmap output '{cam}' its graph does not have"
    onnx.checker.check_model(model)
    return Rewrite(data=model.SerializeToString(), labels=labels, cam_kept=cam_kept, cam_note=note)


__all__ = ["add_heads", "Rewrite", "GraphError", "PREFIX"]
