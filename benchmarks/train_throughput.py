#!/usr/bin/env python
"""Training photos/s on this machine: a plain torch loop with default settings vs `wildlife-vision train`'s.

    python benchmarks/train_throughput.py                     # real photos from ../shared if there, else generated
    python benchmarks/train_throughput.py --steps 20 --warmup 3 --batch-size 32 --json out.json
    python benchmarks/train_throughput.py --variants ours --channels-last off --workers 0   # ours, settings off

(a) plain: timm tf_efficientnet_lite0, PIL decode + torchvision RandomResizedCrop/flip/ToTensor/Normalize in the
    main process (DataLoader num_workers=0), NCHW float32, AdamW, BCE, torch's default threads;
(b) ours: the data path and step of `wildlife-vision train` with its defaults (wildlife_vision decode + albumentations
    in DataLoader worker processes, channels-last, malloc keeping freed memory (training/runtime.py), float32,
    AdamW with decay groups, warmup-cosine, gradient clipping); every step is training/step.py's TrainStep, the
    one `train` runs.

Both train the same model at the same size and batch size on the same training photos; each runs in a fresh
process, and photos/s counts only the timed steps after the warm-up steps (data loading included). The same
comparison is part of `wildlife-vision benchmark` (its training target); see docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wildlife_vision_train.benchmark import find_photos, machine_info, train_throughput  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="manifest CSV or folder (default: ../shared/data/wildtrade-v1, else generated)")
    p.add_argument("--model", default="tf_efficientnet_lite0", help="timm model (default tf_efficientnet_lite0)")
    p.add_argument("--size", type=int, default=224, help="training image size (default 224)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=12, help="timed steps per variant (default 12)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (default 3)")
    p.add_argument("--variants", nargs="+", default=["plain", "ours"], choices=["plain", "ours"])
    p.add_argument("--workers", type=int, default=None, help="ours: DataLoader workers (default: the train default)")
    p.add_argument("--amp", choices=["auto", "on", "off"], default="auto",
                   help="ours: bfloat16 autocast on CPU (auto = the train default: off; 'on' to measure it)")
    p.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto",
                   help="ours: channels-last (auto = the train default: on for CPU)")
    p.add_argument("--keep-freed-memory", choices=["auto", "on", "off"], default="auto",
                   help="ours: glibc malloc keeps freed memory for reuse (auto = the train default: on for CPU)")
    p.add_argument("--json", help="write the result here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wv-train-bench-") as tmp:
        n = args.batch_size * (args.steps + args.warmup + 1)
        photos = find_photos(args.data, 1, [], Path(tmp), n_train=n)
        if len(photos.train_paths) < n:  # a folder or generated photos: use what is there
            photos.train_paths = photos.train_paths or photos.paths
        setting = {"auto": None, "on": True, "off": False}
        overrides = {key: setting[getattr(args, key)] for key in ("amp", "channels_last", "keep_freed_memory")}
        result = train_throughput(photos, Path(tmp), backbone=args.model, image_size=args.size,
                                  batch_size=args.batch_size, steps=args.steps, warmup=args.warmup,
                                  variants=args.variants, workers=args.workers, overrides=overrides)
    m = machine_info()
    result["machine"] = {k: m[k] for k in ("cpu", "cores", "ghz", "simd", "versions")}
    print(f"training throughput, {args.model} at {args.size} px, batch {args.batch_size}, {args.steps} timed steps "
          f"after {args.warmup} warm-up, photos from {photos.source} ({m['cpu']}, {m['cores']} cores)")
    for v, r in result["variants"].items():
        if "error" in r:
            print(f"  {v:<5}: {r['error']}")
            continue
        s = r["settings"]
        print(f"  {v:<5}: {r['photos_per_s']:6.1f} photos/s  (p50 step {r['step_ms_p50']:.0f} ms, main-process peak RSS "
              f"{r['peak_rss_mb']:.0f} MB)  {'; '.join(f'{k} {val}' for k, val in s.items())}")
    if "ratio_ours_vs_plain" in result:
        ok = result["ratio_ours_vs_plain"] >= 2.0
        print(f"  ours / plain: {result['ratio_ours_vs_plain']:.2f}x  [{'PASS' if ok else 'FAIL'}: target >= 2]")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
