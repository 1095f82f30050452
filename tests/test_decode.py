"""Decoding and preprocessing correctness: orientation, colour modes, frames, sizes, inputs of every type."""

from __future__ import annotations

import io
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from wildlife_vision.errors import ImageDecodeError
from wildlife_vision.preprocess import PreprocessConfig, load_image, preprocess, resize_and_crop

from helpers import make_photo

CFG = PreprocessConfig(input_size=(32, 32), crop_pct=0.875, interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def two_colour(w=80, h=40) -> Image.Image:
    """Left half red, right half blue."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2] = (255, 0, 0)
    arr[:, w // 2:] = (0, 0, 255)
    return Image.fromarray(arr)


def with_orientation(img: Image.Image, orientation: int, fmt="JPEG") -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))


# ---- orientation -----------------------------------------------------------------------------------

def test_exif_orientation_6_is_rotated_upright():
    img = load_image(with_orientation(two_colour(), 6))
    assert img.size == (40, 80)  # portrait after rotating 90 degrees clockwise
    arr = np.asarray(img).astype(int)
    top, bottom = arr[5, 20], arr[75, 20]
    assert top[0] > 200 and top[2] < 60, f"top should be red (the photo's left side), got {top}"
    assert bottom[2] > 200 and bottom[0] < 60, f"bottom should be blue, got {bottom}"


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_an_upright_image_fed_back_in_is_not_turned_again(orientation, fmt):
    once = load_image(with_orientation(make_photo(orientation, (60, 36)), orientation, fmt))
    assert np.array_equal(np.asarray(load_image(once)), np.asarray(once))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_every_exif_orientation_matches_pillows_exif_transpose(orientation, fmt):
    data = with_orientation(make_photo(orientation, (60, 36)), orientation, fmt)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    got = np.asarray(load_image(data))
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)


def test_broken_exif_does_not_lose_the_photo():
    data = bytearray(with_orientation(make_photo(0, (40, 30)), 6))
    i = data.index(b"Exif\x00\x00")
    data[i + 6:i + 14] = b"XXXXXXXX"  # destroy the TIFF header inside the EXIF block
    img = load_image(bytes(data))
    assert img.mode == "RGB" and img.size == (40, 30)


# ---- colour modes --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr",
                                  "LAB", "HSV", "I", "I;16", "I;16B", "F"])
def test_every_pillow_mode_becomes_rgb(mode):
    img = Image.new(mode, (12, 9))
    out = load_image(img)
    assert out.mode == "RGB" and out.size == (12, 9)
    x = preprocess(img, CFG)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32 and np.isfinite(x).all()


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    arr = np.asarray(load_image(encode(rgba, "PNG")))
    assert tuple(arr[1, 1]) == (255, 255, 255) and tuple(arr[0, 0]) == (0, 0, 255)
    la = Image.new("LA", (4, 4), (0, 0))
    assert tuple(np.asarray(load_image(encode(la, "PNG")))[2, 2]) == (255, 255, 255)
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    pal.putpixel((0, 0), 0)
    arr = np.asarray(load_image(encode(pal, "PNG", transparency=0)))
    assert tuple(arr[0, 0]) == (255, 255, 255) and tuple(arr[3, 3]) == (10, 200, 10)
    assert tuple(np.asarray(load_image(np.zeros((2, 2, 4), np.uint8)))[0, 0]) == (255, 255, 255)


def test_cmyk_jpeg_has_the_right_colours():
    rgb = Image.new("RGB", (16, 16), (200, 30, 40))
    out = np.asarray(load_image(encode(rgb.convert("CMYK"), "JPEG", quality=95))).astype(int)
    assert np.abs(out[8, 8] - (200, 30, 40)).max() < 12


def test_16bit_png_is_scaled_not_clipped():
    arr16 = np.array([[0, 32896, 65535]], dtype=np.uint16)
    img = Image.fromarray(arr16)
    data = encode(img, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    out = np.asarray(load_image(data))
    assert tuple(out[0, :, 0]) == (0, 128, 255)
    assert (out[..., 0] == out[..., 1]).all()


# ---- frames ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG", "TIFF"])
def test_first_frame_of_animated_and_multipage_files(fmt):
    frames = [Image.new("RGB", (20, 16), c) for c in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    kw = {"save_all": True, "append_images": frames[1:]}
    if fmt in ("GIF", "WEBP", "PNG"):
        kw.update(duration=100, loop=0)
    if fmt == "WEBP":
        kw.update(lossless=True)
    data = encode(frames[0], fmt, **kw)
    opened = Image.open(io.BytesIO(data))
    assert getattr(opened, "n_frames", 1) == 3
    px = np.asarray(load_image(data))[8, 10].astype(int)
    assert px[0] > 200 and px[1] < 50 and px[2] < 50, f"{fmt}: expected the first (red) frame, got {px}"


def test_pil_input_is_used_at_its_current_frame_and_not_modified():
    frames = [Image.new("RGB", (20, 16), c) for c in ((250, 0, 0), (0, 250, 0))]
    gif = Image.open(io.BytesIO(encode(frames[0], "GIF", save_all=True, append_images=frames[1:])))
    gif.seek(1)
    px = np.asarray(load_image(gif))[4, 4]
    assert px[1] > 200 and gif.tell() == 1


# ---- sizes -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(1, 1), (1, 5000), (5000, 1), (2, 3), (31, 33), (36, 36), (37, 300), (1000, 999)])
@pytest.mark.parametrize("input_size", [(32, 32), (24, 40)])
def test_output_is_exactly_input_size(size, input_size):
    cfg = PreprocessConfig(input_size=input_size, crop_pct=0.875, interpolation="bicubic")
    img = Image.new("RGB", size, (30, 60, 90))
    assert resize_and_crop(img, cfg).size == (input_size[1], input_size[0])
    x = preprocess(img, cfg)
    assert x.shape == (3, *input_size) and np.isfinite(x).all()


def test_extreme_aspect_does_not_build_a_huge_intermediate():
    """1 x 200000 would resize to 36 x 7.2 million pixels before cropping; only the crop is resampled."""
    import time

    img = Image.new("RGB", (1, 200_000), (10, 20, 30))
    t = time.perf_counter()
    out = resize_and_crop(img, CFG)
    assert out.size == (32, 32) and time.perf_counter() - t < 0.5


@pytest.mark.parametrize("geometry", ["torchvision", "ceil-floor"])
@pytest.mark.parametrize("interp", ["bilinear", "bicubic", "lanczos", "nearest"])
@pytest.mark.parametrize("size", [(96, 64), (640, 480), (37, 300), (33, 33), (20, 2000), (3000, 40), (101, 77)])
def test_resize_and_crop_equals_resize_then_crop(interp, size, geometry):
    """Exactly resize-then-crop for usual shapes; for extreme aspects (only the crop's box is resampled) close.

    torchvision: shorter side to floor(32 / 0.875) = 36, longer side int(36 * long / short), offset
    int(round((resized - 32) / 2)); ceil-floor (models exported before): both sides ceil, offset floor."""
    cfg = PreprocessConfig(input_size=(32, 32), crop_pct=0.875, interpolation=interp, geometry=geometry)
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    w, h = size
    if geometry == "torchvision":
        short, long_ = min(w, h), max(w, h)
        new_long = int(36 * long_ / short)
        tw, th = (36, new_long) if w <= h else (new_long, 36)
        tw, th = max(32, tw), max(32, th)
        left, top = int(round((tw - 32) / 2.0)), int(round((th - 32) / 2.0))
    else:
        scale = cfg.resize_shorter / min(w, h)
        tw, th = max(32, math.ceil(w * scale)), max(32, math.ceil(h * scale))
        left, top = (tw - 32) // 2, (th - 32) // 2
    from wildlife_vision.preprocess import INTERPOLATIONS

    ref = np.asarray(img.resize((tw, th), INTERPOLATIONS[interp]).crop((left, top, left + 32, top + 32)), dtype=int)
    got = np.asarray(resize_and_crop(img, cfg), dtype=int)
    if tw * th <= 16 * 32 * 32:
        assert np.array_equal(ref, got)
    elif interp != "nearest":  # nearest may pick the neighbouring source pixel; others differ by rounding
        assert np.abs(ref - got).mean() < 1.0


def test_jpeg_draft_decodes_large_photos_at_reduced_scale_but_enough_resolution(tmp_path):
    big = make_photo(0, (1600, 1200))
    p = tmp_path / "big.jpg"
    big.save(p, "JPEG", quality=90)
    drafted = PreprocessConfig(input_size=(32, 32), crop_pct=0.875, interpolation="bilinear", mean=(0.5,) * 3,
                               std=(0.5,) * 3, draft=True)
    small = load_image(p, drafted)
    assert small.size[0] < 1600 and min(small.size) >= drafted.resize_shorter
    assert load_image(p).size == (1600, 1200)  # without cfg: full size
    assert load_image(p, CFG).size == (1600, 1200)  # draft is off by default
    no_draft = PreprocessConfig(input_size=(32, 32), crop_pct=0.875, interpolation="bilinear", mean=(0.5,) * 3,
                                std=(0.5,) * 3, draft=False)
    assert load_image(p, no_draft).size == (1600, 1200)
    a, b = preprocess(p, drafted), preprocess(p, no_draft)
    assert np.abs(a - b).mean() < 0.05  # the same picture, resampled from a different scale


# ---- input types -------------------------------------------------------------------------------------

def test_numpy_inputs():
    rgb = np.asarray(make_photo(0, (20, 10)))
    assert np.array_equal(np.asarray(load_image(rgb)), rgb)
    gray = rgb[..., 0]
    assert np.array_equal(np.asarray(load_image(gray))[..., 1], gray)
    assert np.array_equal(np.asarray(load_image(gray[..., None]))[..., 2], gray)
    assert np.array_equal(np.asarray(load_image(rgb[::2, ::-1])), rgb[::2, ::-1])  # non-contiguous views
    for bad, kind in [(rgb.astype(np.float32), "bad_array"), (np.zeros((4, 4, 2), np.uint8), "bad_array"),
                      (np.zeros((2, 2, 2, 3), np.uint8), "bad_array"), (np.zeros((0, 5, 3), np.uint8), "empty")]:
        with pytest.raises(ImageDecodeError) as info:
            load_image(bad)
        assert info.value.kind == kind


def test_zero_size_pil_image_is_an_error():
    with pytest.raises(ImageDecodeError) as info:
        load_image(Image.new("RGB", (0, 5)))
    assert info.value.kind == "empty"


@pytest.mark.parametrize("bad", [5, 3.2, None, {"path": "x.jpg"}, io.BytesIO(b"x")])
def test_unsupported_type_raises_type_error_naming_it(bad):
    with pytest.raises(TypeError, match=type(bad).__name__):
        load_image(bad)


def test_path_bytes_bytearray_memoryview_pil_and_array_decode_identically(tmp_path):
    data = encode(make_photo(5, (70, 50)), "PNG")
    p = tmp_path / "x.png"
    p.write_bytes(data)
    ref = preprocess(p, CFG)
    for src in (str(p), data, bytearray(data), memoryview(data), Image.open(io.BytesIO(data)),
                np.asarray(Image.open(io.BytesIO(data)))):
        assert np.array_equal(preprocess(src, CFG), ref), type(src).__name__


# ---- truncation and Pillow's global settings ------------------------------------------------------------

def test_truncated_files_raise(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "TIFF"):
        img = make_photo(2, (64, 48))
        data = encode(img.convert("P") if fmt == "GIF" else img, fmt)
        with pytest.raises(ImageDecodeError) as info:
            load_image(data[: len(data) * 2 // 3])
        assert info.value.kind in ("truncated", "corrupt"), (fmt, info.value.kind, str(info.value))


def test_importing_the_library_leaves_pillow_settings_alone():
    code = ("from PIL import Image, ImageFile; ImageFile.LOAD_TRUNCATED_IMAGES = True; Image.MAX_IMAGE_PIXELS = 123;"
            "import wildlife_vision; print(ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "123"], out.stderr
