"""Which onnxruntime builds are installed, and why a GPU provider is missing: the message that names the fix.

onnxruntime ships as several distributions that all install the same import package ``onnxruntime``: the CPU
build ``onnxruntime`` and the GPU build ``onnxruntime-gpu`` (also ``onnxruntime-directml``, ``onnxruntime-openvino``,
...). pip treats them as unrelated, so installing ``wildlife-vision[gpu]`` (the core depends on the CPU build)
puts both in one environment, and whichever was unpacked last owns the files: usually the CPU build, and then
``load_model(providers=["cuda"])`` finds no CUDA provider although ``onnxruntime-gpu`` "is installed". This module
reads the installed distributions (``importlib.metadata``, no import of onnxruntime) so that the warning can say
exactly that, and how to repair it (docs/gpu.md).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

#: distributions that install the ``onnxruntime`` import package, and the providers each one brings
BUILDS: Dict[str, Sequence[str]] = {
    "onnxruntime": ("CPUExecutionProvider",),
    "onnxruntime-gpu": ("CUDAExecutionProvider", "TensorrtExecutionProvider"),
    "onnxruntime-directml": ("DmlExecutionProvider",),
    "onnxruntime-openvino": ("OpenVINOExecutionProvider",),
    "onnxruntime-rocm": ("ROCMExecutionProvider",),
    "onnxruntime-qnn": ("QNNExecutionProvider",),
}

#: the command that leaves only the GPU build (its files intact) in the environment
GPU_FIX = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"


def installed_builds() -> Dict[str, str]:
    """{distribution: version} of the onnxruntime builds installed in this environment."""
    from importlib import metadata

    found: Dict[str, str] = {}
    for name in BUILDS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def missing_provider_hint(missing: Sequence[str], available: Sequence[str],
                          builds: Optional[Dict[str, str]] = None) -> str:
    """Why the GPU providers ``missing`` are not among ``available``, and what to do about it."""
    builds = installed_builds() if builds is None else builds
    wanted = [b for b, provs in BUILDS.items() if any(p in provs for p in missing)]
    present = [b for b in wanted if b in builds]
    if present and "onnxruntime" in builds and present != ["onnxruntime"]:
        both = ", ".join(f"{b} {builds[b]}" for b in ["onnxruntime"] + present)
        return (f"both the CPU and the GPU build of onnxruntime are installed ({both}); they share one import "
                f"package and the CPU build's files won. Keep only the GPU build: `{GPU_FIX}` (docs/gpu.md)")
    if present:
        return (f"{', '.join(present)} is installed, but onnxruntime could not load {', '.join(missing)}: check that "
                "the CUDA and cuDNN versions it needs are installed and visible (`nvidia-smi`, LD_LIBRARY_PATH; "
                "onnxruntime's CUDA requirements page lists them), and that a GPU is present")
    need = wanted[0] if wanted else "onnxruntime-gpu"
    extra = " (`pip install 'wildlife-vision[gpu]'` then " + f"`{GPU_FIX}`)" if need == "onnxruntime-gpu" else ""
    return f"this environment has no {need}{extra}; available providers: {list(available)}"


def describe() -> List[str]:
    """One line per installed build, for `wildlife-vision info`."""
    return [f"{name} {version}" for name, version in installed_builds().items()]


__all__ = ["BUILDS", "GPU_FIX", "installed_builds", "missing_provider_hint", "describe"]
