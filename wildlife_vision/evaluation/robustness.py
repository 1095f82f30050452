"""How far scores and flags move under the benign edits a seller makes to slip a listing past moderation.

Each photo is decoded once (:func:`wildlife_vision.preprocess.load_image`: upright RGB, the model's own decoder),
edited (mirror, a few pixels of crop or shift, JPEG re-encoding, rescaling, a small seller overlay), and the
original and every edited version are scored through the model's one scoring loop (:meth:`Model.predict_iter`),
at the model's own thresholds. Per edit and label the result gives the median, 95th percentile and largest
absolute score change, how many photos changed their flag (crossed the threshold) or their review-band
membership, and 95% percentile-bootstrap intervals over photos (:mod:`wildlife_vision.evaluation.bootstrap`).

Edit parameters are drawn per photo from ``seed`` and the photo's content (sha256), so a rerun, another
folder, or another machine applies the same edit to the same photo. Numpy and Pillow only (no torch).
"""

from __future__ import annotations

import difflib
import hashlib
import io
import math
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from wildlife_vision.errors import ImageDecodeError
from wildlife_vision.evaluation.bootstrap import (CONFIDENCE, DEFAULT_RESAMPLES, percentile_interval,
                                                  resample_indices)
from wildlife_vision.preprocess import load_image
from wildlife_vision.progress import Progress

SCHEMA_VERSION = "wildlife-vision/robustness/v1"
#: per edit and label: the 95th percentile of |score change| and the share of photos whose flag changes
TARGETS = {"p95_abs_change": 0.04, "flip_rate": 0.007}
#: the overlay covers at most this share of the photo
OVERLAY_MAX_AREA = 0.05
#: resamples whose statistics are computed at once (bounds memory to this many x photos floats)
_RESAMPLE_BLOCK = 100

Params = Dict[str, Any]


def _plain(img: Image.Image) -> Image.Image:
    """A fresh RGB image with the same pixels and no ``info`` (no EXIF): ``load_image`` keeps the EXIF block of
    a photo it has already turned upright, and scoring that image would turn it a second time."""
    return Image.fromarray(np.array(img.convert("RGB"), dtype=np.uint8), "RGB")


# ---- the edits -----------------------------------------------------------------------------------------------

def _mirror(img: Image.Image, rng: np.random.Generator) -> Tuple[Image.Image, Params]:
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), {}


