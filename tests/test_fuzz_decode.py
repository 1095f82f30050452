"""Property-based fuzzing of the decoder: random and mutated bytes only ever give an RGB image or ImageDecodeError.

Bounded for CI (a couple of hundred examples per property, a few seconds in all). Run longer locally with
``HYPOTHESIS_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz_decode.py``.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from wildlife_vision.errors import ERROR_KINDS, ImageDecodeError
from wildlife_vision.preprocess import PreprocessConfig, load_image, preprocess

from helpers import make_photo

CFG = PreprocessConfig(input_size=(24, 32), crop_pct=0.875, interpolation="bilinear")
EXAMPLES = int(os.environ.get("HYPOTHESIS_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _seeds():
    photo = make_photo(4, (24, 18))
    out = []
    for fmt, img, kw in [("PNG", photo, {}), ("JPEG", photo, {"quality": 80}), ("GIF", photo.convert("P"), {}),
                         ("WEBP", photo, {}), ("TIFF", photo, {}), ("BMP", photo, {}), ("ICO", photo, {}),
                         ("PNG", photo.convert("LA"), {}), ("PNG", Image.fromarray(
                             (np.arange(24 * 18).reshape(18, 24) * 100).astype(np.uint16)), {}),
                         ("JPEG", photo.convert("CMYK"), {}), ("PPM", photo, {}), ("TGA", photo, {}),
                         ("GIF", photo.convert("P"), {"save_all": True,
                                                      "append_images": [make_photo(5, (24, 18)).convert("P")]})]:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        out.append(buf.getvalue())
    return out


SEEDS = _seeds()


@st.composite
def mutated_images(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "header"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x01]))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[i:]
        else:  # damage the header, where sizes and modes live
            j = draw(st.integers(0, min(len(data), 64) - 1))
            data[j] = draw(st.integers(0, 255))
    return bytes(data)


def _check(data: bytes) -> None:
    try:
        img = load_image(data, CFG)
    except ImageDecodeError as e:
        assert e.kind in ERROR_KINDS and str(e)
        return
    assert img.mode == "RGB" and min(img.size) >= 1
    try:
        x = preprocess(data, CFG)
    except ImageDecodeError:  # pragma: no cover - load_image succeeded, so preprocess should too
        pytest.fail("load_image accepted the input but preprocess refused it")
    assert x.shape == (3, 24, 32) and x.dtype == np.float32 and np.isfinite(x).all()


@pytest.mark.filterwarnings("ignore")
@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise_anything_but_image_decode_error(data):
    _check(data)


@pytest.mark.filterwarnings("ignore")
@FUZZ
@given(mutated_images())
def test_mutated_images_never_raise_anything_but_image_decode_error(data):
    _check(data)


@pytest.mark.filterwarnings("ignore")
@FUZZ
@given(st.integers(1, 300), st.integers(1, 300), st.sampled_from(["L", "RGB", "RGBA", "P", "I;16", "1", "CMYK"]))
def test_any_size_and_mode_gives_exactly_the_input_size(w, h, mode):
    x = preprocess(Image.new(mode, (w, h)), CFG)
    assert x.shape == (3, 24, 32) and np.isfinite(x).all()
