"""The self-describing model format: JSON stored in the ONNX file's ``metadata_props``.

Every exported model carries one JSON document under the key :data:`METADATA_KEY`. The inference
library needs nothing else: labels, thresholds, review bands and preprocessing all come from it.
The document is versioned (:data:`SCHEMA_VERSION`) and validated on load; a file written by a
newer schema is refused rather than misread.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple, Union

from .errors import MetadataError, ModelLoadError
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
    #: the class-activation-map output, when the graph has one: {"output": "cam", "method": "cam", ...}
    heatmap: Mapping[str, Any] = field(default_factory=dict)
    #: other execution profiles' operating points ({"bf16": {"runtime": "openvino", "thresholds": ...}}; see
    #: wildlife_vision.profiles); the top-level thresholds are the file's own profile (fp32, or int8 for a twin)
    profiles: Mapping[str, Any] = field(default_factory=dict)
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
        d["heatmap"] = dict(self.heatmap)
        d["profiles"] = {k: dict(v) for k, v in self.profiles.items()}
        for key in ("heatmap", "profiles"):  # files without them keep the metadata they always had
            if not d[key]:
                del d[key]
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
        for key in ("calibration", "training", "metrics", "heatmap", "profiles"):
            if key in data:
                if not isinstance(data[key], dict):
                    raise MetadataError(f"'{key}' must be a JSON object")
                kwargs[key] = data[key]
        for name, entry in (kwargs.get("profiles") or {}).items():
            if not isinstance(entry, dict):
                raise MetadataError(f"profile '{name}' must be a JSON object")
            if "thresholds" in entry:
                _float_map(entry["thresholds"], f"profiles.{name}.thresholds", labels)
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
            "and preprocessing into the file (if this file was exported that way, it is truncated: fetch it again)"
        )
    return ModelMetadata.from_json(props[METADATA_KEY])



# ---- reading the metadata straight from the file, without onnxruntime -----------------------------------
#
# An ONNX file is one protobuf ``ModelProto``. Scanning its top-level fields (a few dozen bytes of work; the
# graph is skipped by its length) tells apart "not ONNX at all", "a truncated download" and "no metadata",
# and yields ``metadata_props`` without building an inference session.

#: ModelProto field number -> (name, protobuf wire type)
_MODEL_FIELDS = {1: ("ir_version", 0), 2: ("producer_name", 2), 3: ("producer_version", 2), 4: ("domain", 2),
                 5: ("model_version", 0), 6: ("doc_string", 2), 7: ("graph", 2), 8: ("opset_import", 2),
                 14: ("metadata_props", 2), 20: ("training_info", 2), 25: ("functions", 2),
                 26: ("configuration", 2)}


def _varint(data: bytes, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise EOFError
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _describe_non_onnx(data: bytes) -> str:
    head = data[:512]
    text = head.lstrip().lower()
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the model itself: run `git lfs pull` to fetch the real file"
    if text.startswith((b"<!doctype html", b"<html")):
        return "an HTML page (an error or login page saved instead of the download?)"
    if head[:4] == b"PK\x03\x04":
        return "a ZIP archive (a PyTorch checkpoint? export it to ONNX with `wildlife-vision export`)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle (a PyTorch checkpoint? export it to ONNX with `wildlife-vision export`)"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "binary data that is not an ONNX protobuf"


def scan_onnx(data: bytes, source: str = "model") -> Dict[str, str]:
    """Check that ``data`` looks like a complete ONNX ``ModelProto`` and return its ``metadata_props``.

    Raises :class:`ModelLoadError` saying whether the file is empty, not ONNX, or truncated.
    """
    size = len(data)
    if size == 0:
        raise ModelLoadError(f"{source} is empty (0 bytes): the download or copy failed; fetch the model again")
    props: Dict[str, str] = {}
    seen_graph = seen_opset = False
    pos = 0
    first = True
    while pos < size:
        try:
            key, pos = _varint(data, pos)
        except (EOFError, ValueError):
            if first:
                raise ModelLoadError(f"{source} is not an ONNX model: it is {_describe_non_onnx(data)}") from None
            raise ModelLoadError(f"{source} is truncated ({size:,} bytes; it ends inside a field): an incomplete "
                                 "download or copy; fetch the model again and compare its size") from None
        number, wire = key >> 3, key & 7
        known = _MODEL_FIELDS.get(number)
        if first and (known is None or known[1] != wire):
            raise ModelLoadError(f"{source} is not an ONNX model: it is {_describe_non_onnx(data)}")
        first = False
        if number == 0 or wire in (3, 4, 6, 7):
            raise ModelLoadError(f"{source} is not a valid ONNX model: corrupt protobuf at byte {pos} (not ONNX, or "
                                 "a damaged copy); fetch the model again")
        try:
            if wire == 0:
                _, pos = _varint(data, pos)
                continue
            if wire in (1, 5):
                length = 8 if wire == 1 else 4
            else:
                length, pos = _varint(data, pos)
        except (EOFError, ValueError):
            raise ModelLoadError(f"{source} is truncated ({size:,} bytes): an incomplete download or copy; "
                                 "fetch the model again and compare its size") from None
        end = pos + length
        if end > size:
            raise ModelLoadError(
                f"{source} is truncated: it is {size:,} bytes but its "
                f"{known[0] if known else 'field ' + str(number)} field needs {end:,}; an incomplete download or "
                "copy. Fetch the model again and compare its size")
        if number == 7 and wire == 2:
            seen_graph = True
        elif number == 8 and wire == 2:
            seen_opset = True
        elif number == 14 and wire == 2:
            k, v = _string_entry(data[pos:end])
            props[k] = v
        pos = end
    if not seen_graph or not seen_opset:
        raise ModelLoadError(f"{source} has no {'graph' if not seen_graph else 'opset_import'}: it is truncated "
                             f"({size:,} bytes; an incomplete download or copy) or not an ONNX model; fetch it again")
    return props


def _string_entry(buf: bytes) -> Tuple[str, str]:
    """Decode a StringStringEntryProto (key = 1, value = 2)."""
    out = {1: b"", 2: b""}
    pos = 0
    try:
        while pos < len(buf):
            key, pos = _varint(buf, pos)
            number, wire = key >> 3, key & 7
            if wire == 0:
                _, pos = _varint(buf, pos)
                continue
            if wire != 2:
                raise ValueError(wire)
            length, pos = _varint(buf, pos)
            out[number] = buf[pos:pos + length]
            pos += length
    except (EOFError, ValueError):
        raise MetadataError("the model's metadata_props entry is corrupt; re-export the model") from None
    try:
        return out[1].decode("utf-8"), out[2].decode("utf-8")
    except UnicodeDecodeError:
        raise MetadataError("the model's metadata_props entry is not valid UTF-8; re-export the model") from None


def read_model_metadata(model: Union[str, os.PathLike, bytes]) -> ModelMetadata:
    """Read and validate the metadata of an ONNX model file (path or bytes), without onnxruntime.

    Raises :class:`ModelLoadError` (file missing, not ONNX, truncated) or :class:`MetadataError`
    (no metadata, invalid JSON, newer schema, invalid fields).
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        data, source = bytes(model), "model"
    else:
        path = Path(model)
        source = str(path)
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path}" if not path.exists()
                                 else f"model path is not a file: {path}")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ModelLoadError(f"cannot read model file {path}: {e.strerror or e}") from None
    return read_onnx_metadata(scan_onnx(data, source), source=source)


