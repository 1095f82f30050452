"""How many photos does a new class need? A learning curve for `adapt`, on a concept the embedding never saw.

    python benchmarks/learning_curve.py --base runs/lc/base-live_animal.onnx [--label ivory]
        [--ks 10,25,50,100,250,all] [--draws 5] [--neg-ratio 3] [--reference MODEL.onnx ...]
        [--output docs/results/learning-curve]

The base model was trained **without** ``--label`` (e.g. on ``live_animal`` only), so its embedding never learned
ivory. For each k, ``--draws`` times, k positives of the label are drawn from the manifest's train rows, with
``--neg-ratio`` x k negatives, two ways:

- ``random``: negatives drawn from all train negatives;
- ``lookalike``: half of them from the look-alikes (``--lookalike-source``: the museum's non-ivory objects), half
  from the rest;

and a head is fitted exactly as ``wildlife-vision adapt`` fits it (``wildlife_vision.adapt.heads.fit_heads``: C
by grouped CV on those train rows only). Its threshold is set on the whole val split for ``--target-precision``
(``operating_points``, as ``adapt`` and ``calibrate`` do), and it is reported on the **test** split: AP with a 95%
bootstrap interval over groups, and precision and recall at that threshold. ``all`` uses every train positive
and negative (one draw). ``--reference`` models (full fine-tunes that saw the label) are scored on the same test
photos for comparison. Embeddings are computed once per split and cached in ``runs/lc/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def embed_split(model, samples, cache: Path) -> np.ndarray:
    if cache.exists():
        return np.load(cache)["x"]
    from wildlife_vision.progress import Progress

    prog = Progress(len(samples), f"embed {cache.stem}", unit="photo")
    rows = []
    for e in model.embed_iter([s.path for s in samples], workers=2):
        if e.vector is None:
            raise SystemExit(f"cannot embed {e.input}: {e.error}")
        rows.append(e.vector)
        prog.update(1)
    prog.close()
    x = np.stack(rows).astype(np.float32)
    np.savez_compressed(cache, x=x)
    return x


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="a model trained without --label (its embedding output is used)")
    ap.add_argument("--data", default=str(REPO / "datasets" / "wildtrade-v2.csv"))
    ap.add_argument("--label", default="ivory")
    ap.add_argument("--ks", default="10,25,50,100,250,all")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--neg-ratio", type=float, default=3.0)
    ap.add_argument("--lookalike-source", default="met-museum")
    ap.add_argument("--target-precision", type=float, default=0.95)
    ap.add_argument("--resamples", type=int, default=500)
    ap.add_argument("--reference", nargs="*", default=[], help="full fine-tunes to compare with (ONNX)")
    ap.add_argument("--output", default=str(REPO / "docs" / "results" / "learning-curve"))
    args = ap.parse_args(argv)

    import wildlife_vision as wv
    from wildlife_vision.adapt.heads import fit_heads, sigmoid
    from wildlife_vision.data.manifest import atomic_write_text, file_sha256, read_manifest, targets_for
    from wildlife_vision.evaluation.bootstrap import interval, resample_indices
    from wildlife_vision.evaluation.calibrate import operating_points
    from wildlife_vision.evaluation.evaluate import group_ids, score_onnx, select_split
    from wildlife_vision.evaluation.metrics import average_precision

    base = wv.load_model(args.base)
    if args.label in base.labels:
        raise SystemExit(f"the base model already has '{args.label}': the curve needs one that never saw it")
    man = read_manifest(args.data, labels=[args.label], check_images=False, for_training=False)
    split = {s: select_split(man.samples, s) for s in ("train", "val", "test")}
    cache_dir = REPO / "runs" / "lc"
    cache_dir.mkdir(parents=True, exist_ok=True)
    sha = file_sha256(Path(args.base))[:12]
    t0 = time.time()
    x = {s: embed_split(base, v, cache_dir / f"emb-{sha}-{s}.npz") for s, v in split.items()}
    embed_seconds = time.time() - t0
    y = {s: targets_for(v, [args.label])[:, 0].astype(int) for s, v in split.items()}
    g = {s: group_ids(v) for s, v in split.items()}
    src = np.array([s.extra.get("source", "") for s in split["train"]])
    pos = np.flatnonzero(y["train"] == 1)
    neg = np.flatnonzero(y["train"] == 0)
    look = np.flatnonzero((y["train"] == 0) & (src == args.lookalike_source))
    other = np.flatnonzero((y["train"] == 0) & (src != args.lookalike_source))
    test_draws = resample_indices(len(y["test"]), g["test"], args.resamples, 0)

    def evaluate(head) -> Dict[str, Any]:
        s_val = sigmoid(head.logits(x["val"]))[:, None].astype(np.float32)
        op = operating_points(y["val"][:, None], s_val, [args.label], args.target_precision, split="val",
                              resamples=0)
        thr = op["thresholds"].get(args.label) if args.label not in op["unmet"] else None
        s = sigmoid(head.logits(x["test"])).astype(np.float64)
        yt = y["test"]
        out = {"ap": float(average_precision(yt, s)),
               "ap_ci95": interval(lambda idx: average_precision(yt[idx], s[idx]), test_draws),
               "threshold": thr, "C": head.C}
        if thr is not None:
            flag = s >= thr
            out["precision"] = float((flag & (yt == 1)).sum() / max(1, flag.sum()))
            out["recall"] = float((flag & (yt == 1)).sum() / max(1, (yt == 1).sum()))
        return out

    rows = []
    ks = [k.strip() for k in args.ks.split(",")]
    for cond in ("random", "lookalike"):
        for k in ks:
            if k == "all" and cond == "lookalike":
                continue  # every negative: the two ways coincide
            n_draws = 1 if k == "all" else args.draws
            for d in range(n_draws):
                rng = np.random.default_rng(1000 * d + 7)
                if k == "all":
                    p_idx, n_idx = pos, neg
                else:
                    kk = int(k)
                    p_idx = rng.choice(pos, size=min(kk, len(pos)), replace=False)
                    n_neg = int(round(args.neg_ratio * kk))
                    if cond == "random":
                        n_idx = rng.choice(neg, size=min(n_neg, len(neg)), replace=False)
                    else:
                        half = n_neg // 2
                        n_idx = np.concatenate([rng.choice(look, size=min(half, len(look)), replace=False),
                                                rng.choice(other, size=min(n_neg - half, len(other)), replace=False)])
                idx = np.concatenate([p_idx, n_idx])
                t = time.time()
                (head,) = fit_heads(x["train"][idx], y["train"][idx][:, None], [args.label],
                                    groups=[g["train"][i] for i in idx] if g["train"] else None, seed=d)
                res = evaluate(head)
                res.update({"condition": "all" if k == "all" else cond, "k": len(p_idx), "negatives": len(n_idx),
                            "draw": d, "fit_seconds": round(time.time() - t, 2)})
                rows.append(res)
                print(f"{res['condition']:9s} k={res['k']:4d} draw {d}: test AP {res['ap']:.3f} "
                      f"R {res.get('recall', float('nan')):.3f} @P {res.get('precision', float('nan')):.3f} "
                      f"({res['fit_seconds']:.1f} s)", flush=True)
    refs = []
    for path in args.reference:
        m = wv.load_model(path)
        s, kept, _ = score_onnx(m, split["test"], workers=2)
        j = list(m.labels).index(args.label)
        keep = {k.image for k in kept}
        yt = np.array([yy for yy, smp in zip(y["test"], split["test"]) if smp.image in keep])
        sj = s[:, j].astype(np.float64)
        flag = sj >= m.thresholds[args.label]
        refs.append({"model": str(path), "name": m.name, "version": m.version, "ap": float(average_precision(yt, sj)),
                     "ap_ci95": interval(lambda idx: average_precision(yt[idx], sj[idx]),
                                         resample_indices(len(yt), None, args.resamples, 0)),
                     "precision": float((flag & (yt == 1)).sum() / max(1, flag.sum())),
                     "recall": float((flag & (yt == 1)).sum() / max(1, (yt == 1).sum()))})
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    result = {"schema": "wildlife-vision/learning-curve/v1", "label": args.label, "base_model": args.base,
              "base_model_sha256": file_sha256(Path(args.base)), "base_labels": list(base.labels),
              "manifest": args.data, "manifest_sha256": man.sha256, "neg_ratio": args.neg_ratio,
              "lookalike_source": args.lookalike_source, "target_precision": args.target_precision,
              "train_positives": int(len(pos)), "train_negatives": int(len(neg)), "lookalikes": int(len(look)),
              "test_photos": int(len(y["test"])), "test_positives": int(y["test"].sum()),
              "embed_seconds_all_splits": round(embed_seconds, 1), "rows": rows, "references": refs}
    atomic_write_text(out / "curve.json", json.dumps(result, indent=2))
    plot(result, out / "curve.png")
    print(f"wrote {out / 'curve.json'}")
    return 0


def mean_band(ax, rows: List[Dict[str, Any]], x: str, y: str, colour: str, label: str) -> None:
    """Plot the mean of ``y`` over rows sharing ``x`` as a line, and their min-max as a band."""
    xs = sorted({r[x] for r in rows})
    vals = [[r[y] for r in rows if r[x] == v] for v in xs]
    ax.plot(xs, [np.mean(v) for v in vals], "o-", color=colour, label=label)
    ax.fill_between(xs, [min(v) for v in vals], [max(v) for v in vals], color=colour, alpha=0.15)


def plot(result: Dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for cond, colour in (("random", "tab:blue"), ("lookalike", "tab:orange")):
        rows = [r for r in result["rows"] if r["condition"] in (cond, "all")]
        mean_band(ax, rows, "k", "ap", colour, f"adapt, {cond} negatives (mean; band: min-max of draws)")
    for i, ref in enumerate(sorted(result["references"], key=lambda r: r["ap"])):
        ax.axhline(ref["ap"], color="grey", ls="--", lw=1)
        ax.annotate(f"full fine-tune {ref['name']} {ref['version']}: AP {ref['ap']:.3f}", (0.02, ref["ap"]),
                    xycoords=("axes fraction", "data"), fontsize=7, color="dimgrey",
                    va="top" if i == 0 else "bottom")
    ax.set_xscale("log")
    ax.set_xlabel(f"labelled positives of '{result['label']}' (k), {result['neg_ratio']:g}x as many negatives\n"
                  "(the last point: every train photo)", fontsize=8)
    ax.set_ylabel("test AP")
    ax.set_title(f"'{result['label']}' added to a model that never saw it ({result['test_photos']} test photos)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
