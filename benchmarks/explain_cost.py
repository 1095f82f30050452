"""What heatmaps cost: photos/s of scoring with and without them, measured in one run on the same photos.

    python benchmarks/explain_cost.py [--photos DIR] [--limit 300] [--model M.onnx] [--json OUT.json]

Rows (the same photos, alternating repeats; the best of ``--repeats`` for each):
- ``library predict``: ``Model.predict`` (the scores only; onnxruntime computes no heatmap);
- ``library explain``: ``Model.explain`` (scores and the ``cam`` output in one pass; maps made lazily);
- ``predict CLI`` and ``predict CLI --explain DIR``: the command end to end, the second also writing a JPEG
  overlay for each flagged or review-band row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import wildlife_vision as wv


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", default=str(Path(__file__).resolve().parents[2] / "shared/data/wildtrade-v1/images"))
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--model", default=None)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    paths = sorted(str(p) for p in Path(args.photos).rglob("*.jpg"))[:args.limit]
    if not paths:
        print(f"no photos under {args.photos}", file=sys.stderr)
        return 2
    model = wv.load_model(args.model)
    model.predict(paths[:32], workers=args.workers)
    best = {}

    def timed(name, fn):
        t = time.perf_counter()
        fn()
        best[name] = max(best.get(name, 0.0), len(paths) / (time.perf_counter() - t))

    with tempfile.TemporaryDirectory() as tmp:
        base = [sys.executable, "-m", "wildlife_vision", "predict", *paths, "--no-progress", "--overwrite",
                "--workers", str(args.workers)]
        if args.model:
            base += ["--model", args.model]
        for _ in range(args.repeats):
            timed("library predict", lambda: model.predict(paths, workers=args.workers))
            timed("library explain", lambda: model.explain(paths, workers=args.workers))
            timed("predict CLI", lambda: subprocess.run(base + ["--output", f"{tmp}/a.jsonl"], check=True,
                                                        capture_output=True))
            timed("predict CLI --explain", lambda: subprocess.run(
                base + ["--output", f"{tmp}/b.jsonl", "--explain", f"{tmp}/heat"], check=True, capture_output=True))
        n_overlays = len(os.listdir(f"{tmp}/heat"))
    ref = best["library predict"]
    print(f"{len(paths)} photos, {model.name} {model.version}, {os.cpu_count()} CPUs; best of {args.repeats}")
    print("| path | photos/s | vs library predict |\n|---|---|---|")
    for name, v in best.items():
        print(f"| {name} | {v:.1f} | {v / ref:.2f}x |")
    print(f"overlays written by --explain: {n_overlays}")
    if args.json:
        Path(args.json).write_text(json.dumps({"photos": len(paths), "photos_per_s": best, "overlays": n_overlays,
                                               "model": f"{model.name} {model.version}"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
