#!/usr/bin/env bash
# The prepared GPU check (docs/gpu.md), for a session that is lent a GPU machine: one short script, bounded in time.
#   bash benchmarks/gpu_check.sh [PHOTOS_DIR]    (writes $OUT/gpu_check.txt when $OUT is set, else ./gpu_check.txt)
# 1. what the machine has: GPU, driver, onnxruntime builds and providers, torch and CUDA;
# 2. predict throughput with the shipped default model on CUDA against the CPU in the same run (generated photos
#    when no PHOTOS_DIR; photos/s end to end and model-only), and that CUDA scores match the CPU's to 1e-3;
# 3. a short training run with AMP on generated photos (2 epochs, tiny images), when torch with CUDA is present.
# Every step that cannot run says why and the script goes on.
set -uo pipefail
cd "$(dirname "$0")/.."
REPORT="${OUT:-.}/gpu_check.txt"
PHOTOS="${1:-}"
exec > >(tee "$REPORT") 2>&1
echo "== machine"; date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | head -3
python3 - <<'PY'
import importlib.metadata as md
for d in ("onnxruntime", "onnxruntime-gpu", "torch", "timm"):
    try: print(d, md.version(d))
    except md.PackageNotFoundError: print(d, "not installed")
try:
    import onnxruntime as o; print("providers:", o.get_available_providers())
except Exception as e: print("onnxruntime import failed:", e)
try:
    import torch; print("torch cuda:", torch.cuda.is_available(), torch.version.cuda)
except Exception as e: print("torch:", e)
PY
echo "== predict on CUDA vs CPU"
timeout 300 python3 - "$PHOTOS" <<'PY'
import sys, time, glob, io, numpy as np
from PIL import Image
import wildlife_vision as wv
src = sys.argv[1]
paths = sorted(glob.glob(src + "/**/*.jpg", recursive=True))[:512] if src else []
if not paths:  # generated photos: 512 JPEGs of 640x480 noise with structure
    rng = np.random.default_rng(0); paths = []
    for i in range(512):
        a = (rng.random((480, 640, 3)) * 255).astype(np.uint8); b = io.BytesIO(); Image.fromarray(a).save(b, "JPEG"); paths.append(b.getvalue())
res = {}
for prov in ("cuda", "cpu"):
    m = wv.load_model(providers=[prov], batch_size=64)
    m.predict(paths[:64], workers=8)
    t = time.perf_counter(); preds = m.predict(paths, workers=8); e2e = len(paths) / (time.perf_counter() - t)
    x = np.random.default_rng(1).normal(size=(64, 3, 256, 256)).astype(np.float32); m.run_batch(x)
    t = time.perf_counter(); [m.run_batch(x) for _ in range(8)]; mo = 8 * 64 / (time.perf_counter() - t)
    res[prov] = (m.provider, e2e, mo, np.array([[p.scores[l] for l in m.labels] for p in preds]))
    print(f"{prov}: provider {m.provider}: end to end {e2e:.1f} photos/s, model-only {mo:.1f} photos/s (batch 64)")
d = np.abs(res["cuda"][3] - res["cpu"][3]).max()
print(f"max |score(cuda) - score(cpu)| = {d:.2e}; end-to-end ratio cuda/cpu {res['cuda'][1] / res['cpu'][1]:.2f}")
PY
echo "== short AMP training"
TMP=$(mktemp -d)
timeout 300 python3 - "$TMP" <<'PY' || echo "training check did not run (no torch/timm with CUDA?)"
import sys, csv, numpy as np
from pathlib import Path
from PIL import Image
root = Path(sys.argv[1]); rows = []
rng = np.random.default_rng(0)
for i in range(96):
    lab = "ivory" if i % 2 else ""
    a = np.full((96, 96, 3), 230 if lab else 60, np.uint8) + rng.integers(0, 20, (96, 96, 3)).astype(np.uint8)
    p = root / f"p{i}.jpg"; Image.fromarray(a).save(p)
    rows.append({"image": str(p), "labels": lab, "split": "val" if i % 4 == 0 else "train"})
with open(root / "m.csv", "w", newline="") as f:
    w = csv.DictWriter(f, ["image", "labels", "split"]); w.writeheader(); w.writerows(rows)
from wildlife_vision.cli import main
sys.exit(main(["train", "--data", str(root / "m.csv"), "--labels", "ivory", "--model", "tf_efficientnet_lite0",
               "--pretrained", "none", "--epochs", "2", "--image-size", "96", "--device", "cuda", "--amp",
               "--output", str(root / "run")]))
PY
tail -3 "$TMP"/run/metrics.jsonl 2>/dev/null
echo "== done"
