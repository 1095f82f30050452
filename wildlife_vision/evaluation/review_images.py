"""Thumbnails for the review pages: small JPEG ``data:`` URIs, each distinct image stored once.

Photos and heatmap overlays are decoded with :func:`wildlife_vision.preprocess.load_image`, the library's
one decoder for hostile input (format sniffing, pixel limits, EXIF orientation, RGB), so a broken, huge or
mislabelled file costs its card a placeholder and a note, never the page. Large JPEGs are decoded at a
reduced DCT scale (``draft``), which is plenty for a thumbnail and several times faster than a full decode.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from ..errors import ImageDecodeError
from ..preprocess import PreprocessConfig, load_image

#: longest side of a thumbnail, in pixels
THUMB_SIZE = 184
#: JPEG quality of the thumbnails (small files; the page holds thousands)
THUMB_QUALITY = 70
#: an embedded plot (PNG or JPEG) larger than this is left out with a note
MAX_PLOT_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Thumb:
    """One decoded image: its index in :attr:`ThumbnailStore.images` and its size, or why it failed."""

    index: int
    width: int
    height: int
    note: str = ""  #: empty when the image was read


class ThumbnailStore:
    """Makes thumbnails and keeps each distinct one once, as a ``data:`` URI in :attr:`images`.

    ``photo(path)`` and ``overlay(path, size)`` are cached by (path, size): a photo named by many rows is decoded
    once. :meth:`prefetch` decodes a list of paths with ``workers`` threads first (Pillow releases the GIL while
    decoding). Failures are cached too and share one placeholder image.
    """

    def __init__(self, size: int = THUMB_SIZE, quality: int = THUMB_QUALITY, workers: int = 1):
        if size < 16 or size > 1024:
            raise ValueError(f"thumbnail size must be between 16 and 1024 pixels, got {size}")
        self.size = int(size)
        self.quality = int(quality)
        self.workers = max(1, int(workers))
        self.images: List[str] = []
        self._by_digest: Dict[str, int] = {}
        self._decoded: Dict[Tuple[str, Optional[Tuple[int, int]]], Tuple[Optional[bytes], int, int, str]] = {}
        self._placeholder: Optional[int] = None
        # decode at a reduced JPEG scale that still covers the thumbnail's longer side
        self._cfg = PreprocessConfig(input_size=(self.size, self.size), crop_pct=1.0, draft=True)

    # ---- decoding (thread-safe: no shared state is written) ------------------------------------------------

    def _encode(self, path: Optional[Path], fit: Optional[Tuple[int, int]]) -> Tuple[Optional[bytes], int, int, str]:
        """(JPEG bytes, width, height, note) for one file; never raises for anything about the file."""
        from PIL import Image

        if path is None:
            return None, 0, 0, "not a local file (URLs are never fetched)"
        try:
            img = load_image(path, self._cfg)
            if fit is not None:
                img = img.resize(fit, Image.Resampling.BILINEAR)
            else:
                img.thumbnail((self.size, self.size), Image.Resampling.BILINEAR)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=self.quality, optimize=True)
            return buf.getvalue(), img.width, img.height, ""
        except ImageDecodeError as e:
            return None, 0, 0, f"{e.kind}: {e}"
        except (OSError, ValueError, MemoryError) as e:  # a resize or encode of a pathological image
            return None, 0, 0, f"cannot make a thumbnail: {' '.join(str(e).split()) or type(e).__name__}"

    def _key(self, path: Optional[Path], fit: Optional[Tuple[int, int]]):
        return (os.fspath(path) if path is not None else "", fit)

    def prefetch(self, paths: Iterable[Optional[Path]], fits: Optional[Iterable[Optional[Tuple[int, int]]]] = None
                 ) -> None:
        """Decode every image in ``paths`` not decoded yet, with ``workers`` threads: photos (``fits`` None: longest
        side ``size``) or overlays (``fits``: the size each is resized to, as :meth:`overlay` takes it)."""
        todo, seen = [], set()
        for p, fit in zip(paths, fits if fits is not None else itertools.repeat(None)):
            key = self._key(p, fit)
            if key not in self._decoded and key not in seen:
                seen.add(key)
                todo.append((p, fit))
        if not todo:
            return
        if self.workers == 1 or len(todo) == 1:
            results = [self._encode(p, fit) for p, fit in todo]
        else:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="wv-thumb") as pool:
                results = list(pool.map(lambda job: self._encode(*job), todo))
        for (p, fit), res in zip(todo, results):
            self._decoded[self._key(p, fit)] = res

    # ---- the store --------------------------------------------------------------------------------------------

    def add_bytes(self, data: bytes, mime: str) -> int:
        """Store encoded image bytes once; return their index in :attr:`images`."""
        digest = hashlib.sha1(data).hexdigest()
        index = self._by_digest.get(digest)
        if index is None:
            index = len(self.images)
            self.images.append(f"data:{mime};base64," + base64.b64encode(data).decode("ascii"))
            self._by_digest[digest] = index
        return index

    def placeholder(self) -> int:
        """The one grey "cannot show this photo" image."""
        if self._placeholder is None:
            from PIL import Image, ImageDraw

            w, h = self.size, (self.size * 3) // 4
            img = Image.new("RGB", (w, h), (214, 219, 223))
            draw = ImageDraw.Draw(img)
            draw.line([(0, 0), (w - 1, h - 1)], fill=(180, 186, 191), width=2)
            draw.line([(0, h - 1), (w - 1, 0)], fill=(180, 186, 191), width=2)
            draw.rectangle([w // 2 - 52, h // 2 - 10, w // 2 + 52, h // 2 + 10], fill=(214, 219, 223))
            draw.text((w // 2, h // 2), "cannot show photo", fill=(70, 76, 82), anchor="mm")
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=80)
            self._placeholder = self.add_bytes(buf.getvalue(), "image/jpeg")
        return self._placeholder

    def _thumb(self, path: Optional[Path], fit: Optional[Tuple[int, int]]) -> Thumb:
        key = self._key(path, fit)
        res = self._decoded.get(key)
        if res is None:
            res = self._decoded[key] = self._encode(path, fit)
        data, w, h, note = res
        if data is None:
            index = self.placeholder()
            return Thumb(index, self.size, (self.size * 3) // 4, note)
        return Thumb(self.add_bytes(data, "image/jpeg"), w, h)

    def photo(self, path: Optional[Path]) -> Thumb:
        """The photo's thumbnail (longest side :attr:`size`), or the placeholder with the reason in ``note``."""
        return self._thumb(path, None)

    def overlay(self, path: Optional[Path], fit: Optional[Tuple[int, int]] = None) -> Thumb:
        """A heatmap overlay resized to ``fit`` (the photo's thumbnail size, so the two swap in place)."""
        return self._thumb(path, fit)


def plot_data_uri(path: os.PathLike) -> Tuple[Optional[str], str]:
    """(``data:`` URI, "") of a PNG or JPEG plot file, or (None, why it was left out). The bytes are checked to be
    an image of that type, never trusted from the file name."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_PLOT_BYTES:
            return None, f"{path.name} is {size:,} bytes, over the {MAX_PLOT_BYTES:,}-byte limit for the page"
        data = path.read_bytes()
    except OSError as e:
        return None, f"cannot read {path.name}: {e.strerror or e}"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        mime = "image/png"
    elif data.startswith(b"\xff\xd8\xff"):
        mime = "image/jpeg"
    else:
        return None, f"{path.name} is not a PNG or JPEG file"
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii"), ""


__all__ = ["THUMB_SIZE", "THUMB_QUALITY", "Thumb", "ThumbnailStore", "plot_data_uri"]
