"""One benchmark run: find the model, its INT8 twin (or quantise one) and the photos, measure every configuration
in its own subprocess, and assemble the versioned report (``schema: wildlife-vision/benchmark/v1``).

Importing this module needs neither torch nor onnx.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

from wildlife_vision.cpu import cpu_info
from wildlife_vision.exitcodes import MissingExtraError

from .errors import BenchmarkError
from .inference import run_worker
from .machine import machine_info, model_flops, physical_cores
from .photos import PhotoSet, find_photos, input_pool, warm_file_cache
from .report import CONFIG_NAMES, SCHEMA, accuracy, build_ratios_and_targets
from .training_speed import train_throughput

log = logging.getLogger(__name__)

def _default_model() -> Optional[Path]:
    try:
        from wildlife_vision.model import default_model_path

        return default_model_path()
    except Exception:  # noqa: BLE001 - no shipped model
        return None


def _sibling_int8(model: Path) -> Optional[Path]:
    cand = model.with_name(model.stem + ".int8.onnx")
    return cand if cand.is_file() else None


def _quantize(fp32: Path, out: Path, photos: PhotoSet, n_calib: int) -> Dict[str, Any]:
    """INT8 copy of ``fp32`` with the export's own settings (wildlife_vision_train.export.quantize_int8)."""
    try:
        from wildlife_vision_train.export import quantize_int8
    except ImportError as e:  # exit 3, as for every missing extra; --int8 FILE needs none
        raise MissingExtraError("train", e.name or "wildlife_vision_train.export") from None
    import dataclasses

    from wildlife_vision import load_model

    model = load_model(fp32)
    calib_paths = photos.train_paths or photos.paths
    batch = input_pool(calib_paths, model.preprocess_config, min(n_calib, len(calib_paths)))
    meta = dataclasses.replace(model.metadata, name=model.metadata.name + "-int8")
    t = time.perf_counter()
    quantize_int8(fp32, out, batch, meta)
    return {"calibration_photos": int(len(batch)), "seconds": round(time.perf_counter() - t, 1),
            "source": "train split" if photos.train_paths else "benchmark photos"}


