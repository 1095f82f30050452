"""compare.md and the comparison plots, from the result of :func:`wildlife_vision.evaluation.compare.compare_models`.

The Markdown gives, per label, a table of the models (AP with its interval, precision, recall and false-positive
rate at each model's own threshold, recall at the common precision, photos/s, size), then the paired differences
of every pair with one plain sentence each saying whether the interval excludes 0, the slices, and robustness when
measured. The plots (matplotlib, the ``[eval]`` extra; skipped with a note without it): ``pr_curves.png`` (all
models per label on one axes, a dot at each model's own threshold), ``forest_ap.png`` (AP and its interval per
label and model) and ``forest_diff.png`` (each pair's AP difference and its paired interval).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from wildlife_vision.evaluation.metrics import precision_recall_curve


def _f(v: Any, digits: int = 3, sign: bool = False) -> str:
    if v is None:
        return "–"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _ci(ci: Optional[Sequence[float]], digits: int = 3, sign: bool = False) -> str:
    return f" [{_f(ci[0], digits, sign)}, {_f(ci[1], digits, sign)}]" if ci else ""


def _with_ci(m: Mapping[str, Any], key: str, digits: int = 3, sign: bool = False) -> str:
    v = m.get(key)
    return "–" if v is None else _f(v, digits, sign) + _ci(m.get(f"{key}_ci95"), digits, sign)


def _p(p: Optional[float], resamples: int) -> str:
    """A bootstrap p-value; 0 means below the resolution 1/resamples."""
    if p is None:
        return "–"
    return f"< {1 / max(resamples, 1):.2g}" if p == 0 else f"{p:.3f}"


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _speed(s: Mapping[str, Any]) -> str:
    if not s.get("photos_per_s"):
        return "–"
    return f"{s['photos_per_s']:.1f}"


def _excludes_zero(ci: Optional[Sequence[float]]) -> bool:
    return bool(ci) and (ci[0] > 0 or ci[1] < 0)  # type: ignore[index]


def sentence(pair: Mapping[str, Any], lab: str, comparisons: int) -> str:
    """One plain sentence on a pair's AP difference for ``lab``: real (the interval excludes 0) or not."""
    m = pair["labels"][lab]
    a, b, d, ci = pair["a_id"], pair["b_id"], m["ap_diff"], m["ap_diff_ci95"]
    if d is None:
        return f"`{b}` vs `{a}`: no positives of `{lab}` in this sample, so AP is not defined."
    if ci is None:
        return f"`{b}` − `{a}` = {d:+.4f} AP; no interval (too few resamples with positives)."
    if d == 0 and ci[0] == 0 and ci[1] == 0:
        return f"`{b}` and `{a}` rank every photo alike for `{lab}`: AP difference 0 on every resample."
    text = f"`{b}` − `{a}` = {d:+.4f} AP{_ci(ci, 4, True)}: "
    if m["significant"]:
        text += (f"the interval excludes 0, so `{b}` is {'better' if d > 0 else 'worse'} than `{a}` on `{lab}` "
                 "beyond this sample's noise")
        if comparisons > 1:
            text += (" (and stays so after the Holm adjustment for "
                     f"{comparisons} comparisons)" if m.get("significant_holm") else
                     f" (though not after the Holm adjustment for {comparisons} comparisons)")
        return text + "."
    return text + "the interval contains 0, so this sample shows no real difference."


