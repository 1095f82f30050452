"""Manifest statistics: labels per split, unlabelled rows, decode failures, image and file sizes, sources."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Dict, Optional, Sequence

import numpy as np

from wildlife_vision.data.hashing import ScanResult
from wildlife_vision.data.manifest import ManifestTable
from wildlife_vision.data.splits import NONE_LABEL, SPLIT_ORDER

NO_SPLIT = "(no split)"


def _dist(values: Sequence[float]) -> Optional[Dict[str, float]]:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return None
    return {"min": float(v.min()), "median": float(np.median(v)), "p95": float(np.percentile(v, 95)),
            "max": float(v.max()), "mean": float(v.mean())}


def compute_stats(manifest: ManifestTable, scan: Optional[ScanResult] = None) -> Dict[str, Any]:
    """Counts from the manifest, and (with ``scan``) decode failures and size distributions."""
    n = len(manifest)
    splits = manifest.column("split") if "split" in manifest.fieldnames else [""] * n
    splits = [s or NO_SPLIT for s in splits]
    per: Dict[str, Counter] = defaultdict(Counter)
    rows_per_split: Counter = Counter(splits)
    label_sets: Counter = Counter()
    for i in range(n):
        labs = manifest.labels(i)
        per[splits[i]].update(labs or (NONE_LABEL,))
        label_sets[";".join(labs) or NONE_LABEL] += 1
    order = [s for s in SPLIT_ORDER if s in rows_per_split] + sorted(s for s in rows_per_split if s not in SPLIT_ORDER)
    labels = manifest.all_labels()
    out: Dict[str, Any] = {
        "schema": "wildlife-vision/stats/v1",
        "manifest": str(manifest.path) if manifest.path else None,
        "rows": n,
        "columns": list(manifest.fieldnames),
        "splits": {s: rows_per_split[s] for s in order},
        "labels": {lab: {s: per[s][lab] for s in order} | {"total": sum(per[s][lab] for s in order)}
                   for lab in labels + [NONE_LABEL]},
        "rows_without_labels": sum(per[s][NONE_LABEL] for s in order),
        "multi_label_rows": sum(1 for i in range(n) if len(manifest.labels(i)) > 1),
        "label_combinations": dict(label_sets.most_common()),
        "duplicate_paths": sum(c - 1 for c in Counter(r["image"] for r in manifest.rows).values() if c > 1),
    }
    for col in ("source", "seller", "listing"):
        if col in manifest.fieldnames:
            vals = Counter(manifest.column(col))
            out[f"{col}s"] = {"distinct": len(vals), "top": dict(vals.most_common(20))}
    if scan is not None:
        ok = scan.ok
        seen = set()
        failures = []
        for i in range(n):
            if not ok[i] and scan.paths[i] not in seen:
                seen.add(scan.paths[i])
                failures.append({"row": i, "image": manifest.rows[i]["image"], "error": scan.errors[i]})
        first = {}
        for i, p in enumerate(scan.paths):
            first.setdefault(p, i)
        uniq = np.array(sorted(first.values()), dtype=np.int64)
        good = uniq[ok[uniq]]
        w, h = scan.width[good], scan.height[good]
        out["files"] = int(len(uniq))
        out["decode_failures"] = failures
        out["width"] = _dist(w)
        out["height"] = _dist(h)
        out["megapixels"] = _dist(w * h / 1e6)
        out["shorter_side"] = _dist(np.minimum(w, h))
        present = uniq[scan.nbytes[uniq] >= 0]
        out["file_kb"] = _dist(scan.nbytes[present] / 1024.0)
        out["total_mb"] = round(float(scan.nbytes[present].sum()) / 1e6, 3)
        small = int(np.sum(np.minimum(w, h) < 224))
        out["smaller_than_224"] = small
    return out


def format_stats(st: Dict[str, Any]) -> str:
    order = list(st["splits"])
    lines = [f"manifest: {st['manifest']}", f"rows: {st['rows']}" + (f" ({st['files']} files)" if "files" in st else "")]
    w = max([len(x) for x in list(st["labels"]) + ["label"]]) + 2
    lines.append("label".ljust(w) + "".join(f"{s:>12}" for s in order) + f"{'total':>12}")
    lines.append("(rows)".ljust(w) + "".join(f"{st['splits'][s]:>12}" for s in order) + f"{st['rows']:>12}")
    for lab, c in st["labels"].items():
        if c["total"] or lab != NONE_LABEL:
            lines.append(lab.ljust(w) + "".join(f"{c[s]:>12}" for s in order) + f"{c['total']:>12}")
    lines.append(f"rows without labels: {st['rows_without_labels']}; multi-label rows: {st['multi_label_rows']}; "
                 f"rows repeating an earlier path: {st['duplicate_paths']}")
    for col in ("sources", "sellers", "listings"):
        if col in st:
            top = ", ".join(f"{k or '(empty)'}: {v}" for k, v in list(st[col]["top"].items())[:10])
            lines.append(f"{col}: {st[col]['distinct']} distinct ({top})")
    if "decode_failures" in st:
        f = st["decode_failures"]
        lines.append(f"decode failures: {len(f)}")
        for x in f[:20]:
            lines.append(f"  row {x['row']} {x['image']}: {x['error']}")
        if len(f) > 20:
            lines.append(f"  ... {len(f) - 20} more (see --json)")

        def d(name, unit="", fmt="{:.0f}"):
            v = st.get(name)
            if not v:
                return f"{name}: -"
            return (f"{name}: min {fmt.format(v['min'])}{unit}, median {fmt.format(v['median'])}{unit}, "
                    f"p95 {fmt.format(v['p95'])}{unit}, max {fmt.format(v['max'])}{unit}")
        lines += [d("width", " px"), d("height", " px"), d("megapixels", " MP", "{:.2f}"), d("file_kb", " KB", "{:.1f}"),
                  f"total size: {st['total_mb']:.1f} MB; shorter side under 224 px: {st['smaller_than_224']}"]
    return "\n".join(lines)


def write_chart(st: Dict[str, Any], path: str, scan: Optional[ScanResult] = None) -> str:
    """A PNG: rows per label and split (bars), and the shorter-side distribution (histogram) when sizes are known."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from wildlife_vision.exitcodes import MissingExtraError

        raise MissingExtraError("eval", "matplotlib") from None
    order = list(st["splits"])
    labels = [lab for lab, c in st["labels"].items() if c["total"]]
    with_sizes = scan is not None and st.get("shorter_side")
    fig, axes = plt.subplots(1, 2 if with_sizes else 1, figsize=(12 if with_sizes else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    x = np.arange(len(labels))
    width = 0.8 / max(len(order), 1)
    for k, s in enumerate(order):
        vals = [st["labels"][lab][s] for lab in labels]
        bars = ax.bar(x + k * width - 0.4 + width / 2, vals, width, label=s)
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(x, labels, rotation=20, ha="right")
    ax.set_ylabel("rows")
    ax.set_title(f"rows per label and split ({st['rows']} rows)")
    ax.legend()
    if with_sizes:
        ax2 = axes[0][1]
        ok = scan.ok
        shorter = np.minimum(scan.width[ok], scan.height[ok])
        ax2.hist(shorter, bins=40, color="#4c72b0")
        ax2.set_xlabel("shorter side (px)")
        ax2.set_ylabel("images")
        ax2.set_title(f"image size ({len(st.get('decode_failures', []))} failed to decode)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["compute_stats", "format_stats", "write_chart"]
