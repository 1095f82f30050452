"""`wildlife-vision benchmark`: the argument parser, :func:`register` (the command plugin) and the command function.

Importing this module needs neither torch nor onnx.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from wildlife_vision.cli_common import fail
from wildlife_vision.exitcodes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

from .errors import BenchmarkError
from .machine import DEFAULT_FLOPS_PER_CYCLE, busy_note
from .report import format_report
from .run import run_benchmark

log = logging.getLogger(__name__)

DESCRIPTION = """\
Measure photos/s from JPEG files to scores (decode + preprocess + inference), model-only photos/s at several
batch sizes, one-photo latency and peak memory for two torch baselines, competent and naive (when installed), onnxruntime fp32 and
onnxruntime INT8, on real photos (../shared/data/wildtrade-v1 when present, else --data, else generated),
plus training photos/s of a plain torch loop vs ours. Prints a table with the speed and accuracy targets
and writes JSON (--json). Each configuration runs in a fresh subprocess. See docs/benchmark.md.
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("benchmark", help="measure end-to-end and model-only speed (torch, onnxruntime "
                                                "fp32/INT8) and training throughput on this machine",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", metavar="MODEL.onnx", help="fp32 model (default: the shipped default model)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--int8", metavar="MODEL.int8.onnx",
                   help="INT8 model (default: MODEL.int8.onnx beside --model when it exists)")
    g.add_argument("--quantize", action="store_true",
                   help="quantise --model to INT8 here with the export's settings (needs the train extra)")
    p.add_argument("--data", metavar="MANIFEST|DIR",
                   help="photos: a manifest CSV (its validation split is used, so INT8 AP can be compared) or a "
                        "folder of images, or 'generated' (default: ../shared/data/wildtrade-v1 when present, "
                        "else generated photos)")
    p.add_argument("--photos", type=int, default=None, metavar="N",
                   help="photos for the end-to-end runs (default: the whole validation split, or 256 generated)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32], metavar="B",
                   help="model-only batch sizes (default 1 8 32)")
    p.add_argument("--e2e-batch-size", type=int, default=32, metavar="B", help="end-to-end batch size (default 32)")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="onnxruntime intra-op threads (default 0: one per physical core)")
    p.add_argument("--decode-workers", type=int, nargs="+", default=[1, 2, 3], metavar="W",
                   help="decoding threads to try end to end (predict_iter workers; default 1 2 3; best reported)")
    p.add_argument("--seconds", type=float, default=3.0, metavar="S",
                   help="minimum time per model-only measurement (default 3)")
    p.add_argument("--latency-photos", type=int, default=100, metavar="N",
                   help="photos timed one at a time for the latency percentiles (default 100)")
    p.add_argument("--repeats", type=int, default=1, metavar="N",
                   help="end-to-end passes per setting; the fastest counts (default 1)")
    p.add_argument("--no-torch", action="store_true", help="skip the torch baselines and the training comparison")
    p.add_argument("--torch-weights", metavar="RUN_DIR|best.pt",
                   help="weights for both torch baselines (default: random; speed does not depend on them)")
    p.add_argument("--calib-photos", type=int, default=128, metavar="N",
                   help="calibration photos for --quantize (default 128)")
    t = p.add_argument_group("training throughput (needs torch)")
    t.add_argument("--train-steps", type=int, default=12, metavar="N",
                   help="timed training steps per variant (default 12; 0 = skip the training comparison)")
    t.add_argument("--train-warmup", type=int, default=3, metavar="N", help="untimed warm-up steps (default 3)")
    t.add_argument("--train-batch-size", type=int, default=32, metavar="B", help="training batch size (default 32)")
    t.add_argument("--train-model", default="tf_efficientnet_lite0", metavar="NAME",
                   help="timm model for the training comparison (default tf_efficientnet_lite0)")
    t.add_argument("--train-size", type=int, default=224, metavar="S", help="training image size (default 224)")
    m = p.add_argument_group("FLOP limit")
    m.add_argument("--ghz", type=float, default=None, help="CPU clock for the FLOP limit (default: /proc/cpuinfo)")
    m.add_argument("--flops-per-cycle", type=int, default=None,
                   help="fp32 FLOP per cycle per core (default: from the CPU's features, wildlife_vision.cpu: 64 for "
                        f"Intel AVX-512 with 2 FMA pipes, {DEFAULT_FLOPS_PER_CYCLE} for AVX2 and AMD Zen 4)")
    p.add_argument("--precision", choices=("auto", "fp32", "int8", "bf16"), default=None,
                   help="measure only this extra execution profile beside fp32 and INT8 (default: every profile of "
                        "the model that can run here)")
    p.add_argument("--json", metavar="FILE", help="write the full report (schema wildlife-vision/benchmark/v1) here")
    p.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    for name in ("photos", "e2e_batch_size", "latency_photos", "repeats"):
        v = getattr(args, name)
        if v is not None and v < 1:
            return fail("benchmark", f"--{name.replace('_', '-')} must be at least 1")
    if any(b < 1 for b in args.batch_sizes) or any(w < 1 for w in args.decode_workers) or args.threads < 0:
        return fail("benchmark", "batch sizes and decode workers must be at least 1, --threads 0 or more")
    args.argv = sys.argv[2:] if len(sys.argv) > 2 and sys.argv[1] == "benchmark" else []
    args.busy_note = busy_note()
    if args.busy_note:
        log.warning(args.busy_note)
    try:
        report = run_benchmark(args)
    except BenchmarkError as e:
        return fail("benchmark", str(e), EXIT_USAGE)
    print(format_report(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(f"\nJSON report: {args.json}")
    failed = [name for name, res in report["configs"].items() if "error" in res]
    return EXIT_FAILURE if failed else EXIT_OK
