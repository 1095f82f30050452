"""Issue 6: bad input never crashes a run or loses a row.

`make_bad_corpus` writes a folder of hostile and odd files (built by the test itself: nothing is downloaded);
each case says what must happen: correct scores, or a per-input error of a given kind that names the problem.
The same corpus is run through the library (one `predict` call) and through the CLI (one row per file).
Model-file failures are at the end.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pytest
from PIL import Image

import wildlife_vision as wv
from wildlife_vision import preprocess as pp
from wildlife_vision.cli import main as cli_main
from wildlife_vision.cli_predict import EXIT_MODEL, EXIT_OK
from wildlife_vision.errors import ImageDecodeError, MetadataError, ModelLoadError

from helpers import make_photo, make_tiny_model, tiny_metadata


# ---- building the corpus -------------------------------------------------------------------------------

def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose header claims width x height (8-bit RGB) but which carries (almost) no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(idat))
            + _png_chunk(b"IEND", b""))


def decodable_bomb_png(width: int = 10_000, height: int = 9_000) -> bytes:
    """A real, fully decodable 1-bit PNG of width x height (90 MP), a few kilobytes on disk."""
    row = b"\x00" + bytes((width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def gif_claiming(width: int, height: int) -> bytes:
    """A GIF whose logical screen and only frame claim width x height, with a few bytes of LZW data."""
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
            + b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x4c\x01\x00" + b";")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF header is patched to claim width x height."""
    data = bytearray(encode(make_photo(1, (64, 48)), "JPEG"))
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def exif_rotated_jpeg() -> bytes:
    """A landscape 80x40 JPEG (left half red, right half blue) tagged orientation 6 (rotate 90 CW to view)."""
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, :40] = (255, 0, 0)
    arr[:, 40:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.fromarray(arr), "JPEG", exif=exif.tobytes(), quality=95)


def animated(fmt: str) -> bytes:
    frames = [make_photo(i, (48, 40)) for i in range(3)]
    if fmt == "GIF":
        frames = [f.convert("P") for f in frames]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


@dataclass(frozen=True)
class Case:
    name: str
    data: Optional[bytes]           # None: the file is created specially (see make_bad_corpus)
    kind: Optional[str] = None      # None: must be scored; else the expected error_kind
    says: str = ""                  # a word the error message must contain (case-insensitive)


