"""End-to-end photos/s of two or more exported models on the same photos, interleaved in one run (the machines
are shared and noisy: compare the ratio, not the absolute figures).

    python benchmarks/compare_throughput.py exported_models/wildtrade-lite0-v2.onnx \\
        exported_models/wildtrade-lite0-v3.onnx --photos ../shared/data/wildtrade-v1/images --limit 200

Each round scores the same photos (decode, preprocess, session, one Prediction each: what `predict` does) with
every model in turn; the median over rounds is reported, and every model's ratio to the first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--photos", type=Path, required=True, help="a folder of photos (searched recursively)")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--precision", default="fp32", help="the execution profile every model runs (fp32, bf16, int8, "
                                                         "auto; each model's own calibrated operating point)")
    args = ap.parse_args(argv)

    import wildlife_vision as wv
    from wildlife_vision.preprocess import IMAGE_EXTENSIONS

    photos = sorted(str(p) for p in args.photos.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[: args.limit]
    if not photos:
        print(f"no photos under {args.photos}", file=sys.stderr)
        return 2
    models = [wv.load_model(m, precision=args.precision) for m in args.models]
    for m in models:  # warm-up: sessions built, first-run allocations done
        m.predict(photos[: args.batch_size], batch_size=args.batch_size, workers=args.workers)
    times = {str(p): [] for p in args.models}
    for _ in range(args.rounds):
        for path, m in zip(args.models, models):
            t = time.perf_counter()
            preds = m.predict(photos, batch_size=args.batch_size, workers=args.workers)
            times[str(path)].append(time.perf_counter() - t)
            assert all(p.ok for p in preds)
    first = statistics.median(times[str(args.models[0])])
    rows = []
    for path in args.models:
        med = statistics.median(times[str(path)])
        rows.append({"model": str(path), "photos": len(photos), "photos_per_s": len(photos) / med,
                     "ratio_to_first": first / med, "seconds": times[str(path)]})
        print(f"{path}: {len(photos) / med:.1f} photos/s (median of {args.rounds}), {first / med:.3f}x the first")
    if args.json:
        args.json.write_text(json.dumps({"schema_version": "wildlife-vision/throughput-compare/v1",
                                         "precision": args.precision, "rows": rows}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
