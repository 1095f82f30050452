"""Active learning, simulated: does picking photos with `select_for_review` beat picking them at random?

    python benchmarks/active_learning.py --base runs/lc/base-live_animal.onnx [--label ivory] [--start 30]
        [--per-round 50] [--rounds 8] [--seeds 100,101,102,103,104] [--pool-prevalence P]
        [--output docs/results/active-learning]

On the frozen split's train rows (the unlabelled pool; their labels play the reviewer), starting from ``--start``
photos drawn at random, each round fits the head `adapt` fits (``fit_heads``) on what is labelled, sets its
threshold on val for precision 0.95 (as `adapt` does), and has the reviewer label ``--per-round`` more photos,
chosen either by ``select_for_review`` (uncertainty near the threshold, then diversity in embedding space) or at
random. ``select_for_review`` runs with its defaults (uncertainty around the head's decision boundary, then one
k-means medoid per cluster), which were chosen on the val split's AP with other seeds (0-3); ``--strategy
threshold-kcenter`` adds the first version (uncertainty around the threshold, then farthest-first) for
comparison. ``--pool-prevalence P`` keeps every negative of the pool and only enough positives (drawn per seed)
for prevalence P, as on a platform where positives are rare. Reported after each round: val and test AP (and
test recall at the val threshold) against labels spent, for every strategy and seed. Uses the base model's
cached embeddings (``benchmarks/learning_curve.py`` makes them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--data", default=str(REPO / "datasets" / "wildtrade-v2.csv"))
    ap.add_argument("--label", default="ivory")
    ap.add_argument("--start", type=int, default=30)
    ap.add_argument("--per-round", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seeds", default="100,101,102,103,104", help="comma-separated seeds (0-3 chose the defaults)")
    ap.add_argument("--pool-prevalence", type=float, default=None, metavar="P",
                    help="subsample the pool's positives to this prevalence (default: the split as it is)")
    ap.add_argument("--strategy", action="append", default=None, choices=("select", "random", "threshold-kcenter"),
                    help="strategies to run (default: select and random)")
    ap.add_argument("--target-precision", type=float, default=0.95)
    ap.add_argument("--output", default=str(REPO / "docs" / "results" / "active-learning"))
    args = ap.parse_args(argv)

    import wildlife_vision as wv
    from learning_curve import embed_split
    from wildlife_vision.adapt.heads import fit_heads, sigmoid
    from wildlife_vision.data.manifest import atomic_write_text, file_sha256, read_manifest, targets_for
    from wildlife_vision.data.select import random_pick, select_for_review
    from wildlife_vision.evaluation.calibrate import operating_points
    from wildlife_vision.evaluation.evaluate import select_split
    from wildlife_vision.evaluation.metrics import average_precision

    base = wv.load_model(args.base)
    man = read_manifest(args.data, labels=[args.label], check_images=False, for_training=False)
    split = {s: select_split(man.samples, s) for s in ("train", "val", "test")}
    sha = file_sha256(Path(args.base))[:12]
    x = {s: embed_split(base, v, REPO / "runs" / "lc" / f"emb-{sha}-{s}.npz") for s, v in split.items()}
    y = {s: targets_for(v, [args.label])[:, 0].astype(int) for s, v in split.items()}
    seeds = [int(v) for v in str(args.seeds).split(",") if v.strip()]
    strategies = args.strategy or ["select", "random"]
    full_x, full_y = x["train"], y["train"]
    rows = []
    for seed in seeds:
        if args.pool_prevalence:  # every negative, positives subsampled to the prevalence (drawn per seed)
            r0 = np.random.default_rng(1000 + seed)
            pos, neg = np.flatnonzero(full_y == 1), np.flatnonzero(full_y == 0)
            n_pos = int(round(args.pool_prevalence * len(neg) / (1 - args.pool_prevalence)))
            keep = np.sort(np.concatenate([neg, r0.choice(pos, size=min(n_pos, len(pos)), replace=False)]))
            x["train"], y["train"] = full_x[keep], full_y[keep]
        for strategy in strategies:
            rng = np.random.default_rng(seed)
            labelled = np.zeros(len(y["train"]), dtype=bool)
            labelled[rng.choice(len(labelled), size=args.start, replace=False)] = True
            for r in range(args.rounds + 1):
                idx = np.flatnonzero(labelled)
                yl = y["train"][idx]
                if yl.min() == yl.max():  # no head without both classes: spend the round at random
                    ap_test = ap_val = rec = thr = head = None
                else:
                    (head,) = fit_heads(x["train"][idx], yl[:, None], [args.label], seed=seed)
                    s_val = sigmoid(head.logits(x["val"]))[:, None].astype(np.float32)
                    op = operating_points(y["val"][:, None], s_val, [args.label], args.target_precision,
                                          split="val", resamples=0)
                    thr = op["thresholds"].get(args.label) if args.label not in op["unmet"] else None
                    s_test = sigmoid(head.logits(x["test"]))
                    ap_test = float(average_precision(y["test"], s_test))
                    ap_val = float(average_precision(y["val"], s_val[:, 0]))
                    rec = (float(((s_test >= thr) & (y["test"] == 1)).sum() / max(1, y["test"].sum()))
                           if thr is not None else None)
                rows.append({"seed": seed, "strategy": strategy, "round": r, "labels": int(labelled.sum()),
                             "positives": int(yl.sum()), "val_ap": ap_val, "test_ap": ap_test, "test_recall": rec,
                             "threshold": thr})
                print(f"seed {seed} {strategy:6s} round {r}: {labelled.sum():4d} labels ({yl.sum():3d} positive), "
                      f"test AP {ap_test if ap_test is None else round(ap_test, 3)}", flush=True)
                if r == args.rounds:
                    break
                if strategy != "random" and head is not None:
                    s_pool = sigmoid(head.logits(x["train"]))
                    kw = {"around": "threshold", "diversity": "kcenter"} if strategy == "threshold-kcenter" else {}
                    pick = select_for_review(s_pool, thr if thr is not None else 0.5, x["train"], args.per_round,
                                             exclude=labelled, labelled=x["train"][idx], seed=seed + r, **kw)
                else:
                    pick = random_pick(len(labelled), args.per_round, labelled, rng)
                labelled[pick] = True
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    result = {"schema": "wildlife-vision/active-learning/v1", "label": args.label, "base_model": args.base,
              "base_model_sha256": file_sha256(Path(args.base)), "manifest_sha256": man.sha256,
              "pool": "train split" + (f", positives subsampled to prevalence {args.pool_prevalence}"
                                       if args.pool_prevalence else ""),
              "pool_size": int(len(y["train"])), "pool_positives": int(y["train"].sum()),
              "pool_prevalence": args.pool_prevalence, "strategies": strategies,
              "selection_defaults": "around='boundary', diversity='kmeans' (chosen on val AP, seeds 0-3)",
              "start": args.start, "per_round": args.per_round, "rounds": args.rounds, "seeds": seeds,
              "target_precision": args.target_precision, "rows": rows}
    result["summary"] = summarise(rows, strategies, args.rounds)
    atomic_write_text(out / "simulation.json", json.dumps(result, indent=2))
    for strategy, block in result["summary"].items():
        m = block["mean_over_rounds"]
        print(f"{strategy} - random, test AP averaged over rounds 1-{args.rounds}: {m['diff']:+.4f} "
              f"[{m['ci95'][0]:+.4f}, {m['ci95'][1]:+.4f}] over {len(seeds)} seeds")
    plot(result, out / "simulation.png")
    print(f"wrote {out / 'simulation.json'}")
    return 0


def summarise(rows, strategies, rounds: int, resamples: int = 10000):
    """Each strategy against random, paired by seed (same start, same pool): the mean test-AP difference per round
    and averaged over rounds 1..rounds, with a 95% percentile interval from resampling the seeds."""
    rng = np.random.default_rng(0)
    ap = {(r["strategy"], r["seed"], r["round"]): r["test_ap"] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    out = {}
    for strategy in strategies:
        if strategy == "random":
            continue
        diffs = np.full((len(seeds), rounds), np.nan)
        for i, sd in enumerate(seeds):
            for r in range(1, rounds + 1):
                a, b = ap.get((strategy, sd, r)), ap.get(("random", sd, r))
                if a is not None and b is not None:
                    diffs[i, r - 1] = a - b
        draws = rng.integers(0, len(seeds), size=(resamples, len(seeds)))

        def ci(v):
            v = v[np.isfinite(v)]
            if not len(v):
                return [None, None]
            boot = np.nanmean(v[rng.integers(0, len(v), size=(resamples, len(v)))], axis=1)
            return [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))]

        per_seed = np.nanmean(diffs, axis=1)
        boot = np.nanmean(per_seed[draws], axis=1)
        out[strategy] = {
            "per_round": [{"round": r, "labels": next(q["labels"] for q in rows if q["round"] == r),
                           "diff": float(np.nanmean(diffs[:, r - 1])), "ci95": ci(diffs[:, r - 1]),
                           "seeds_better": int(np.sum(diffs[:, r - 1] > 0))} for r in range(1, rounds + 1)],
            "mean_over_rounds": {"diff": float(np.nanmean(per_seed)),
                                 "ci95": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
                                 "seeds_better": int(np.sum(per_seed > 0)), "seeds": len(seeds)},
            "interval": "95% percentile bootstrap over seeds (paired: same start and pool per seed)"}
    return out


def plot(result, path: Path) -> None:
    from learning_curve import mean_band

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    names = {"select": "select_for_review (boundary + k-means)", "random": "random",
             "threshold-kcenter": "first version (threshold + farthest-first)"}
    colours = {"select": "tab:green", "random": "tab:grey", "threshold-kcenter": "tab:orange"}
    for strategy in result.get("strategies", ["select", "random"]):
        colour, name = colours[strategy], names[strategy]
        rr = [r for r in result["rows"] if r["strategy"] == strategy and r["test_ap"] is not None]
        mean_band(ax, rr, "labels", "test_ap", colour, f"{name}: mean of {result['seeds']} seeds (band: min-max)")
    ax.set_xlabel("labels spent (photos a reviewer labelled)")
    ax.set_ylabel("test AP")
    ax.set_title(f"'{result['label']}' from a pool of {result['pool_size']} unlabelled photos "
                 f"({result['pool_positives']} positive)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
