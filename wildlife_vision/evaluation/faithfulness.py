"""Are the heatmaps faithful? A deletion test: hide where the map is hottest, and see whether the score falls.

For each photo the model flags for a label, a quarter (``fraction``) of the model's view (its input crop) is
hidden: the **hottest** quarter by the label's class activation map, and, ``draws`` times, a **random** quarter.
By default (``mask="window"``) a quarter is a window of half the width and half the height, aligned to the
heatmap's grid (4 x 4 of the 8 x 8 cells of a 256 px input): the hot one is the window with the most heat, the
random ones are windows at random positions. Hidden pixels are blurred (``fill="blur"``: a Gaussian blur of
radius 12 px at 256 px, which removes the object's detail without drawing a new shape), or set to the dataset mean
colour (``fill="mean"``: 0 after normalisation). ``mask="cells"`` hides the hottest quarter of the grid's cells
wherever they are against random cells. A heatmap is faithful for a photo when hiding its hot quarter lowers the
label's score more than hiding a random quarter does on average (a *win*). Reported per label:

- ``win_rate``: wins / flagged photos, with a 95% bootstrap interval (over near-duplicate groups when given);
- ``win_rate_vs_each_draw``: the share of (photo, random draw) pairs that the hot quarter beats;
- ``mean_drop_hot`` / ``mean_drop_random``: the mean score drop (network score, before any calibration map),
  and the same in logits (``*_logit``), which do not saturate near 0 and 1;
- ``flipped_hot`` / ``flipped_random``: the share of flagged photos no longer flagged after hiding.

Schema ``wildlife-vision/faithfulness/v1``; the evaluation report stores it as ``report["faithfulness"]``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..progress import Progress
from .bootstrap import DEFAULT_RESAMPLES, interval, resample_indices

SCHEMA = "wildlife-vision/faithfulness/v1"
#: the share of the input the test hides
DEFAULT_FRACTION = 0.25
#: random masks per photo
DEFAULT_DRAWS = 8
#: the win rate the project's models must reach on the test split (issue 17)
TARGET_WIN_RATE = 0.8


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


MASKS = ("window", "cells")
FILLS = ("blur", "mean")
#: blur radius in pixels of a 256 px input (scaled with the input size)
BLUR_RADIUS_256 = 12.0


def cell_masks(grid: np.ndarray, k: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(1 + draws, gh, gw) boolean masks of the cells to hide: the ``k`` hottest cells of ``grid``, then ``draws``
    sets of ``k`` cells drawn at random (without replacement within a set)."""
    gh, gw = grid.shape
    n = gh * gw
    masks = np.zeros((1 + draws, n), dtype=bool)
    masks[0, np.argsort(-grid.ravel(), kind="stable")[:k]] = True
    for d in range(draws):
        masks[1 + d, rng.choice(n, size=k, replace=False)] = True
    return masks.reshape(1 + draws, gh, gw)


