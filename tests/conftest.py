import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import make_tiny_model, shared_manifest  # noqa: E402


@pytest.fixture
def tiny_model_path(tmp_path):
    return make_tiny_model(tmp_path / "tiny.onnx")


@pytest.fixture
def wildtrade_manifest():
    m = shared_manifest()
    if m is None:
        pytest.skip("needs the real photos in ../shared/data/wildtrade-v1 (or WILDTRADE_DIR); not present here")
    return m