def corpus_cases() -> Dict[str, Case]:
    photo = make_photo(3, (120, 90))
    jpeg = encode(photo, "JPEG", quality=90)
    png = encode(photo, "PNG")
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 120, dtype=np.uint8), (90, 1))))
    pal = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    gray16 = Image.fromarray((np.linspace(0, 65535, 90 * 120).reshape(90, 120)).astype(np.uint16))
    tiff_pages = [make_photo(i, (40, 30)) for i in range(3)]
    cases = [
        # images that must be scored
        Case("ok_photo.jpg", jpeg),
        Case("tiny_1x1.png", encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG")),
        Case("strip_1x5000.png", encode(Image.new("RGB", (1, 5000), (10, 200, 10)), "PNG")),
        Case("strip_5000x1.png", encode(Image.new("RGB", (5000, 1), (10, 10, 200)), "PNG")),
        Case("grayscale.png", encode(photo.convert("L"), "PNG")),
        Case("palette.png", encode(photo.convert("P"), "PNG")),
        Case("palette_transparency.png", encode(pal, "PNG", transparency=0)),
        Case("la_transparency.png", encode(photo.convert("LA"), "PNG")),
        Case("rgba_transparency.png", encode(rgba, "PNG")),
        Case("cmyk.jpg", encode(photo.convert("CMYK"), "JPEG")),
        Case("gray16.png", encode(gray16, "PNG")),
        Case("exif_rotated.jpg", exif_rotated_jpeg()),
        Case("animated.gif", animated("GIF")),
        Case("animated.webp", animated("WEBP")),
        Case("multipage.tiff", encode(tiff_pages[0], "TIFF", save_all=True, append_images=tiff_pages[1:])),
        Case("bmp_renamed.jpg", encode(photo, "BMP")),  # wrong extension, real image: content decides
        Case("non_ascii_фото_象牙.jpg", jpeg),
        # per-input errors
        Case("zero_bytes.jpg", b"", "empty", "0 bytes"),
        Case("text_saved_as.jpg", b"this is not a photo, just some text\n", "not_an_image", "text"),
        Case("html_saved_as.jpg", b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "not_an_image",
             "HTML"),
        Case("pdf_saved_as.jpg", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "not_an_image", "PDF"),
        Case("vector.svg", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
             "unsupported_format", "SVG"),
        Case("iphone.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), "unsupported_format",
             "HEIC"),
        Case("random_bytes.jpg", bytes(np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8)),
             "not_an_image", "binary"),
        Case("truncated.jpg", jpeg[: len(jpeg) // 2], "truncated", "truncated"),
        Case("truncated.png", png[: len(png) // 2], "truncated", "truncated"),
        Case("corrupt_header.png", png[:16] + b"\xde\xad\xbe\xef" * 8 + png[48:], "corrupt", "PNG"),
        Case("corrupt_header.jpg", b"\xff\xd8\xff\xe0" + b"\x00\x02" + bytes(200), "corrupt", "JPEG"),
        Case("bomb_100000x100000.png", png_claiming(100_000, 100_000), "too_large", "too large"),
        Case("bomb_10000x10000.png", png_claiming(10_000, 10_000), "too_large", "too large"),
        Case("bomb_10000x10000.gif", gif_claiming(10_000, 10_000), "too_large", "too large"),
        Case("bomb_65535x65535.gif", gif_claiming(65_535, 65_535), "too_large", "too large"),
        Case("bomb_10000x10000.jpg", jpeg_claiming(10_000, 10_000), "too_large", "too large"),
        Case("bomb_decodable_90mp.png", decodable_bomb_png(), "too_large", "too large"),
        Case("zero_width.png", png_claiming(0, 10), "corrupt", ""),
        # filesystem problems (created specially)
        Case("dangling_link.jpg", None, "not_found", "not found"),
        Case("symlink_loop.jpg", None, "unreadable", "symbolic links"),
        Case("a_folder_named.jpg", None, None, ""),  # a folder: listed (empty), contributes nothing
    ]
    return {c.name: c for c in cases}


def make_bad_corpus(folder: Path) -> Dict[str, Case]:
    folder.mkdir(parents=True, exist_ok=True)
    cases = corpus_cases()
    for c in cases.values():
        if c.data is not None:
            (folder / c.name).write_bytes(c.data)
    os.symlink("does_not_exist.jpg", folder / "dangling_link.jpg")
    os.symlink("symlink_loop.jpg", folder / "symlink_loop.jpg")
    (folder / "a_folder_named.jpg").mkdir()
    (folder / "notes.txt").write_text("not an image, skipped when reading the folder")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return cases


def file_cases(cases: Dict[str, Case]):
    return {n: c for n, c in cases.items() if n != "a_folder_named.jpg"}


# ---- the corpus through the library ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad") / "corpus"
    return folder, make_bad_corpus(folder)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return wv.load_model(make_tiny_model(tmp_path_factory.mktemp("m") / "tiny.onnx"), batch_size=4)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_every_corpus_file_gets_its_expected_outcome(corpus, model):
    folder, cases = corpus
    cases = file_cases(cases)
    paths = [str(folder / n) for n in sorted(cases)]
    start = time.perf_counter()
    preds = model.predict(paths, workers=2)
    elapsed = time.perf_counter() - start
    assert [p.input for p in preds] == paths
    problems = []
    for pred in preds:
        case = cases[Path(pred.input).name]
        if case.kind is None:
            if pred.error is not None or set(pred.scores) != set(model.labels):
                problems.append(f"{case.name}: expected scores, got error {pred.error!r}")
            elif not all(0.0 <= s <= 1.0 for s in pred.scores.values()):
                problems.append(f"{case.name}: scores out of range {pred.scores}")
        else:
            if pred.error is None:
                problems.append(f"{case.name}: expected a {case.kind} error, got scores")
            elif pred.error_kind != case.kind or case.says.lower() not in pred.error.lower():
                problems.append(f"{case.name}: expected {case.kind} saying {case.says!r}, got "
                                f"{pred.error_kind}: {pred.error!r}")
            elif pred.scores or pred.flagged or pred.review:
                problems.append(f"{case.name}: an error row must have no scores")
    assert not problems, "\n".join(problems)
    assert elapsed < 10, f"the whole corpus took {elapsed:.1f}s: something decoded a bomb"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("name", ["bomb_100000x100000.png", "bomb_10000x10000.png", "bomb_10000x10000.gif",
                                  "bomb_65535x65535.gif", "bomb_10000x10000.jpg", "bomb_decodable_90mp.png"])
def test_bombs_are_refused_quickly_from_bytes_too(name):
    data = corpus_cases()[name].data
    start = time.perf_counter()
    with pytest.raises(ImageDecodeError) as info:
        pp.load_image(data)
    assert time.perf_counter() - start < 1.0
    assert info.value.kind == "too_large"
    assert "pixel" in str(info.value) or "decompression" in str(info.value).lower()


def test_decompression_bomb_is_refused_without_allocating_its_pixels(tmp_path):
    """In a fresh interpreter, refusing a real, decodable 90 MP PNG must not grow memory by its size."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(decodable_bomb_png())
    code = textwrap.dedent(f"""
        import resource, sys, time, warnings
        warnings.simplefilter("ignore")
        from wildlife_vision.preprocess import load_image, ImageDecodeError
        from PIL import Image
        load_image(Image.new("RGB", (8, 8)))          # warm up lazy imports
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        try:
            load_image({str(bomb)!r})
            print("DECODED")
        except ImageDecodeError as e:
            print(e.kind)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) // 1024, time.perf_counter() - t)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    kind, grown = out.stdout.split("\n")[:2]
    assert kind == "too_large"
    grown_mb, seconds = float(grown.split()[0]), float(grown.split()[1])
    assert grown_mb < 40, f"memory grew by {grown_mb} MB: the 90 MP canvas (90+ MB) was allocated"
    assert seconds < 1.0


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_lazily_opened_pil_image_gets_the_same_limit():
    lazy = Image.open(io.BytesIO(png_claiming(10_000, 10_000)))
    with pytest.raises(ImageDecodeError) as info:
        pp.load_image(lazy)
    assert info.value.kind == "too_large"


def test_bomb_refusal_leaves_pillow_global_limit_and_warning_filters_alone():
    import warnings

    before_limit, before_filters = Image.MAX_IMAGE_PIXELS, list(warnings.filters)
    with pytest.raises(ImageDecodeError):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inner_filters = list(warnings.filters)
            pp.load_image(png_claiming(10_000, 10_000))
            assert warnings.filters == inner_filters
    assert Image.MAX_IMAGE_PIXELS == before_limit
    assert warnings.filters == before_filters


def test_lowering_the_module_limit_refuses_smaller_images(monkeypatch):
    monkeypatch.setattr(pp, "MAX_IMAGE_PIXELS", 100 * 100)
    with pytest.raises(ImageDecodeError, match="too large") as info:
        pp.load_image(encode(Image.new("RGB", (101, 100)), "PNG"))
    assert info.value.kind == "too_large"
    pp.load_image(encode(Image.new("RGB", (100, 100)), "PNG"))


def test_file_over_the_byte_limit_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(pp, "MAX_FILE_BYTES", 1000)
    big = tmp_path / "big.png"
    big.write_bytes(encode(make_photo(0, (200, 200)), "PNG"))
    with pytest.raises(ImageDecodeError, match="byte limit") as info:
        pp.load_image(big)
    assert info.value.kind == "too_large"
    with pytest.raises(ImageDecodeError, match="byte limit"):
        pp.load_image(big.read_bytes())


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file_gets_an_error(tmp_path, model):
    p = tmp_path / "locked.jpg"
    p.write_bytes(corpus_cases()["ok_photo.jpg"].data)
    p.chmod(0)
    try:
        pred = model.predict(str(p))
    finally:
        p.chmod(0o644)
    assert pred.error_kind == "unreadable" and "ermission" in pred.error


def test_read_error_is_reported_not_raised(tmp_path, model, monkeypatch):
    """Simulates an unreadable file even when the tests run as root (who can read anything)."""
    p = tmp_path / "locked.jpg"
    p.write_bytes(corpus_cases()["ok_photo.jpg"].data)
    real_open = open

    def fake_open(file, *a, **kw):
        if str(file) == str(p):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *a, **kw)

    monkeypatch.setattr("builtins.open", fake_open)
    pred, other = model.predict([str(p), corpus_cases()["ok_photo.jpg"].data])
    assert pred.error_kind == "unreadable" and "Permission denied" in pred.error
    assert other.ok


def test_fifo_is_not_read(tmp_path, model):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    pred = model.predict(str(fifo))  # reading a FIFO would block forever
    assert pred.error_kind == "unreadable" and "regular file" in pred.error


# ---- the corpus through the CLI ---------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_cli_writes_one_row_per_corpus_file(corpus, tmp_path, capsys):
    folder, cases = corpus
    model_path = make_tiny_model(tmp_path / "tiny.onnx")
    out = tmp_path / "out.jsonl"
    rc = cli_main(["predict", str(folder), "--model", str(model_path), "--output", str(out), "--batch-size", "5",
                   "--workers", "2", "--no-progress"])
    assert rc == EXIT_OK
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    expected = sorted(str(folder / n) for n in file_cases(cases))
    assert [r["input"] for r in rows] == expected  # sorted, one each; notes.txt and .DS_Store skipped
    for r in rows:
        case = cases[Path(r["input"]).name]
        assert (r["error_kind"] if case.kind else None) == case.kind, r
        assert (r["error"] is None) == (case.kind is None), r
    err = capsys.readouterr().err
    assert f"{sum(c.kind is None for c in file_cases(cases).values())} scored" in err
    assert "2 non-image files" in err


def test_cli_explicit_non_image_file_gets_a_row(tmp_path, capsys):
    model_path = make_tiny_model(tmp_path / "tiny.onnx")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    rc = cli_main(["predict", str(notes), str(tmp_path / "missing.jpg"), "--model", str(model_path),
                   "--no-progress"])
    assert rc == EXIT_OK
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["input"], r["error_kind"]) for r in rows] == [(str(notes), "not_an_image"),
                                                              (str(tmp_path / "missing.jpg"), "not_found")]


