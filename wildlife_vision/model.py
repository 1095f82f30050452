"""The loaded model: one object that owns the onnxruntime session, its labels, thresholds and preprocessing."""

from __future__ import annotations

import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import ImageDecodeError, ModelLoadError
from .metadata import METADATA_KEY, ModelMetadata, read_onnx_metadata
from .preprocess import ImageInput, PreprocessConfig, preprocess

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider", "DmlExecutionProvider",
                 "CoreMLExecutionProvider")

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class Prediction:
    """The result for one input.

    ``scores`` maps every label to a probability in [0, 1]; ``flagged`` lists labels at or over their
    threshold; ``review`` lists labels whose score falls in their review band (just under the threshold:
    send to a human); ``error`` is None, or why this input could not be scored (then ``scores`` is empty).
    """

    input: str
    scores: Dict[str, float] = field(default_factory=dict)
    flagged: Tuple[str, ...] = ()
    review: Tuple[str, ...] = ()
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> Dict[str, Any]:
        return {"input": self.input, "scores": dict(self.scores), "flagged": list(self.flagged),
                "review": list(self.review), "error": self.error}


def default_model_path() -> Path:
    """Path of the shipped default model (installed as ``wildlife_vision.exported_models``)."""
    candidates: List[Path] = []
    try:
        from importlib import resources

        candidates.append(Path(str(resources.files("wildlife_vision.exported_models"))))
    except (ModuleNotFoundError, TypeError, ValueError):
        pass
    candidates.append(Path(__file__).resolve().parent.parent / "exported_models")
    for folder in candidates:
        default = folder / "DEFAULT"
        if default.is_file():
            name = default.read_text(encoding="utf-8").strip()
            if name and (folder / name).is_file():
                return folder / name
    tried = ", ".join(str(c) for c in candidates)
    raise ModelLoadError(
        f"no shipped default model found (looked in {tried}); pass a path: load_model('model.onnx'), "
        "or train and export one with `wildlife-vision train` and `wildlife-vision export`"
    )


def available_providers() -> List[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def _choose_providers(requested: Optional[Sequence[str]]) -> List[str]:
    available = available_providers()
    if requested is None:
        chosen = [p for p in ("CUDAExecutionProvider",) if p in available]
        return chosen + ["CPUExecutionProvider"]
    requested = [requested] if isinstance(requested, str) else list(requested)
    aliases = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "gpu": "CUDAExecutionProvider",
               "tensorrt": "TensorrtExecutionProvider", "coreml": "CoreMLExecutionProvider",
               "dml": "DmlExecutionProvider", "rocm": "ROCMExecutionProvider"}
    out = [aliases.get(p.lower(), p) if isinstance(p, str) else p for p in requested]
    unknown = [p for p in out if isinstance(p, str) and p not in available]
    gpu_missing = [p for p in unknown if p in GPU_PROVIDERS]
    if gpu_missing:
        warnings.warn(
            f"requested execution provider(s) {gpu_missing} are not available in this onnxruntime "
            f"(available: {available}); falling back to CPU. For GPUs install `wildlife-vision[gpu]` "
            "(onnxruntime-gpu) with a matching CUDA.", RuntimeWarning, stacklevel=3)
    other = [p for p in unknown if p not in GPU_PROVIDERS]
    if other:
        raise ValueError(f"unknown execution provider(s) {other}; available here: {available}")
    out = [p for p in out if p not in unknown]
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


