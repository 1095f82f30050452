"""Compare two exported models on the test photos neither trained on, with 95% intervals and paired differences.

The shipped wildtrade-lite0-v2 was trained on wildtrade-v1's train split, which the frozen wildtrade-v2 split
(datasets/wildtrade-v2.csv) re-distributes: some of wildtrade-v2's test photos were v2 training photos. A fair
comparison of a model trained on wildtrade-v2 with v2 keeps the test rows that were *not* in wildtrade-v1's train
split (its val rows, and every everyday-v1 photo, which v2 never saw).

    python benchmarks/compare_on_unseen.py --old exported_models/wildtrade-lite0-v2.onnx \\
        --new exported_models/wildtrade-lite0-v3.onnx --output runs/compare-v2-v3

Writes the subset manifest, each model's `wildlife-vision evaluate` report on it, and compare.json / compare.md:
AP per label with intervals for both and the paired bootstrap interval of the AP difference (same resampled
photos, or groups, for both models), and the flag rate on the negatives-only sources at each model's own
thresholds.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def unseen_manifest(manifest: Path, old_train: Path, out: Path) -> int:
    """Rows of ``manifest``'s test split whose photo is not in ``old_train``'s train split -> ``out``."""
    with open(old_train, newline="", encoding="utf-8") as f:
        trained = {Path(r["image"]).name for r in csv.DictReader(f) if r.get("split") == "train"}
    with open(manifest, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        rows = [r for r in reader if r.get("split") == "test" and Path(r["image"]).name not in trained]
    out.parent.mkdir(parents=True, exist_ok=True)
    base = manifest.resolve().parent
    for r in rows:  # paths stay valid from the new folder
        p = Path(r["image"])
        r["image"] = str(p if p.is_absolute() else (base / p).resolve())
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return len(rows)


def evaluate(model: Path, manifest: Path, out: Path) -> dict:
    subprocess.run([sys.executable, "-m", "wildlife_vision", "evaluate", "--model", str(model), "--data",
                    str(manifest), "--split", "test", "--slice-by", "source", "--output", str(out)], check=True)
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def predictions(out: Path, labels) -> tuple:
    """(image -> scores), (image -> targets) and (image -> group) from an evaluate folder's predictions.csv."""
    scores, targets, groups = {}, {}, {}
    with open(out / "predictions.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r.get("error"):
                continue
            scores[r["image"]] = [float(r[f"{lab}_score"]) for lab in labels]
            targets[r["image"]] = [int(r[f"{lab}_true"]) for lab in labels]
            groups[r["image"]] = r.get("group") or f"photo:{r['image']}"
    return scores, targets, groups


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, type=Path)
    ap.add_argument("--new", required=True, type=Path)
    ap.add_argument("--data", type=Path, default=ROOT / "datasets" / "wildtrade-v2.csv")
    ap.add_argument("--old-train", type=Path, default=ROOT.parent / "shared" / "data" / "wildtrade-v1" / "manifest.csv",
                    help="the manifest whose train split the old model was trained on")
    ap.add_argument("--output", type=Path, required=True)
    ap.add_argument("--resamples", type=int, default=2000)
    args = ap.parse_args(argv)

    from wildlife_vision.evaluation.bootstrap import percentile_interval, resample_indices
    from wildlife_vision.evaluation.metrics import average_precision

    subset = args.output / "unseen-test.csv"
    n = unseen_manifest(args.data, args.old_train, subset)
    print(f"{n} test photos that neither model trained on -> {subset}")
    reports = {name: evaluate(m, subset, args.output / name) for name, m in (("old", args.old), ("new", args.new))}
    labels = reports["new"]["labels"]
    (s_old, y, groups), (s_new, _, _) = predictions(args.output / "old", labels), predictions(args.output / "new", labels)
    images = sorted(set(s_old) & set(s_new))
    y = np.array([y[i] for i in images])
    a, b = np.array([s_old[i] for i in images]), np.array([s_new[i] for i in images])
    draws = resample_indices(len(images), [groups[i] for i in images], args.resamples, 0)  # the same for both models
    out = {"schema_version": "wildlife-vision/compare-unseen/v1", "photos": len(images), "split": "test (unseen by both)",
           "old": str(args.old), "new": str(args.new), "per_class": {}}
    lines = [f"# {args.new.name} vs {args.old.name} on {len(images)} test photos neither trained on", "",
             "| label | positives | AP old [95% CI] | AP new [95% CI] | AP new - old [paired 95% CI] |", "|---|---:|---|---|---|"]
    for j, lab in enumerate(labels):
        pos = int(y[:, j].sum())
        if not pos:
            continue
        ap_a, ap_b = average_precision(y[:, j], a[:, j]), average_precision(y[:, j], b[:, j])
        diffs = [average_precision(y[d, j], b[d, j]) - average_precision(y[d, j], a[d, j])
                 for d in draws if y[d, j].any()]
        ci = percentile_interval(np.array(diffs))
        ca = reports["old"]["per_class"][lab]["ci95"]["ap"]
        cb = reports["new"]["per_class"][lab]["ci95"]["ap"]
        out["per_class"][lab] = {"positives": pos, "ap_old": ap_a, "ap_new": ap_b, "ap_old_ci95": ca,
                                 "ap_new_ci95": cb, "ap_diff": ap_b - ap_a, "ap_diff_ci95": list(ci) if ci else None}
        lines.append(f"| `{lab}` | {pos} | {ap_a:.4f} [{ca[0]:.4f}, {ca[1]:.4f}] | {ap_b:.4f} [{cb[0]:.4f}, "
                     f"{cb[1]:.4f}] | {ap_b - ap_a:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}] |")
    lines += ["", "Flag rate on negatives-only sources, each model at its own thresholds:", "",
              "| source | label | old | new |", "|---|---|---|---|"]
    for src, block in sorted((reports["new"].get("negative_sources") or {}).items()):
        old_block = (reports["old"].get("negative_sources") or {}).get(src, {})
        for lab in labels:
            o, nw = old_block.get("per_class", {}).get(lab), block["per_class"][lab]

            def cell(c):
                if not c:
                    return "–"
                ci = c["ci95"]["flag_rate"] or [c["flag_rate"], c["flag_rate"]]
                return f"{c['flag_rate']:.2%} [{ci[0]:.2%}, {ci[1]:.2%}] ({c['flagged']}/{block['n_images']})"
            lines.append(f"| {src} | `{lab}` | {cell(o)} | {cell(nw)} |")
        out.setdefault("negative_sources", {})[src] = {"old": old_block, "new": block}
    (args.output / "compare.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    (args.output / "compare.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
