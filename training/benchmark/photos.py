"""The benchmark's photos: a manifest's validation split, a folder of images, or generated listing-sized JPEGs.

The generated photos need nothing but numpy and Pillow (a library-only install can time itself): a smooth
two-colour gradient, a handful of random ellipses, boxes and triangles, and sensor-like noise, saved as JPEG at
listing size. They carry no labels, so they serve the timings only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .errors import BenchmarkError

@dataclass
class PhotoSet:
    paths: List[str]
    source: str                               # manifest path, folder, or "generated"
    labels: Tuple[str, ...] = ()
    targets: Optional[np.ndarray] = None      # (N, labels) 0/1 where the photos carry labels
    is_val: Optional[np.ndarray] = None       # (N,) bool: photo is in the validation split
    train_paths: List[str] = field(default_factory=list)    # for calibration and the training comparison
    train_targets: Optional[np.ndarray] = None
    note: str = ""


def shared_data_dir() -> Optional[Path]:
    """../shared/data/wildtrade-v1 beside the checkout (or $WILDTRADE_DIR), when its manifest is there."""
    cands = [os.environ.get("WILDTRADE_DIR"), Path.cwd().parent / "shared" / "data" / "wildtrade-v1",
             Path(__file__).resolve().parents[3] / "shared" / "data" / "wildtrade-v1"]
    for c in cands:
        if c and (Path(c) / "manifest.csv").is_file():
            return Path(c)
    return None


def generated_photo(seed: int, size: Tuple[int, int] = (448, 336)):
    """A deterministic listing-like photo (PIL image): gradient background, a few random shapes, noise."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    t = np.cos(angle) * xx / w + np.sin(angle) * yy / h
    t = ((t - t.min()) / max(float(np.ptp(t)), 1e-6))[..., None]
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    img = Image.fromarray(np.clip(c0 * (1 - t) + c1 * t, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 9))):
        x0, y0 = rng.uniform(-0.1, 0.9) * w, rng.uniform(-0.1, 0.9) * h
        box = [x0, y0, x0 + rng.uniform(0.1, 0.5) * w, y0 + rng.uniform(0.1, 0.5) * h]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse(box, fill=colour)
        elif kind == 1:
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(float(rng.uniform(0, w)), float(rng.uniform(0, h))) for _ in range(3)], fill=colour)
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def generated_photos(folder: Path, n: int, size: Tuple[int, int] = (448, 336)) -> List[str]:
    """``n`` generated listing-like JPEGs of ``size`` (see :func:`generated_photo`), written to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"gen_{i:05d}.jpg"
        generated_photo(i, size).save(path, "JPEG", quality=90)
        paths.append(str(path))
    return paths


def find_photos(data: Optional[str], n: Optional[int], labels: Sequence[str], workdir: Path,
                n_train: int = 0) -> PhotoSet:
    """The benchmark photos: the validation split of a manifest (then training photos if ``n`` asks for more),
    the image files of a folder, or generated photos when no data is given and ../shared is absent."""
    src: Optional[Path] = Path(data) if data and data != "generated" else None
    if src is None and data != "generated":
        shared = shared_data_dir()
        src = shared / "manifest.csv" if shared is not None else None
    elif src is not None and src.is_dir() and (src / "manifest.csv").is_file():
        src = src / "manifest.csv"
    if src is None:
        count = n or 256
        paths = generated_photos(workdir / "photos", count)
        train = generated_photos(workdir / "photos_train", n_train) if n_train else []
        why = "--data generated" if data == "generated" else ("no real photos found: pass --data, or put "
                                                              "wildtrade-v1 in ../shared/data")
        return PhotoSet(paths, "generated", note=f"{count} generated 448x336 JPEGs ({why})", train_paths=train)
    if src.is_dir():
        from wildlife_vision.preprocess import IMAGE_EXTENSIONS

        files = sorted(str(p) for p in src.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise BenchmarkError(f"no .jpg/.png/.webp files under {src}")
        picked = files[:n] if n else files
        return PhotoSet(picked, str(src), train_paths=files[len(picked):len(picked) + n_train],
                        note=f"{len(picked)} image files from {src} (no labels: no accuracy comparison)")
    if not src.is_file():
        raise BenchmarkError(f"--data {src} does not exist")
    from wildlife_vision.data.manifest import read_manifest, targets_for
    from wildlife_vision.data.splits import fill_missing_splits

    manifest = read_manifest(src, labels=list(labels) or None, check_images=False)
    samples, _ = fill_missing_splits(manifest.samples, 0.15)
    val = [s for s in samples if s.split == "val"]
    rest = [s for s in samples if s.split != "val"]
    rng = np.random.default_rng(0)
    rest = [rest[i] for i in rng.permutation(len(rest))]
    want = n or len(val)
    chosen = val[:want] + rest[:max(0, want - len(val))]
    train = [s for s in rest[max(0, want - len(val)):] if s.split == "train"][:n_train]
    labs = tuple(labels) or manifest.labels
    return PhotoSet(paths=[s.path for s in chosen], source=str(src), labels=labs,
                    targets=targets_for(chosen, labs), is_val=np.array([s.split == "val" for s in chosen]),
                    train_paths=[s.path for s in train], train_targets=targets_for(train, labs),
                    note=f"{len(chosen)} real photos from {src} ({sum(s.split == 'val' for s in chosen)} of the "
                         f"validation split)")


def warm_file_cache(paths: Sequence[str]) -> int:
    """Read every file once so that no configuration pays for a cold disk cache; returns the bytes read."""
    total = 0
    for p in paths:
        with open(p, "rb") as f:
            total += len(f.read())
    return total


def input_pool(paths: Sequence[str], cfg, n: int) -> np.ndarray:
    """``n`` real preprocessed photos (cycled when there are fewer) for the model-only measurements."""
    from wildlife_vision.errors import ImageDecodeError
    from wildlife_vision.preprocess import preprocess

    arrays = []
    for p in paths:
        if len(arrays) >= n:
            break
        try:
            arrays.append(preprocess(p, cfg))
        except ImageDecodeError:
            continue
    if not arrays:
        raise RuntimeError("no photo could be decoded")
    while len(arrays) < n:
        arrays.extend(arrays[:n - len(arrays)])
    return np.stack(arrays)