def _crop(img: Image.Image, rng: np.random.Generator) -> Tuple[Image.Image, Params]:
    w, h = img.size
    left, top, right, bottom = (int(v) for v in rng.integers(1, 5, size=4))
    # a photo only a few pixels wide keeps at least one pixel
    left, right = min(left, max(0, (w - 1) // 2)), min(right, max(0, (w - 1) // 2))
    top, bottom = min(top, max(0, (h - 1) // 2)), min(bottom, max(0, (h - 1) // 2))
    box = (left, top, w - right, h - bottom)
    return img.crop(box), {"left": left, "top": top, "right": right, "bottom": bottom}


def _translate(img: Image.Image, rng: np.random.Generator) -> Tuple[Image.Image, Params]:
    dx = int(rng.integers(1, 5)) * int(rng.choice((-1, 1)))
    dy = int(rng.integers(1, 5)) * int(rng.choice((-1, 1)))
    a = np.asarray(img)
    h, w = a.shape[:2]
    p = 4
    padded = np.pad(a, ((p, p), (p, p), (0, 0)), mode="edge")
    # out[y, x] = a[y - dy, x - dx], the border repeated where that falls outside
    out = padded[p - dy:p - dy + h, p - dx:p - dx + w]
    return Image.fromarray(np.ascontiguousarray(out), "RGB"), {"dx": dx, "dy": dy}


def jpeg_roundtrip(img: Image.Image, quality: int) -> Image.Image:
    """``img`` encoded as JPEG at ``quality`` (Pillow's defaults otherwise) and decoded again."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return _plain(decoded)


def _jpeg(img: Image.Image, rng: np.random.Generator) -> Tuple[Image.Image, Params]:
    quality = int(rng.integers(60, 91))
    return jpeg_roundtrip(img, quality), {"quality": quality}


def _resize(img: Image.Image, rng: np.random.Generator) -> Tuple[Image.Image, Params]:
    scale = float(math.exp(rng.uniform(math.log(0.8), math.log(1.25))))
    w, h = img.size
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return img.resize(size, Image.Resampling.BICUBIC), {"scale": round(scale, 6), "size": list(size)}


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _overlay_text(rng: np.random.Generator) -> str:
    digits = "".join(str(int(d)) for d in rng.integers(0, 10, size=8))
    choices = ("SALE", "SALE -30%", f"+255 7{digits[:2]} {digits[2:5]} {digits[5:]}",
               f"WhatsApp 07{digits[:2]} {digits[2:5]} {digits[5:8]}")
    return choices[int(rng.integers(0, len(choices)))]


def _overlay(img: Image.Image, rng: np.random.Generator) -> Tuple[Image.Image, Params]:
    w, h = img.size
    text = _overlay_text(rng)
    corner = ("top-left", "top-right", "bottom-left", "bottom-right")[int(rng.integers(0, 4))]
    alpha = int(rng.integers(110, 181))
    limit = OVERLAY_MAX_AREA * w * h
    size = max(6, round(min(w, h) * float(rng.uniform(0.05, 0.09))))
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    while True:
        font = _font(size)
        x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=font, stroke_width=1)
        if (x1 - x0) * (y1 - y0) <= limit or size <= 6:
            break
        size = max(6, int(size * 0.85))
    tw, th = x1 - x0, y1 - y0
    if tw * th > limit:  # a photo too small for legible text: the text is clipped to a corner box of the limit
        scale = math.sqrt(limit / float(tw * th))
        tw, th = max(1, int(tw * scale)), max(1, int(th * scale))
    tw, th = min(tw, w), min(th, h)
    margin = max(1, round(0.02 * min(w, h)))
    bx = margin if corner.endswith("left") else w - margin - tw
    by = margin if corner.startswith("top") else h - margin - th
    bx, by = max(0, min(bx, w - tw)), max(0, min(by, h - th))
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    ImageDraw.Draw(layer).text((bx - x0, by - y0), text, font=font, fill=(255, 255, 255, alpha), stroke_width=1,
                               stroke_fill=(0, 0, 0, alpha))
    mask = np.zeros((h, w), dtype=bool)
    mask[by:by + th, bx:bx + tw] = True
    pixels = np.array(layer)
    pixels[~mask, 3] = 0  # nothing outside the box
    out = Image.alpha_composite(img.convert("RGBA"), Image.fromarray(pixels, "RGBA")).convert("RGB")
    return out, {"text": text, "corner": corner, "alpha": alpha, "font_size": size,
                 "box": [bx, by, bx + tw, by + th], "area_fraction": round(tw * th / float(w * h), 6)}


@dataclass(frozen=True)
class Edit:
    """One benign edit: ``apply(image, rng)`` returns the edited RGB image and the parameters it drew."""

    name: str
    description: str
    apply: Callable[[Image.Image, np.random.Generator], Tuple[Image.Image, Params]]


EDITS: Dict[str, Edit] = {e.name: e for e in (
    Edit("mirror", "horizontal flip (left and right swapped)", _mirror),
    Edit("crop", "1-4 px removed from each side (drawn per side)", _crop),
    Edit("translate", "shifted 1-4 px in x and in y (either direction), the border repeated into the gap", _translate),
    Edit("jpeg", "re-encoded as JPEG at a quality drawn from 60-90", _jpeg),
    Edit("resize", "rescaled by a factor drawn from 0.8-1.25 (log-uniform), bicubic", _resize),
    Edit("overlay", "semi-transparent seller text ('SALE' or a phone number) in a corner, Pillow's default font, "
                    f"at most {OVERLAY_MAX_AREA:.0%} of the area", _overlay),
)}


def resolve_edits(edits: Union[None, str, Sequence[str]] = None) -> List[str]:
    """Edit names from ``None`` or ``"all"`` (every edit), a comma-separated string or a list; raises
    :class:`ValueError` naming an unknown edit (with 'did you mean') or a repeated one."""
    if edits is None:
        return list(EDITS)
    items = edits.split(",") if isinstance(edits, str) else list(edits)
    names = [str(e).strip().lower() for e in items if str(e).strip()]
    if names == ["all"]:
        return list(EDITS)
    if not names:
        raise ValueError(f"no edits given; choose from {', '.join(EDITS)} (or all)")
    for name in names:
        if name not in EDITS:
            close = difflib.get_close_matches(name, list(EDITS), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ValueError(f"unknown edit '{name}'; {hint}choose from {', '.join(EDITS)} (or all)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"edit(s) given twice: {', '.join(repeated)}")
    return names


def edit_rng(seed: int, edit: str, key: str) -> np.random.Generator:
    """The random generator for ``edit`` on the photo ``key`` (its sha256 in :func:`measure_robustness`)."""
    digest = hashlib.sha256(f"{int(seed)}\0{edit}\0{key}".encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def apply_edit(img: Image.Image, edit: str, seed: int = 0, key: str = "") -> Tuple[Image.Image, Params]:
    """``img`` (RGB) with ``edit`` applied, and the parameters drawn; the same ``seed`` and ``key`` always give
    the same result."""
    if edit not in EDITS:
        resolve_edits([edit])  # raises with the hint
    out, params = EDITS[edit].apply(_plain(img), edit_rng(seed, edit, key))
    return _plain(out), params


# ---- decoding, editing and scoring ------------------------------------------------------------------------------

def _versions_of(path: str, cfg: Any, edits: Sequence[str], seed: int) -> Tuple[Optional[List[Image.Image]], str]:
    """The decoded photo and its edited versions (original first), or None and why it could not be read."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return None, f"cannot read {path}: {e.strerror or e}"
    try:
        img = _plain(load_image(data, cfg))
    except ImageDecodeError as e:
        return None, str(e)
    except MemoryError:
        return None, "not enough memory to decode this image"
    key = hashlib.sha256(data).hexdigest()
    return [img] + [apply_edit(img, e, seed, key)[0] for e in edits], ""


def _decoded(paths: Sequence[str], cfg: Any, edits: Sequence[str], seed: int, workers: int
             ) -> Iterator[Tuple[int, Optional[List[Image.Image]], str]]:
    """(index, versions or None, error) per path in order; with ``workers`` > 1 decoded and edited in threads,
    a few photos ahead (memory stays bounded)."""
    if workers <= 1:
        for i, p in enumerate(paths):
            yield (i, *_versions_of(p, cfg, edits, seed))
        return
    ahead: Deque[Tuple[int, Future]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wildlife-vision-edit") as pool:
        for i, p in enumerate(paths):
            ahead.append((i, pool.submit(_versions_of, p, cfg, edits, seed)))
            if len(ahead) > 2 * workers:
                j, fut = ahead.popleft()
                yield (j, *fut.result())
        while ahead:
            j, fut = ahead.popleft()
            yield (j, *fut.result())


def _stat_intervals(values: np.ndarray, draws: Sequence[np.ndarray], stat: Callable[[np.ndarray], np.ndarray]
                    ) -> Optional[List[float]]:
    """Percentile interval of ``stat`` (applied along axis 1 of a block of resamples) over ``draws``."""
    if not draws:
        return None
    out: List[float] = []
    if len({len(d) for d in draws}) == 1:
        for start in range(0, len(draws), _RESAMPLE_BLOCK):
            out.extend(stat(values[np.stack(draws[start:start + _RESAMPLE_BLOCK])]).tolist())
    else:  # whole groups: resamples differ in length
        out = [float(stat(values[d][None, :])[0]) for d in draws]
    ci = percentile_interval(out)
    return None if ci is None else [ci[0], ci[1]]


def _per_class(change: np.ndarray, flips: np.ndarray, review_changes: np.ndarray, draws: Sequence[np.ndarray]
               ) -> Dict[str, Any]:
    n = len(change)
    p50, p95, top = (float(v) for v in np.quantile(change, [0.5, 0.95]).tolist() + [change.max()])
    flip_rate = float(flips.mean())
    ci = {"p95_abs_change": _stat_intervals(change, draws, lambda a: np.quantile(a, 0.95, axis=1)),
          "flip_rate": _stat_intervals(flips.astype(np.float64), draws, lambda a: a.mean(axis=1))}
    return {"p50_abs_change": p50, "p95_abs_change": p95, "max_abs_change": top, "flip_rate": flip_rate,
            "flips": int(flips.sum()), "review_changes": int(review_changes.sum()), "n": n, "ci95": ci,
            "meets_target": bool(p95 <= TARGETS["p95_abs_change"] and flip_rate <= TARGETS["flip_rate"])}


def measure_robustness(model: Any, paths: Sequence[Union[str, os.PathLike]],
                       edits: Union[None, str, Sequence[str]] = None, seed: int = 0, batch_size: int = 32,
                       workers: int = 1, resamples: int = DEFAULT_RESAMPLES, progress: bool = False,
                       groups: Optional[Sequence[str]] = None, info: Optional[Mapping[str, Any]] = None,
                       targets: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """Score each photo and its edited versions with ``model`` (a loaded :class:`wildlife_vision.Model`) and
    return the schema-versioned result (``wildlife-vision/robustness/v1``, described in the module docstring).

    ``edits``: names from :data:`EDITS` (default: all). ``workers``: threads that decode and edit photos and
    that the scoring loop uses to preprocess them. ``groups`` (one id per path): resample whole groups of
    near-duplicates in the bootstrap instead of photos. ``progress``: report on stderr
    (:mod:`wildlife_vision.progress`). ``info`` is copied into the result (e.g. the split). Photos that cannot
    be read or scored are counted in ``n_failed`` and left out. Raises :class:`ValueError` when no photo can
    be scored.

    ``targets`` (0/1, one row per path, one column per label): also report each label's p95 |change| on
    temperature-calibrated scores (:func:`calibrated_change`), so that a model cannot meet the target by being
    under-confident. The target verdict stays on the model's own scores.
    """
    names = resolve_edits(edits)
    workers = int(workers or 1)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 0:
        raise ValueError(f"resamples must be a non-negative integer, got {resamples!r}")
    paths = [os.fspath(p) for p in paths]
    if groups is not None and len(groups) != len(paths):
        raise ValueError(f"{len(groups)} group ids for {len(paths)} photos")
    labels = list(model.labels)
    if targets is not None and np.shape(targets) != (len(paths), len(labels)):
        raise ValueError(f"targets of shape {np.shape(targets)} for {len(paths)} photos and {len(labels)} labels")
    n_all, n_lab, n_ver = len(paths), len(labels), 1 + len(names)
    scores = np.zeros((n_ver, n_all, n_lab), dtype=np.float64)
    flagged = np.zeros((n_ver, n_all, n_lab), dtype=bool)
    review = np.zeros((n_ver, n_all, n_lab), dtype=bool)
    failed: Dict[int, str] = {}
    keys: Deque[Tuple[int, int]] = deque()  # (photo, version) of each item handed to the scoring loop, in order
    prog = Progress(n_all, "robustness", unit="photo", enabled=bool(progress) and n_all > 0)

    def items() -> Iterator[Image.Image]:
        for i, versions, error in _decoded(paths, model.preprocess_config, names, seed, workers):
            if versions is None:
                failed[i] = error
                prog.update(1)
                continue
            for v, img in enumerate(versions):
                keys.append((i, v))
                yield img

    try:
        for pred in model.predict_iter(items(), batch_size=batch_size, workers=workers):
            i, v = keys.popleft()
            if pred.error is not None:
                failed.setdefault(i, f"{'original' if v == 0 else names[v - 1]}: {pred.error}")
            else:
                scores[v, i] = [pred.scores[lab] for lab in labels]
                flagged[v, i] = [lab in pred.flagged for lab in labels]
                review[v, i] = [lab in pred.review for lab in labels]
            if v == n_ver - 1:
                prog.update(1)
    finally:
        prog.close()

    ok = np.array([i not in failed for i in range(n_all)], dtype=bool)
    n = int(ok.sum())
    if n == 0:
        raise ValueError(f"none of the {n_all} photo(s) could be read and scored"
                         + (f" (first error: {failed[min(failed)]})" if failed else ""))
    kept_groups = None if groups is None else [str(g) for g, keep in zip(groups, ok) if keep]
    draws = resample_indices(n, kept_groups, resamples, seed) if resamples else []
    result: Dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        **dict(info or {}),
        "n_images": n,
        "n_failed": len(failed),
        "failures": [{"image": paths[i], "error": failed[i]} for i in sorted(failed)],
        "labels": labels,
        "thresholds": {lab: float(model.thresholds[lab]) for lab in labels},
        "seed": int(seed),
        "targets": dict(TARGETS),
        "intervals": {"method": "percentile bootstrap", "confidence": CONFIDENCE, "resamples": resamples,
                      "unit": "group" if groups is not None else "photo"},
        "edits": {},
    }
    base_s, base_f, base_r = scores[0, ok], flagged[0, ok], review[0, ok]
    for v, name in enumerate(names, start=1):
        change = np.abs(scores[v, ok] - base_s)
        flips = flagged[v, ok] != base_f
        moved = review[v, ok] != base_r
        result["edits"][name] = {
            "description": EDITS[name].description,
            "per_class": {lab: _per_class(change[:, j], flips[:, j], moved[:, j], draws)
                          for j, lab in enumerate(labels)},
        }
    if targets is not None:
        y = np.asarray(targets, dtype=np.float64)[ok]
        for j, lab in enumerate(labels):
            fitted = calibrated_change(y[:, j], base_s[:, j], [scores[v, ok, j] for v in range(1, n_ver)])
            if fitted is None:
                continue
            temperature, p95s = fitted
            result.setdefault("calibration_check", {})[lab] = {"temperature": temperature}
            for name, p95 in zip(names, p95s):
                result["edits"][name]["per_class"][lab]["p95_abs_change_calibrated"] = p95
    return result


def calibrated_change(y: np.ndarray, base: np.ndarray, edited: Sequence[np.ndarray]
                      ) -> Optional[Tuple[float, List[float]]]:
    """The temperature fitted (negative log-likelihood) on one label's original scores ``base`` and labels ``y``,
    and the p95 |change| of each of ``edited`` on ``sigmoid(logit(s) / T)``; None when ``y`` has one class only.

    A monotone map leaves every decision as it is but rescales every score change: an under-confident model (T < 1
    fits) shows small changes that grow once its scores mean what they say. In-sample (the same photos), a
    diagnostic for comparing models at equal calibration, not a calibration to ship."""
    from .probability import fit_temperature, logit

    y = np.asarray(y, dtype=np.float64)
    if y.size == 0 or y.min() == y.max():
        return None
    t = fit_temperature(y, base)["temperature"]

    def cal(s: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-logit(s) / t))

    b = cal(base)
    return float(t), [float(np.quantile(np.abs(cal(e) - b), 0.95)) for e in edited]


# ---- Markdown ---------------------------------------------------------------------------------------------------

def _ci(ci: Optional[Sequence[float]], pct: bool = False) -> str:
    if not ci:
        return ""
    return f" [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]" if pct else f" [{ci[0]:.4f}, {ci[1]:.4f}]"


def _num(v: Optional[float]) -> str:
    return "" if v is None else f"{v:.4f}"


def _where(result: Mapping[str, Any]) -> str:
    model = result.get("model_name") or result.get("model") or "the model"
    split = result.get("split")
    return f"{model} on {'split ' + repr(split) if split else 'the photos given'} ({result['n_images']} photos)"


def to_markdown(result: Mapping[str, Any]) -> str:
    """A compact table per edit and label: p50 and p95 of |score change|, flip rate with its interval, and
    whether both targets are met."""
    t = result.get("targets", TARGETS)
    iv = result.get("intervals", {})
    calibrated = bool(result.get("calibration_check"))
    lines = [f"# Robustness to benign edits: {_where(result)}", "",
             f"Targets per edit and label: p95 |score change| <= {t['p95_abs_change']}, flip rate <= "
             f"{100 * t['flip_rate']:.1f}% (a flip: the photo's flag for the label changes at the model's threshold)."
             f" Intervals: 95% {iv.get('method', 'percentile bootstrap')} over {iv.get('unit', 'photo')}s "
             f"({iv.get('resamples', '?')} resamples). Seed {result.get('seed', 0)}; {result.get('n_failed', 0)} "
             "photo(s) could not be read and are left out.", "",
             "| edit | label | p50 \\|Δ\\| | p95 \\|Δ\\| [95% CI] | max \\|Δ\\| | flips | flip rate % [95% CI] "
             f"| review changes | target |{' p95 at calibrated scores |' if calibrated else ''}",
             f"|---|---|---:|---:|---:|---:|---:|---:|---|{'---:|' if calibrated else ''}"]
    zero_flips = False
    for name, e in result["edits"].items():
        for lab, m in e["per_class"].items():
            ci = m.get("ci95") or {}
            zero_flips |= m["flips"] == 0
            lines.append(f"| {name} | {lab} | {m['p50_abs_change']:.4f} | {m['p95_abs_change']:.4f}"
                         f"{_ci(ci.get('p95_abs_change'))} | {m['max_abs_change']:.4f} | {m['flips']} | "
                         f"{100 * m['flip_rate']:.2f}{_ci(ci.get('flip_rate'), pct=True)} | {m['review_changes']} | "
                         f"{'pass' if m.get('meets_target') else '**fail**'} |"
                         + (f" {_num(m.get('p95_abs_change_calibrated'))} |" if calibrated else ""))
    lines.append("")
    if calibrated:
        temps = ", ".join(f"{lab} {v['temperature']:.2f}" for lab, v in result["calibration_check"].items())
        lines += ["*p95 at calibrated scores*: the same changes after one temperature per label fitted on these "
                  f"photos' original scores and labels (T: {temps}; T < 1: the model is under-confident). Every "
                  "decision stays as it is; a p95 that meets the target only on the model's own scores comes from "
                  "squeezed scores, not from stable ones.", ""]
    if zero_flips:
        n = result["n_images"]
        lines += [f"A flip count of 0 has the bootstrap interval [0, 0]; with {n} photos the one-sided 95% upper "
                  f"bound for such a rate is about 3/{n} = {300 / n:.2f}%.", ""]
    lines += ["Edits:", ""] + [f"- **{name}**: {e['description']}" for name, e in result["edits"].items()]
    return "\n".join(lines) + "\n"


def compare_markdown(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """Two results side by side (edits and labels in both): p95 |score change| and flip rate, before -> after."""
    lines = ["# Robustness, before -> after", "", f"- before: {_where(before)}", f"- after: {_where(after)}", ""]
    if before.get("split") != after.get("split") or before.get("n_images") != after.get("n_images"):
        lines += ["The two results were measured on different photos; differences mix model and sample.", ""]
    lines += ["| edit | label | p95 \\|Δ\\| before | p95 \\|Δ\\| after | flip rate % before | flip rate % after "
              "| target after |", "|---|---|---:|---:|---:|---:|---|"]
    for name, e in after["edits"].items():
        old = before.get("edits", {}).get(name)
        if old is None:
            continue
        for lab, m in e["per_class"].items():
            o = old["per_class"].get(lab)
            if o is None:
                continue
            ci_o, ci_m = o.get("ci95") or {}, m.get("ci95") or {}
            lines.append(f"| {name} | {lab} | {o['p95_abs_change']:.4f}{_ci(ci_o.get('p95_abs_change'))} | "
                         f"{m['p95_abs_change']:.4f}{_ci(ci_m.get('p95_abs_change'))} | "
                         f"{100 * o['flip_rate']:.2f}{_ci(ci_o.get('flip_rate'), pct=True)} | "
                         f"{100 * m['flip_rate']:.2f}{_ci(ci_m.get('flip_rate'), pct=True)} | "
                         f"{'pass' if m.get('meets_target') else '**fail**'} |")
    return "\n".join(lines) + "\n"


__all__ = ["SCHEMA_VERSION", "TARGETS", "EDITS", "Edit", "resolve_edits", "edit_rng", "apply_edit", "jpeg_roundtrip",
           "measure_robustness", "to_markdown", "compare_markdown"]
