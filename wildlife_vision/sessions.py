"""Inference sessions for :class:`~wildlife_vision.model.Model`: onnxruntime (the core) and OpenVINO (the
``[openvino]`` extra), behind onnxruntime's small interface (``run``, ``get_inputs``, ``get_outputs``,
``get_providers``), so that the one scoring loop runs on either."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import ModelLoadError


def onnxruntime_session(data: bytes, providers: List[str], threads: Optional[int], source: str,
                        gpu_providers: Sequence[str]) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    if not any(p in gpu_providers for p in providers):
        # idle intra-op threads sleep instead of spinning, leaving the cores to the decoding threads: on 2 cores
        # end-to-end photos/s went up 4-6% and batch-only photos/s down 7-9% (docs/benchmark.md)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(data, sess_options=opts, providers=providers)
    except Exception as e:  # onnxruntime raises several private exception types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ModelLoadError(
            f"{source} could not be loaded by onnxruntime (a damaged file, or operators this onnxruntime "
            f"does not support; try `pip install -U onnxruntime`): {first}") from None


@dataclass(frozen=True)
class _Arg:
    name: str
    shape: List[Any]


def _arg(port: Any) -> _Arg:
    """An OpenVINO port as onnxruntime's NodeArg: its name and shape (None for a dynamic dimension)."""
    return _Arg(port.get_any_name(), [d.get_length() if d.is_static else None for d in port.get_partial_shape()])


class OpenVINOSession:
    """An OpenVINO CPU model with onnxruntime's session interface. ``precision``: ``fp32`` or ``bf16``
    (OpenVINO's ``INFERENCE_PRECISION_HINT``); each :meth:`run` uses a new infer request, so concurrent callers
    do not share state."""

    def __init__(self, data: bytes, precision: str, threads: Optional[int], source: str,
                 normalize: Optional[Tuple[Sequence[float], Sequence[float]]] = None):
        try:
            import openvino as ov
        except ImportError:
            raise ModelLoadError("the OpenVINO runtime is not installed: pip install 'wildlife-vision[openvino]'") from None
        self._ov, self._core, self._data, self._source = ov, ov.Core(), data, source
        self._config: Dict[str, Any] = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                                        "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = int(threads)
        #: True: the compiled model takes (N, H, W, 3) uint8 crops and normalises them in the graph (a profile
        #: calibrated that way, ``"input": "uint8-nhwc"``); float (N, 3, H, W) batches then run a second, plain
        #: compilation made on first use
        self.takes_uint8 = normalize is not None
        self._plain: Any = None
        model = self._read()
        self._inputs = [_arg(p) for p in model.inputs]  # the file's own (N, 3, H, W) float input
        self._compiled = self._compile(model, normalize)
        if self.takes_uint8:
            self._u8_name = self._compiled.inputs[0].get_any_name()
        self.precision = precision
        got = str(self._compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
        self.inference_precision = "bf16" if ("bf16" in got or "bfloat16" in got) else "fp32"
        if self.inference_precision != ("bf16" if precision == "bf16" else "fp32"):
            raise ModelLoadError(f"OpenVINO runs {source} in {got}, not the {precision} that was asked for (and "
                                 "calibrated); this CPU may lack native support")
        self._outputs = [_arg(p) for p in self._compiled.outputs]

    def _failed(self, e: BaseException) -> ModelLoadError:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        return ModelLoadError(f"{self._source} could not be compiled by OpenVINO: {first}")

    def _read(self) -> Any:
        try:
            return self._core.read_model(self._data, b"")  # the ONNX bytes, no weights file
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses
            raise self._failed(e) from None

    def _compile(self, model: Any, normalize: Optional[Tuple[Sequence[float], Sequence[float]]]) -> Any:
        try:
            if normalize is not None:
                from openvino.preprocess import PrePostProcessor

                mean, std = normalize
                ppp = PrePostProcessor(model)
                inp = ppp.input(model.inputs[0].get_any_name())
                inp.tensor().set_element_type(self._ov.Type.u8).set_layout(self._ov.Layout("NHWC"))
                inp.model().set_layout(self._ov.Layout("NCHW"))
                # (x / 255 - mean) / std, as wildlife_vision.preprocess.normalize
                inp.preprocess().convert_element_type(self._ov.Type.f32).mean(
                    [255.0 * float(m) for m in mean]).scale([255.0 * float(v) for v in std])
                model = ppp.build()
            return self._core.compile_model(model, "CPU", self._config)
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses
            raise self._failed(e) from None

    def get_inputs(self) -> List[_Arg]:
        return list(self._inputs)

    def get_outputs(self) -> List[_Arg]:
        return list(self._outputs)

    def get_providers(self) -> List[str]:
        return [f"OpenVINO:CPU:{self.precision}"]

    def run(self, names: Sequence[str], feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
        x = np.ascontiguousarray(next(iter(feeds.values())))
        if self.takes_uint8 and x.dtype == np.uint8:
            request = self._compiled.create_infer_request()
            request.infer({self._u8_name: x})
        else:
            if self.takes_uint8 and self._plain is None:
                self._plain = self._compile(self._read(), None)  # the uint8 compilation changed its model
            request = (self._plain or self._compiled).create_infer_request()
            request.infer({self._inputs[0].name: x})
        return [np.array(request.get_tensor(n).data, copy=True) for n in names]


__all__ = ["onnxruntime_session", "OpenVINOSession"]
