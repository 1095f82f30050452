#!/usr/bin/env python
"""How long `wildlife-vision data dedup` takes, measured toward 100k photos; and how well it finds near-copies.

    python benchmarks/dedup_scaling.py                       # real data if ../shared is there, else generated
    python benchmarks/dedup_scaling.py --sizes 10000,30000,100000 --workers 2 --recall 200 --json out.json

1. Fingerprinting throughput (decode in draft mode + sha256 + 11 windows x two pHashes) on the real
   wildtrade-v1 photos (or generated photos), with 1 and ``--workers`` processes, no cache.
2. Pair search (candidates + verification) on synthetic fingerprint sets of each ``--sizes``: the
   real fingerprints resampled with random bit flips (so bit statistics stay realistic), because there
   are not 100k real photos here.
3. The estimate for a full dedup of 100k photos: fingerprint time per photo x 100k / workers, plus the
   measured (or n^2-extrapolated) search time.
4. ``--recall N``: near-copy recall on N real photos per edit (resize, JPEG q30, crops, watermarks, and
   two edits outside what the hashes are designed for), and false groups among the real photos.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wildlife_vision.data.dedup import (COMBOS, DEFAULT_THRESHOLD, DEFAULT_VERIFY_THRESHOLD,  # noqa: E402
                                     candidate_pairs, verify_pairs)
from wildlife_vision.data.hashing import hash_image, scan_paths  # noqa: E402
from wildlife_vision.data.manifest import read_manifest_table  # noqa: E402


def real_paths():
    cand = [os.environ.get("WILDTRADE_DIR"), ROOT.parent / "shared" / "data" / "wildtrade-v1"]
    for c in cand:
        if c and (Path(c) / "manifest.csv").is_file():
            m = read_manifest_table(Path(c) / "manifest.csv")
            return list(dict.fromkeys(str(m.image_path(i)) for i in range(len(m)))), str(Path(c) / "manifest.csv")
    return None, None


def generated_paths(n: int, folder: Path):
    from synthetic import write_scene

    return [str(write_scene(folder / f"{i:05d}.jpg", i, size=(448, 336))) for i in range(n)], "generated"


def bench_fingerprints(paths, workers):
    out = {}
    for w in sorted({1, workers}):
        t = time.perf_counter()
        r = scan_paths(paths, workers=w)
        dt = time.perf_counter() - t
        out[w] = {"files": len(paths), "seconds": round(dt, 2), "ms_per_file": round(1000 * dt / len(paths), 3),
                  "files_per_s": round(len(paths) / dt, 1), "failed": int((~r.ok).sum())}
        print(f"  fingerprinting, {w} worker(s): {len(paths)} files in {dt:.1f} s = {1000 * dt / len(paths):.2f} ms "
              f"per file ({len(paths) / dt:.0f} files/s)")
    return out, r


def synthetic_set(p64, p256, n, rng):
    """n fingerprints drawn from the real ones, each word with ~16 random bits flipped (so no copies)."""
    idx = rng.integers(0, len(p64), n)
    a = p64[idx].copy()
    b = p256[idx].copy()
    for arr in (a, b):
        for _ in range(16):
            arr ^= (np.uint64(1) << rng.integers(0, 64, arr.shape).astype(np.uint64))
    return a, b


def bench_search(p64, p256, sizes, workers, rng):
    out = {}
    for n in sizes:
        a64, a256 = synthetic_set(p64, p256, n, rng)
        t = time.perf_counter()
        ca, cb = candidate_pairs(a64, DEFAULT_THRESHOLD, workers=workers)
        t1 = time.perf_counter()
        v = verify_pairs(a64, a256, ca, cb, DEFAULT_THRESHOLD, DEFAULT_VERIFY_THRESHOLD)
        t2 = time.perf_counter()
        pairs = n * (n - 1) / 2
        out[n] = {"seconds": round(t2 - t, 2), "candidate_s": round(t1 - t, 2), "verify_s": round(t2 - t1, 3),
                  "candidates": int(len(ca)), "verified": int(v["ok"].sum()),
                  "ns_per_pair_and_window_combo": round((t1 - t) / pairs / len(COMBOS) * 1e9, 3)}
        print(f"  pair search n={n}: {t2 - t:.1f} s ({len(ca)} candidates, {int(v['ok'].sum())} verified; "
              f"{out[n]['ns_per_pair_and_window_combo']:.2f} ns per pair and window combination, "
              f"{len(COMBOS)} combinations)")
    return out


def bench_recall(paths, n, rng):
    from synthetic import NEAR_COPIES, _crop, _jpeg, watermark
    from wildlife_vision.preprocess import load_image

    edits = dict(NEAR_COPIES)
    edits["outside: crop 2/7/5/2 % (off the window grid)"] = lambda im: _crop(im, 0.02, 0.07, 0.05, 0.02)
    edits["outside: crop 5% + watermark + 0.5x + q40"] = lambda im: _jpeg(
        watermark(_crop(im, 0.05, 0.0, 0.0, 0.05)).resize((im.width // 2, im.height // 2)), 40)
    sel = rng.choice(len(paths), min(n, len(paths)), replace=False)
    out = {}
    for name, f in edits.items():
        hits = 0
        for i in sel:
            img = load_image(paths[i])
            o64, o256 = hash_image(img)
            buf_img = _jpeg(f(img), 90)
            c64, c256 = hash_image(buf_img)
            P, Q = np.stack([o64, c64]), np.stack([o256, c256])
            a, b = candidate_pairs(P)
            hits += int(len(a) == 1 and verify_pairs(P, Q, a, b)["ok"][0])
        out[name] = round(hits / len(sel), 3)
        print(f"  recall {name}: {hits}/{len(sel)} = {hits / len(sel):.1%}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,30000,100000")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--generated", type=int, default=2000, help="photos to generate when the real data is absent")
    ap.add_argument("--recall", type=int, default=0, metavar="N", help="measure near-copy recall on N photos")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="OUT.json")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    res = {"cpu_count": os.cpu_count(), "workers": args.workers}
    try:
        res["load_average_at_start"] = os.getloadavg()
    except OSError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        paths, source = real_paths()
        if paths is None:
            paths, source = generated_paths(args.generated, Path(tmp))
        res["photos"] = source
        print(f"fingerprints ({source}, {len(paths)} files):")
        res["fingerprint"], scan = bench_fingerprints(paths, args.workers)
        ok = scan.ok
        print("pair search on synthetic fingerprint sets:")
        res["search"] = bench_search(scan.p64[ok], scan.p256[ok], sizes, args.workers, rng)
        if args.recall:
            print(f"near-copy recall (threshold {DEFAULT_THRESHOLD}/64, verify {DEFAULT_VERIFY_THRESHOLD}/256):")
            res["recall"] = bench_recall([p for p, k in zip(scan.paths, ok) if k], args.recall, rng)
    fp_ms = res["fingerprint"][args.workers]["ms_per_file"]
    largest = max(sizes)
    search_100k = res["search"][largest]["seconds"] * (100_000 / largest) ** 2
    est = fp_ms * 100_000 / 1000 + search_100k
    res["estimate_100k"] = {"fingerprint_s": round(fp_ms * 100, 1), "search_s": round(search_100k, 1),
                            "total_s": round(est, 1), "search_from": largest}
    print(f"estimate for 100k photos with {args.workers} workers: fingerprints {fp_ms * 100:.0f} s "
          f"({fp_ms:.2f} ms/photo wall time) + search {search_100k:.0f} s"
          f"{' (measured)' if largest == 100_000 else f' (extrapolated from n={largest} as n^2)'} "
          f"= {est / 60:.1f} min; a second run reuses the cached fingerprints and takes only the search time")
    try:
        res["load_average_at_end"] = os.getloadavg()
    except OSError:
        pass
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
