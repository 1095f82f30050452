"""Active learning, simulated: does picking photos with `select_for_review` beat picking them at random?

    python benchmarks/active_learning.py --base runs/lc/base-live_animal.onnx [--label ivory] [--start 30]
        [--per-round 50] [--rounds 8] [--seeds 3] [--output docs/results/active-learning]

On the frozen split's train rows (the unlabelled pool; their labels play the reviewer), starting from ``--start``
photos drawn at random, each round fits the head `adapt` fits (``fit_heads``) on what is labelled, sets its
threshold on val for precision 0.95 (as `adapt` does), and has the reviewer label ``--per-round`` more photos,
chosen either by ``select_for_review`` (uncertainty near the threshold, then diversity in embedding space) or at
random. Reported after each round: test AP (and recall at the val threshold) against labels spent, for both
strategies and every seed. Uses the base model's cached embeddings (``benchmarks/learning_curve.py`` makes them).
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
    ap.add_argument("--seeds", type=int, default=3)
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
    rows = []
    for seed in range(args.seeds):
        for strategy in ("select", "random"):
            rng = np.random.default_rng(seed)
            labelled = np.zeros(len(y["train"]), dtype=bool)
            labelled[rng.choice(len(labelled), size=args.start, replace=False)] = True
            for r in range(args.rounds + 1):
                idx = np.flatnonzero(labelled)
                yl = y["train"][idx]
                if yl.min() == yl.max():  # no head without both classes: spend the round at random
                    ap_test, rec, thr = None, None, None
                    head = None
                else:
                    (head,) = fit_heads(x["train"][idx], yl[:, None], [args.label], seed=seed)
                    s_val = sigmoid(head.logits(x["val"]))[:, None].astype(np.float32)
                    op = operating_points(y["val"][:, None], s_val, [args.label], args.target_precision,
                                          split="val", resamples=0)
                    thr = op["thresholds"].get(args.label) if args.label not in op["unmet"] else None
                    s_test = sigmoid(head.logits(x["test"]))
                    ap_test = float(average_precision(y["test"], s_test))
                    rec = (float(((s_test >= thr) & (y["test"] == 1)).sum() / max(1, y["test"].sum()))
                           if thr is not None else None)
                rows.append({"seed": seed, "strategy": strategy, "round": r, "labels": int(labelled.sum()),
                             "positives": int(yl.sum()), "test_ap": ap_test, "test_recall": rec, "threshold": thr})
                print(f"seed {seed} {strategy:6s} round {r}: {labelled.sum():4d} labels ({yl.sum():3d} positive), "
                      f"test AP {ap_test if ap_test is None else round(ap_test, 3)}", flush=True)
                if r == args.rounds:
                    break
                if strategy == "select" and head is not None:
                    s_pool = sigmoid(head.logits(x["train"]))
                    pick = select_for_review(s_pool, thr if thr is not None else 0.5, x["train"], args.per_round,
                                             exclude=labelled, labelled=x["train"][idx])
                else:
                    pick = random_pick(len(labelled), args.per_round, labelled, rng)
                labelled[pick] = True
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    result = {"schema": "wildlife-vision/active-learning/v1", "label": args.label, "base_model": args.base,
              "base_model_sha256": file_sha256(Path(args.base)), "manifest_sha256": man.sha256,
              "pool": "train split", "pool_size": int(len(y["train"])), "pool_positives": int(y["train"].sum()),
              "start": args.start, "per_round": args.per_round, "rounds": args.rounds, "seeds": args.seeds,
              "target_precision": args.target_precision, "rows": rows}
    atomic_write_text(out / "simulation.json", json.dumps(result, indent=2))
    plot(result, out / "simulation.png")
    print(f"wrote {out / 'simulation.json'}")
    return 0


def plot(result, path: Path) -> None:
    from learning_curve import mean_band

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for strategy, colour in (("select", "tab:green"), ("random", "tab:grey")):
        rr = [r for r in result["rows"] if r["strategy"] == strategy and r["test_ap"] is not None]
        name = "select_for_review (uncertainty + diversity)" if strategy == "select" else "random"
        mean_band(ax, rr, "labels", "test_ap", colour, f"{name}: mean of {result['seeds']} seeds (band: min-max)")
    ax.set_xlabel("labels spent (photos a reviewer labelled)")
    ax.set_ylabel("test AP")
    ax.set_title(f"'{result['label']}' from a pool of {result['pool_size']} unlabelled photos", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
