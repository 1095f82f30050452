"""Per-photo fingerprints in numpy: sha256 of the file bytes, windowed perceptual hashes, size, decode status.

Why windows. A whole-photo pHash survives resizing, recompression and light overlays, but a 5-10%
crop shifts and rescales the frame enough to move it 10-30 of its 64 bits, as far as unrelated
photos. So every photo is hashed in :data:`WINDOWS` (the whole frame, the central 90% and 80%, the
four 90% corners and the four photos with 5% cut off one side). A crop of the original then lines up
with one of the original's windows, and a watermark in a corner drops out of the windows that
exclude that corner. :mod:`wildlife_vision.data.dedup` compares the whole frame of each photo with
every window of the other and each window with the same window of the other.

Two hashes per window, both from one 64x64 grayscale area-average resize and one 2-D DCT-II
(precomputed orthonormal matrix ``D``: ``D @ X @ D.T``):

* ``p64``: the classic pHash: the top-left 8x8 coefficients of the 32x32 DCT against their median.
  Cheap to compare; finds candidate pairs (``--threshold`` bits of 64).
* ``p256``: the top-left 16x16 coefficients of the 64x64 DCT against their median (256 bits): finer
  detail that confirms a candidate (``--verify-threshold`` bits of 256). On photos of single objects
  against plain museum or studio backgrounds the 64-bit hash alone matches unrelated objects of a
  similar silhouette; the 256-bit check removes most of those.

Decoding goes through :func:`wildlife_vision.preprocess.load_image` with a small preprocessing
config, so large JPEGs are decoded in draft mode (1/2, 1/4 or 1/8 scale, never below 64 px on the
shorter side) and each photo is handled as the model would see it (EXIF orientation, modes,
truncation and decompression bombs raise :class:`~wildlife_vision.errors.ImageDecodeError`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from wildlife_vision.errors import ImageDecodeError
from wildlife_vision.preprocess import PreprocessConfig, load_image
from wildlife_vision.progress import track

log = logging.getLogger(__name__)

#: (left, top, right, bottom) as fractions of the photo; index 0 must be the whole frame
WINDOWS: Tuple[Tuple[float, float, float, float], ...] = (
    (0.0, 0.0, 1.0, 1.0),                                             # whole photo
    (0.05, 0.05, 0.95, 0.95), (0.1, 0.1, 0.9, 0.9),                   # centre 90%, 80%
    (0.0, 0.0, 0.9, 0.9), (0.1, 0.0, 1.0, 0.9), (0.0, 0.1, 0.9, 1.0), (0.1, 0.1, 1.0, 1.0),  # 90% corners
    (0.05, 0.0, 1.0, 1.0), (0.0, 0.0, 0.95, 1.0), (0.0, 0.05, 1.0, 1.0), (0.0, 0.0, 1.0, 0.95),  # 5% off one side
)
N_WINDOWS = len(WINDOWS)
HASH_SIDE = 64
CACHE_VERSION = 2

#: decode at no less than this shorter side (draft mode picks the JPEG scale from it)
DECODE_CFG = PreprocessConfig(input_size=(64, 64), crop_pct=1.0, interpolation="bilinear")


def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix ``D`` (n x n): ``D @ x`` is the DCT of the column vector ``x``."""
    k = np.arange(n, dtype=np.float64)[:, None]
    i = np.arange(n, dtype=np.float64)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0, :] = np.sqrt(1.0 / n)
    return d


_D32 = dct_matrix(32)
_D64 = dct_matrix(64)
_BIT_WEIGHTS = (np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64))


def bits_to_uint64(bits: np.ndarray) -> np.ndarray:
    """(..., 64*m) booleans (most significant bit first) -> (..., m) uint64."""
    bits = np.asarray(bits)
    words = bits.reshape(*bits.shape[:-1], -1, 64).astype(np.uint64)
    return (words * _BIT_WEIGHTS).sum(axis=-1, dtype=np.uint64)


def _median_bits(coeffs: np.ndarray, side: int) -> np.ndarray:
    low = coeffs[..., :side, :side].reshape(*coeffs.shape[:-2], side * side)
    return low > np.median(low, axis=-1, keepdims=True)


def phash64(gray32: np.ndarray) -> np.ndarray:
    """Classic pHash of (..., 32, 32) grayscale arrays -> (...) uint64."""
    x = np.asarray(gray32, dtype=np.float64)
    return bits_to_uint64(_median_bits(_D32 @ x @ _D32.T, 8))[..., 0]