# ---- model files ---------------------------------------------------------------------------------------

def _bad_model(tmp_path: Path, case: str) -> Path:
    good = make_tiny_model(tmp_path / "good.onnx")
    p = tmp_path / f"{case}.onnx"
    if case == "random_bytes":
        p.write_bytes(bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)))
    elif case == "text_file":
        p.write_text("model weights are coming soon\n")
    elif case == "html_page":
        p.write_text("<!doctype html><html><title>Sign in</title></html>")
    elif case == "lfs_pointer":
        p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 1234\n")
    elif case == "empty":
        p.write_bytes(b"")
    elif case == "pytorch_checkpoint":
        import zipfile

        with zipfile.ZipFile(p, "w") as z:
            z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    elif case == "truncated_half":
        data = good.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif case == "truncated_minus_1":
        p.write_bytes(good.read_bytes()[:-1])
    elif case == "no_metadata":
        make_tiny_model(p, with_metadata=False)
    elif case == "newer_schema":
        make_tiny_model(p, metadata=tiny_metadata(schema_version=99))
    elif case == "invalid_json":
        make_tiny_model(p, metadata="{not json")
    elif case == "width_mismatch":
        make_tiny_model(p, n_outputs=3)
    elif case == "bad_threshold":
        make_tiny_model(p, metadata=tiny_metadata(thresholds={"ivory": 1.5, "live_animal": 0.5}))
    elif case == "input_size_mismatch":
        make_tiny_model(p, input_size=(32, 32), metadata=tiny_metadata(input_size=(64, 64)))
    elif case == "missing":
        pass
    elif case == "folder":
        p.mkdir()
    return p