def window_masks(grid: np.ndarray, fraction: float, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(1 + draws, gh, gw) masks of one window each covering ``fraction`` of the grid (sides scaled by its square
    root): the window with the most heat in ``grid``, then ``draws`` windows at random positions."""
    gh, gw = grid.shape
    wh = min(gh, max(1, int(round(gh * np.sqrt(fraction)))))
    ww = min(gw, max(1, int(round(gw * np.sqrt(fraction)))))
    sums = np.array([[grid[a:a + wh, b:b + ww].sum() for b in range(gw - ww + 1)] for a in range(gh - wh + 1)])
    masks = np.zeros((1 + draws, gh, gw), dtype=bool)
    a, b = np.unravel_index(int(np.argmax(sums)), sums.shape)
    masks[0, a:a + wh, b:b + ww] = True
    for d in range(draws):
        a, b = int(rng.integers(0, gh - wh + 1)), int(rng.integers(0, gw - ww + 1))
        masks[1 + d, a:a + wh, b:b + ww] = True
    return masks


def hide(x: np.ndarray, masks: np.ndarray, fill: Optional[np.ndarray] = None) -> np.ndarray:
    """Copies of one preprocessed input (3, H, W), one per mask (M, gh, gw), with the masked cells replaced by
    ``fill`` (an input of the same shape, e.g. the blurred photo) or, without it, by 0 (the mean colour)."""
    _, h, w = x.shape
    m, gh, gw = masks.shape
    ys = (np.arange(h) * gh) // h
    xs = (np.arange(w) * gw) // w
    pixel = np.broadcast_to(masks[:, ys][:, :, xs][:, None], (m,) + x.shape)  # (M, 3, H, W)
    out = np.repeat(x[None], m, axis=0)
    if fill is None:
        out[pixel] = 0.0
    else:
        out[pixel] = np.broadcast_to(fill[None], out.shape)[pixel]
    return out


def _inputs(model: Any, path: str, fill: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """The photo's model input and, for ``fill="blur"``, the input of its blurred crop."""
    from PIL import ImageFilter

    from ..preprocess import load_image, normalize, resize_and_crop

    cfg = model.preprocess_config
    crop = resize_and_crop(load_image(path, cfg), cfg)
    x = normalize(np.asarray(crop, dtype=np.uint8), cfg)
    if fill != "blur":
        return x, None
    radius = BLUR_RADIUS_256 * min(cfg.input_size) / 256.0
    return x, normalize(np.asarray(crop.filter(ImageFilter.GaussianBlur(radius)), dtype=np.uint8), cfg)


def deletion_test(model: Any, paths: Sequence[Union[str, os.PathLike]], labels: Optional[Sequence[str]] = None,
                  fraction: float = DEFAULT_FRACTION, draws: int = DEFAULT_DRAWS, seed: int = 0,
                  mask: str = "window", fill: str = "blur",
                  batch_size: int = 32, workers: int = 1, groups: Optional[Sequence[str]] = None,
                  resamples: int = DEFAULT_RESAMPLES, progress: bool = False,
                  info: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Run the deletion test on the photos of ``paths`` that ``model`` (a loaded :class:`wildlife_vision.Model`
    with heatmaps) flags, for each of ``labels`` (default: all); return the schema-versioned result (see the
    module docstring). ``groups`` (one id per path) makes the bootstrap resample whole groups."""
    if not model.has_heatmaps:
        raise ValueError(f"{model.path} has no heatmap output; the deletion test needs one (re-export the model, "
                         "or add it with `wildlife-vision heatmaps`)")
    if mask not in MASKS or fill not in FILLS:
        raise ValueError(f"mask must be one of {MASKS} and fill one of {FILLS}, got {mask!r}, {fill!r}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    paths = [os.fspath(p) for p in paths]
    if groups is not None and len(groups) != len(paths):
        raise ValueError(f"{len(groups)} group ids for {len(paths)} photos")
    labels = list(model.labels if labels is None else labels)
    rng = np.random.default_rng(seed)
    per_label: Dict[str, Dict[str, List[Any]]] = {lab: {"hot": [], "rand": [], "orig": [], "group": []}
                                                  for lab in labels}
    n_failed = 0
    prog = Progress(len(paths), "deletion test", unit="photo", enabled=bool(progress) and len(paths) > 0)
    # the one scoring loop gives scores and maps; the hidden versions go through run_batch in batches
    for i, ex in enumerate(model.explain_iter(paths, label=labels, batch_size=batch_size, workers=workers)):
        prog.update(1)
        if not ex.ok:
            n_failed += 1
            continue
        flagged = [lab for lab in labels if lab in ex.prediction.flagged]
        if not flagged:
            continue
        try:  # the same preprocessing as the scores had (decoded again, with the blurred version)
            x, blurred = _inputs(model, paths[i], fill)
        except Exception:  # noqa: BLE001 - it decoded a moment ago; count it and go on
            n_failed += 1
            continue
        for lab in flagged:
            grid = ex.cam[lab]
            if mask == "window":
                masks = window_masks(grid, fraction, draws, rng)
            else:
                masks = cell_masks(grid, max(1, int(round(fraction * grid.size))), draws, rng)
            batch = hide(x, masks, blurred)
            j = model.labels.index(lab)
            hidden = np.concatenate([model.run_batch(batch[s:s + batch_size])[:, j]
                                     for s in range(0, len(batch), batch_size)])
            d = per_label[lab]
            d["orig"].append(float(model.run_batch(x[None])[0, j]))
            d["hot"].append(float(hidden[0]))
            d["rand"].append(hidden[1:].astype(np.float64))
            d["group"].append(groups[i] if groups is not None else str(i))
    prog.close()
    result: Dict[str, Any] = {"schema": SCHEMA, "fraction": float(fraction), "draws": int(draws), "seed": int(seed),
                              "mask": mask, "fill": fill,
                              "n_photos": len(paths), "n_failed": n_failed, "target_win_rate": TARGET_WIN_RATE,
                              "labels": {}}
    if info:
        result.update(dict(info))
    for lab in labels:
        d = per_label[lab]
        n = len(d["orig"])
        if n == 0:
            result["labels"][lab] = {"n_flagged": 0, "win_rate": None, "win_rate_ci95": None}
            continue
        orig, hot, rand = np.asarray(d["orig"]), np.asarray(d["hot"]), np.stack(d["rand"])
        drop_hot, drop_rand = orig - hot, orig[:, None] - rand
        wins = drop_hot > drop_rand.mean(axis=1)
        thr = float(model.thresholds[lab])
        res = resample_indices(n, d["group"] if groups is not None else None, resamples, seed)
        lo_hot, lo_rand = _logit(orig) - _logit(hot), _logit(orig)[:, None] - _logit(rand)
        result["labels"][lab] = {
            "n_flagged": n,
            "win_rate": float(wins.mean()),
            "win_rate_ci95": interval(lambda idx: float(wins[idx].mean()), res),
            "win_rate_vs_each_draw": float((drop_hot[:, None] > drop_rand).mean()),
            "mean_drop_hot": float(drop_hot.mean()),
            "mean_drop_hot_ci95": interval(lambda idx: float(drop_hot[idx].mean()), res),
            "mean_drop_random": float(drop_rand.mean()),
            "mean_drop_random_ci95": interval(lambda idx: float(drop_rand[idx].mean()), res),
            "mean_drop_hot_logit": float(lo_hot.mean()),
            "mean_drop_random_logit": float(lo_rand.mean()),
            "win_rate_logit": float((lo_hot > lo_rand.mean(axis=1)).mean()),
            "flipped_hot": float((hot < thr).mean()),
            "flipped_random": float((rand < thr).mean()),
            "meets_target": bool(wins.mean() >= TARGET_WIN_RATE),
        }
    return result


def _pct(v: Optional[float]) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _ci(ci: Optional[Sequence[float]], pct: bool = True) -> str:
    if not ci:
        return ""
    return f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if pct else f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def to_markdown(result: Mapping[str, Any]) -> str:
    """The deletion test as a Markdown table (for the evaluation report and the model card)."""
    frac = float(result.get("fraction", DEFAULT_FRACTION))
    how = {"window": "a window of half its width and height", "cells": "its grid cells"}.get(result.get("mask"), "")
    fill = {"blur": "blurred", "mean": "set to the mean colour"}.get(result.get("fill"), "hidden")
    lines = [f"Hiding the hottest {100 * frac:.0f}% of the model's view ({how}, {fill}) against a random "
             f"{100 * frac:.0f}% ({result.get('draws')} random draws per photo), on the photos flagged for each label"
             + (f" in split `{result['split']}`" if result.get("split") else "") + ". A *win*: the hot cells lower "
             "the score more than random cells do on average. Target: win rate "
             f"≥ {100 * float(result.get('target_win_rate', TARGET_WIN_RATE)):.0f}%.", "",
             "| label | flagged photos | win rate | score drop, hot | score drop, random | no longer flagged, hot "
             "| no longer flagged, random |", "|---|---|---|---|---|---|---|"]
    for lab, r in result.get("labels", {}).items():
        if not r.get("n_flagged"):
            lines.append(f"| {lab} | 0 | – | – | – | – | – |")
            continue
        lines.append(f"| {lab} | {r['n_flagged']} | {_pct(r['win_rate'])}{_ci(r.get('win_rate_ci95'))} | "
                     f"{r['mean_drop_hot']:.3f}{_ci(r.get('mean_drop_hot_ci95'), False)} | "
                     f"{r['mean_drop_random']:.3f}{_ci(r.get('mean_drop_random_ci95'), False)} | "
                     f"{_pct(r['flipped_hot'])} | {_pct(r['flipped_random'])} |")
    return "\n".join(lines)


__all__ = ["deletion_test", "to_markdown", "hide", "cell_masks", "window_masks", "SCHEMA", "TARGET_WIN_RATE",
           "MASKS", "FILLS"]