def phash256(gray64: np.ndarray) -> np.ndarray:
    """256-bit pHash of (..., 64, 64) grayscale arrays -> (..., 4) uint64."""
    x = np.asarray(gray64, dtype=np.float64)
    return bits_to_uint64(_median_bits(_D64 @ x @ _D64.T, 16))


def window_grays(img: Image.Image) -> np.ndarray:
    """(N_WINDOWS, 64, 64) float64 grayscale area-average resizes of each window of ``img``."""
    g = img.convert("L")
    w, h = g.size
    out = np.empty((N_WINDOWS, HASH_SIDE, HASH_SIDE), dtype=np.float64)
    for k, (a, b, c, d) in enumerate(WINDOWS):
        box = (a * w, b * h, max(c * w, a * w + 1), max(d * h, b * h + 1))
        out[k] = np.asarray(g.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX, box=box), dtype=np.float64)
    return out


def hash_image(img: Image.Image) -> Tuple[np.ndarray, np.ndarray]:
    """Windowed hashes of a decoded image: ``(p64, p256)`` of shapes (N_WINDOWS,) and (N_WINDOWS, 4), uint64."""
    g64 = window_grays(img)
    g32 = g64.reshape(N_WINDOWS, 32, 2, 32, 2).mean(axis=(2, 4))  # the same area average at 32x32
    return phash64(g32), phash256(g64)


_LUT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount_lut(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.uint64)
    return _LUT8[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.uint8)


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64 element, as uint8 (numpy >= 2 ``bitwise_count``, else a lookup table)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _popcount_lut(x)


@dataclass
class FileRecord:
    """What a scan learns about one file."""

    path: str
    sha256: str = ""
    nbytes: int = -1
    mtime_ns: int = 0
    width: int = 0
    height: int = 0
    p64: np.ndarray = field(default_factory=lambda: np.zeros(N_WINDOWS, dtype=np.uint64))
    p256: np.ndarray = field(default_factory=lambda: np.zeros((N_WINDOWS, 4), dtype=np.uint64))
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def phash(self) -> int:
        """The classic whole-photo 64-bit pHash."""
        return int(self.p64[0])


def _header_size(data: bytes) -> Tuple[int, int]:
    """Upright (width, height) from the header alone (EXIF orientations 5-8 swap the sides)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            try:
                orient = im.getexif().get(0x0112, 1)
            except Exception:  # noqa: BLE001 - broken EXIF: keep the stored size
                orient = 1
            return (h, w) if orient in (5, 6, 7, 8) else (w, h)
    except Exception:  # noqa: BLE001 - the full decode reports the error
        return (0, 0)


def scan_file(path: str) -> FileRecord:
    """Fingerprint one file. Never raises for a bad file: the record's ``error`` says what went wrong."""
    rec = FileRecord(path=str(path))
    try:
        st = os.stat(path)
        rec.nbytes, rec.mtime_ns = int(st.st_size), int(st.st_mtime_ns)
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        rec.error = f"file not found: {path}"
        return rec
    except OSError as e:
        rec.error = f"cannot read {path}: {e.strerror or e}"
        return rec
    rec.sha256 = hashlib.sha256(data).hexdigest()
    try:
        img = load_image(data, DECODE_CFG)
        rec.width, rec.height = _header_size(data)
        if not rec.width:
            rec.width, rec.height = img.size
        rec.p64, rec.p256 = hash_image(img)
    except ImageDecodeError as e:
        rec.error = str(e) or "cannot decode"
    except MemoryError:
        rec.error = "out of memory while decoding"
    return rec


class ScanResult:
    """Column arrays for a list of files (same order as the paths given to :func:`scan_paths`)."""

    def __init__(self, records: Sequence[FileRecord], seconds: float = 0.0, reused: int = 0):
        self.records = list(records)
        self.paths = [r.path for r in self.records]
        self.sha256 = [r.sha256 for r in self.records]
        self.ok = np.array([r.ok for r in self.records], dtype=bool)
        self.nbytes = np.array([r.nbytes for r in self.records], dtype=np.int64)
        self.width = np.array([r.width for r in self.records], dtype=np.int64)
        self.height = np.array([r.height for r in self.records], dtype=np.int64)
        self.p64 = (np.stack([r.p64 for r in self.records]) if self.records
                    else np.zeros((0, N_WINDOWS), dtype=np.uint64))
        self.p256 = (np.stack([r.p256 for r in self.records]) if self.records
                     else np.zeros((0, N_WINDOWS, 4), dtype=np.uint64))
        self.errors = [r.error for r in self.records]
        self.seconds = seconds        # time spent fingerprinting (0 when all came from the cache)
        self.hashed = len({r.path for r in self.records}) - reused
        self.reused = reused          # files taken from the cache

    def __len__(self) -> int:
        return len(self.records)