# ---- writing the metadata into a file's bytes, without the onnx package ---------------------------------
#
# The writer is the reader's mirror: it walks the same top-level ModelProto fields and copies every one of them
# byte for byte, except the ``metadata_props`` entry under our key, which it replaces in place (or appends when
# the file has none). The graph, its weights and every other metadata entry stay exactly as they were.

def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _encode_varint((number << 3) | 2) + _encode_varint(len(payload)) + payload


def _top_level_fields(data: bytes):
    """(field number, wire type, start, payload start, end) of each top-level field of a checked ModelProto."""
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, end = _varint(data, pos)
            yield number, wire, start, pos, end
            pos = end
            continue
        if wire in (1, 5):
            length = 8 if wire == 1 else 4
        else:
            length, pos = _varint(data, pos)
        yield number, wire, start, pos, pos + length
        pos += length


def replace_metadata_prop(data: bytes, key: str, value: str, source: str = "model") -> bytes:
    """The ONNX file ``data`` with its ``metadata_props`` entry ``key`` set to ``value``; every other byte kept.

    The first entry under ``key`` is replaced where it stands (later duplicates are dropped); without one, the
    entry is appended. Raises :class:`ModelLoadError` when ``data`` is not a complete ONNX model (as
    :func:`scan_onnx` does).
    """
    data = bytes(data)
    scan_onnx(data, source)
    entry = _length_delimited(14, _length_delimited(1, key.encode("utf-8")) +
                              _length_delimited(2, value.encode("utf-8")))
    out = bytearray()
    placed = False
    for number, wire, start, payload, end in _top_level_fields(data):
        if number == 14 and wire == 2 and _string_entry(data[payload:end])[0] == key:
            if not placed:
                out += entry
                placed = True
            continue
        out += data[start:end]
    if not placed:
        out += entry
    return bytes(out)


def write_metadata_bytes(data: bytes, metadata: Union[ModelMetadata, Mapping[str, Any]],
                         source: str = "model") -> bytes:
    """The ONNX file ``data`` with its ``wildlife_vision`` metadata replaced by ``metadata``.

    ``metadata`` is a :class:`ModelMetadata` or a JSON-ready mapping (kept as given, keys this version does not
    know included); it is validated exactly as a reader would validate it before anything is written, and the
    result is read back to check that it says the same.
    """
    if isinstance(metadata, ModelMetadata):
        text = metadata.to_json()
    else:
        ModelMetadata.from_dict(dict(metadata))
        try:
            text = json.dumps(dict(metadata), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise MetadataError(f"the model metadata cannot be written as JSON: {e}") from None
    out = replace_metadata_prop(data, METADATA_KEY, text, source)
    if scan_onnx(out, source).get(METADATA_KEY) != text:  # pragma: no cover - a bug in the writer
        raise MetadataError("the rewritten model does not read back its own metadata")
    return out