MODEL_CASES = {
    # case: (exception class, words the message must contain)
    "random_bytes": (ModelLoadError, ["not an ONNX model"]),
    "text_file": (ModelLoadError, ["not an ONNX model", "text file"]),
    "html_page": (ModelLoadError, ["not an ONNX model", "HTML"]),
    "lfs_pointer": (ModelLoadError, ["Git LFS", "git lfs pull"]),
    "empty": (ModelLoadError, ["empty"]),
    "pytorch_checkpoint": (ModelLoadError, ["not an ONNX model", "ZIP", "export"]),
    "truncated_half": (ModelLoadError, ["truncated"]),
    "truncated_minus_1": (ModelLoadError, ["truncated"]),
    "no_metadata": (MetadataError, ["no 'wildlife_vision' metadata", "export"]),
    "newer_schema": (MetadataError, ["schema version 99", "upgrade"]),
    "invalid_json": (MetadataError, ["not valid JSON"]),
    "width_mismatch": (ModelLoadError, ["outputs 3 scores", "2 labels"]),
    "bad_threshold": (MetadataError, ["thresholds[ivory]"]),
    "input_size_mismatch": (ModelLoadError, ["input size 64x64", "32x32"]),
    "missing": (ModelLoadError, ["not found"]),
    "folder": (ModelLoadError, ["not a file"]),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_bad_model_file_is_refused_with_a_message_that_says_which(tmp_path, case):
    cls, words = MODEL_CASES[case]
    path = _bad_model(tmp_path, case)
    with pytest.raises(cls) as info:
        wv.load_model(path)
    for w in words:
        assert w.lower() in str(info.value).lower(), f"{w!r} not in: {info.value}"
    if cls is ModelLoadError and case not in ("width_mismatch", "input_size_mismatch"):
        assert not isinstance(info.value, MetadataError)


@pytest.mark.parametrize("case", ["truncated_half", "newer_schema", "no_metadata", "text_file"])
def test_cli_exits_4_for_a_model_that_cannot_load(tmp_path, case, capsys):
    path = _bad_model(tmp_path, case)
    photo = tmp_path / "p.jpg"
    photo.write_bytes(corpus_cases()["ok_photo.jpg"].data)
    assert cli_main(["predict", str(photo), "--model", str(path), "--no-progress"]) == EXIT_MODEL
    captured = capsys.readouterr()
    assert captured.out == "" and "cannot load the model" in captured.err
    assert cli_main(["info", str(path)]) == EXIT_MODEL


def test_symbolic_output_width_is_checked_with_a_probe(tmp_path):
    """A graph whose output width is not static is probed once at load, so a mismatch still fails early."""
    import onnx

    path = make_tiny_model(tmp_path / "m.onnx", n_outputs=3)
    m = onnx.load(str(path))
    out = m.graph.output[0]
    out.type.tensor_type.shape.dim[1].ClearField("dim_value")
    out.type.tensor_type.shape.dim[1].dim_param = "labels"
    onnx.save(m, str(path))
    with pytest.raises(ModelLoadError, match="outputs 3 scores"):
        wv.load_model(path)


def test_a_download_cut_at_any_byte_is_refused(tmp_path):
    data = make_tiny_model(tmp_path / "good.onnx").read_bytes()
    p = tmp_path / "cut.onnx"
    for n in range(1, len(data)):
        p.write_bytes(data[:n])
        with pytest.raises(ModelLoadError) as info:
            wv.load_model(p)
        msg = str(info.value)
        assert "truncated" in msg or "not an ONNX model" in msg, (n, msg)
