"""The loaded model: one object that owns the onnxruntime session, its labels, thresholds and preprocessing.

Scoring (:meth:`Model.predict`) and embeddings (:meth:`Model.embed`) go through one loop: inputs are decoded
(optionally in threads, one batch ahead), batched, run through the session for one output, and turned into
one result per input, with a failed input never spoiling its batch.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import os
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Deque, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .errors import EmbeddingUnavailable, ImageDecodeError, MetadataError, ModelLoadError
from .evaluation.probability import ScoreMap, ScoreMapError, score_maps
from .metadata import METADATA_KEY, ModelMetadata, read_onnx_metadata, scan_onnx
from .explain import Explanation
from .profiles import SPECS, UINT8_INPUT, Choice, choose_profile, own_profile
from .sessions import OpenVINOSession, onnxruntime_session
from .fastjpeg import load_pixels
from .input_types import INPUT_TYPES, _checked_inputs, _input_name, _is_single, _unsupported  # noqa: F401
from .preprocess import (ImageInput, PreprocessConfig, crop_box, load_image, normalize, normalize_batch,
                         resize_and_crop_rgb)

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider", "DmlExecutionProvider",
                 "CoreMLExecutionProvider", "MIGraphXExecutionProvider", "OpenVINOExecutionProvider")

PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "gpu": "CUDAExecutionProvider",
                    "tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider",
                    "coreml": "CoreMLExecutionProvider", "dml": "DmlExecutionProvider",
                    "directml": "DmlExecutionProvider", "rocm": "ROCMExecutionProvider",
                    "openvino": "OpenVINOExecutionProvider"}

PathLike = Union[str, os.PathLike]

#: the name of the pooled-features output that `wildlife-vision export` adds beside the scores
EMBEDDING_OUTPUT = "embedding"
#: the class-activation-map output (labels x grid, logits) that `wildlife-vision export` adds for heatmaps
HEATMAP_OUTPUT = "cam"

@dataclass(frozen=True)
class Prediction:
    """The result for one input.

    ``scores`` maps every label to a probability in [0, 1] (float32 values); ``flagged`` lists labels at or
    over their threshold; ``review`` lists labels whose score falls in their review band (just under the
    threshold: send to a human); ``error`` is None, or why this input could not be scored (then ``scores``
    is empty and ``flagged``/``review`` are empty); ``error_kind`` is the error's stable category (see
    :data:`wildlife_vision.errors.ERROR_KINDS`).
    """

    input: str
    scores: Dict[str, float] = field(default_factory=dict)
    flagged: Tuple[str, ...] = ()
    review: Tuple[str, ...] = ()
    error: Optional[str] = None
    error_kind: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> Dict[str, Any]:
        return {"input": self.input, "scores": dict(self.scores), "flagged": list(self.flagged),
                "review": list(self.review), "error": self.error, "error_kind": self.error_kind}


@dataclass(frozen=True, eq=False)
class Embedding:
    """The embedding of one input: ``vector`` is the model's ``embedding`` output for it (1-D float32), or None
    when the input could not be embedded; then ``error`` says why and ``error_kind`` is its category (as for
    :class:`Prediction`)."""

    input: str
    vector: Optional[np.ndarray] = None
    error: Optional[str] = None
    error_kind: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None


def default_model_path() -> Path:
    """Path of the shipped default model (installed as ``wildlife_vision.exported_models``)."""
    candidates: List[Path] = []
    try:
        from importlib import resources

        candidates.append(Path(str(resources.files("wildlife_vision.exported_models"))))
    except (ModuleNotFoundError, TypeError, ValueError, AttributeError):
        pass
    source_tree = Path(__file__).resolve().parent.parent / "exported_models"
    if source_tree not in candidates:
        candidates.append(source_tree)
    for folder in candidates:
        default = folder / "DEFAULT"
        if default.is_file():
            name = default.read_text(encoding="utf-8").strip()
            if name and (folder / name).is_file():
                return folder / name
            raise ModelLoadError(f"{default} names the default model {name!r}, but {folder / name} does not exist; "
                                 "reinstall wildlife-vision or pass a path: load_model('model.onnx')")
    tried = ", ".join(str(c) for c in candidates)
    raise ModelLoadError(
        f"no shipped default model found (looked for exported_models/DEFAULT in {tried}); pass a path: "
        "load_model('model.onnx'), or train and export one with `wildlife-vision train` and `wildlife-vision export`"
    )


def available_providers() -> List[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def _choose_providers(requested: Optional[Sequence[str]]) -> List[str]:
    available = available_providers()
    if isinstance(requested, str):
        requested = [requested]
    if requested is None or [str(p).lower() for p in requested] == ["auto"]:
        return [p for p in ("CUDAExecutionProvider",) if p in available] + ["CPUExecutionProvider"]
    if not requested:
        raise ValueError("providers is empty; pass None for the default (CUDA when available, else CPU)")
    out: List[str] = []
    for p in requested:
        if not isinstance(p, str):
            raise TypeError(f"providers must be names like 'cuda' or 'CPUExecutionProvider', got {type(p).__name__}")
        name = PROVIDER_ALIASES.get(p.lower(), p)
        if name not in out:
            out.append(name)
    unknown = [p for p in out if p not in available]
    gpu_missing = [p for p in unknown if p in GPU_PROVIDERS]
    other = [p for p in unknown if p not in GPU_PROVIDERS]
    if other:
        raise ValueError(f"unknown execution provider(s) {other}; available here: {available} "
                         f"(short names: {', '.join(sorted(PROVIDER_ALIASES))})")
    out = [p for p in out if p not in unknown]
    if gpu_missing:
        from .onnxruntime_builds import missing_provider_hint

        warnings.warn(
            f"requested execution provider(s) {gpu_missing} are not available in this onnxruntime; falling back to "
            f"{out[0] if out else 'CPUExecutionProvider'}: {missing_provider_hint(gpu_missing, available)}",
            RuntimeWarning, stacklevel=4)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


_Error = Optional[Tuple[str, str]]  # (message, kind) or None
#: what decoding one input gives the loop: its error (or None), the upright photo's size, a reduced copy of it
_Prepared = Tuple[_Error, Optional[Tuple[int, int]], Optional[Image.Image]]


class Model:
    """A wildlife_vision ONNX model ready to score photos. Create it with :func:`load_model`."""

    def __init__(self, path: PathLike, providers: Optional[Sequence[str]] = None, threads: Optional[int] = None,
                 batch_size: int = 32, draft: Optional[bool] = None, profile: Optional[Choice] = None):
        self.path = Path(path)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer of at least 1, got {batch_size!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
            raise ValueError(f"threads must be a non-negative integer (0 or None: onnxruntime's choice), got {threads!r}")
        self.batch_size = batch_size
        if not self.path.exists():
            raise ModelLoadError(f"model file not found: {self.path}")
        if not self.path.is_file():
            raise ModelLoadError(f"model path is not a file: {self.path}")
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise ModelLoadError(f"cannot read model file {self.path}: {e.strerror or e}") from None
        # the cheap checks first: not ONNX / truncated / no or bad metadata, before building a session
        props = scan_onnx(data, source=str(self.path))
        self.metadata: ModelMetadata = read_onnx_metadata(props, source=str(self.path))
        #: the execution profile that scores (wildlife_vision.profiles): its name, runtime and precision
        self.profile_choice = profile or Choice(own_profile(self.metadata), "onnxruntime",
                                                SPECS[own_profile(self.metadata)].precision, self.path)
        entry = self.profile_choice.entry
        if entry.get("thresholds"):  # another profile's own operating point replaces the file's
            bands = {lab: tuple(entry.get("review_bands", {}).get(lab, (t, t))) for lab, t in entry["thresholds"].items()}
            self.metadata = dataclasses.replace(self.metadata, thresholds=dict(entry["thresholds"]), review_bands=bands)
        draft = entry.get("draft", draft) if draft is None else draft
        pre = dict(draft=bool(draft)) if draft is not None else {}
        for key in ("resampler", "interpolation"):  # a profile calibrated with a faster resize keeps it
            if entry.get(key):
                pre[key] = entry[key]
        if pre:
            self.metadata = dataclasses.replace(
                self.metadata, preprocess=dataclasses.replace(self.metadata.preprocess, **pre))
        try:  # per-label maps to calibrated probabilities (`wildlife-vision calibrate --probability`); often none
            #: label -> function applied to that label's scores after the session; {} scores as the network does
            self.score_maps: Dict[str, ScoreMap] = score_maps(self.metadata.calibration, self.metadata.labels)
        except ScoreMapError as e:
            raise MetadataError(f"{self.path}: the score calibration in its metadata is invalid ({e}); "
                                "re-run `wildlife-vision calibrate`") from None
        if self.profile_choice.runtime == "openvino":
            chosen: List[str] = []
            pre_cfg = self.metadata.preprocess  # a profile calibrated on uint8 crops normalises in the graph
            norm = (pre_cfg.mean, pre_cfg.std) if entry.get("input") == UINT8_INPUT else None
            self.session = OpenVINOSession(data, self.profile_choice.precision, threads, str(self.path), norm)
        else:
            chosen = _choose_providers(providers)
            self.session = onnxruntime_session(data, chosen, threads, str(self.path), GPU_PROVIDERS)
        #: the scoring loop's batches: (N, H, W, 3) uint8 crops when the session normalises them itself, else
        #: (N, 3, H, W) float32 normalised here (:func:`~wildlife_vision.preprocess.normalize`)
        self.takes_uint8: bool = bool(getattr(self.session, "takes_uint8", False))
        self.providers: List[str] = list(self.session.get_providers())
        self._check_io()
        wanted_gpu = [p for p in chosen if p in GPU_PROVIDERS]
        if wanted_gpu and self.providers[0] not in GPU_PROVIDERS:
            warnings.warn(f"GPU provider {wanted_gpu[0]} could not be initialised (missing CUDA/cuDNN libraries or "
                          f"no GPU?); running on {self.providers[0]} instead", RuntimeWarning, stacklevel=3)

    # ---- what the file says about itself -------------------------------------------------------
    @property
    def profile(self) -> str:
        """The execution profile scoring this model (``fp32``, ``int8``, ``bf16``...; see wildlife_vision.profiles)."""
        return self.profile_choice.name

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
            raise ModelLoadError(f"{self.path}: expected one input, the model has {len(inputs)}; re-export it")
        self._input_name = inputs[0].name
        shape = inputs[0].shape
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise ModelLoadError(f"{self.path}: expected an (N, 3, H, W) input, the model's is {shape}; re-export it")
        h, w = meta.preprocess.input_size
        if (isinstance(shape[2], int) and shape[2] != h) or (isinstance(shape[3], int) and shape[3] != w):
            raise ModelLoadError(f"{self.path}: metadata says input size {h}x{w}, the graph expects "
                                 f"{shape[2]}x{shape[3]}; the file is inconsistent, re-export it")
        names = [o.name for o in outputs]
        self._output_names: List[str] = names
        wanted = str(meta.heatmap.get("output", "")) if meta.heatmap else ""
        self._heatmap_output: Optional[str] = wanted if wanted and wanted in names else None
        self._output_name = meta.output_name if meta.output_name in names else names[0]
        out_shape = next(o.shape for o in outputs if o.name == self._output_name)
        width = out_shape[-1] if out_shape else None
        if not isinstance(width, int):  # symbolic width: find out by running one blank image
            try:
                probe = self.session.run([self._output_name],
                                         {self._input_name: np.zeros((1, 3, h, w), dtype=np.float32)})[0]
            except Exception as e:  # noqa: BLE001
                raise ModelLoadError(f"{self.path}: a test inference on a blank image failed: "
                                     f"{str(e).splitlines()[0][:300] if str(e) else type(e).__name__}") from None
            width = probe.shape[-1] if probe.ndim == 2 else None
            if probe.ndim != 2:
                raise ModelLoadError(f"{self.path}: the model outputs shape {probe.shape} per batch, expected "
                                     f"(N, {len(meta.labels)}); re-export it")
        if width != len(meta.labels):
            raise ModelLoadError(
                f"{self.path}: the model outputs {width} scores per image but its metadata lists "
                f"{len(meta.labels)} labels {list(meta.labels)}; the file is inconsistent, re-export it")

    # ---- scoring -----------------------------------------------------------------------------
    @property
    def has_embedding(self) -> bool:
        """True when the model file has an ``embedding`` output (models from `wildlife-vision export` do)."""
        return EMBEDDING_OUTPUT in self._output_names

    @property
    def has_heatmaps(self) -> bool:
        """True when the model file has the class-activation-map output that :meth:`explain` reads."""
        return self._heatmap_output is not None

    def run_batch(self, batch: np.ndarray, output: Optional[str] = None) -> np.ndarray:
        """Run the network on an already preprocessed (N, 3, H, W) float32 batch.

        Returns the (N, labels) scores, or with ``output="embedding"`` that output, one flattened row per image.
        """
        return self.run_outputs(batch, [output])[0]

    def run_outputs(self, batch: np.ndarray, outputs: Sequence[Optional[str]]) -> List[np.ndarray]:
        """Several outputs of one run (None: the scores); ``cam`` keeps its (N, labels, h, w) shape, the others are
        flattened to one row per image as in :meth:`run_batch`."""
        if batch.dtype == np.uint8 and not self.takes_uint8:  # crops (N, H, W, 3) for a float session
            batch = normalize_batch(batch, self.metadata.preprocess)
        names = [self._output_name if o is None else o for o in outputs]
        for name in names:
            if name not in self._output_names:
                raise ModelLoadError(f"{self.path} has no output {name!r} (its outputs: {self._output_names})")
        # a plain run on every provider: onnxruntime copies the batch to the device and only the requested outputs
        # back (an IO binding with host buffers did the same copies; see docs/gpu.md)
        outs = self.session.run(names, {self._input_name: batch})
        result = []
        for name, out in zip(names, outs):
            if name == self._output_name:
                if out.ndim != 2 or out.shape != (batch.shape[0], len(self.labels)):
                    raise ModelLoadError(f"model returned scores of shape {out.shape}, expected ({batch.shape[0]}, "
                                         f"{len(self.labels)})")
            elif out.ndim < 1 or out.shape[0] != batch.shape[0]:
                raise ModelLoadError(f"model returned {name!r} of shape {out.shape} for a batch of {batch.shape[0]}")
            elif name == self._heatmap_output:
                if out.ndim != 4 or out.shape[1] != len(self.labels):
                    raise ModelLoadError(f"model returned heatmaps of shape {out.shape}, expected (N, "
                                         f"{len(self.labels)}, h, w)")
            else:
                out = out.reshape(out.shape[0], -1)
            result.append(out)
        return result

    def _embedding(self, name: str, row: np.ndarray) -> Embedding:
        if not np.all(np.isfinite(row)):
            return Embedding(input=name, error="the model returned a non-finite embedding (NaN or infinity) for this "
                                               "input; the model file may be broken", error_kind="inference_failed")
        return Embedding(input=name, vector=np.array(row, dtype=np.float32))

    def _result(self, name: str, row: np.ndarray) -> Prediction:
        meta = self.metadata
        if not np.all(np.isfinite(row)):
            return Prediction(input=name, error="the model returned a non-finite score (NaN or infinity) for this "
                                                "input; the model file may be broken", error_kind="inference_failed")
        if self.score_maps:  # calibrated probabilities: thresholds and bands in the metadata are on this scale
            row = [self.score_maps[lab](np.float64(s)) if lab in self.score_maps else s
                   for lab, s in zip(meta.labels, row)]
        # float32 values, kept as the shortest decimal that round-trips, so written records stay exact
        scores = {label: float(str(np.float32(s))) for label, s in zip(meta.labels, row)}
        flagged = tuple(lab for lab in meta.labels if scores[lab] >= meta.thresholds[lab])
        review = tuple(lab for lab in meta.labels
                       if meta.review_bands[lab][0] <= scores[lab] < meta.thresholds[lab])
        return Prediction(input=name, scores=scores, flagged=flagged, review=review)

    def predict(self, x: Union[ImageInput, Iterable[ImageInput]], batch_size: Optional[int] = None,
                workers: int = 1) -> Union[Prediction, List[Prediction]]:
        """Score one input (returns a :class:`Prediction`) or a list of inputs (returns a list, same order).

        Inputs may be paths, encoded bytes, PIL images or HxWx3 uint8 RGB arrays. An input that cannot be
        decoded gets a Prediction with ``error`` set; the others in its batch are scored normally.
        ``workers`` > 1 decodes in that many threads while the model runs.

        An input of an unsupported Python type (e.g. an ``int`` or a file object) is a programming error:
        ``predict`` checks every input's type before scoring anything and raises :class:`TypeError` naming
        the type (and position). :meth:`predict_iter`, which streams, reports it as that input's error instead.
        """
        single, items, names = _checked_inputs(x)
        results = list(self.predict_iter(items, batch_size=batch_size, workers=workers, names=names))
        return results[0] if single else results

    def predict_iter(self, items: Iterable[ImageInput], batch_size: Optional[int] = None,
                     workers: int = 1, names: Optional[Iterable[str]] = None) -> Iterator[Prediction]:
        """Stream predictions for an iterable of inputs, in order, batch by batch.

        Never raises because of one input: every input yields exactly one :class:`Prediction`, with ``error``
        set when it could not be scored (including inputs of an unsupported type). With ``workers`` > 1,
        inputs are decoded in that many threads, one batch ahead of the model. ``names`` (same length as
        ``items``) sets each Prediction's ``input``; by default the path, or a description of the object.
        """
        yield from self._stream(items, batch_size, workers, names, None)

    def embed(self, x: Union[ImageInput, Iterable[ImageInput]], batch_size: Optional[int] = None,
              workers: int = 1) -> Union[np.ndarray, List[Embedding]]:
        """The model's ``embedding`` output (pooled backbone features) for one input or a list of inputs.

        Same inputs, batching and threads as :meth:`predict`. One input: its 1-D float32 vector, or
        :class:`~wildlife_vision.errors.ImageDecodeError` (with the error's ``kind``) when it cannot be embedded.
        A list: one :class:`Embedding` per input, same order, whose ``vector`` is None and ``error`` says why for
        an input that cannot be embedded; the others are unaffected. Unsupported Python types raise
        :class:`TypeError` before anything runs, as in :meth:`predict`. A model file without an ``embedding``
        output raises :class:`~wildlife_vision.errors.EmbeddingUnavailable` (a ModelLoadError).
        """
        single, items, names = _checked_inputs(x)
        results = list(self.embed_iter(items, batch_size=batch_size, workers=workers, names=names))
        if not single:
            return results
        if results[0].vector is None:
            raise ImageDecodeError(results[0].error or "cannot embed this input", results[0].error_kind)
        return results[0].vector

    def embed_iter(self, items: Iterable[ImageInput], batch_size: Optional[int] = None, workers: int = 1,
                   names: Optional[Iterable[str]] = None) -> Iterator[Embedding]:
        """Stream :class:`Embedding` results for an iterable of inputs, in order, as :meth:`predict_iter` does
        predictions. Raises :class:`~wildlife_vision.errors.EmbeddingUnavailable` at once (before reading any
        input) when the model has no ``embedding`` output."""
        if not self.has_embedding:
            raise EmbeddingUnavailable(
                f"{self.path} has no '{EMBEDDING_OUTPUT}' output (its outputs: {self._output_names}); embeddings "
                "need a model exported by `wildlife-vision export`, which adds the pooled backbone features as a "
                f"second output named '{EMBEDDING_OUTPUT}'")
        return self._stream(items, batch_size, workers, names, EMBEDDING_OUTPUT)

    def explain(self, x: Union[ImageInput, Iterable[ImageInput]], label: Union[None, str, Sequence[str]] = None,
                batch_size: Optional[int] = None, workers: int = 1,
                keep_photo: int = 0) -> Union[Explanation, List[Explanation]]:
        """Heatmaps: where in each photo the model found ``label`` (a label, a list of them, or None: every label).

        Returns an :class:`~wildlife_vision.explain.Explanation` for one input (a list for a list, same order),
        computed in the same pass as the scores: ``.prediction`` is what :meth:`predict` returns, ``.maps[label]``
        a float32 map in [0, 1] with the **upright photo's** height and width (EXIF orientation applied, the resize
        and centre crop undone; 0 outside what the model saw), ``.cam[label]`` the raw logit grid. ``keep_photo``
        > 0 keeps a copy of the upright photo, at most that many pixels on its longer side, as ``.photo`` (for
        overlays, without decoding again). Inputs that fail carry the error, as in :meth:`predict`.

        Raises :class:`~wildlife_vision.errors.ModelLoadError` when the model file has no heatmap output (files
        exported before heatmaps: add it with ``wildlife-vision heatmaps MODEL.onnx --output NEW.onnx``, or
        re-export), ``KeyError`` for a label the model does not have.
        """
        single, items, names = _checked_inputs(x)
        results = list(self.explain_iter(items, label=label, batch_size=batch_size, workers=workers, names=names,
                                         keep_photo=keep_photo))
        return results[0] if single else results

    def explain_iter(self, items: Iterable[ImageInput], label: Union[None, str, Sequence[str]] = None,
                     batch_size: Optional[int] = None, workers: int = 1, names: Optional[Iterable[str]] = None,
                     keep_photo: int = 0) -> Iterator[Explanation]:
        """Stream :class:`~wildlife_vision.explain.Explanation` results, in order, as :meth:`predict_iter` does
        predictions (one per input, never raising because of one input)."""
        if self._heatmap_output is None:
            raise ModelLoadError(
                f"{self.path} has no heatmap output (its outputs: {self._output_names}): it was exported before "
                "heatmaps existed. Add it with `wildlife-vision heatmaps MODEL.onnx --output NEW.onnx` (the "
                "[train] extra; scores stay the same) or re-export the run with `wildlife-vision export`")
        wanted = list(self.labels) if label is None else [label] if isinstance(label, str) else list(label)
        unknown = [lab for lab in wanted if lab not in self.labels]
        if unknown:
            raise KeyError(f"unknown label(s) {unknown}; the model's labels are {list(self.labels)}")
        return self._stream(items, batch_size, workers, names, self._heatmap_output, labels=tuple(wanted),
                            keep_photo=int(keep_photo or 0))

    def _stream(self, items: Iterable[Any], batch_size: Optional[int], workers: int, names: Optional[Iterable[str]],
                output: Optional[str], labels: Tuple[str, ...] = (), keep_photo: int = 0) -> Iterator[Any]:
        """The one decode -> batch -> session loop: one result per input, in order (see :meth:`_score`)."""
        bs = self.batch_size if batch_size is None else batch_size
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise ValueError(f"batch_size must be an integer of at least 1, got {batch_size!r}")
        workers = int(workers or 1)
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        chunks = _chunks(items, names, bs)
        prepare = functools.partial(self._prepare, keep_photo=keep_photo)
        score = functools.partial(self._score, output=output, labels=labels)
        if workers == 1:
            for chunk in chunks:
                batch = self._empty_batch(len(chunk))
                prepared = [prepare(item, batch[i]) for i, (_, item) in enumerate(chunk)]
                yield from score(chunk, batch, prepared)
            return
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wildlife-vision-decode")
        pending: Deque[Tuple[List[Tuple[str, Any]], np.ndarray, List[Future]]] = deque()
        try:
            for chunk in chunks:
                batch = self._empty_batch(len(chunk))
                futures = [pool.submit(prepare, item, batch[i]) for i, (_, item) in enumerate(chunk)]
                pending.append((chunk, batch, futures))
                if len(pending) > 1:  # keep one batch decoding while the previous one is scored
                    done_chunk, done_batch, done_futures = pending.popleft()
                    yield from score(done_chunk, done_batch, [f.result() for f in done_futures])
            while pending:
                done_chunk, done_batch, done_futures = pending.popleft()
                yield from score(done_chunk, done_batch, [f.result() for f in done_futures])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _empty_batch(self, n: int) -> np.ndarray:
        h, w = self.metadata.preprocess.input_size
        if self.takes_uint8:
            return np.empty((n, h, w, 3), dtype=np.uint8)
        return np.empty((n, 3, h, w), dtype=np.float32)

    # ---- the loop's two steps, for callers that batch on their own (the HTTP service's micro-batcher) ------------
    def prepare(self, item: Any, out: np.ndarray) -> _Prepared:
        """Decode and preprocess one input into ``out`` (one row of a :meth:`_empty_batch`: (3, H, W) float32, or
        (H, W, 3) uint8 when :attr:`takes_uint8`). Returns what
        :meth:`score_prepared` needs back: ``(error or None, upright size, None)``; never raises for a bad input."""
        return self._prepare(item, out)

    def score_prepared(self, names: Sequence[str], batch: np.ndarray, prepared: Sequence[_Prepared]) -> List[Prediction]:
        """Score rows that :meth:`prepare` filled: one :class:`Prediction` per name, in order, exactly as
        :meth:`predict` would give (errors from ``prepared`` kept, a failing batch retried one row at a time)."""
        return list(self._score([(n, None) for n in names], batch, list(prepared)))

    def _prepare_one(self, item: Any, out: np.ndarray) -> _Error:
        """Decode and preprocess one input into ``out`` (a row of a batch); the error, or None."""
        return self._prepare(item, out)[0]

    def _prepare(self, item: Any, out: np.ndarray, keep_photo: int = 0) -> _Prepared:
        """:meth:`_prepare_one`, also giving the upright photo's size and, with ``keep_photo``, a reduced copy."""
        if not isinstance(item, INPUT_TYPES):
            return (_unsupported(item), "unsupported_type"), None, None
        cfg = self.metadata.preprocess
        try:
            photo = None
            if keep_photo > 0:
                img = load_image(item, cfg)
                size = img.size
                photo = img.copy()
                photo.thumbnail((keep_photo, keep_photo), Image.BILINEAR)
                rgb = resize_and_crop_rgb(img, cfg)
            else:  # the JPEG fast path where it is pixel-identical (wildlife_vision.fastjpeg)
                pix = load_pixels(item, cfg)
                size = (pix.shape[1], pix.shape[0]) if isinstance(pix, np.ndarray) else pix.size
                rgb = resize_and_crop_rgb(pix, cfg)
            if out.dtype == np.uint8:
                out[...] = rgb
            else:
                normalize(rgb, cfg, out=out)
            return None, size, photo
        except ImageDecodeError as e:
            return (str(e), e.kind or "corrupt"), None, None
        except MemoryError:
            return ("not enough memory to decode this image", "too_large"), None, None
        except Exception as e:  # noqa: BLE001 - one input must never stop the others
            log.exception("unexpected error while preprocessing an input")
            return ((f"internal error while preprocessing ({type(e).__name__}: {e}); please report it with this "
                     "input", "internal_error"), None, None)

    def _score(self, chunk: Sequence[Tuple[str, Any]], batch: np.ndarray, prepared: List[_Prepared],
               output: Optional[str] = None, labels: Tuple[str, ...] = ()) -> Iterator[Any]:
        """Run ``output`` (None: the scores) on the decoded inputs of one batch; yield one result per input:
        a :class:`Prediction` for the scores, an :class:`Embedding` for the ``embedding`` output, an
        :class:`~wildlife_vision.explain.Explanation` (scores and heatmaps of one run) for the heatmap output."""
        errors = [p[0] for p in prepared]
        if output is None:
            run, make, failed = self.run_batch, self._result, Prediction
        elif output == self._heatmap_output:
            def run(b: np.ndarray) -> List[Tuple[np.ndarray, np.ndarray]]:
                return list(zip(*self.run_outputs(b, [None, output])))

            def make(name: str, row: Tuple[np.ndarray, np.ndarray], i: int) -> Explanation:
                return self._explanation(name, row, prepared[i], labels)

            def failed(input: str, error: str, error_kind: str) -> Explanation:
                return Explanation(input=input, prediction=Prediction(input=input, error=error, error_kind=error_kind))
        else:
            run, make, failed = functools.partial(self.run_batch, output=output), self._embedding, Embedding
        good = [i for i, e in enumerate(errors) if e is None]
        rows: Dict[int, np.ndarray] = {}
        if good:
            try:
                scores = run(batch if len(good) == len(chunk) else batch[good])
                rows = dict(zip(good, scores))
            except Exception as e:  # noqa: BLE001 - retry one by one so one input cannot spoil its batch
                log.warning("inference failed on a batch of %d (%s); retrying one input at a time", len(good),
                            str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
                for i in good:
                    try:
                        rows[i] = run(batch[i:i + 1])[0]
                    except Exception as e1:  # noqa: BLE001
                        msg = str(e1).splitlines()[0][:300] if str(e1) else type(e1).__name__
                        errors[i] = (f"inference failed: {msg}", "inference_failed")
        for i, (name, _) in enumerate(chunk):
            err = errors[i]
            if err is not None:
                yield failed(input=name, error=err[0], error_kind=err[1])
            elif output is not None and output == self._heatmap_output:
                yield make(name, rows[i], i)
            else:
                yield make(name, rows[i])

    def _explanation(self, name: str, row: Tuple[np.ndarray, np.ndarray], prepared: _Prepared,
                     labels: Tuple[str, ...]) -> Explanation:
        scores, cam = row
        pred = self._result(name, scores)
        if not pred.ok:
            return Explanation(input=name, prediction=pred)
        if not np.all(np.isfinite(cam)):
            return Explanation(input=name, prediction=Prediction(
                input=name, error="the model returned a non-finite heatmap for this input; the model file may be "
                                  "broken", error_kind="inference_failed"))
        size = prepared[1] or (0, 0)
        grids = {lab: np.array(cam[self.labels.index(lab)], dtype=np.float32) for lab in labels}
        return Explanation(input=name, prediction=pred, cam=grids, size=size,
                           crop_box=crop_box(size, self.metadata.preprocess), photo=prepared[2])


def _chunks(items: Iterable[Any], names: Optional[Iterable[str]], bs: int) -> Iterator[List[Tuple[str, Any]]]:
    name_iter = iter(names) if names is not None else None
    chunk: List[Tuple[str, Any]] = []
    for index, item in enumerate(items):
        if name_iter is not None:
            try:
                name = str(next(name_iter))
            except StopIteration:
                raise ValueError("names has fewer entries than items") from None
        else:
            name = _input_name(item, index)
        chunk.append((name, item))
        if len(chunk) == bs:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def load_model(path: Optional[PathLike] = None, providers: Optional[Sequence[str]] = None,
               threads: Optional[int] = None, batch_size: int = 32, draft: Optional[bool] = None,
               runtime: Optional[str] = None, precision: Optional[str] = None) -> Model:
    """Load a wildlife_vision ONNX model; with no ``path``, the shipped default model.

    ``providers``: onnxruntime execution providers in order of preference (names or short aliases
    ``"cuda"``, ``"cpu"``, ``"tensorrt"``); default is CUDA when available, else CPU. A requested GPU
    provider that is missing or fails to start falls back to CPU with a :class:`RuntimeWarning`;
    ``model.provider`` says what actually runs. ``threads``: intra-op threads (default: the runtime's
    choice, one per physical core). ``batch_size``: images per inference call in :meth:`Model.predict`.
    ``draft``: decode large JPEGs at a reduced DCT scale (faster on photos several times the input size, but
    scores move by up to about 1e-2; default: what the model file (or its profile) says).

    ``runtime`` (``"onnxruntime"``, ``"openvino"`` or ``"auto"``; None: onnxruntime, or any with ``precision``) and
    ``precision`` (``"fp32"``, ``"int8"``,
    ``"bf16"`` or ``"auto"``) choose the execution profile (:mod:`wildlife_vision.profiles`): the default (None)
    is the file's own profile on onnxruntime, the exact fp32 path for an exported model, identical on every CPU;
    ``precision="auto"`` takes the fastest profile this CPU supports
    natively whose own operating point was calibrated and passed its gate. ``model.profile`` names it. A profile
    without a calibrated operating point raises :class:`~wildlife_vision.profiles.ProfileError`, naming the
    command that calibrates it.

    Raises :class:`~wildlife_vision.errors.ModelLoadError` (missing, not ONNX, truncated, inconsistent) or
    its subclass :class:`~wildlife_vision.errors.MetadataError` (missing, invalid or newer-schema metadata).
    """
    path = default_model_path() if path is None else Path(path)
    choice = None
    if runtime is not None or precision is not None:
        from .metadata import read_model_metadata

        if not Path(path).is_file():
            raise ModelLoadError(f"model file not found: {path}")
        choice = choose_profile(read_model_metadata(path), Path(path), runtime or "auto", precision or "auto")
    return Model(choice.file if choice else path, providers=providers, threads=threads, batch_size=batch_size,
                 draft=draft, profile=choice)


__all__ = ["Model", "Prediction", "Embedding", "Explanation", "EMBEDDING_OUTPUT", "HEATMAP_OUTPUT", "load_model", "default_model_path", "available_providers", "METADATA_KEY",
           "GPU_PROVIDERS", "PROVIDER_ALIASES"]
