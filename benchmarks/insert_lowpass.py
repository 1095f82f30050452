"""Insert a fixed Gaussian low-pass in front of an exported model's graph, without retraining (the experiment in
docs/results/v4-followups/lowpass-untrained-val.md that led to `train --input-lowpass`):

    python benchmarks/insert_lowpass.py exported_models/wildtrade-lite0-v4.onnx /tmp/lp0.8.onnx 0.8
    wildlife-vision robustness /tmp/lp0.8.onnx --data datasets/wildtrade-v2.csv --split val --edits jpeg,crop,translate \
        --output /tmp/lp0.8.json

The thresholds stay the input model's. Taps exp(-x^2 / (2 sigma^2)) over [-ceil(2.5 sigma), ceil(2.5 sigma)], edge
padding, one depthwise 2-D Conv.
"""
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

src, dst, sigma = sys.argv[1], sys.argv[2], float(sys.argv[3])
m = onnx.load(src)
g = m.graph
inp = g.input[0].name
r = max(1, int(np.ceil(2.5 * sigma)))
x = np.arange(-r, r + 1, dtype=np.float64)
k1 = np.exp(-x**2 / (2 * sigma**2)); k1 /= k1.sum()
k = np.outer(k1, k1).astype(np.float32)
w = np.zeros((3, 1, 2*r+1, 2*r+1), np.float32); w[:, 0] = k
for n in g.node:
    for i, name in enumerate(n.input):
        if name == inp:
            n.input[i] = "pv_blurred"
pads = numpy_helper.from_array(np.array([0, 0, r, r, 0, 0, r, r], np.int64), "blur_pads")
wt = numpy_helper.from_array(w, "blur_w")
g.initializer.extend([pads, wt])
nodes = [helper.make_node("Pad", [inp, "blur_pads"], ["pv_padded"], mode="edge"),
         helper.make_node("Conv", ["pv_padded", "blur_w"], ["pv_blurred"], group=3)]
for i, n in enumerate(nodes):
    g.node.insert(i, n)
onnx.checker.check_model(m)
onnx.save(m, dst)
print(dst, r)