def _torch_available() -> str:
    """'' when torch, torchvision and timm can be imported, else why not."""
    import importlib.util

    for mod in ("torch", "torchvision", "timm"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed (pip install 'wildlife-vision[train]')"
    return ""


#: benchmark config key per execution profile beyond the file's own fp32 and its INT8 twin
PROFILE_CONFIGS = {"bf16": "ov_bf16", "openvino-fp32": "ov_fp32"}
#: the config that measures each profile
CONFIG_OF_PROFILE = {"fp32": "ort_fp32", "int8": "ort_int8", **PROFILE_CONFIGS}


def _measure_profiles(args: argparse.Namespace, model_path: Path, meta: Any, base: Dict[str, Any], threads: int,
                      workdir: Path, configs: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Measure the model's other execution profiles that can run here (each in its own subprocess, like the rest),
    and say which one ``precision="auto"`` takes on this CPU and why the others are not used."""
    from wildlife_vision.profiles import ProfileError, choose_profile, profiles_table

    cpu = cpu_info()
    table = profiles_table(meta, model_path, cpu)
    wanted = getattr(args, "precision", None)
    for row in table:
        key = PROFILE_CONFIGS.get(row["profile"])
        if key is None or (wanted and wanted not in ("auto", row["precision"])):
            continue
        if not row["usable"]:
            configs[key] = {"skipped": row["why_not"]}
            continue
        log.info("measuring profile %s", row["profile"])
        configs[key] = run_worker(key, {**base, "worker": "ort", "model": str(model_path), "threads": threads,
                                        "runtime": row["runtime"], "precision": row["precision"],
                                        "decode_workers": args.decode_workers}, workdir)
    try:
        auto = choose_profile(meta, model_path, "auto", "auto", cpu)
        auto_info: Dict[str, Any] = {"profile": auto.name, "skipped": list(auto.skipped),
                                     "config": CONFIG_OF_PROFILE.get(auto.name)}
    except ProfileError as e:
        auto_info = {"profile": None, "error": str(e)}
    return {"cpu": cpu.to_dict(), "table": table, "auto": auto_info}


def run_benchmark(args: argparse.Namespace) -> Dict[str, Any]:
    """Measure every configuration (each in its own subprocess) and return the report (see module docstring)."""
    t_start = time.perf_counter()
    notes: List[str] = []
    model_path = Path(args.model) if args.model else _default_model()
    if model_path is None:
        raise BenchmarkError("no --model given and no shipped default model "
                         "(exported_models/DEFAULT); export one with `wildlife-vision export RUN --output m.onnx`")
    if not model_path.is_file():
        raise BenchmarkError(f"model {model_path} not found")
    from wildlife_vision import load_model

    meta = load_model(model_path, providers=["cpu"]).metadata
    labels = list(meta.labels)
    torch_missing = "--no-torch" if args.no_torch else _torch_available()
    want_train = not torch_missing and args.train_steps > 0

    with tempfile.TemporaryDirectory(prefix="wv-bench-") as tmp:
        workdir = Path(tmp)
        n_train = args.train_batch_size * (args.train_steps + args.train_warmup + 1) if want_train else 0
        n_train = max(n_train, args.calib_photos if args.quantize else 0)
        photos = find_photos(args.data, args.photos, labels, workdir, n_train=n_train)
        notes.append(photos.note)
        warm_file_cache(photos.paths)

        int8_path: Optional[Path] = Path(args.int8) if args.int8 else None
        quant_info = None
        if int8_path is None and args.quantize:
            int8_path = workdir / (model_path.stem + ".int8.onnx")
            log.info("quantising %s to INT8", model_path)
            quant_info = _quantize(model_path, int8_path, photos, args.calib_photos)
        elif int8_path is None:
            int8_path = _sibling_int8(model_path)
        if int8_path is not None and not int8_path.is_file():
            raise BenchmarkError(f"INT8 model {int8_path} not found")

        threads = args.threads or physical_cores()
        base = {"paths": photos.paths, "batch_sizes": args.batch_sizes, "seconds": args.seconds,
                "latency_photos": min(args.latency_photos, len(photos.paths)), "e2e_batch_size": args.e2e_batch_size,
                "repeats": args.repeats}
        configs: Dict[str, Dict[str, Any]] = {}
        # the torch baselines: the competent one (the one the targets use) and the naive one (key torch_eager, as
        # before the competent one existed)
        for key, style in (("torch_competent", "competent"), ("torch_eager", "naive")):
            if torch_missing:
                configs[key] = {"skipped": torch_missing}
                continue
            log.info("measuring %s", CONFIG_NAMES[key])
            configs[key] = run_worker(f"torch_{style}", {
                **base, "worker": "torch", "style": style, "backbone": meta.backbone, "labels": labels,
                "preprocess": meta.preprocess.to_dict(), "weights": args.torch_weights, "threads": threads,
                "decode_workers": args.decode_workers}, workdir)
        log.info("measuring onnxruntime fp32")
        configs["ort_fp32"] = run_worker("ort_fp32", {**base, "worker": "ort", "model": str(model_path),
                                                       "threads": threads, "decode_workers": args.decode_workers},
                                          workdir)
        if int8_path is None:
            configs["ort_int8"] = {"skipped": f"no INT8 model (looked for {model_path.stem}.int8.onnx beside the "
                                              "model); pass --int8 FILE or --quantize"}
        else:
            log.info("measuring onnxruntime INT8")
            configs["ort_int8"] = run_worker("ort_int8", {**base, "worker": "ort", "model": str(int8_path),
                                                           "threads": threads,
                                                           "decode_workers": args.decode_workers}, workdir)
            if quant_info:
                configs["ort_int8"]["quantized_here"] = quant_info
        profile_note = _measure_profiles(args, model_path, meta, base, threads, workdir, configs)
        for name, res in configs.items():
            if "error" in res:
                log.error("%s: %s", CONFIG_NAMES[name], res["error"])

        training = None
        if want_train:
            training = train_throughput(photos, workdir, backbone=args.train_model, image_size=args.train_size,
                                        batch_size=args.train_batch_size, steps=args.train_steps,
                                        warmup=args.train_warmup)
        elif args.train_steps > 0:
            training = {"skipped": torch_missing}
        else:
            training = {"skipped": "--train-steps 0"}

    report: Dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "wildlife-vision benchmark " + " ".join(getattr(args, "argv", []) or []),
        "machine": machine_info(args.ghz, args.flops_per_cycle or cpu_info().fp32_flops_per_cycle()),
        "model": {"path": str(model_path), "int8_path": str(int8_path) if int8_path else None,
                  "name": meta.name, "version": meta.model_version, "backbone": meta.backbone,
                  "input_size": list(meta.preprocess.input_size), "labels": labels,
                  **model_flops(model_path, meta.backbone, meta.preprocess.input_size)},
        "photos": {"source": photos.source, "count": len(photos.paths),
                   "val_photos": int(photos.is_val.sum()) if photos.is_val is not None else 0},
        "settings": {"batch_sizes": args.batch_sizes, "e2e_batch_size": args.e2e_batch_size,
                     "ort_intra_op_threads": threads, "decode_workers_tried": args.decode_workers,
                     "seconds_per_model_only_measurement": args.seconds, "latency_photos": base["latency_photos"],
                     "repeats": args.repeats},
        "configs": configs,
        "profiles": profile_note,
        "training": training,
        "notes": notes,
    }
    report["accuracy"] = accuracy(photos, {k: v for k, v in configs.items() if "scores" in v}, labels)
    build_ratios_and_targets(report)
    if report["machine"]["peak_gflops_fp32"] is None:
        notes.append("CPU clock unknown: pass --ghz to get the FLOP-limit figures")
    if getattr(args, "busy_note", ""):
        notes.append(args.busy_note)
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    return report

