"""Experiment: mirror canonicalisation in front of a model (no retraining): flip the network input when its
horizontal moment of mean-subtracted intensity is negative. Scores the test split robustness.

    python benchmarks/mirror_canonical.py none|canonical [MODEL.onnx [RESULTS_DIR]]

(from the repository root; default: the shipped v3 and docs/results/wildtrade-lite0-v3)."""
import csv, json, sys, numpy as np
from wildlife_vision.model import load_model
from wildlife_vision.evaluation.robustness import measure_robustness, to_markdown
mode = sys.argv[1]  # none | canonical  (run from the repository root: python benchmarks/mirror_canonical.py canonical)
model_path = sys.argv[2] if len(sys.argv) > 2 else "exported_models/wildtrade-lite0-v3.onnx"
out_dir = sys.argv[3] if len(sys.argv) > 3 else "docs/results/wildtrade-lite0-v3"
m = load_model(model_path)
from wildlife_vision_train.canonical import ramp as moment_weights  # the exported step's own weights
W = m.metadata.preprocess.input_size[1]
ramp = moment_weights(W)
orig = m._prepare
def prep(item, out, keep_photo=0):
    r = orig(item, out, keep_photo)
    if r[0] is None:
        g = out.mean(axis=0)  # (H, W)
        s = float(((g - g.mean()) * ramp[None, :]).sum())
        if s < 0:
            out[...] = out[:, :, ::-1].copy()
    return r
if mode == "canonical":
    m._prepare = prep
rows = [r for r in csv.DictReader(open("datasets/wildtrade-v2.csv")) if r["split"] == "test"]
import os
paths = []
for r in rows:
    p = r["image"]
    paths.append(p if os.path.isabs(p) else os.path.join("datasets", p))
print(len(paths), paths[0], os.path.exists(paths[0]))
res = measure_robustness(m, paths, workers=2, progress=False, seed=0)
json.dump(res, open(f"{out_dir}/experiment-mirror-{mode}-test.json", "w"), indent=1)
print(to_markdown(res))
