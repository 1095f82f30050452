"""Operating figures of an evaluation report: how much goes to review, how well the scores read as probabilities,
what the flags mean at marketplace base rates, and how often photos from negatives-only sources get flagged.

:func:`add_operating_figures` adds to each label of a :func:`~.evaluate.build_report` result:

- ``review_rate``: the share of photos whose score is in the label's review band ``[low, threshold)``;
- ``ece``: the expected calibration error of the scores (:func:`~.probability.ece`, 15 bins);
- ``base_rates``: precision and listings per million at prevalences 1/100, 1/1,000 and 1/10,000
  (:mod:`~.baserate`);

with 95% bootstrap intervals (``ci95.review_rate``, ``ci95.ece``, ``precision_ci95``) from the same resamples as
the report's other intervals; and :func:`negative_sources` gives flag and review rates per value of the
``source`` column whose photos are all negatives (everyday photos, look-alikes): the false alarms a platform
sees from that kind of listing.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .baserate import BASE_RATES, label_base_rates
from .bootstrap import percentile_interval, resample_indices
from .probability import ECE_BINS, ece, ece_draws

SOURCE_COLUMN = "source"

Bands = Mapping[str, Tuple[float, float]]


def _band(bands: Optional[Bands], thresholds: Mapping[str, float], lab: str) -> Tuple[float, float]:
    thr = float(thresholds.get(lab, 0.5))
    low, high = (bands or {}).get(lab, (thr, thr))
    return float(min(low, thr)), thr


def _mean_interval(values: np.ndarray, resamples: Sequence[np.ndarray]) -> Optional[List[float]]:
    """Percentile interval of the share of True in ``values`` over the resamples."""
    if not resamples:
        return None
    v = np.asarray(values, dtype=np.float64)
    if len({len(r) for r in resamples}) == 1:
        draws = v[np.stack(resamples)].mean(axis=1)
    else:
        draws = np.array([v[r].mean() for r in resamples])
    iv = percentile_interval(list(draws))
    return list(iv) if iv else None


def add_operating_figures(report: Dict[str, Any], y_true: np.ndarray, scores: np.ndarray, labels: Sequence[str],
                          thresholds: Mapping[str, float], bands: Optional[Bands],
                          groups: Optional[Sequence[str]], resamples: int, seed: int = 0) -> Dict[str, Any]:
    """Add ``review_rate``, ``ece`` and ``base_rates`` (and their intervals) to each of ``report["per_class"]``,
    in place; ``report["review_bands"]`` records the bands used."""
    y = np.asarray(y_true).reshape(len(y_true), len(labels))
    s = np.asarray(scores, dtype=np.float64).reshape(len(y_true), len(labels))
    draws = resample_indices(len(y), groups, resamples, seed) if resamples else []
    report["review_bands"] = {}
    for j, lab in enumerate(labels):
        m = report["per_class"][lab]
        low, thr = _band(bands, thresholds, lab)
        report["review_bands"][lab] = [low, thr]
        in_band = (s[:, j] >= low) & (s[:, j] < thr)
        known = bands is not None  # without the model's bands a review rate would read 0 and mean nothing
        m["review_rate"] = float(in_band.mean()) if len(y) and known else None
        m["ece"] = ece(y[:, j], s[:, j], ECE_BINS)
        ci = m.setdefault("ci95", {})
        ci["review_rate"] = _mean_interval(in_band, draws) if known else None
        e = percentile_interval(ece_draws(y[:, j], s[:, j], draws)) if draws else None
        ci["ece"] = list(e) if e else None
        m["base_rates"] = label_base_rates(y[:, j], s[:, j] >= thr, draws, BASE_RATES)
    return report


def negative_sources(y_true: np.ndarray, scores: np.ndarray, labels: Sequence[str], thresholds: Mapping[str, float],
                     bands: Optional[Bands], samples: Sequence[Any], groups: Optional[Sequence[str]],
                     resamples: int, seed: int = 0, column: str = SOURCE_COLUMN) -> Dict[str, Any]:
    """Per value of ``column`` whose rows have no positive for any label: its photo count and, per label, the
    flag and review rates with 95% bootstrap intervals (resampling that source's photos, or groups)."""
    y = np.asarray(y_true).reshape(len(samples), len(labels))
    s = np.asarray(scores, dtype=np.float64).reshape(len(samples), len(labels))
    rows: Dict[str, List[int]] = defaultdict(list)
    for i, sample in enumerate(samples):
        value = (sample.extra or {}).get(column)
        if value:
            rows[value].append(i)
    out: Dict[str, Any] = {}
    for value, idx in sorted(rows.items()):
        if y[idx].any():
            continue
        sub_groups = None if groups is None else [groups[i] for i in idx]
        draws = resample_indices(len(idx), sub_groups, resamples, seed) if resamples else []
        per_class = {}
        for j, lab in enumerate(labels):
            low, thr = _band(bands, thresholds, lab)
            sj = s[idx, j]
            flag, review = sj >= thr, (sj >= low) & (sj < thr)
            known = bands is not None
            per_class[lab] = {"flag_rate": float(flag.mean()),
                              "review_rate": float(review.mean()) if known else None,
                              "flagged": int(flag.sum()), "review": int(review.sum()) if known else None,
                              "ci95": {"flag_rate": _mean_interval(flag, draws),
                                       "review_rate": _mean_interval(review, draws) if known else None}}
        out[value] = {"n_images": len(idx), "per_class": per_class}
    return out


def _ci(v: Optional[float], ci: Optional[Sequence[float]]) -> str:
    if v is None:
        return "–"
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{v:.3f}"


def _count(n: Optional[int], ci: Optional[Sequence[int]] = None) -> str:
    if n is None:
        return "–"
    return f"{n:,} [{ci[0]:,}, {ci[1]:,}]" if ci else f"{n:,}"


def to_markdown(report: Mapping[str, Any]) -> List[str]:
    """Markdown lines: review rate and ECE, the base-rate table, and negatives-only sources."""
    per_class = report.get("per_class", {})
    if not any("base_rates" in m for m in per_class.values()):
        return []
    split = report.get("split") or "this sample"
    lines = ["", "## Review band and calibration", "",
             "Review rate: share of photos whose score is in the review band [low, threshold) (to a human). "
             f"ECE: expected calibration error over {ECE_BINS} score bins (0 = scores are probabilities); see "
             "[the reliability diagram](reliability.png). On small samples binning noise alone gives an ECE of a "
             "few hundredths, so its interval can sit above a near-zero estimate.", "",
             "| label | review band | review rate | ECE |", "|---|---|---:|---:|"]
    bands = report.get("review_bands", {})
    for lab, m in per_class.items():
        ci = m.get("ci95") or {}
        band = bands.get(lab)
        text = f"[{band[0]:.3f}, {band[1]:.3f})" if band and band[1] > band[0] else "–"
        lines.append(f"| {lab} | {text} | {_ci(m.get('review_rate'), ci.get('review_rate'))} | "
                     f"{_ci(m.get('ece'), ci.get('ece'))} |")
    lines += ["", "## At marketplace base rates", "",
              f"Precision and reviewer load if 1 in 100, 1 in 1,000 or 1 in 10,000 listings were positive, from "
              f"the recall and false-positive rate measured on `{split}` (precision = pi·recall / (pi·recall + "
              "(1 − pi)·FPR)). In brackets: 95% bootstrap intervals.", "",
              "| label | prevalence | precision | per million listings: flagged | of which true |",
              "|---|---:|---:|---:|---:|"]
    for lab, m in per_class.items():
        for e in m.get("base_rates", []):
            pm, pci = e["per_million"], e.get("per_million_ci95") or {}
            flagged = (_count(pm["flagged"], pci.get("flagged")) if pm["flagged"] is not None
                       else f"≥ {_count(pm['false'], pci.get('false'))} false" if pm["false"] is not None else "–")
            low = e.get("precision_lower95")
            bound = f" (no false positive seen: ≥ {low:.3f})" if low is not None else ""
            lines.append(f"| {lab} | 1 in {round(1 / e['prevalence']):,} | "
                         f"{_ci(e['precision'], e.get('precision_ci95'))}{bound} | {flagged} | "
                         f"{_count(pm['true'], pci.get('true'))} |")
    neg = report.get("negative_sources")
    if neg:
        labels = list(report.get("labels", per_class))
        lines += ["", "## Sources without positives", "",
                  "Photos from sources with no positive for any label (everyday photos, look-alikes): every flag is "
                  "a false alarm. Flag rate and review rate per label, with 95% bootstrap intervals.", "",
                  "| source | images | " + " | ".join(f"{lab}: flag rate | {lab}: review rate" for lab in labels)
                  + " |", "|---|---:|" + "---:|---:|" * len(labels)]
        for src, g in neg.items():
            cells = []
            for lab in labels:
                c = g["per_class"][lab]
                cells += [_ci(c["flag_rate"], c["ci95"]["flag_rate"]), _ci(c["review_rate"], c["ci95"]["review_rate"])]
            lines.append(f"| {src} | {g['n_images']} | " + " | ".join(cells) + " |")
    return lines


__all__ = ["add_operating_figures", "negative_sources", "to_markdown", "SOURCE_COLUMN"]