def _header(r: Mapping[str, Any]) -> List[str]:
    bs, sp, mach = r["bootstrap"], r["speed"], r["speed"]["machine"]
    limit = f", a seeded random sample of {r['limit']} of the split's {r['n_split']}" if r.get("limit") else ""
    dropped = r["dropped"]["n"]
    lines = [f"# Model comparison on split `{r['split']}` ({r['n_photos']} photos)", "",
             f"- **manifest**: `{r['manifest']}` (sha256 `{r['manifest_sha256'][:16]}…`)",
             f"- **photos**: {r['n_photos']}{limit}; {dropped} dropped because at least one model could not read "
             "them (every model is scored on the same photos)",
             f"- **intervals**: 95% paired percentile bootstrap, {bs['resamples']} resamples of {bs['units']} "
             f"{bs['unit']}s (seed {bs['seed']}); the same resamples for every model, pair and figure"
             + (", whole near-duplicate groups resampled together" if bs["unit"] == "group" else ""),
             f"- **labels**: {', '.join(f'`{lab}`' for lab in r['labels'])}"]
    if r.get("at_precision"):
        lines.append(f"- **common operating point**: recall at precision ≥ {r['at_precision']:g}, the threshold "
                     "chosen per model (and per resample) on these photos, so it flatters every model alike; the "
                     "models' own thresholds differ, so compare recall there only with precision beside it")
    if sp["photos"]:
        lines.append(f"- **speed**: photos/s including decoding, median of {sp['rounds']} interleaved rounds over "
                     f"the same {sp['photos']} photos (spread evenly over the split), batch {sp['batch_size']}, {sp['workers']} decoding threads, "
                     f"in this run on {mach['cpu']} ({mach['usable_cpus']} of {mach['cpus']} CPUs usable), "
                     f"{mach['system']}, onnxruntime {mach['onnxruntime']}; compare models by their ratio, not "
                     "across machines")
    else:
        lines.append("- **speed**: not measured (`--speed-photos 0`)")
    lines += [f"- **note**: {n}" for n in r.get("notes", [])]
    return lines


def _models_table(r: Mapping[str, Any]) -> List[str]:
    lines = ["", "## Models", "", "| model | name | version | size | sha256 | macro AP [95% CI] | photos/s "
             "(median; best) | speed vs first |", "|---|---|---|---:|---|---|---:|---:|"]
    for m in r["models"]:
        s = m["speed"]
        speed = f"{s['photos_per_s']:.1f}; {s['photos_per_s_best']:.1f}" if s.get("photos_per_s") else \
            s.get("note", "–")
        rel = f"{s['relative_to_first_timed']:.2f}×" if s.get("relative_to_first_timed") else "–"
        lines.append(f"| `{m['id']}` | {m['name']} | {m['version'] or '–'} | {_size(m['size_bytes'])} | "
                     f"`{m['sha256'][:12]}` | {_with_ci(m['macro'], 'ap', 4)} | {speed} | {rel} |")
    return lines


def _label_tables(r: Mapping[str, Any]) -> List[str]:
    at = r.get("at_precision")
    lines = ["", "## Per label", "", "Precision, recall and false-positive rate at each model's own threshold; "
             "brackets: 95% intervals."]
    for lab in r["labels"]:
        first = r["models"][0]["labels"][lab]
        lines += ["", f"### `{lab}` ({first['positives']} positives, {first['negatives']} negatives)", "",
                  "| model | AP [95% CI] | threshold | precision | recall | false-positive rate | "
                  + (f"recall at precision {at:g} (threshold) | " if at else "") + "photos/s | size |",
                  "|---|---|---:|---|---|---|" + ("---|" if at else "") + "---:|---:|"]
        for m in r["models"]:
            c = m["labels"][lab]
            rap = ""
            if at:
                rap = _with_ci(c, "recall_at_precision") + (f" ({c['threshold_at_precision']:.3f})"
                                                             if c.get("threshold_at_precision") is not None else "")
                rap += " | "
            lines.append(f"| `{m['id']}` | {_with_ci(c, 'ap', 4)} | {c['threshold']:.3f} | "
                         f"{_with_ci(c, 'precision_at_threshold')} | {_with_ci(c, 'recall_at_threshold')} | "
                         f"{_with_ci(c, 'fpr_at_threshold', 4)} | {rap}{_speed(m['speed'])} | "
                         f"{_size(m['size_bytes'])} |")
    return lines


