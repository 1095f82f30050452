"""The GPU install: when the CUDA provider is missing, the warning names the cause (both onnxruntime builds
installed, the CPU one winning; or no GPU build; or CUDA libraries missing) and the fix."""

from __future__ import annotations

import warnings

import pytest

from helpers import make_tiny_model

import wildlife_vision as wv
from wildlife_vision import onnxruntime_builds as builds


def test_both_builds_installed_names_the_conflict_and_the_fix():
    msg = builds.missing_provider_hint(["CUDAExecutionProvider"], ["CPUExecutionProvider"],
                                       builds={"onnxruntime": "1.20.0", "onnxruntime-gpu": "1.20.0"})
    assert "both the CPU and the GPU build" in msg and "onnxruntime 1.20.0, onnxruntime-gpu 1.20.0" in msg
    assert builds.GPU_FIX in msg


def test_gpu_build_alone_without_its_provider_points_at_cuda():
    msg = builds.missing_provider_hint(["CUDAExecutionProvider"], ["CPUExecutionProvider"],
                                       builds={"onnxruntime-gpu": "1.20.0"})
    assert "CUDA and cuDNN" in msg and "both" not in msg


def test_no_gpu_build_says_which_to_install():
    msg = builds.missing_provider_hint(["CUDAExecutionProvider"], ["CPUExecutionProvider"],
                                       builds={"onnxruntime": "1.20.0"})
    assert "no onnxruntime-gpu" in msg and "wildlife-vision[gpu]" in msg
    msg = builds.missing_provider_hint(["DmlExecutionProvider"], ["CPUExecutionProvider"],
                                       builds={"onnxruntime": "1.20.0"})
    assert "no onnxruntime-directml" in msg


def test_installed_builds_reads_this_environment():
    found = builds.installed_builds()
    import onnxruntime

    assert found, "at least one onnxruntime build is installed here"
    assert onnxruntime.__version__ in found.values()


def test_load_model_with_cuda_here_falls_back_with_the_diagnosis(tmp_path, monkeypatch):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has the CUDA provider; the fallback is not exercised")
    monkeypatch.setattr(builds, "installed_builds", lambda: {"onnxruntime": "1.0", "onnxruntime-gpu": "1.0"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = wv.load_model(make_tiny_model(tmp_path / "m.onnx"), providers=["cuda"])
    assert model.provider == "CPUExecutionProvider"
    text = " ".join(str(w.message) for w in caught if issubclass(w.category, RuntimeWarning))
    assert "both the CPU and the GPU build" in text and builds.GPU_FIX in text
