"""Linear-probe baseline: frozen pretrained backbone features + logistic regression, per label.

The shipped model must clearly beat this. Features are the backbone's pooled pre-logits output on the
eval-time preprocessing (`wildlife_vision.preprocess`, the same as inference), from the same offline
ImageNet weights the fine-tuned model starts from. One logistic regression per label is fitted on the
train split (L2 strength chosen by 5-fold cross-validation on train only) and scored on the val split with
the same metrics code as `wildlife-vision evaluate`.

    python benchmarks/linear_probe.py --data ../shared/data/wildtrade-v1/manifest.csv --output runs/linear-probe

Writes OUTPUT/report.json (same per_class/macro layout as evaluate's report) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def extract(model, paths, cfg, batch_size=32):
    import torch
    from wildlife_vision.preprocess import preprocess

    feats = []
    h, w = cfg.input_size
    with torch.inference_mode():
        for i in range(0, len(paths), batch_size):
            chunk = paths[i:i + batch_size]
            batch = np.empty((len(chunk), 3, h, w), np.float32)
            for j, p in enumerate(chunk):
                preprocess(p, cfg, out=batch[j])
            x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
            feats.append(model(x).numpy())
    return np.concatenate(feats)


def fit_logreg(x, y, l2, steps=200):
    import torch

    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
    wgt = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([wgt, b], lr=1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ wgt + b, yt) + l2 * (wgt * wgt).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return wgt.detach().numpy(), float(b.detach())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="manifest CSV with train and val splits")
    ap.add_argument("--model", default="tf_efficientnet_lite0", help="timm backbone")
    ap.add_argument("--pretrained", default="auto", help="as for `wildlife-vision train --pretrained`")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--output", required=True, help="folder for report.json")
    args = ap.parse_args(argv)

    import torch
    from wildlife_vision_train.backbones import create_backbone, preprocess_config_for
    from wildlife_vision.data.manifest import read_manifest
    from wildlife_vision.evaluation.metrics import average_precision, roc_auc

    torch.manual_seed(0)
    manifest = read_manifest(args.data)
    labels = list(manifest.labels)
    model, _ = create_backbone(args.model, num_classes=0, pretrained=args.pretrained)  # pooled features
    model = model.eval().to(memory_format=torch.channels_last)
    cfg = preprocess_config_for(model, args.image_size)
    t0 = time.time()
    split = {s: manifest.split(s) for s in ("train", "val")}
    x = {s: extract(model, [str(v.path) for v in split[s]], cfg) for s in split}
    y = {s: np.array([[lab in v.labels for lab in labels] for v in split[s]], dtype=np.float32) for s in split}
    t_feat = time.time() - t0
    mu, sd = x["train"].mean(0), x["train"].std(0) + 1e-6
    xs = {s: ((x[s] - mu) / sd).astype(np.float32) for s in x}
    rng = np.random.default_rng(0)
    folds = rng.integers(0, 5, len(xs["train"]))
    report = {"schema_version": 1, "kind": "linear_probe", "backbone": args.model, "split": "val",
              "n_images": len(xs["val"]), "labels": labels, "per_class": {}, "feature_seconds": round(t_feat, 1)}
    for k, lab in enumerate(labels):
        best = None
        for l2 in (1e-4, 1e-3, 1e-2, 1e-1):
            aps = []
            for f in range(5):
                tr, va = folds != f, folds == f
                w_, b_ = fit_logreg(xs["train"][tr], y["train"][tr, k], l2)
                aps.append(average_precision(y["train"][va, k], xs["train"][va] @ w_ + b_))
            score = float(np.nanmean(aps))
            if best is None or score > best[0]:
                best = (score, l2)
        w_, b_ = fit_logreg(xs["train"], y["train"][:, k], best[1])
        s = xs["val"] @ w_ + b_
        report["per_class"][lab] = {"ap": average_precision(y["val"][:, k], s), "roc_auc": roc_auc(y["val"][:, k], s),
                                    "support": int(y["val"][:, k].sum()), "l2": best[1], "cv_ap": best[0]}
    report["macro"] = {"ap": float(np.mean([v["ap"] for v in report["per_class"].values()]))}
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"linear probe on frozen {args.model} features ({len(xs['train'])} train / {len(xs['val'])} val photos, "
          f"features in {t_feat:.0f} s)")
    for lab, v in report["per_class"].items():
        print(f"  {lab:14s} val AP {v['ap']:.4f}  ROC-AUC {v['roc_auc']:.4f}  (L2 {v['l2']:g}, train CV AP {v['cv_ap']:.4f})")
    print(f"  macro AP {report['macro']['ap']:.4f}  -> {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