def _pair_tables(r: Mapping[str, Any]) -> List[str]:
    if not r["pairs"]:
        return ["", "## Differences", "", "One model only: there is nothing to compare it with (the figures above "
                "are its evaluation)."]
    mc, at = r["multiple_comparisons"], r.get("at_precision")
    lines = ["", "## Differences (b − a, paired)", "",
             f"{mc['comparisons']} AP comparisons ({mc['pairs']} pair(s) × {mc['labels']} label(s)). At 95%, about "
             f"{mc['expected_by_chance']:g} of them would exclude 0 by chance alone even if no model differed; "
             f"{mc['significant']} do, {mc['significant_holm']} after the Holm adjustment (on bootstrap p-values, "
             "whose resolution is 1/resamples). *real* below means the interval excludes 0.", "",
             "Macro AP (mean over the labels with positives):", "",
             "| a | b | macro ΔAP [95% CI] | real? |", "|---|---|---|---|"]
    for p in r["pairs"]:
        m = p["macro"]
        lines.append(f"| `{p['a_id']}` | `{p['b_id']}` | {_with_ci(m, 'ap_diff', 4, True)} | "
                     f"{'yes' if m['significant'] else 'no'} |")
    for lab in r["labels"]:
        lines += ["", f"### `{lab}`", "",
                  "| a | b | ΔAP [95% CI] | Holm p | Δrecall at own thresholds | Δprecision at own thresholds | "
                  + (f"Δrecall at precision {at:g} | " if at else "") + "flag agreement | real? |",
                  "|---|---|---|---:|---|---|" + ("---|" if at else "") + "---:|---|"]
        for p in r["pairs"]:
            m = p["labels"][lab]
            agree = m.get("flag_agreement")
            lines.append(f"| `{p['a_id']}` | `{p['b_id']}` | {_with_ci(m, 'ap_diff', 4, True)} | "
                         f"{_p(m.get('ap_diff_p_holm'), r['bootstrap']['resamples'])} | "
                         f"{_with_ci(m, 'recall_at_threshold_diff', 3, True)} | "
                         f"{_with_ci(m, 'precision_at_threshold_diff', 3, True)} | "
                         + (f"{_with_ci(m, 'recall_at_precision_diff', 3, True)} | " if at else "")
                         + f"{'–' if agree is None else f'{agree:.1%}'} | "
                         f"{'yes' if m['significant'] else 'no'} |")
        lines.append("")
        lines += [sentence(p, lab, mc["comparisons"]) for p in r["pairs"]]
        moved = [f"`{p['b_id']}` vs `{p['a_id']}`" for p in r["pairs"]
                 if _excludes_zero(p["labels"][lab].get("recall_at_threshold_diff_ci95"))]
        if moved:
            lines += ["", f"Recall at the models' own thresholds differs beyond noise for {', '.join(moved)}; "
                          "their thresholds differ too, so read it with the precision beside it."]
    return lines


def _slice_tables(r: Mapping[str, Any]) -> List[str]:
    lines: List[str] = []
    ids = [m["id"] for m in r["models"]]
    rule = r.get("slice_rule", {})
    for col, values in r.get("slices", {}).items():
        lines += ["", f"## By `{col}`", "",
                  f"AP per model; intervals where a value has at least {rule.get('min_photos', '?')} photos and the "
                  f"label {rule.get('min_positives', '?')} positives."]
        for lab in r["labels"]:
            pair_heads = [f"ΔAP `{p['b_id']}` − `{p['a_id']}`" for p in next(iter(values.values()))["pairs"]] \
                if values else []
            lines += ["", f"### `{lab}` by `{col}`", "",
                      f"| {col} | photos | positives | " + " | ".join(f"AP `{i}`" for i in ids)
                      + "".join(f" | {h}" for h in pair_heads) + " |",
                      "|---|---:|---:|" + "---|" * (len(ids) + len(pair_heads))]
            for value, e in values.items():
                cells = [_with_ci(m["labels"][lab], "ap") for m in e["models"]]
                cells += [_with_ci(p["labels"][lab], "ap_diff", 3, True)
                          + (" **real**" if p["labels"][lab]["significant"] else "") for p in e["pairs"]]
                lines.append(f"| {value or '(empty)'} | {e['n_photos']} | "
                             f"{e['models'][0]['labels'][lab]['positives']} | " + " | ".join(cells) + " |")
        notes = [f"`{value or '(empty)'}`: {e['note']}" for value, e in values.items() if e.get("note")]
        if notes:
            lines += ["", "Too small for intervals: " + "; ".join(notes) + "."]
    return lines


