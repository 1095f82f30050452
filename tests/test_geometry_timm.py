"""The library's eval preprocessing is timm's eval transform (torchvision Resize + CenterCrop) to within 1e-3 on
the normalised tensor, for the same config and resampling filter, so anyone can re-implement it from the
metadata (``preprocess.geometry_rule``). Generated photos of awkward sizes always; real photos when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wildlife_vision.preprocess import GEOMETRIES, PreprocessConfig, load_image, preprocess

timm_data = pytest.importorskip("timm.data", reason="needs timm (the [train] extra) for its reference transform")

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wildtrade-v1" / "images"
# odd and even margins, portrait and landscape, one side just over the crop, near-square
SIZES = [(448, 336), (336, 448), (301, 257), (257, 301), (293, 293), (640, 427), (260, 1000), (999, 263), (250, 251)]


def _timm_tensor(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    tf = timm_data.create_transform(input_size=(3, *cfg.input_size), crop_pct=cfg.crop_pct,
                                    interpolation=cfg.interpolation, mean=cfg.mean, std=cfg.std, is_training=False)
    return tf(img).numpy()


def _photos(tmp_path) -> list:
    rng = np.random.default_rng(0)
    out = []
    for i, (w, h) in enumerate(SIZES):
        # smooth content with edges, like a photo, then JPEG round-trip
        yy, xx = np.mgrid[0:h, 0:w]
        arr = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) % 97) * 2], -1).astype(np.uint8)
        arr[h // 3: h // 2, w // 4: w // 2] = rng.integers(0, 256, 3)
        p = tmp_path / f"g{i}.jpg"
        Image.fromarray(arr).save(p, quality=92)
        out.append(p)
    if REAL.is_dir():
        out += sorted(REAL.rglob("*.jpg"))[::200][:20]
    return out


@pytest.mark.parametrize("size,crop_pct,interp", [(224, 0.875, "bicubic"), (256, 0.875, "bicubic"),
                                                   (224, 1.0, "bilinear"), (240, 0.9, "bilinear")])
def test_matches_timm_create_transform(tmp_path, size, crop_pct, interp):
    cfg = PreprocessConfig(input_size=(size, size), crop_pct=crop_pct, interpolation=interp)
    assert cfg.geometry == "torchvision"
    worst = 0.0
    for p in _photos(tmp_path):
        img = load_image(str(p))
        ref = _timm_tensor(img, cfg)
        got = preprocess(str(p), cfg)
        assert got.shape == ref.shape
        worst = max(worst, float(np.abs(got - ref).max()))
    assert worst <= 1e-3, f"max abs difference {worst:.2e} against timm's eval transform"


def test_old_files_keep_their_geometry_and_new_ones_say_which():
    old = PreprocessConfig.from_dict({"input_size": [224, 224], "crop_pct": 0.875, "interpolation": "bicubic",
                                      "mean": [0.5] * 3, "std": [0.5] * 3})
    assert old.geometry == "ceil-floor"
    d = PreprocessConfig().to_dict()
    assert d["geometry"] == "torchvision" and d["geometry_rule"] == GEOMETRIES["torchvision"]
    assert PreprocessConfig.from_dict(d).geometry == "torchvision"
    with pytest.raises(ValueError, match="geometry"):
        PreprocessConfig(geometry="mine")


def test_ceil_floor_differs_from_timm_where_it_should(tmp_path):
    """The legacy rule really is different on an odd margin: the test above would catch a silent regression."""
    cfg_new = PreprocessConfig(input_size=(224, 224), crop_pct=0.875, interpolation="bicubic")
    cfg_old = PreprocessConfig(input_size=(224, 224), crop_pct=0.875, interpolation="bicubic", geometry="ceil-floor")
    p = _photos(tmp_path)[2]  # 301 x 257: 256 x 299.8 -> torchvision 299, ceil 300
    img = load_image(str(p))
    ref = _timm_tensor(img, cfg_new)
    assert np.abs(preprocess(str(p), cfg_old) - ref).max() > 1e-2
