"""Generated photos and near-copies (resized, recompressed, cropped, watermarked) for tests and recall benchmarks."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Dict

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def scene(seed: int, size=(320, 240)) -> Image.Image:
    """A deterministic 'photo': smooth coloured background and a handful of random shapes, with sensor noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, np.pi)
    t = (np.cos(ang) * xx / w + np.sin(ang) * yy / h)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    bg = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]
    coarse = rng.normal(0, 25, (4, 4, 3)).astype(np.float32)
    bg += np.asarray(Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize((w, h), Image.BICUBIC),
                     dtype=np.float32) - 128
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(5, 10))):
        x0, y0 = rng.uniform(-0.1, 0.9) * w, rng.uniform(-0.1, 0.9) * h
        x1, y1 = x0 + rng.uniform(0.1, 0.5) * w, y0 + rng.uniform(0.1, 0.5) * h
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        if kind == 0:
            d.ellipse([x0, y0, x1, y1], fill=col)
        elif kind == 1:
            d.rectangle([x0, y0, x1, y1], fill=col)
        else:
            pts = [(float(rng.uniform(0, w)), float(rng.uniform(0, h))) for _ in range(3)]
            d.polygon(pts, fill=col)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _crop(img: Image.Image, l: float, t: float, r: float, b: float) -> Image.Image:
    w, h = img.size
    return img.crop((round(l * w), round(t * h), round(w - r * w), round(h - b * h)))


def watermark(img: Image.Image, text: str = "SHOP 4471 call +255 700") -> Image.Image:
    """A semi-transparent seller text along the bottom and a logo block in a corner."""
    im = img.convert("RGBA")
    overlay = Image.new("RGBA", im.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(overlay)
    w, h = im.size
    try:
        font = ImageFont.load_default(size=max(10, h // 12))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    d.text((w * 0.04, h * 0.84), text, fill=(255, 255, 255, 150), font=font)
    d.rectangle([w * 0.78, h * 0.04, w * 0.96, h * 0.2], fill=(220, 30, 30, 120))
    return Image.alpha_composite(im, overlay).convert("RGB")


NEAR_COPIES: Dict[str, Callable[[Image.Image], Image.Image]] = {
    "resized-0.5": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
    "jpeg-q30": lambda im: _jpeg(im, 30),
    "crop-5pct": lambda im: _crop(im, 0.05, 0.05, 0.05, 0.05),
    "crop-10pct-corner": lambda im: _crop(im, 0.0, 0.0, 0.1, 0.1),
    "crop-10pct-centre": lambda im: _crop(im, 0.1, 0.1, 0.1, 0.1),
    "crop-5pct-left": lambda im: _crop(im, 0.05, 0.0, 0.0, 0.0),
    "watermark": watermark,
    "watermark+jpeg-q50": lambda im: _jpeg(watermark(im), 50),
}


def write_scene(path: Path, seed: int, transform: str = "", size=(320, 240), quality: int = 90) -> Path:
    img = scene(seed, size)
    if transform:
        img = NEAR_COPIES[transform](img)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=quality)
    return path