def _load_cache(cache: Optional[Path]) -> Dict[str, FileRecord]:
    if cache is None or not cache.is_file():
        return {}
    try:
        with np.load(cache, allow_pickle=False) as z:
            if int(z["version"]) != CACHE_VERSION or int(z["n_windows"]) != N_WINDOWS:
                return {}
            cols = {k: z[k] for k in z.files}
        out = {}
        for i, p in enumerate(cols["path"]):
            rec = FileRecord(path=str(p), sha256=str(cols["sha256"][i]), nbytes=int(cols["nbytes"][i]),
                             mtime_ns=int(cols["mtime_ns"][i]), width=int(cols["width"][i]),
                             height=int(cols["height"][i]), p64=cols["p64"][i].copy(), p256=cols["p256"][i].copy(),
                             error=str(cols["error"][i]))
            out[rec.path] = rec
        return out
    except Exception as e:  # noqa: BLE001 - a broken cache is rebuilt, never fatal
        log.warning("ignoring unreadable hash cache %s (%s)", cache, e)
        return {}


def _save_cache(cache: Path, records: Iterable[FileRecord]) -> None:
    records = [r for r in records if r.nbytes >= 0]
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp.npz")
    np.savez(tmp, version=np.int64(CACHE_VERSION), n_windows=np.int64(N_WINDOWS),
             path=np.array([r.path for r in records], dtype=str),
             sha256=np.array([r.sha256 for r in records], dtype=str),
             nbytes=np.array([r.nbytes for r in records], dtype=np.int64),
             mtime_ns=np.array([r.mtime_ns for r in records], dtype=np.int64),
             width=np.array([r.width for r in records], dtype=np.int64),
             height=np.array([r.height for r in records], dtype=np.int64),
             error=np.array([r.error for r in records], dtype=str),
             p64=np.stack([r.p64 for r in records]) if records else np.zeros((0, N_WINDOWS), np.uint64),
             p256=np.stack([r.p256 for r in records]) if records else np.zeros((0, N_WINDOWS, 4), np.uint64))
    os.replace(tmp, cache)


def _fresh(rec: Optional[FileRecord], path: str) -> bool:
    if rec is None:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    return rec.nbytes == st.st_size and rec.mtime_ns == st.st_mtime_ns


def scan_paths(paths: Sequence[str], workers: int = 1, progress: bool = False,
               cache: Optional[os.PathLike] = None) -> ScanResult:
    """Fingerprint every path (a path listed twice is read once). ``workers`` > 1 uses that many processes.

    ``cache``: an ``.npz`` of earlier results, reused for files whose size and mtime are unchanged,
    and rewritten (atomically) afterwards.
    """
    import time

    paths = [str(p) for p in paths]
    unique = list(dict.fromkeys(paths))
    cached = _load_cache(Path(cache)) if cache is not None else {}
    done: Dict[str, FileRecord] = {}
    todo = []
    for p in unique:
        if _fresh(cached.get(p), p):
            done[p] = cached[p]
        else:
            todo.append(p)
    reused = len(done)
    if cached:
        log.debug("hash cache %s: %d of %d files reused", cache, reused, len(unique))
    t0 = time.perf_counter()
    if todo:
        if workers and workers > 1 and len(todo) > 64:
            import multiprocessing as mp

            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
            with ctx.Pool(processes=int(workers)) as pool:
                it = pool.imap(scan_file, todo, chunksize=32)
                for rec in track(it, len(todo), "fingerprinting", enabled=progress):
                    done[rec.path] = rec
        else:
            for rec in track(map(scan_file, todo), len(todo), "fingerprinting", enabled=progress):
                done[rec.path] = rec
        if cache is not None:
            keep = dict(cached)
            keep.update(done)
            try:
                _save_cache(Path(cache), keep.values())
            except OSError as e:
                log.warning("could not write hash cache %s: %s", cache, e)
    return ScanResult([done[p] for p in paths], seconds=time.perf_counter() - t0, reused=reused)


__all__ = ["WINDOWS", "N_WINDOWS", "DECODE_CFG", "dct_matrix", "phash64", "phash256", "hash_image", "window_grays",
           "popcount", "scan_file", "scan_paths", "FileRecord", "ScanResult", "bits_to_uint64"]