def _robustness_table(r: Mapping[str, Any]) -> List[str]:
    rb = r.get("robustness")
    if not rb:
        return []
    t = rb.get("targets", {})
    lines = ["", "## Under a seller's benign edits", "",
             f"The same photos, edits and seed ({rb['seed']}) for every model; targets: p95 |score change| ≤ "
             f"{t.get('p95_abs_change', '?')}, flip rate ≤ {100 * t.get('flip_rate', 0):.1f}%.", "",
             "| model | edit | label | p95 \\|Δ\\| [95% CI] | flips | flip rate % [95% CI] | target |",
             "|---|---|---|---|---:|---|---|"]
    for mid, block in rb["models"].items():
        if "edits" not in block:
            lines.append(f"| `{mid}` | – | – | {block.get('note', '')} | | | |")
            continue
        for edit, per in block["edits"].items():
            for lab, m in per.items():
                ci = m.get("ci95") or {}
                fr = ci.get("flip_rate")
                lines.append(f"| `{mid}` | {edit} | {lab} | {m['p95_abs_change']:.4f}"
                             f"{_ci(ci.get('p95_abs_change'), 4)} | {m['flips']}/{m['n']} | "
                             f"{100 * m['flip_rate']:.2f}" + (f" [{100 * fr[0]:.2f}, {100 * fr[1]:.2f}]" if fr else "")
                             + f" | {'pass' if m['meets_target'] else '**fail**'} |")
    return lines


def to_markdown(r: Mapping[str, Any]) -> str:
    lines = _header(r) + _models_table(r) + _label_tables(r) + _pair_tables(r) + _slice_tables(r) \
        + _robustness_table(r)
    plots = r.get("plots") or {}
    if plots.get("files"):
        lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in plots["files"]]
    elif plots.get("skipped"):
        lines += ["", f"Plots skipped: {plots['skipped']}."]
    check = r.get("interval_check") or {}
    if check.get("outside"):
        lines += ["", f"**{len(check['outside'])} of {check['checked']} intervals do not contain their own "
                      "estimate** (a percentile interval can miss it on a skewed statistic; reported as computed):"]
        lines += [f"- {o['where']}: {o['value']:.4f} outside [{o['ci95'][0]:.4f}, {o['ci95'][1]:.4f}]"
                  for o in check["outside"][:20]]
    elif check:
        lines += ["", f"All {check['checked']} intervals contain their own estimate."]
    dropped = r["dropped"]["photos"]
    if dropped:
        lines += ["", "Dropped photos (first 20):", ""] + [
            f"- `{d['image']}`: " + "; ".join(f"{k}: {v}" for k, v in d["errors"].items()) for d in dropped[:20]]
    return "\n".join(lines) + "\n"


# ---- plots -----------------------------------------------------------------------------------------------------

