"""Execution profiles: which runtime and precision score a model, each with its own calibrated operating point.

A bf16 or int8 score is not an fp32 score, so a threshold set on one does not hold for another. A model file
therefore carries one operating point per profile it may run under:

- its own (top-level ``thresholds``/``review_bands``): ``fp32`` for a file from `wildlife-vision export`, ``int8``
  for its INT8 twin (``training.quantization`` set), both on onnxruntime;
- ``metadata.profiles[NAME]``: another profile's operating point, calibrated and gated on that profile's own
  scores (``wildlife-vision calibrate MODEL --data MANIFEST --profile bf16``), or a pointer to a twin file that
  carries its own (``{"file": "model.int8.onnx", "sha256": ...}``).

:func:`choose_profile` picks one. ``precision="auto"`` takes the fastest profile, in the order measured for this
CPU's family (:data:`SPEED_ORDER`, from docs/benchmark.md), that this CPU supports natively (from its feature
flags, :mod:`wildlife_vision.cpu`), whose runtime is installed, and whose operating point is calibrated and passed
its gate. An explicit profile that is not calibrated, failed its gate or cannot run here is refused with
:class:`ProfileError`, saying why and which command fixes it. The default (``precision="fp32"``) is the exact,
reproducible path: the same scores on every CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .cpu import CpuInfo, cpu_info
from .data.manifest import file_sha256
from .errors import ModelLoadError

RUNTIMES = ("onnxruntime", "openvino")
#: a profile entry's ``"input"`` when it was calibrated on uint8 crops normalised inside the OpenVINO graph
#: (the scoring loop then skips numpy's normalisation); entries without it are fed float32 as before
UINT8_INPUT = "uint8-nhwc"
PRECISIONS = ("fp32", "int8", "bf16")


class ProfileError(ModelLoadError):
    """The requested runtime/precision profile cannot be used for this model on this machine (the message says why
    and what to run)."""


@dataclass(frozen=True)
class Spec:
    name: str
    runtime: str
    precision: str
    needs: str = ""

    def cpu_reason(self, cpu: CpuInfo) -> Optional[str]:
        """Why this CPU cannot run the profile natively, or None."""
        if self.precision == "bf16" and not cpu.bf16:
            return (f"this CPU ({cpu.model}, family {cpu.family}) has no native bf16 (needs avx512_bf16 or "
                    "amx_bf16); OpenVINO would run it in f32, which is not the calibrated profile")
        return None


SPECS: Dict[str, Spec] = {
    "fp32": Spec("fp32", "onnxruntime", "fp32"),
    "int8": Spec("int8", "onnxruntime", "int8", "any x86-64 CPU; fastest with VNNI or AMX"),
    "bf16": Spec("bf16", "openvino", "bf16", "avx512_bf16 or amx_bf16, and the [openvino] extra"),
    "openvino-fp32": Spec("openvino-fp32", "openvino", "fp32", "the [openvino] extra"),
}

#: fastest first, per CPU family, as measured model-only and end to end (docs/benchmark.md); fp32 always last
SPEED_ORDER: Dict[str, Tuple[str, ...]] = {
    "amx": ("bf16", "int8", "fp32"),
    "avx512_bf16": ("bf16", "int8", "fp32"),
    "avx512_vnni": ("int8", "fp32"),
    "avx2": ("int8", "fp32"),
    "baseline": ("fp32",),
}


@dataclass(frozen=True)
class Choice:
    """The profile a model runs under: ``file`` is the ONNX file to load (a twin for ``int8``), ``entry`` the
    profile's block from the metadata (empty for the file's own profile), ``skipped`` why faster profiles were
    not taken (for ``auto``)."""

    name: str
    runtime: str
    precision: str
    file: Path
    entry: Mapping[str, Any] = field(default_factory=dict)
    skipped: Tuple[str, ...] = ()
    requested: str = "fp32"

    def to_dict(self) -> Dict[str, Any]:
        return {"profile": self.name, "runtime": self.runtime, "precision": self.precision, "file": str(self.file),
                "requested": self.requested, "skipped": list(self.skipped)}


def own_profile(meta: Any) -> str:
    """The profile a file's own thresholds were calibrated for."""
    return "int8" if (meta.training or {}).get("quantization") else "fp32"


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def _calibrate_hint(path: Path, name: str) -> str:
    return (f"calibrate it on labelled photos: wildlife-vision calibrate {path} --data MANIFEST.csv --profile {name} "
            f"--output {path.with_suffix('').name}-{name}.onnx")


