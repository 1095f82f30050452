"""Score changes under an edit, on the model's own scores and on temperature-calibrated ones.

A model can pass `robustness`'s p95 |score change| target by being under-confident: squeeze every logit towards 0
and every score change shrinks with it, while no decision is any more stable (flips do not move under a monotone
map). This script fits one temperature per label on the split's original scores (the same photos, by negative
log-likelihood: :func:`wildlife_vision.evaluation.probability.fit_temperature`) and reports the p95 |change| on both
scales, with each scale's ECE. Compare models on the calibrated column.

    python benchmarks/robustness_calibrated.py exported_models/wildtrade-lite0-v4.onnx --split val --edit jpeg

Edits and their parameters are `robustness`'s own (:func:`wildlife_vision.evaluation.robustness.apply_edit`, seed 0,
keyed by the photo's sha256), so the raw p95 equals `wildlife-vision robustness`'s figure for the same split.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--data", type=Path, default=Path("datasets/wildtrade-v2.csv"))
    ap.add_argument("--split", default="val")
    ap.add_argument("--edit", default="jpeg")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    import wildlife_vision as wv
    from wildlife_vision.data.manifest import read_manifest, targets_for
    from wildlife_vision.evaluation.probability import ece, fit_temperature, logit
    from wildlife_vision.evaluation.robustness import apply_edit
    from wildlife_vision.preprocess import load_image

    model = wv.load_model(args.model)
    labels = list(model.metadata.labels)
    samples = [s for s in read_manifest(args.data, labels=labels, check_images=False).samples if s.split == args.split]
    if not samples:
        print(f"no rows in split {args.split!r} of {args.data}", file=sys.stderr)
        return 2
    originals, edited = [], []
    for s in samples:
        data = Path(s.path).read_bytes()
        img = load_image(data, model.metadata.preprocess).convert("RGB")
        originals.append(img)
        edited.append(apply_edit(img, args.edit, args.seed, hashlib.sha256(data).hexdigest())[0])

    def scores(images):
        out = []
        for k in range(0, len(images), 32):
            out += [[p.scores[lab] for lab in labels] for p in model.predict(images[k:k + 32])]
        return np.asarray(out, dtype=np.float64)

    a, b, y = scores(originals), scores(edited), targets_for(samples, labels)
    rows = {}
    for j, lab in enumerate(labels):
        t = fit_temperature(y[:, j], a[:, j])["temperature"]
        cal = lambda s: 1.0 / (1.0 + np.exp(-logit(s) / t))  # noqa: E731
        rows[lab] = {"temperature": t, "p95_raw": float(np.quantile(np.abs(b[:, j] - a[:, j]), 0.95)),
                     "p95_calibrated": float(np.quantile(np.abs(cal(b[:, j]) - cal(a[:, j])), 0.95)),
                     "ece_raw": ece(y[:, j], a[:, j]), "ece_calibrated": ece(y[:, j], cal(a[:, j]))}
        r = rows[lab]
        print(f"{lab:12s} T {t:.3f}  p95 |change| raw {r['p95_raw']:.4f}  calibrated {r['p95_calibrated']:.4f}  "
              f"ECE raw {r['ece_raw']:.4f}  calibrated {r['ece_calibrated']:.4f}")
    if args.json:
        args.json.write_text(json.dumps({"schema_version": "wildlife-vision/robustness-calibrated/v1",
                                         "model": str(args.model), "split": args.split, "edit": args.edit,
                                         "n_images": len(samples), "per_class": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
