"""The gate a reduced-precision profile must pass against fp32 (INT8 at export, bf16 and others at `calibrate
--profile`): one rule everywhere, so that every shipped profile means the same thing."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

#: the gate's default limits (docs/int8.md): AP may drop 0.005; at matched precision recall may drop 0.03; the
#: profile's own precision may fall 0.01 under the target
MAX_AP_DROP = 0.005
MAX_RECALL_DROP = 0.03
PRECISION_TOLERANCE = 0.01


@dataclass(frozen=True)
class GateLimits:
    """Per label: AP may drop by ``max_ap_drop``; at matched precision (each model at its own threshold for the
    run's target) recall may drop by ``max_recall_drop`` (precision, when the run calibrates for a recall
    target); the INT8 model must reach the target minus ``precision_tolerance`` (or, where the fp32 model itself
    misses the target, the fp32 figure minus it)."""

    max_ap_drop: float = MAX_AP_DROP
    max_recall_drop: float = MAX_RECALL_DROP
    precision_tolerance: float = PRECISION_TOLERANCE

    def to_dict(self) -> Dict[str, float]:
        return dataclasses.asdict(self)


def operating_point(y: np.ndarray, s: np.ndarray, threshold: float) -> Dict[str, Any]:
    """Precision and recall of one label's scores ``s`` flagged at ``threshold`` (``None`` where undefined)."""
    pos, flag = np.asarray(y) == 1, np.asarray(s) >= threshold
    tp, fp, support = int((flag & pos).sum()), int((flag & ~pos).sum()), int(pos.sum())
    return {"threshold": float(threshold), "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / support if support else None, "flagged": tp + fp, "support": support}


def _drop_interval(y: np.ndarray, f: np.ndarray, q: np.ndarray, tf: float, tq: float, figure: str,
                   draws: Sequence[np.ndarray]) -> Dict[str, Any]:
    """Paired 95% bootstrap intervals (the same resamples for both models) of fp32 - INT8 for AP and ``figure``
    (each model at its own threshold)."""
    from wildlife_vision.evaluation.bootstrap import interval
    from wildlife_vision.evaluation.metrics import average_precision

    def ap_drop(r):
        if not y[r].any():
            return None
        return average_precision(y[r], f[r]) - average_precision(y[r], q[r])

    def fig_drop(r):
        a, b = operating_point(y[r], f[r], tf)[figure], operating_point(y[r], q[r], tq)[figure]
        return None if a is None else a - (b or 0.0)

    return {"ap": _listed(interval(ap_drop, draws)), figure: _listed(interval(fig_drop, draws))}


def _listed(iv):
    return list(iv) if iv else None


def gate(y: np.ndarray, fp32: np.ndarray, int8: np.ndarray, labels: Sequence[str],
         fp32_thresholds: Mapping[str, float], int8_thresholds: Mapping[str, float], target: str, value: float,
         limits: GateLimits = GateLimits(), draws: Sequence[np.ndarray] = (), split: str = "val",
         name: str = "int8") -> Dict[str, Any]:
    """The gate block of a reduced-precision profile (``name``: ``int8``, ``bf16``...; ``int8``/``int8_thresholds``
    are its scores and thresholds) against fp32: per label the AP drop, both operating points and the drop of the
    matched figure (recall for a precision target), each drop with a paired 95% bootstrap interval, which checks
    passed, and one line per failed check in ``failures``."""
    shown = name.upper()
    from wildlife_vision.evaluation.metrics import average_precision

    matched = "recall" if target == "precision" else "precision"
    per: Dict[str, Any] = {}
    failures: List[str] = []
    for j, lab in enumerate(labels):
        yj, fj, qj = y[:, j], fp32[:, j], int8[:, j]
        support = int(yj.sum())
        if support == 0 or support == len(yj):
            per[lab] = {"gated": False, "support": support,
                        "note": f"not gated: {'no positives' if support == 0 else 'no negatives'} in {split}"}
            continue
        apf, apq = average_precision(yj, fj), average_precision(yj, qj)
        of, oq = operating_point(yj, fj, fp32_thresholds[lab]), operating_point(yj, qj, int8_thresholds[lab])
        drop = (of[matched] or 0.0) - (oq[matched] or 0.0)
        reached = oq[target] or 0.0
        floor = min(value, of[target] if of[target] is not None else value) - limits.precision_tolerance
        checks = {"ap_drop": apf - apq <= limits.max_ap_drop, f"{matched}_drop": drop <= limits.max_recall_drop,
                  f"{name}_{target}": reached >= floor}
        per[lab] = {"gated": True, "support": support, "ap_fp32": apf, f"ap_{name}": apq, "ap_drop": apf - apq,
                    "fp32": of, name: oq, f"{matched}_drop": drop, f"{name}_{target}_floor": floor,
                    "drop_ci95": _drop_interval(yj, fj, qj, of["threshold"], oq["threshold"], matched, draws),
                    "checks": checks, "passed": all(checks.values())}
        if not checks["ap_drop"]:
            failures.append(f"{lab}: AP drops {apf - apq:.4f} > {limits.max_ap_drop:g} "
                            f"(fp32 {apf:.4f} -> {shown} {apq:.4f})")
        if not checks[f"{matched}_drop"]:
            failures.append(f"{lab}: {matched} at matched {target} {value:g} drops {drop:.3f} > "
                            f"{limits.max_recall_drop:g} (fp32 {of[matched] or 0:.3f} at threshold "
                            f"{of['threshold']:.3f} -> {shown} {oq[matched] or 0:.3f} at threshold {oq['threshold']:.3f})")
        if not checks[f"{name}_{target}"]:
            failures.append(f"{lab}: {shown} {target} {reached:.3f} at its threshold {oq['threshold']:.3f} is under "
                            f"{floor:.3f} (target {value:g} - tolerance {limits.precision_tolerance:g})")
    return {"passed": not failures, "split": split, "n_images": int(len(y)), "target": target, "value": value,
            "matched_figure": matched, "profile": name, "limits": limits.to_dict(), "per_label": per, "failures": failures,
            "rule": f"per label: AP drop <= {limits.max_ap_drop:g}; at matched {target} (each model at its own "
                    f"threshold for {target} {value:g}) the {matched} drop <= {limits.max_recall_drop:g}; {shown} "
                    f"{target} >= {value:g} - {limits.precision_tolerance:g}"}


__all__ = ["GateLimits", "gate", "operating_point", "MAX_AP_DROP", "MAX_RECALL_DROP", "PRECISION_TOLERANCE"]
