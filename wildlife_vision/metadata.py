"""The self-describing model format: JSON stored in the ONNX file's ``metadata_props``.

Every exported model carries one JSON document under the key :data:`METADATA_KEY`. The inference
library needs nothing else: labels, thresholds, review bands and preprocessing all come from it.
The document is versioned (:data:`SCHEMA_VERSION`) and validated on load; a file written by a
newer schema is refused rather than misread.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Tuple

from .errors import MetadataError
from .preprocess import PreprocessConfig

METADATA_KEY = "wildlife_vision"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ModelMetadata:
    """Everything a model file says about itself.

    ``thresholds[label]`` is the score at or above which the label is *flagged*;
    ``review_bands[label] = (low, high)`` with ``high == thresholds[label]``: scores in
    ``[low, high)`` go to human review instead of being dropped.
    """

    labels: Tuple[str, ...]
    thresholds: Mapping[str, float]
    review_bands: Mapping[str, Tuple[float, float]]
    preprocess: PreprocessConfig
    name: str = "wildlife-vision-model"
    model_version: str = "0.0.0"
    backbone: str = ""
    input_name: str = "pixel_values"
    output_name: str = "scores"
    calibration: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    package_version: str = ""
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["thresholds"] = {k: float(v) for k, v in self.thresholds.items()}
        d["review_bands"] = {k: [float(a), float(b)] for k, (a, b) in self.review_bands.items()}
        d["preprocess"] = self.preprocess.to_dict()
        d["calibration"] = dict(self.calibration)
        d["training"] = dict(self.training)
        d["metrics"] = dict(self.metrics)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> "ModelMetadata":
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as e:
            raise MetadataError(f"the model's '{METADATA_KEY}' metadata is not valid JSON: {e}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> "ModelMetadata":
        if not isinstance(data, dict):
            raise MetadataError(f"the model's '{METADATA_KEY}' metadata must be a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise MetadataError("the model metadata has no integer 'schema_version'")
        if version > SCHEMA_VERSION:
            raise MetadataError(
                f"the model metadata uses schema version {version}, but this wildlife_vision knows versions up to "
                f"{SCHEMA_VERSION}; upgrade with `pip install -U wildlife-vision`"
            )
        if version < 1:
            raise MetadataError(f"the model metadata has an invalid schema_version {version}")
        missing = [k for k in ("labels", "thresholds", "preprocess") if k not in data]
        if missing:
            raise MetadataError(f"the model metadata lacks required field(s): {', '.join(missing)}")
        labels = data["labels"]
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
            raise MetadataError("'labels' must be a non-empty list of label names")
        if len(set(labels)) != len(labels):
            raise MetadataError(f"'labels' contains duplicates: {labels}")
        thresholds = _float_map(data["thresholds"], "thresholds", labels)
        bands_raw = data.get("review_bands") or {}
        if not isinstance(bands_raw, dict):
            raise MetadataError("'review_bands' must be an object mapping label to [low, high]")
        bands: Dict[str, Tuple[float, float]] = {}
        for label in labels:
            band = bands_raw.get(label, [thresholds[label], thresholds[label]])
            if not (isinstance(band, (list, tuple)) and len(band) == 2 and all(_is_number(b) for b in band)):
                raise MetadataError(f"review band for '{label}' must be [low, high], got {band!r}")
            low, high = float(band[0]), float(band[1])
            if not 0.0 <= low <= high <= 1.0:
                raise MetadataError(f"review band for '{label}' must satisfy 0 <= low <= high <= 1, got {band!r}")
            bands[label] = (low, high)
        try:
            pre = PreprocessConfig.from_dict(data["preprocess"])
        except (TypeError, ValueError, KeyError) as e:
            raise MetadataError(f"the model metadata has an invalid 'preprocess' block: {e}") from None
        kwargs = {}
        for key in ("name", "model_version", "backbone", "input_name", "output_name", "package_version", "created"):
            if key in data:
                if not isinstance(data[key], str):
                    raise MetadataError(f"'{key}' must be a string")
                kwargs[key] = data[key]
        for key in ("calibration", "training", "metrics"):
            if key in data:
                if not isinstance(data[key], dict):
                    raise MetadataError(f"'{key}' must be a JSON object")
                kwargs[key] = data[key]
        return cls(labels=tuple(labels), thresholds=thresholds, review_bands=bands, preprocess=pre,
                   schema_version=version, **kwargs)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _float_map(raw: Any, name: str, labels: List[str]) -> Dict[str, float]:
    if not isinstance(raw, dict):
        raise MetadataError(f"'{name}' must be an object mapping each label to a number")
    out: Dict[str, float] = {}
    for label in labels:
        if label not in raw:
            raise MetadataError(f"'{name}' has no entry for label '{label}'")
        v = raw[label]
        if not _is_number(v) or not 0.0 <= float(v) <= 1.0:
            raise MetadataError(f"'{name}[{label}]' must be a number in [0, 1], got {v!r}")
        out[label] = float(v)
    extra = sorted(set(raw) - set(labels))
    if extra:
        raise MetadataError(f"'{name}' names labels the model does not have: {extra}")
    return out


def read_onnx_metadata(props: Mapping[str, str], source: str = "model") -> ModelMetadata:
    """Build :class:`ModelMetadata` from an ONNX ``metadata_props`` mapping (key -> string)."""
    if METADATA_KEY not in props:
        raise MetadataError(
            f"{source} has no '{METADATA_KEY}' metadata: it was not exported by `wildlife-vision export`. "
            "Export it with `wildlife-vision export RUN_DIR --output MODEL.onnx`, which writes labels, thresholds "
            "and preprocessing into the file"
        )
    return ModelMetadata.from_json(props[METADATA_KEY])

