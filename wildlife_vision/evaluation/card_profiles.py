"""The model card's execution-profiles section: every profile the file carries (its own fp32 operating point, the
INT8 twin, bf16 on OpenVINO...), each with its own thresholds, its gate against fp32 on the calibration split,
and its figures on the report's split (from that profile's own `evaluate --precision P` report)."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..profiles import UINT8_INPUT
from .card_sections import ci_of, fmt, split_name, with_ci


def _worst_edit(rob: Optional[Mapping[str, Any]], lab: str) -> str:
    if not rob:
        return "–"
    rows = [(name, (e.get("per_class") or {}).get(lab) or {}) for name, e in (rob.get("edits") or {}).items()]
    rows = [(n, c) for n, c in rows if c]
    if not rows:
        return "–"
    p95 = max(rows, key=lambda r: r[1].get("p95_abs_change") or 0)
    flip = max(rows, key=lambda r: r[1].get("flip_rate") or 0)
    return (f"p95 {fmt(p95[1].get('p95_abs_change'))} ({p95[0]}), flips {fmt(100 * (flip[1].get('flip_rate') or 0), 1)}%"
            f" ({flip[0]})")


def profiles_section(meta: Mapping[str, Any], report: Mapping[str, Any], reports: Mapping[str, Mapping[str, Any]],
                     int8: Optional[Mapping[str, Any]] = None, speeds: Optional[Mapping[str, Any]] = None
                     ) -> List[str]:
    """``reports``: profile name -> its evaluation report on the same split as ``report`` (the fp32 one);
    ``int8``: the card's INT8 block (its own report under ``report``); ``speeds``: profile -> benchmark figures."""
    profiles = dict(meta.get("profiles") or {})
    if not profiles:
        return []
    labels: Sequence[str] = meta["labels"]
    split = split_name(report)
    out = ["## Execution profiles", "",
           "The same network can run under several profiles. A bf16 or INT8 score is not an fp32 score, so each "
           "profile has **its own thresholds**, set on its own scores on the calibration split and gated against "
           "fp32 there (AP drop <= 0.005, recall at matched precision within 0.03, precision >= target - 0.01). "
           "`load_model(path)` and `--precision` unset run the file's own fp32 profile: exact, and the same on every "
           "CPU. `precision=\"auto\"` takes the fastest profile this CPU supports natively that passed its gate. "
           "Every prediction record names its profile.", "",
           f"| profile | runtime | gate (calibration split) | " + " | ".join(
               f"`{lab}` on {split}: P / R at its threshold [95%]" for lab in labels) + " | macro AP | seller edits, worst (`"
           + labels[0] + "`) |",
           "|---|---|---|" + "---|" * len(labels) + "---|---|"]
    rows: List[Dict[str, Any]] = [{"name": "fp32 (own)", "runtime": "onnxruntime fp32", "gate": "reference",
                                   "report": report, "thresholds": meta["thresholds"]}]
    if "int8" in profiles:
        r8 = (int8 or {}).get("report")
        g = (profiles["int8"].get("gate") or {})
        rows.append({"name": "int8", "runtime": f"onnxruntime INT8 (`{profiles['int8'].get('file')}`)",
                     "gate": "passed" if g.get("passed") else "FAILED", "report": r8,
                     "thresholds": (int8 or {}).get("meta", {}).get("thresholds")})
    for name, entry in profiles.items():
        if name == "int8":
            continue
        g = entry.get("gate") or {}
        drops = "; ".join(f"`{lab}` AP {fmt(-(pl.get('ap_drop') or 0), 4)}, recall {fmt(-(pl.get('recall_drop') or 0))}"
                          for lab, pl in (g.get("per_label") or {}).items() if pl.get("gated"))
        rows.append({"name": name, "runtime": f"{entry.get('runtime')} {entry.get('precision')}"
                     + (f" (resize: {entry['resampler']}"
                        + (f" {entry['interpolation']}" if entry.get("interpolation") else "") + ")"
                        if entry.get("resampler") else "")
                     + (" (uint8 input, normalised in the graph)" if entry.get("input") == UINT8_INPUT else ""),
                     "gate": ("passed" if g.get("passed") else "FAILED") + (f": {drops}" if drops else ""),
                     "report": reports.get(name), "thresholds": entry.get("thresholds")})
    for r in rows:
        rep = r["report"]
        cells = []
        for lab in labels:
            c = ((rep or {}).get("per_class") or {}).get(lab)
            th = (r["thresholds"] or {}).get(lab)
            cells.append("not evaluated" if not c else
                         f"{with_ci(c.get('precision'), ci_of(c, 'precision'))} / {with_ci(c.get('recall'), ci_of(c, 'recall'))}"
                         f" at {fmt(th)}")
        macro = ((rep or {}).get("macro") or {}).get("ap")
        out.append(f"| **{r['name']}** | {r['runtime']} | {r['gate']} | " + " | ".join(cells) + f" | {fmt(macro)} | "
                   f"{_worst_edit((rep or {}).get('robustness'), labels[0])} |")
    out.append("")
    out.append("Gate figures are the profile minus fp32 (a negative recall change is a loss). Seller edits: the "
               "largest 95th-percentile score change and flip rate over the edits of the robustness table, each "
               "profile measured at its own thresholds on the same photos.")
    if speeds:
        out += ["", "| profile | end to end photos/s | model only photos/s (batch 32) | machine |", "|---|---|---|---|"]
        for name, s in speeds.items():
            out.append(f"| {name} | {fmt(s.get('e2e'), 1)} | {fmt(s.get('model_only'), 1)} | {s.get('machine', '')} |")
    return out + [""]


__all__ = ["profiles_section"]