def write_plots(r: Mapping[str, Any], y: np.ndarray, scores: Sequence[np.ndarray], out: Path) -> Dict[str, Any]:
    """pr_curves.png, forest_ap.png and, with two models or more, forest_diff.png; ``{"files": [...]}``, or
    ``{"skipped": why}`` without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return {"skipped": "matplotlib is not installed (pip install 'wildlife-vision[eval]')"}
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = ["pr_curves.png", "forest_ap.png"]
    _pr_curves(plt, r, y, scores, out / files[0])
    _forest_ap(plt, r, out / files[1])
    if r["pairs"]:
        files.append("forest_diff.png")
        _forest_diff(plt, r, out / files[2])
    return {"files": files}


def _pr_curves(plt: Any, r: Mapping[str, Any], y: np.ndarray, scores: Sequence[np.ndarray], path: Path) -> None:
    labels = r["labels"]
    cols = min(3, len(labels))
    rows = -(-len(labels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.0 * rows), dpi=100, squeeze=False)
    for k, lab in enumerate(labels):
        ax = axes[k // cols][k % cols]
        j = labels.index(lab)
        if not y[:, j].any():
            ax.text(0.5, 0.5, "no positives", ha="center", va="center")
        low = 1.0  # the lowest precision before the last 2% of recall: the y axis starts near it
        for m, s in zip(r["models"], scores):
            if not y[:, j].any():
                break
            p, rec, _ = precision_recall_curve(y[:, j], s[:, j])
            low = min(low, float(p[rec <= 0.98].min()) if (rec <= 0.98).any() else 0.0)
            c = m["labels"][lab]
            line, = ax.step(np.r_[0.0, rec], np.r_[1.0, p], where="post",
                            label=f"{m['id']} (AP {c['ap']:.3f})")
            if c["recall_at_threshold"] is not None and c["precision_at_threshold"] is not None:
                ax.plot([c["recall_at_threshold"]], [c["precision_at_threshold"]], "o", color=line.get_color())
        if r.get("at_precision"):
            ax.axhline(r["at_precision"], color="grey", lw=0.8, ls=":")
        ax.set_title(f"{lab} ({int(y[:, j].sum())} positives)")
        ax.set_xlim(0, 1.01)
        bottom = np.floor((low - 0.05) * 20) / 20
        ax.set_ylim(bottom if bottom >= 0.5 else 0.0, 1.005 if bottom >= 0.5 else 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower left", fontsize=7)
    for k in range(len(labels), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle(f"Precision-recall on {r['split']} ({r['n_photos']} photos); dot: each model's own threshold",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _forest(plt: Any, rows: List[Dict[str, Any]], title: str, xlabel: str, path: Path, zero: bool) -> None:
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(rows) + 1.4), dpi=100)
    for k, row in enumerate(rows):
        yk = len(rows) - 1 - k
        v, ci = row["value"], row["ci"]
        if v is None:
            continue
        if ci:
            ax.plot(ci, [yk, yk], color=row["color"], lw=2)
        ax.plot([v], [yk], "o", color=row["color"])
    if zero:
        ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(rows)), [row["name"] for row in reversed(rows)], fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _forest_ap(plt: Any, r: Mapping[str, Any], path: Path) -> None:
    colors = [f"C{i % 10}" for i in range(len(r["models"]))]
    rows = [{"name": f"{lab} · {m['id']}", "value": m["labels"][lab]["ap"], "ci": m["labels"][lab]["ap_ci95"],
             "color": colors[i]} for lab in r["labels"] for i, m in enumerate(r["models"])]
    _forest(plt, rows, "AP per label and model, 95% bootstrap intervals", "average precision", path, zero=False)


def _forest_diff(plt: Any, r: Mapping[str, Any], path: Path) -> None:
    rows = [{"name": f"{lab} · {p['b_id']} − {p['a_id']}", "value": p["labels"][lab]["ap_diff"],
             "ci": p["labels"][lab]["ap_diff_ci95"], "color": "C3" if p["labels"][lab]["significant"] else "C0"}
            for lab in r["labels"] for p in r["pairs"]]
    _forest(plt, rows, "AP difference b − a, paired 95% intervals (red: excludes 0)", "ΔAP", path, zero=True)


__all__ = ["to_markdown", "write_plots", "sentence"]
