"""`wildlife-vision benchmark`: how fast photos go from JPEG files on disk to scores, on this machine.

One run measures, for the torch baselines (competent: DataLoader workers, channels-last, inference mode; naive), when installed, onnxruntime fp32 and onnxruntime INT8:

* end-to-end photos/s from JPEG files (read + decode + preprocess + inference), for onnxruntime through
  ``Model.predict_iter`` with the best number of decoding threads, for torch through the plain path a typical
  user writes (PIL decode, torchvision Resize/CenterCrop/ToTensor/Normalize, eager forward, batch 32);
* model-only photos/s at each ``--batch-sizes`` (already preprocessed input);
* p50/p95 latency of one photo (file -> scores, batch of 1), and model-only batch-1 latency;
* peak memory (RSS high-water mark of the process that measured the configuration: each configuration runs
  in a fresh subprocess so the peaks do not mix);
* the ratios between them, the share of the machine's fp32 FLOP limit reached, INT8 vs fp32 average
  precision on the validation split, and (with torch) training photos/s of a plain torch loop vs ours.

It prints a table, the speed and accuracy targets with PASS/FAIL, and writes versioned JSON
(``schema: wildlife-vision/benchmark/v1``). See docs/benchmark.md. ``benchmarks/train_throughput.py`` runs the
training comparison alone.

Modules: ``photos`` (the benchmark photos, generated ones included), ``machine`` (CPU probing, FLOP counting,
measuring tools), ``inference`` (onnxruntime and torch workers, one subprocess each), ``training_speed``
(training throughput), ``run`` (one whole run), ``report`` (ratios, targets, text report), ``cli`` (the
command), ``errors``. Importing this package needs neither torch nor onnx.
"""

from __future__ import annotations

from .cli import register, run_command
from .errors import BenchmarkError
from .machine import count_onnx_flops, machine_info, model_flops, physical_cores
from .photos import PhotoSet, find_photos, generated_photos, shared_data_dir
from .report import SCHEMA, TARGETS, build_ratios_and_targets, format_report
from .run import run_benchmark
from .training_speed import train_throughput

__all__ = ["register", "run_command", "BenchmarkError", "count_onnx_flops", "machine_info", "model_flops",
           "physical_cores", "PhotoSet", "find_photos", "generated_photos", "shared_data_dir", "SCHEMA", "TARGETS",
           "build_ratios_and_targets", "format_report", "run_benchmark", "train_throughput"]