class Model:
    """A wildlife_vision ONNX model ready to score photos. Create it with :func:`load_model`."""

    def __init__(self, path: PathLike, providers: Optional[Sequence[str]] = None, threads: Optional[int] = None,
                 batch_size: int = 32):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"model file not found: {self.path}")
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise ModelLoadError(f"cannot read model file {self.path}: {e.strerror or e}") from None
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        chosen = _choose_providers(providers)
        try:
            self.session = ort.InferenceSession(data, sess_options=opts, providers=chosen)
        except Exception as e:  # onnxruntime raises several private exception types
            raise ModelLoadError(
                f"{self.path} is not a valid ONNX model (truncated download or another file type?): "
                f"{str(e).splitlines()[0][:300]}") from None
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata: ModelMetadata = read_onnx_metadata(props, source=str(self.path))
        self._check_io()
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.providers: List[str] = list(self.session.get_providers())
        wanted_gpu = [p for p in chosen if p in GPU_PROVIDERS]
        if wanted_gpu and self.providers[0] not in GPU_PROVIDERS:
            warnings.warn(f"GPU provider {wanted_gpu[0]} could not be initialised; running on {self.providers[0]}",
                          RuntimeWarning, stacklevel=2)

    # ---- what the file says about itself -------------------------------------------------------
    @property
    def labels(self) -> Tuple[str, ...]:
        return self.metadata.labels

    @property
    def thresholds(self) -> Dict[str, float]:
        return dict(self.metadata.thresholds)

    @property
    def review_bands(self) -> Dict[str, Tuple[float, float]]:
        return dict(self.metadata.review_bands)

    @property
    def preprocess_config(self) -> PreprocessConfig:
        return self.metadata.preprocess

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def version(self) -> str:
        return self.metadata.model_version

    @property
    def provider(self) -> str:
        """The execution provider actually running the model (first in onnxruntime's list)."""
        return self.providers[0]

    def __repr__(self) -> str:
        return (f"Model(name={self.name!r}, version={self.version!r}, labels={list(self.labels)}, "
                f"provider={self.provider!r}, path='{self.path}')")

    def _check_io(self) -> None:
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        meta = self.metadata
        if len(inputs) != 1:
            raise ModelLoadError(f"{self.path}: expected one input, the model has {len(inputs)}")
        self._input_name = inputs[0].name
        shape = inputs[0].shape
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise ModelLoadError(f"{self.path}: expected an (N, 3, H, W) input, the model's is {shape}")
        h, w = meta.preprocess.input_size
        if (isinstance(shape[2], int) and shape[2] != h) or (isinstance(shape[3], int) and shape[3] != w):
            raise ModelLoadError(f"{self.path}: metadata says input size {h}x{w}, the graph expects {shape[2]}x{shape[3]}")
        names = [o.name for o in outputs]
        self._output_name = meta.output_name if meta.output_name in names else names[0]
        out_shape = next(o.shape for o in outputs if o.name == self._output_name)
        width = out_shape[-1] if out_shape else None
        if isinstance(width, int) and width != len(meta.labels):
            raise ModelLoadError(
                f"{self.path}: the model outputs {width} scores per image but its metadata lists "
                f"{len(meta.labels)} labels {list(meta.labels)}; the file is inconsistent, re-export it")

    # ---- scoring -----------------------------------------------------------------------------
    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        """Run the network on an already preprocessed (N, 3, H, W) float32 batch; returns (N, labels) scores."""
        out = self.session.run([self._output_name], {self._input_name: batch})[0]
        if out.ndim != 2 or out.shape[1] != len(self.labels):
            raise ModelLoadError(f"model returned scores of shape {out.shape}, expected (N, {len(self.labels)})")
        return out

    def _result(self, name: str, row: np.ndarray) -> Prediction:
        meta = self.metadata
        scores = {label: float(s) for label, s in zip(meta.labels, row)}
        flagged = tuple(lab for lab in meta.labels if scores[lab] >= meta.thresholds[lab])
        review = tuple(lab for lab in meta.labels
                       if meta.review_bands[lab][0] <= scores[lab] < meta.thresholds[lab])
        return Prediction(input=name, scores=scores, flagged=flagged, review=review)

    def predict(self, x: Union[ImageInput, Sequence[ImageInput]], batch_size: Optional[int] = None,
                workers: int = 1) -> Union[Prediction, List[Prediction]]:
        """Score one input (returns a :class:`Prediction`) or a list of inputs (returns a list, same order).

        Inputs may be paths, encoded bytes, PIL images or HxWx3 uint8 RGB arrays. An input that cannot be
        decoded gets a Prediction with ``error`` set; the others in its batch are scored normally.
        ``workers`` > 1 decodes in that many threads while the model runs.
        """
        single = not isinstance(x, (list, tuple))
        items = [x] if single else list(x)
        results = list(self.predict_iter(items, batch_size=batch_size, workers=workers))
        return results[0] if single else results

    def predict_iter(self, items: Iterable[ImageInput], batch_size: Optional[int] = None,
                     workers: int = 1, names: Optional[Iterable[str]] = None) -> Iterator[Prediction]:
        """Stream predictions for an iterable of inputs, in order, batch by batch."""
        bs = int(batch_size or self.batch_size)
        if bs < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        name_iter = iter(names) if names is not None else None
        pool = ThreadPoolExecutor(max_workers=workers) if workers and workers > 1 else None
        try:
            chunk: List[Tuple[str, ImageInput]] = []
            pending = None
            for item in items:
                name = next(name_iter) if name_iter is not None else _input_name(item)
                chunk.append((name, item))
                if len(chunk) == bs:
                    if pool is None:
                        yield from self._score_chunk(self._prepare(chunk))
                    else:
                        fut = pool.submit(self._prepare, chunk)
                        if pending is not None:
                            yield from self._score_chunk(pending.result())
                        pending = fut
                    chunk = []
            if pending is not None:
                yield from self._score_chunk(pending.result())
            if chunk:
                yield from self._score_chunk(self._prepare(chunk))
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _prepare(self, chunk: Sequence[Tuple[str, ImageInput]]):
        cfg = self.metadata.preprocess
        h, w = cfg.input_size
        batch = np.empty((len(chunk), 3, h, w), dtype=np.float32)
        errors: List[Optional[str]] = []
        for i, (_, item) in enumerate(chunk):
            try:
                preprocess(item, cfg, out=batch[i])
                errors.append(None)
            except ImageDecodeError as e:
                errors.append(str(e))
            except TypeError as e:
                errors.append(f"unsupported input: {e}")
            except MemoryError:
                errors.append("out of memory while decoding this image")
        return chunk, batch, errors

    def _score_chunk(self, prepared) -> Iterator[Prediction]:
        chunk, batch, errors = prepared
        good = [i for i, e in enumerate(errors) if e is None]
        scores = self.run_batch(batch[good]) if good else np.empty((0, len(self.labels)), np.float32)
        row_of = {i: r for r, i in enumerate(good)}
        for i, (name, _) in enumerate(chunk):
            if errors[i] is not None:
                yield Prediction(input=name, error=errors[i])
            else:
                yield self._result(name, scores[row_of[i]])


def _input_name(item: Any) -> str:
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, np.ndarray):
        return f"<ndarray {'x'.join(map(str, item.shape))}>"
    return f"<{type(item).__name__}>"


def load_model(path: Optional[PathLike] = None, providers: Optional[Sequence[str]] = None,
               threads: Optional[int] = None, batch_size: int = 32) -> Model:
    """Load a wildlife_vision ONNX model; with no ``path``, the shipped default model.

    ``providers``: onnxruntime execution providers in order of preference (names or short aliases
    ``"cuda"``, ``"cpu"``); default is CUDA when available, else CPU. ``threads``: intra-op threads
    (default: onnxruntime's choice, one per physical core).
    """
    return Model(default_model_path() if path is None else path, providers=providers, threads=threads,
                 batch_size=batch_size)


__all__ = ["Model", "Prediction", "load_model", "default_model_path", "available_providers", "METADATA_KEY"]
