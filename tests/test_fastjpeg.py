"""The JPEG fast path (wildlife_vision.fastjpeg): pixel-identical to load_image wherever it is used, Pillow's
errors for bad files, and Pillow itself for what the fast path does not take."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from wildlife_vision import fastjpeg
from wildlife_vision.errors import ImageDecodeError
from wildlife_vision.preprocess import PreprocessConfig, load_image

pytest.importorskip("simplejpeg", reason="the fast path's second decoder is simplejpeg (the [openvino] extra, in [dev])")
pytest.importorskip("cv2", reason="the fast path's first decoder is OpenCV (the [openvino] extra, in [dev])")


@pytest.fixture(params=["opencv", "simplejpeg"], autouse=True)
def which(request, monkeypatch):
    """Every test runs on each decoder (chosen with WILDLIFE_VISION_FAST_JPEG)."""
    fastjpeg.decoder.cache_clear()
    monkeypatch.setenv("WILDLIFE_VISION_FAST_JPEG", request.param)
    yield request.param
    monkeypatch.undo()
    fastjpeg.decoder.cache_clear()


def _photo(w=61, h=47, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.kron(rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8), np.ones((4, 4, 1), np.uint8))
    return Image.fromarray(base[:h, :w])


def _jpeg(img: Image.Image, orientation: int = 1, **kw) -> bytes:
    buf = io.BytesIO()
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw["exif"] = exif.tobytes()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def test_the_fast_path_is_on_and_passed_its_self_check(which, monkeypatch):
    assert fastjpeg.decoder().name == which
    monkeypatch.delenv("WILDLIFE_VISION_FAST_JPEG")
    fastjpeg.decoder.cache_clear()
    assert fastjpeg.decoder().name == "opencv", "by default OpenCV, which releases the GIL while it decodes"


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("kind", ["420", "444", "gray", "progressive"])
def test_pixel_identical_to_load_image_in_every_orientation(orientation, kind, tmp_path, monkeypatch):
    img = _photo()
    kw = {"420": dict(subsampling=2), "444": dict(subsampling=0, quality=95), "progressive": dict(progressive=True),
          "gray": {}}[kind]
    data = _jpeg(img.convert("L") if kind == "gray" else img, orientation, **kw)
    path = tmp_path / "p.jpg"
    path.write_bytes(data)
    calls = []
    monkeypatch.setattr(fastjpeg, "load_image", lambda *a, **k: calls.append(1) or load_image(*a, **k))
    for source in (data, str(path), path):
        got = fastjpeg.load_rgb(source, PreprocessConfig())
        want = np.asarray(load_image(data))
        assert got.dtype == np.uint8 and got.shape == want.shape and np.array_equal(got, want)
    assert not calls, "these JPEGs took the fast path"


def test_what_the_fast_path_does_not_take_goes_to_pillow(monkeypatch):
    calls = []
    monkeypatch.setattr(fastjpeg, "load_image", lambda *a, **k: calls.append(1) or load_image(*a, **k))
    cmyk = _jpeg(_photo().convert("CMYK"))
    png = io.BytesIO()
    _photo().save(png, "PNG")
    for data in (cmyk, png.getvalue()):
        assert np.array_equal(fastjpeg.load_rgb(data), np.asarray(load_image(data)))
    arr = np.asarray(_photo())
    assert np.array_equal(fastjpeg.load_rgb(arr), arr)
    # the draft (reduced-scale) decode a model may ask for is Pillow's
    big = _jpeg(_photo(600, 500))
    cfg = PreprocessConfig(input_size=(64, 64), draft=True)
    assert np.array_equal(fastjpeg.load_rgb(big, cfg), np.asarray(load_image(big, cfg)))
    assert len(calls) == 4


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_a_truncated_jpeg_gets_pillows_error(cut):
    data = _jpeg(_photo(200, 150))
    bad = data[: int(len(data) * cut)]
    with pytest.raises(ImageDecodeError) as want:
        load_image(bad)
    with pytest.raises(ImageDecodeError) as got:
        fastjpeg.load_rgb(bad)
    assert (got.value.kind, str(got.value)) == (want.value.kind, str(want.value))


def test_can_be_turned_off(monkeypatch):
    fastjpeg.decoder.cache_clear()
    monkeypatch.setenv("WILDLIFE_VISION_FAST_JPEG", "0")
    assert fastjpeg.decoder() is None
    data = _jpeg(_photo())
    assert np.array_equal(fastjpeg.load_rgb(data), np.asarray(load_image(data)))


def test_corrupt_data_before_the_end_marker_decodes_as_pillow_does_or_gets_its_error(monkeypatch):
    """A file whose entropy-coded data is damaged but still ends in the end-of-image marker: libjpeg recovers with
    a warning (simplejpeg then hands it to Pillow; OpenCV decodes it); the pixels are Pillow's, or so is the error."""
    data = bytearray(_jpeg(_photo(200, 150), quality=90))
    sos = data.index(b"\xff\xda")
    for frac, junk in ((0.3, b"\x00" * 40), (0.6, b"\xff\xd0\x13\x37" * 8), (0.8, bytes(range(0, 250, 7)))):
        bad = bytearray(data)
        at = sos + int((len(data) - sos) * frac)
        bad[at:at + len(junk)] = junk
        bad = bytes(bad)
        try:
            want = np.asarray(load_image(bad))
        except ImageDecodeError as e:
            with pytest.raises(ImageDecodeError) as got:
                fastjpeg.load_rgb(bad)
            assert (got.value.kind, str(got.value)) == (e.kind, str(e))
            continue
        assert np.array_equal(fastjpeg.load_rgb(bad), want)


def test_a_decoder_that_differs_from_pillow_is_not_used(which, monkeypatch):
    off = fastjpeg.Decoder("off", lambda data: np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) ^ 1)
    assert not fastjpeg._selfcheck(off) and fastjpeg._selfcheck(fastjpeg._DECODERS[which]())
    fastjpeg.decoder.cache_clear()
    monkeypatch.setitem(fastjpeg._DECODERS, which, lambda: off)
    assert fastjpeg.decoder() is None or fastjpeg.decoder().name != "off"