def profile_status(meta: Any, path: Path, name: str, cpu: CpuInfo, have_openvino: Optional[bool] = None
                   ) -> Tuple[Optional[Choice], Optional[str]]:
    """(the Choice, None) when profile ``name`` can run this model here, else (None, why not)."""
    spec = SPECS.get(name)
    if spec is None:
        return None, f"unknown profile {name!r} (known: {', '.join(SPECS)})"
    have_openvino = openvino_available() if have_openvino is None else have_openvino
    own = own_profile(meta)
    if name == own:
        return Choice(name, spec.runtime, spec.precision, Path(path)), None
    entry = dict((getattr(meta, "profiles", None) or {}).get(name) or {})
    if not entry:
        return None, f"profile '{name}' has no calibrated operating point in {path}; {_calibrate_hint(Path(path), name)}"
    gate = entry.get("gate") or {}
    if gate.get("passed") is not True:
        why = "; ".join(gate.get("failures") or []) or "no gate result"
        return None, f"profile '{name}' failed its gate ({why}); it is not used"
    reason = spec.cpu_reason(cpu)
    if reason:
        return None, f"profile '{name}': {reason}"
    if spec.runtime == "openvino" and not have_openvino:
        return None, f"profile '{name}' needs OpenVINO: pip install 'wildlife-vision[openvino]'"
    if entry.get("resampler") == "opencv":
        import importlib.util

        if importlib.util.find_spec("cv2") is None:
            return None, (f"profile '{name}' resizes with OpenCV: pip install 'wildlife-vision[openvino]' "
                          "(opencv-python-headless)")
    file = Path(path)
    if entry.get("file"):
        file = Path(path).parent / str(entry["file"])
        if not file.is_file():
            return None, f"profile '{name}' is the twin file {file}, which is missing"
        if entry.get("sha256") and file_sha256(file) != entry["sha256"]:
            return None, f"profile '{name}': {file} is not the twin this model was shipped with (sha256 differs)"
    elif not entry.get("thresholds"):
        return None, f"profile '{name}' in {path} has no thresholds; {_calibrate_hint(Path(path), name)}"
    return Choice(name, spec.runtime, spec.precision, file, entry), None


def choose_profile(meta: Any, path: Path, runtime: str = "auto", precision: str = "fp32",
                   cpu: Optional[CpuInfo] = None, have_openvino: Optional[bool] = None) -> Choice:
    """The profile to run ``meta`` (read from ``path``) under; see the module docstring. Raises
    :class:`ProfileError` (a ModelLoadError) naming why and the command that fixes it."""
    runtime = (runtime or "auto").lower()
    precision = (precision or "fp32").lower()
    if runtime not in RUNTIMES + ("auto",):
        raise ValueError(f"runtime must be one of auto, {', '.join(RUNTIMES)}; got {runtime!r}")
    if precision not in PRECISIONS + ("auto",):
        raise ValueError(f"precision must be one of auto, {', '.join(PRECISIONS)}; got {precision!r}")
    cpu = cpu or cpu_info()
    own = own_profile(meta)

    def matches(spec: Spec) -> bool:
        return runtime in ("auto", spec.runtime) and precision in ("auto", spec.precision)

    if precision != "auto":
        names = [n for n, s in SPECS.items() if matches(s)]
        if precision == own and runtime in ("auto", "onnxruntime"):
            names = [own]
        errors = []
        for n in names:
            choice, why = profile_status(meta, path, n, cpu, have_openvino)
            if choice:
                return replace(choice, requested=f"{runtime}/{precision}")
            errors.append(why)
        raise ProfileError("; ".join(e for e in errors if e) or
                           f"no profile runs precision {precision} on runtime {runtime}")
    skipped: List[str] = []
    order = [n for n in SPEED_ORDER.get(cpu.family, ("fp32",)) if matches(SPECS[n])]
    if own not in order and matches(SPECS[own]):
        order.append(own)
    for n in order:
        choice, why = profile_status(meta, path, n, cpu, have_openvino)
        if choice:
            return replace(choice, requested=f"{runtime}/auto", skipped=tuple(skipped))
        skipped.append(why or n)
    raise ProfileError(f"no profile of {path} can run here ({runtime}/auto on {cpu.family}): " + "; ".join(skipped))


def profiles_table(meta: Any, path: Path, cpu: Optional[CpuInfo] = None) -> List[Dict[str, Any]]:
    """Every known profile of a model with whether it can run here and why not (for `info` and the benchmark)."""
    cpu = cpu or cpu_info()
    rows = []
    for n, spec in SPECS.items():
        choice, why = profile_status(meta, path, n, cpu)
        entry = dict((getattr(meta, "profiles", None) or {}).get(n) or {})
        rows.append({"profile": n, "runtime": spec.runtime, "precision": spec.precision, "usable": choice is not None,
                     "why_not": why, "own": n == own_profile(meta), "calibrated": n == own_profile(meta) or bool(entry),
                     "gate_passed": (entry.get("gate") or {}).get("passed") if entry else None})
    return rows


__all__ = ["Choice", "ProfileError", "SPECS", "SPEED_ORDER", "RUNTIMES", "PRECISIONS", "choose_profile",
           "profile_status", "profiles_table", "own_profile", "openvino_available"]
