"""`wildlife-vision benchmark`: how fast photos go from JPEG files on disk to scores, on this machine.

One run measures, for torch eager (when installed), onnxruntime fp32 and onnxruntime INT8:

* end-to-end photos/s from JPEG files (read + decode + preprocess + inference), for onnxruntime through
  ``Model.predict_iter`` with the best number of decoding threads, for torch through the plain path a typical
  user writes (PIL decode, torchvision Resize/CenterCrop/ToTensor/Normalize, eager forward, batch 32);
* model-only photos/s at each ``--batch-sizes`` (already preprocessed input);
* p50/p95 latency of one photo (file -> scores, batch of 1), and model-only batch-1 latency;
* peak memory (RSS high-water mark of the process that measured the configuration: each configuration runs
  in a fresh subprocess so the peaks do not mix);
* the ratios between them, the share of the machine's fp32 FLOP limit reached, INT8 vs fp32 average
  precision on the validation split, and (with torch) training photos/s of a plain torch loop vs ours.

It prints a table, the targets of issue #5 with PASS/FAIL, and writes versioned JSON
(``schema: wildlife-vision/benchmark/v1``). See docs/benchmark.md. ``benchmarks/train_throughput.py`` runs the
training comparison alone.

Importing this module needs neither torch nor onnx; they are imported inside the measuring functions.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

log = logging.getLogger(__name__)

SCHEMA = "wildlife-vision/benchmark/v1"
#: fp32 FLOP per cycle per core: 2 FMA pipes x 8 fp32 lanes (256 bit) x 2 FLOP per FMA (AVX2 + FMA)
DEFAULT_FLOPS_PER_CYCLE = 32
#: documented per-backbone cost (GFLOP per 224x224 photo, 1 multiply-add = 2 FLOP), used only when the ONNX
#: graph cannot be counted (the `onnx` package is missing)
KNOWN_GFLOP_224 = {"tf_efficientnet_lite0": 0.78, "tf_efficientnet_lite1": 1.22, "tf_efficientnet_lite2": 1.74,
                   "mobilenetv3_large_100": 0.44, "resnet50": 8.2, "convnext_tiny": 8.9}

TARGETS = {
    "e2e_fp32_vs_model_b32": 0.85,     # end-to-end fp32 >= 0.85 x model-only fp32 at batch 32
    "e2e_fp32_vs_torch": 3.0,          # end-to-end onnxruntime fp32 >= 3 x torch eager end-to-end
    "e2e_int8_vs_fp32": 1.15,          # INT8 end-to-end >= 1.15 x fp32 end-to-end
    "int8_ap_change": 0.005,           # |macro-AP(INT8) - macro-AP(fp32)| <= 0.005 on the validation split
    "train_ours_vs_plain": 2.0,        # our training photos/s >= 2 x a plain torch loop
}
CONFIG_NAMES = {"torch_eager": "torch eager", "ort_fp32": "onnxruntime fp32", "ort_int8": "onnxruntime INT8"}


# ---- the photos ------------------------------------------------------------------------------------------

@dataclass
class PhotoSet:
    paths: List[str]
    source: str                               # manifest path, folder, or "generated"
    labels: Tuple[str, ...] = ()
    targets: Optional[np.ndarray] = None      # (N, labels) 0/1 where the photos carry labels
    is_val: Optional[np.ndarray] = None       # (N,) bool: photo is in the validation split
    train_paths: List[str] = field(default_factory=list)    # for calibration and the training comparison
    train_targets: Optional[np.ndarray] = None
    note: str = ""


def shared_data_dir() -> Optional[Path]:
    """../shared/data/wildtrade-v1 beside the checkout (or $WILDTRADE_DIR), when its manifest is there."""
    cands = [os.environ.get("WILDTRADE_DIR"), Path.cwd().parent / "shared" / "data" / "wildtrade-v1",
             Path(__file__).resolve().parents[2] / "shared" / "data" / "wildtrade-v1"]
    for c in cands:
        if c and (Path(c) / "manifest.csv").is_file():
            return Path(c)
    return None


def generated_photos(folder: Path, n: int, size: Tuple[int, int] = (448, 336)) -> List[str]:
    """``n`` generated listing-like JPEGs (smooth background, shapes, noise) of ``size``, written to ``folder``."""
    from synthetic import write_scene

    folder.mkdir(parents=True, exist_ok=True)
    return [str(write_scene(folder / f"gen_{i:05d}.jpg", i, size=size)) for i in range(n)]


def find_photos(data: Optional[str], n: Optional[int], labels: Sequence[str], workdir: Path,
                n_train: int = 0) -> PhotoSet:
    """The benchmark photos: the validation split of a manifest (then training photos if ``n`` asks for more),
    the image files of a folder, or generated photos when no data is given and ../shared is absent."""
    src: Optional[Path] = Path(data) if data and data != "generated" else None
    if src is None and data != "generated":
        shared = shared_data_dir()
        src = shared / "manifest.csv" if shared is not None else None
    elif src is not None and src.is_dir() and (src / "manifest.csv").is_file():
        src = src / "manifest.csv"
    if src is None:
        count = n or 256
        paths = generated_photos(workdir / "photos", count)
        train = generated_photos(workdir / "photos_train", n_train) if n_train else []
        why = "--data generated" if data == "generated" else ("no real photos found: pass --data, or put "
                                                              "wildtrade-v1 in ../shared/data")
        return PhotoSet(paths, "generated", note=f"{count} generated 448x336 JPEGs ({why})", train_paths=train)
    if src.is_dir():
        from wildlife_vision.preprocess import IMAGE_EXTENSIONS

        files = sorted(str(p) for p in src.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise SystemExit(f"wildlife-vision benchmark: no .jpg/.png/.webp files under {src}")
        picked = files[:n] if n else files
        return PhotoSet(picked, str(src), train_paths=files[len(picked):len(picked) + n_train],
                        note=f"{len(picked)} image files from {src} (no labels: no accuracy comparison)")
    if not src.is_file():
        raise SystemExit(f"wildlife-vision benchmark: --data {src} does not exist")
    from wildlife_vision.data.manifest import assign_splits, read_manifest, targets_for

    manifest = read_manifest(src, labels=list(labels) or None, check_images=False)
    samples, _ = assign_splits(manifest.samples, 0.15)
    val = [s for s in samples if s.split == "val"]
    rest = [s for s in samples if s.split != "val"]
    rng = np.random.default_rng(0)
    rest = [rest[i] for i in rng.permutation(len(rest))]
    want = n or len(val)
    chosen = val[:want] + rest[:max(0, want - len(val))]
    train = [s for s in rest[max(0, want - len(val)):] if s.split == "train"][:n_train]
    labs = tuple(labels) or manifest.labels
    return PhotoSet(paths=[s.path for s in chosen], source=str(src), labels=labs,
                    targets=targets_for(chosen, labs), is_val=np.array([s.split == "val" for s in chosen]),
                    train_paths=[s.path for s in train], train_targets=targets_for(train, labs),
                    note=f"{len(chosen)} real photos from {src} ({sum(s.split == 'val' for s in chosen)} of the "
                         f"validation split)")


def warm_file_cache(paths: Sequence[str]) -> int:
    """Read every file once so that no configuration pays for a cold disk cache; returns the bytes read."""
    total = 0
    for p in paths:
        with open(p, "rb") as f:
            total += len(f.read())
    return total


# ---- the machine and the arithmetic limit -------------------------------------------------------------

def _cpuinfo() -> Dict[str, str]:
    out: Dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if ":" in line:
                    k, v = line.split(":", 1)
                    out.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    return out


def physical_cores() -> int:
    """Cores this process may run on (hyper-threads of one core counted once when psutil can tell)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    try:
        import psutil

        phys = psutil.cpu_count(logical=False) or usable
        logical = psutil.cpu_count(logical=True) or usable
        return max(1, min(usable, round(usable * phys / logical)))
    except ImportError:
        return usable


def machine_info(ghz: Optional[float] = None, flops_per_cycle: int = DEFAULT_FLOPS_PER_CYCLE) -> Dict[str, Any]:
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    mhz = None
    try:
        mhz = float(info.get("cpu MHz", "")) if info.get("cpu MHz") else None
    except ValueError:
        pass
    clock = ghz if ghz else (mhz / 1000.0 if mhz else None)
    cores = physical_cores()
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("onnxruntime", "PIL", "torch", "torchvision", "timm", "onnx"):
        try:
            versions[mod if mod != "PIL" else "pillow"] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - not installed (or broken): just not listed
            pass
    try:
        from PIL import features

        versions["libjpeg_turbo"] = bool(features.check_feature("libjpeg_turbo"))
    except Exception:  # noqa: BLE001
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        mem = None
    peak = cores * clock * flops_per_cycle if clock else None
    return {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "cores": cores, "logical_cpus": os.cpu_count(), "ghz": round(clock, 3) if clock else None,
        "ghz_source": "--ghz" if ghz else "/proc/cpuinfo 'cpu MHz' (nominal; turbo not counted)",
        "simd": sorted(f for f in flags if f in {"avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni",
                                                  "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}),
        "memory_gib": round(mem / 2 ** 30, 1) if mem else None,
        "flops_per_cycle_per_core": flops_per_cycle,
        "peak_gflops_fp32": round(peak, 1) if peak else None,
        "os": platform.platform(), "versions": versions,
    }


def count_onnx_flops(path: Path) -> Dict[str, Any]:
    """FLOP per photo of an ONNX graph: 2 x the multiply-adds of its Conv, ConvTranspose, Gemm and MatMul nodes
    at batch 1 (elementwise work, pooling and activations are left out: a few per cent). Tensor shapes are
    taken from one onnxruntime run on a blank photo, so graphs with shape-dependent padding count too."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    graph = model.graph
    ops = ("Conv", "ConvTranspose", "Gemm", "MatMul")
    nodes = [n for n in graph.node if n.op_type in ops]
    shapes: Dict[str, List[int]] = {init.name: list(init.dims) for init in graph.initializer}
    wanted = []
    for n in nodes:
        for name in list(n.input[:2]) + [n.output[0]]:
            if name and name not in shapes and name not in wanted:
                wanted.append(name)
    have = {o.name for o in graph.output}
    for name in wanted:
        if name not in have:
            graph.output.append(onnx.ValueInfoProto(name=name))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    feeds = {}
    for inp in sess.get_inputs():
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        feeds[inp.name] = np.zeros(dims, dtype=np.float32)
    for name, value in zip(wanted, sess.run(wanted, feeds)):
        shapes[name] = list(np.shape(value))
    macs = {op: 0 for op in ops}
    for node in nodes:
        x, w, out = shapes[node.input[0]], shapes[node.input[1]], shapes[node.output[0]]
        if node.op_type == "Conv":
            macs["Conv"] += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type == "ConvTranspose":
            macs["ConvTranspose"] += int(np.prod(x)) * int(np.prod(w[1:]))
        elif node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            macs["Gemm"] += int(np.prod(out)) * int(w[1] if trans_b else w[0])
        else:
            macs["MatMul"] += int(np.prod(out)) * int(x[-1])
    total = sum(macs.values())
    return {"gflop_per_photo": round(2 * total / 1e9, 4), "gmac_per_photo": round(total / 1e9, 4),
            "by_op_gmac": {k: round(v / 1e9, 4) for k, v in macs.items() if v},
            "source": "counted from the ONNX graph: Conv/Gemm/MatMul multiply-adds x 2, batch 1"}


def model_flops(path: Path, backbone: str, input_size: Tuple[int, int]) -> Dict[str, Any]:
    try:
        return count_onnx_flops(path)
    except ImportError:
        pass
    except Exception as e:  # noqa: BLE001 - an unusual graph: fall back to the table
        log.warning("could not count the ONNX graph's FLOPs (%s); using the documented figure", e)
    if backbone in KNOWN_GFLOP_224:
        g = KNOWN_GFLOP_224[backbone] * input_size[0] * input_size[1] / (224 * 224)
        return {"gflop_per_photo": round(g, 4), "source": f"documented figure for {backbone} (onnx not installed)"}
    return {"gflop_per_photo": None, "source": "unknown (install onnx to count the graph)"}


# ---- measuring, inside one subprocess per configuration ----------------------------------------------------

def _peak_rss_bytes() -> int:
    """This process's RSS high-water mark. On Linux VmHWM (reset by exec), not ru_maxrss: a child process's
    ru_maxrss starts at its parent's RSS at fork time, so it would report the benchmark driver's memory."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


def _timed_loop(fn, min_seconds: float, min_iters: int, warmup: int = 2) -> List[float]:
    for _ in range(warmup):
        fn()
    times: List[float] = []
    start = time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _lat(times: Sequence[float]) -> Dict[str, float]:
    return {"p50_ms": round(1000 * _pct(times, 50), 2), "p95_ms": round(1000 * _pct(times, 95), 2),
            "n": len(times)}


def _input_pool(paths: Sequence[str], cfg, n: int) -> np.ndarray:
    """``n`` real preprocessed photos (cycled when there are fewer) for the model-only measurements."""
    from wildlife_vision.errors import ImageDecodeError
    from wildlife_vision.preprocess import preprocess

    arrays = []
    for p in paths:
        if len(arrays) >= n:
            break
        try:
            arrays.append(preprocess(p, cfg))
        except ImageDecodeError:
            continue
    if not arrays:
        raise RuntimeError("no photo could be decoded")
    while len(arrays) < n:
        arrays.extend(arrays[:n - len(arrays)])
    return np.stack(arrays)


def _ort_worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    from wildlife_vision import load_model

    t = time.perf_counter()
    model = load_model(spec["model"], providers=["cpu"], threads=spec.get("threads") or None, batch_size=32)
    load_s = time.perf_counter() - t
    sess = model.session
    in_name, out_name = model._input_name, model._output_name  # noqa: SLF001 - the raw session, model only
    paths = spec["paths"]
    pool = _input_pool(paths, model.preprocess_config, max(spec["batch_sizes"]))
    res: Dict[str, Any] = {"model_load_s": round(load_s, 3), "provider": model.provider,
                           "intra_op_threads": spec.get("threads") or "onnxruntime default",
                           "model_only": {}}
    for bs in spec["batch_sizes"]:
        x = np.ascontiguousarray(pool[:bs])
        times = _timed_loop(lambda: sess.run([out_name], {in_name: x}), spec["seconds"], 3)
        res["model_only"][str(bs)] = {"photos_per_s": round(bs * len(times) / sum(times), 2), **_lat(times)}
    # latency of one photo, file -> scores
    lat_paths = paths[:spec["latency_photos"]]
    for p in lat_paths[:3]:
        model.predict(p, batch_size=1)
    times = []
    for p in lat_paths:
        t = time.perf_counter()
        model.predict(p, batch_size=1)
        times.append(time.perf_counter() - t)
    res["latency_one_photo"] = _lat(times)
    # end to end over all photos, for each number of decoding threads
    e2e: Dict[str, Any] = {}
    scores_by_w: Dict[int, np.ndarray] = {}
    labels = model.labels
    list(model.predict_iter(paths[:spec["e2e_batch_size"]], batch_size=spec["e2e_batch_size"], workers=1))
    for _ in range(spec.get("repeats", 1)):
        for w in spec["decode_workers"]:
            t = time.perf_counter()
            preds = list(model.predict_iter(paths, batch_size=spec["e2e_batch_size"], workers=w))
            dt = time.perf_counter() - t
            rate = len(paths) / dt
            key = str(w)
            if key not in e2e or rate > e2e[key]["photos_per_s"]:
                e2e[key] = {"photos_per_s": round(rate, 2), "seconds": round(dt, 3),
                            "errors": sum(1 for p_ in preds if not p_.ok)}
            scores_by_w[w] = np.array([[p_.scores.get(lab, np.nan) for lab in labels] for p_ in preds],
                                      dtype=np.float64)
    best_w = max(e2e, key=lambda k: e2e[k]["photos_per_s"])
    ref = scores_by_w[int(best_w)]
    same = max((float(np.nanmax(np.abs(s - ref))) if s.size else 0.0) for s in scores_by_w.values())
    res["e2e"] = {"by_decode_workers": e2e, "best_decode_workers": int(best_w),
                  "photos_per_s": e2e[best_w]["photos_per_s"], "batch_size": spec["e2e_batch_size"],
                  "photos": len(paths), "max_abs_score_diff_between_worker_settings": same}
    res["scores"] = ref.tolist()
    res["labels"] = list(labels)
    res["peak_rss_mb"] = round(_peak_rss_bytes() / 2 ** 20, 1)
    return res


def _torch_model(backbone: str, n_labels: int, weights: Optional[str]):
    import timm
    import torch

    model = timm.create_model(backbone, pretrained=False, num_classes=n_labels)
    source = "random initialisation (speed does not depend on the weights)"
    if weights:
        p = Path(weights)
        if p.is_dir():
            p = p / "best.pt"
        ckpt = torch.load(str(p), map_location="cpu", weights_only=True)
        state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else ckpt
        model.load_state_dict(state)
        source = f"checkpoint {p}"
    return model.eval(), source


def _torch_worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    import torch
    from PIL import Image
    from torchvision import transforms as T

    from wildlife_vision.preprocess import PreprocessConfig

    cfg = PreprocessConfig.from_dict(spec["preprocess"])
    t = time.perf_counter()
    model, source = _torch_model(spec["backbone"], len(spec["labels"]), spec.get("weights"))
    load_s = time.perf_counter() - t
    interp = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC,
              "nearest": T.InterpolationMode.NEAREST, "lanczos": T.InterpolationMode.LANCZOS,
              "box": T.InterpolationMode.BOX}[cfg.interpolation]
    tf = T.Compose([T.Resize(cfg.resize_shorter, interpolation=interp), T.CenterCrop(cfg.input_size),
                    T.ToTensor(), T.Normalize(cfg.mean, cfg.std)])
    paths = spec["paths"]
    pool = torch.from_numpy(_input_pool(paths, cfg, max(spec["batch_sizes"])))
    res: Dict[str, Any] = {"model_load_s": round(load_s, 3), "weights": source,
                           "torch_threads": torch.get_num_threads(), "model_only": {}}
    with torch.no_grad():
        for bs in spec["batch_sizes"]:
            x = pool[:bs].contiguous()
            times = _timed_loop(lambda: model(x), spec["seconds"], 3)
            res["model_only"][str(bs)] = {"photos_per_s": round(bs * len(times) / sum(times), 2), **_lat(times)}

        def one(p: str) -> np.ndarray:
            img = Image.open(p).convert("RGB")
            return torch.sigmoid(model(tf(img).unsqueeze(0))).numpy()

        lat_paths = paths[:spec["latency_photos"]]
        for p in lat_paths[:3]:
            one(p)
        times = []
        for p in lat_paths:
            t = time.perf_counter()
            one(p)
            times.append(time.perf_counter() - t)
        res["latency_one_photo"] = _lat(times)
        bs = spec["e2e_batch_size"]
        best = None
        for _ in range(spec.get("repeats", 1)):
            t = time.perf_counter()
            scores = []
            for i in range(0, len(paths), bs):
                x = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths[i:i + bs]])
                scores.append(torch.sigmoid(model(x)).numpy())
            dt = time.perf_counter() - t
            if best is None or dt < best:
                best = dt
    res["e2e"] = {"photos_per_s": round(len(paths) / best, 2), "seconds": round(best, 3), "batch_size": bs,
                  "photos": len(paths)}
    res["scores"] = np.concatenate(scores).astype(np.float64).tolist()
    res["labels"] = list(spec["labels"])
    res["peak_rss_mb"] = round(_peak_rss_bytes() / 2 ** 20, 1)
    return res


def _run_worker(kind: str, spec: Dict[str, Any], workdir: Path, timeout: float = 3600) -> Dict[str, Any]:
    """Run one measurement in a fresh Python process; returns its result, or {"error": ...}."""
    spec_path = workdir / f"{kind}.spec.json"
    out_path = workdir / f"{kind}.result.json"
    spec_path.write_text(json.dumps({"kind": kind, **spec}), encoding="utf-8")
    cmd = [sys.executable, "-m", "wildlife_vision_train.benchmark", "--worker", str(spec_path), str(out_path)]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0 or not out_path.is_file():
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:])
        return {"error": f"{kind} measurement failed (exit {proc.returncode}): {tail}"}
    result = json.loads(out_path.read_text(encoding="utf-8"))
    result["wall_s"] = round(time.perf_counter() - t, 1)
    return result


def _worker_main(argv: Sequence[str]) -> int:
    spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    logging.basicConfig(level=logging.WARNING)
    fn = {"ort": _ort_worker, "torch": _torch_worker, "train": _train_worker}[spec["worker"]]
    result = fn(spec)
    Path(out_path).write_text(json.dumps(result), encoding="utf-8")
    return 0


# ---- training throughput -------------------------------------------------------------------------------

def _train_worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Training photos/s of one variant: ``plain`` (a plain torch loop with default settings) or ``ours``
    (the data path and step of ``wildlife-vision train`` with its defaults)."""
    import torch

    variant = spec["variant"]
    paths, targets = spec["paths"], np.asarray(spec["targets"], dtype=np.float32)
    bs, size, n_labels = spec["batch_size"], spec["image_size"], targets.shape[1]
    if variant == "plain":
        import timm
        from PIL import Image
        from torch.utils.data import DataLoader, Dataset
        from torchvision import transforms as T

        model = timm.create_model(spec["backbone"], pretrained=False, num_classes=n_labels)
        tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(),
                        T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

        class Plain(Dataset):
            def __len__(self) -> int:
                return len(paths)

            def __getitem__(self, i: int):
                return tf(Image.open(paths[i]).convert("RGB")), torch.from_numpy(targets[i])

        loader = DataLoader(Plain(), batch_size=bs, shuffle=True, num_workers=0, drop_last=True)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        model.train()

        def steps():
            while True:
                for x, y in loader:
                    optimizer.zero_grad()
                    loss = loss_fn(model(x), y)
                    loss.backward()
                    optimizer.step()
                    yield float(loss)

        settings = {"data": "PIL decode + torchvision RandomResizedCrop/flip/ToTensor/Normalize in the main "
                            "process (DataLoader num_workers=0)", "layout": "NCHW", "dtype": "float32",
                    "optimizer": "AdamW", "torch_threads": torch.get_num_threads()}
    else:
        step_iter, settings = _ours_setup(paths, targets, spec["backbone"], size, bs, spec.get("workers"),
                                          spec.get("overrides") or {})

        def steps():
            return step_iter

    it = steps()
    t0 = time.perf_counter()
    for _ in range(spec["warmup"]):
        next(it)
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(spec["steps"]):
        t = time.perf_counter()
        next(it)
        times.append(time.perf_counter() - t)
    total = sum(times)
    return {"variant": variant, "photos_per_s": round(bs * len(times) / total, 2), "steps": len(times),
            "batch_size": bs, "seconds": round(total, 2), "warmup_steps": spec["warmup"],
            "warmup_s": round(warm_s, 2), "step_ms_p50": round(1000 * _pct(times, 50), 1),
            "settings": settings, "peak_rss_mb": round(_peak_rss_bytes() / 2 ** 20, 1)}


def _ours_setup(paths: Sequence[str], targets: np.ndarray, backbone: str, size: int, bs: int,
                workers: Optional[int], overrides: Dict[str, Any]):
    """The data path and step of ``wildlife-vision train`` with its CPU defaults, as an iterator of losses.

    The dataset, augmentation, loader, loss, optimiser and schedule are built as :func:`wildlife_vision_train.train.train`
    builds them, with the defaults of :class:`wildlife_vision_train.config.TrainConfig`, and every step is
    :class:`wildlife_vision_train.step.TrainStep`, the step ``train`` runs; random initial weights (speed does not
    depend on them).
    """
    import torch

    from wildlife_vision.data.manifest import Sample
    from wildlife_vision_train.augment import build_train_transform
    from wildlife_vision_train.backbones import create_backbone, init_head, preprocess_config_for
    from wildlife_vision_train.config import DataCfg, TrainConfig
    from wildlife_vision_train.data import EpochSampler, ImageDataset, make_loader
    from wildlife_vision_train.losses import build_loss
    from wildlife_vision_train.mixing import BatchMixer
    from wildlife_vision_train.runtime import apply_keep_freed_memory
    from wildlife_vision_train.step import TrainStep, make_ema, make_optimizer, make_schedule

    labels = [f"label{j}" for j in range(targets.shape[1])]
    cfg = TrainConfig(data=DataCfg(manifest="", image_size=size, batch_size=bs))
    if workers is not None:
        cfg = cfg.replace("data", workers=workers)
    if overrides.get("amp") is not None:
        cfg = cfg.replace("run", amp=overrides["amp"])
    if overrides.get("channels_last") is not None:
        cfg = cfg.replace("run", channels_last=overrides["channels_last"])
    if overrides.get("keep_freed_memory") is not None:
        cfg = cfg.replace("run", keep_freed_memory=overrides["keep_freed_memory"])
    device = torch.device("cpu")
    # train.py: autocast (float16) only on CUDA; an explicit amp override measures bfloat16 autocast on CPU
    amp_dtype = torch.bfloat16 if cfg.run.amp else None
    channels_last = bool(cfg.run.channels_last if cfg.run.channels_last is not None else True)
    keep_freed = apply_keep_freed_memory(cfg.run.keep_freed_memory, device.type)  # as train.py does
    model, _ = create_backbone(backbone, len(labels), "none", cfg.model.drop_rate, cfg.model.drop_path_rate)
    init_head(model, list(targets.mean(axis=0)))
    pre_cfg = preprocess_config_for(model, size, cfg.data.crop_pct, cfg.data.interpolation)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    samples = [Sample(path=p, image=p, labels=tuple(lab for lab, t in zip(labels, row) if t > 0), split="train")
               for p, row in zip(paths, targets)]
    transform = build_train_transform(size, cfg.aug, pre_cfg.interpolation)
    ds = ImageDataset(samples, labels, pre_cfg, transform)
    sampler = EpochSampler(len(ds), cfg.run.seed, shuffle=True)
    loader = make_loader(ds, bs, cfg.data.workers, device, sampler, drop_last=True)
    optimizer = make_optimizer(model, cfg.optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, make_schedule(cfg.optim, max(1, len(loader))))
    step = TrainStep(model, build_loss(cfg.loss, ds.targets), optimizer, scheduler, device, amp_dtype=amp_dtype,
                     channels_last=channels_last, grad_clip=cfg.optim.grad_clip, ema=make_ema(model, cfg.optim),
                     mixer=BatchMixer.from_config(cfg.aug, cfg.run.seed))
    model.train()

    def gen():
        epoch = 0
        while True:
            sampler.set_epoch(epoch)
            for batch in loader:
                if batch.images.numel() == 0:
                    continue
                yield step(batch.images, batch.targets)
            epoch += 1

    settings = {"data": f"wildlife_vision decode + albumentations in {loader.num_workers} DataLoader worker "
                        f"process(es)", "layout": "channels_last" if channels_last else "NCHW",
                "dtype": f"{str(amp_dtype).replace('torch.', '')} autocast" if amp_dtype else "float32",
                "optimizer": "AdamW (decay groups, warmup-cosine, grad clip)", "torch_threads": torch.get_num_threads(),
                "malloc": "keeps freed memory (mallopt)" if keep_freed else "glibc defaults"}
    return gen(), settings


def train_throughput(photos: PhotoSet, workdir: Path, backbone: str = "tf_efficientnet_lite0",
                     image_size: int = 224, batch_size: int = 32, steps: int = 12, warmup: int = 3,
                     variants: Sequence[str] = ("plain", "ours"), workers: Optional[int] = None,
                     overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Training photos/s of a plain torch loop vs ours on the same photos, model, size and batch size."""
    paths = photos.train_paths or photos.paths
    targets = photos.train_targets if photos.train_paths and photos.train_targets is not None else photos.targets
    if targets is None or len(targets) != len(paths):
        targets = np.zeros((len(paths), 2), dtype=np.float32)
        targets[::3, 0] = 1
    need = batch_size * (steps + warmup)
    if len(paths) < batch_size:
        raise ValueError(f"need at least {batch_size} training photos, got {len(paths)}")
    out: Dict[str, Any] = {"backbone": backbone, "image_size": image_size, "batch_size": batch_size,
                           "steps": steps, "warmup_steps": warmup, "photos": len(paths),
                           "photos_needed": need, "variants": {}}
    warm_file_cache(paths[:need])
    for v in variants:
        spec = {"worker": "train", "variant": v, "paths": list(paths), "targets": np.asarray(targets).tolist(),
                "backbone": backbone, "image_size": image_size, "batch_size": batch_size, "steps": steps,
                "warmup": warmup, "workers": workers, "overrides": overrides or {}}
        log.info("measuring training throughput: %s", v)
        out["variants"][v] = _run_worker(f"train_{v}", spec, workdir)
    p, o = out["variants"].get("plain", {}), out["variants"].get("ours", {})
    if "photos_per_s" in p and "photos_per_s" in o:
        out["ratio_ours_vs_plain"] = round(o["photos_per_s"] / p["photos_per_s"], 3)
    return out


# ---- the run ---------------------------------------------------------------------------------------------

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
    except ImportError as e:
        raise SystemExit(f"wildlife-vision benchmark: --quantize needs the train extra ({e}); pass --int8 FILE "
                         "instead") from None
    import dataclasses

    from wildlife_vision import load_model

    model = load_model(fp32)
    calib_paths = photos.train_paths or photos.paths
    batch = _input_pool(calib_paths, model.preprocess_config, min(n_calib, len(calib_paths)))
    meta = dataclasses.replace(model.metadata, name=model.metadata.name + "-int8")
    t = time.perf_counter()
    quantize_int8(fp32, out, batch, meta)
    return {"calibration_photos": int(len(batch)), "seconds": round(time.perf_counter() - t, 1),
            "source": "train split" if photos.train_paths else "benchmark photos"}


def _ap(targets: np.ndarray, scores: np.ndarray) -> Dict[str, Any]:
    from wildlife_vision.evaluation.metrics import average_precision, macro_ap

    return {"macro": macro_ap(targets, scores),
            "per_label": [average_precision(targets[:, j], scores[:, j]) for j in range(targets.shape[1])]}


def _accuracy(photos: PhotoSet, configs: Dict[str, Dict[str, Any]], labels: Sequence[str]) -> Dict[str, Any]:
    if photos.targets is None or photos.is_val is None or not photos.is_val.any():
        return {"note": "no labelled validation photos: accuracy not compared"}
    mask = photos.is_val
    y = photos.targets[mask]
    out: Dict[str, Any] = {"val_photos": int(mask.sum()), "labels": list(labels)}
    for name, res in configs.items():
        if "scores" in res and len(res["scores"]) == len(mask):
            s = np.asarray(res["scores"], dtype=np.float64)[mask]
            ok = np.all(np.isfinite(s), axis=1)
            ap = _ap(y[ok], s[ok])
            out[name] = {"macro_ap": ap["macro"], "per_label_ap": dict(zip(labels, ap["per_label"])),
                         "scored": int(ok.sum())}
    if "ort_fp32" in out and "ort_int8" in out and out["ort_fp32"]["macro_ap"] is not None \
            and out["ort_int8"]["macro_ap"] is not None:
        out["int8_macro_ap_change"] = out["ort_int8"]["macro_ap"] - out["ort_fp32"]["macro_ap"]
        out["int8_per_label_ap_change"] = {
            lab: (None if out["ort_fp32"]["per_label_ap"][lab] is None
                  else out["ort_int8"]["per_label_ap"][lab] - out["ort_fp32"]["per_label_ap"][lab])
            for lab in labels}
        f = np.asarray(configs["ort_fp32"]["scores"])[mask]
        q = np.asarray(configs["ort_int8"]["scores"])[mask]
        out["int8_max_abs_score_diff"] = float(np.nanmax(np.abs(f - q)))
    if "ort_fp32" in configs and "torch_eager" in configs and "scores" in configs["torch_eager"] \
            and "checkpoint" in str(configs["torch_eager"].get("weights", "")):
        f = np.asarray(configs["ort_fp32"]["scores"])
        t = np.asarray(configs["torch_eager"]["scores"])
        if f.shape == t.shape:
            out["torch_vs_fp32_max_abs_score_diff"] = float(np.nanmax(np.abs(f - t)))
    return out


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 3) if a and b else None


def build_ratios_and_targets(report: Dict[str, Any]) -> None:
    c = report["configs"]

    def e2e(name: str) -> Optional[float]:
        return c.get(name, {}).get("e2e", {}).get("photos_per_s")

    def mo(name: str, bs: str) -> Optional[float]:
        return c.get(name, {}).get("model_only", {}).get(bs, {}).get("photos_per_s")

    big = str(max(int(b) for b in report["settings"]["batch_sizes"]))
    ratios = {
        f"e2e_fp32_vs_model_only_fp32_b{big}": _ratio(e2e("ort_fp32"), mo("ort_fp32", big)),
        "e2e_fp32_vs_torch_eager": _ratio(e2e("ort_fp32"), e2e("torch_eager")),
        "e2e_int8_vs_fp32": _ratio(e2e("ort_int8"), e2e("ort_fp32")),
        "e2e_int8_vs_torch_eager": _ratio(e2e("ort_int8"), e2e("torch_eager")),
        f"model_only_fp32_vs_torch_b{big}": _ratio(mo("ort_fp32", big), mo("torch_eager", big)),
        f"model_only_int8_vs_fp32_b{big}": _ratio(mo("ort_int8", big), mo("ort_fp32", big)),
        f"e2e_int8_vs_model_only_int8_b{big}": _ratio(e2e("ort_int8"), mo("ort_int8", big)),
    }
    report["ratios"] = {k: v for k, v in ratios.items() if v is not None}
    gflop = report["model"].get("gflop_per_photo")
    peak = report["machine"].get("peak_gflops_fp32")
    if gflop and peak:
        lim = peak / gflop
        report["flop_limit"] = {"photos_per_s_at_peak": round(lim, 1), "peak_gflops_fp32": peak,
                                "gflop_per_photo": gflop}
        for name, res in c.items():
            if "e2e" in res:
                res["e2e"]["fraction_of_flop_limit"] = round(res["e2e"]["photos_per_s"] / lim, 3)
            for row in res.get("model_only", {}).values():
                row["fraction_of_flop_limit"] = round(row["photos_per_s"] / lim, 3)
    targets = []

    def add(name: str, what: str, value: Optional[float], threshold: float, higher: bool = True,
            why_missing: str = "") -> None:
        if value is None:
            targets.append({"name": name, "what": what, "threshold": threshold, "value": None, "passed": None,
                            "status": "SKIP", "note": why_missing})
            return
        ok = value >= threshold if higher else abs(value) <= threshold
        targets.append({"name": name, "what": what, "threshold": threshold, "value": round(value, 4),
                        "passed": bool(ok), "status": "PASS" if ok else "FAIL"})

    add("e2e_fp32_vs_model_b32", f"end-to-end fp32 / model-only fp32 at batch {big} >= 0.85",
        ratios[f"e2e_fp32_vs_model_only_fp32_b{big}"], TARGETS["e2e_fp32_vs_model_b32"],
        why_missing="onnxruntime fp32 not measured")
    add("e2e_fp32_vs_torch", "end-to-end onnxruntime fp32 / torch eager >= 3", ratios["e2e_fp32_vs_torch_eager"],
        TARGETS["e2e_fp32_vs_torch"], why_missing=c.get("torch_eager", {}).get("skipped", "torch eager not measured"))
    add("e2e_int8_vs_fp32", "end-to-end INT8 / fp32 >= 1.15", ratios["e2e_int8_vs_fp32"],
        TARGETS["e2e_int8_vs_fp32"], why_missing=c.get("ort_int8", {}).get("skipped", "INT8 not measured"))
    acc = report.get("accuracy", {})
    add("int8_ap_change", "|macro-AP INT8 - fp32| on the validation split <= 0.005",
        acc.get("int8_macro_ap_change"), TARGETS["int8_ap_change"], higher=False,
        why_missing=acc.get("note", "INT8 or labels missing"))
    tr = report.get("training") or {}
    add("train_ours_vs_plain", "training photos/s ours / plain torch loop >= 2", tr.get("ratio_ours_vs_plain"),
        TARGETS["train_ours_vs_plain"], why_missing=tr.get("skipped", "training not measured"))
    report["targets"] = targets


def _torch_available() -> str:
    """'' when torch, torchvision and timm can be imported, else why not."""
    import importlib.util

    for mod in ("torch", "torchvision", "timm"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed (pip install 'wildlife-vision[train]')"
    return ""


def run_benchmark(args: argparse.Namespace) -> Dict[str, Any]:
    """Measure every configuration (each in its own subprocess) and return the report (see module docstring)."""
    t_start = time.perf_counter()
    notes: List[str] = []
    model_path = Path(args.model) if args.model else _default_model()
    if model_path is None:
        raise SystemExit("wildlife-vision benchmark: no --model given and no shipped default model "
                         "(exported_models/DEFAULT); export one with `wildlife-vision export RUN --output m.onnx`")
    if not model_path.is_file():
        raise SystemExit(f"wildlife-vision benchmark: model {model_path} not found")
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
            raise SystemExit(f"wildlife-vision benchmark: INT8 model {int8_path} not found")

        threads = args.threads or physical_cores()
        base = {"paths": photos.paths, "batch_sizes": args.batch_sizes, "seconds": args.seconds,
                "latency_photos": min(args.latency_photos, len(photos.paths)), "e2e_batch_size": args.e2e_batch_size,
                "repeats": args.repeats}
        configs: Dict[str, Dict[str, Any]] = {}
        if torch_missing:
            configs["torch_eager"] = {"skipped": torch_missing}
        else:
            log.info("measuring torch eager")
            configs["torch_eager"] = _run_worker("torch", {
                **base, "worker": "torch", "backbone": meta.backbone, "labels": labels,
                "preprocess": meta.preprocess.to_dict(), "weights": args.torch_weights}, workdir)
        log.info("measuring onnxruntime fp32")
        configs["ort_fp32"] = _run_worker("ort_fp32", {**base, "worker": "ort", "model": str(model_path),
                                                       "threads": threads, "decode_workers": args.decode_workers},
                                          workdir)
        if int8_path is None:
            configs["ort_int8"] = {"skipped": f"no INT8 model (looked for {model_path.stem}.int8.onnx beside the "
                                              "model); pass --int8 FILE or --quantize"}
        else:
            log.info("measuring onnxruntime INT8")
            configs["ort_int8"] = _run_worker("ort_int8", {**base, "worker": "ort", "model": str(int8_path),
                                                           "threads": threads,
                                                           "decode_workers": args.decode_workers}, workdir)
            if quant_info:
                configs["ort_int8"]["quantized_here"] = quant_info
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
        "machine": machine_info(args.ghz, args.flops_per_cycle),
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
        "training": training,
        "notes": notes,
    }
    report["accuracy"] = _accuracy(photos, {k: v for k, v in configs.items() if "scores" in v}, labels)
    build_ratios_and_targets(report)
    if report["machine"]["peak_gflops_fp32"] is None:
        notes.append("CPU clock unknown: pass --ghz to get the FLOP-limit figures")
    if getattr(args, "busy_note", ""):
        notes.append(args.busy_note)
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    return report


def _f(v: Any, spec: str = ".1f", missing: str = "-") -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return missing
    return format(v, spec)


def format_report(r: Dict[str, Any]) -> str:
    m, mod = r["machine"], r["model"]
    L: List[str] = []
    L.append(f"wildlife-vision benchmark ({r['created']}, {r['seconds']} s)")
    L.append(f"machine: {m['cpu']}, {m['cores']} cores @ {_f(m['ghz'], '.2f')} GHz, SIMD {'/'.join(m['simd'])}; "
             f"fp32 peak {_f(m['peak_gflops_fp32'])} GFLOP/s ({m['flops_per_cycle_per_core']} FLOP/cycle/core)")
    v = m["versions"]
    L.append("versions: " + ", ".join(f"{k} {v[k]}" for k in ("onnxruntime", "torch", "torchvision", "timm",
                                                              "pillow", "numpy") if k in v)
             + (f", libjpeg-turbo {'yes' if v.get('libjpeg_turbo') else 'no'}" if "libjpeg_turbo" in v else ""))
    L.append(f"model: {mod['path']} ({mod['backbone']}, {mod['input_size'][0]}x{mod['input_size'][1]}, "
             f"{_f(mod.get('gflop_per_photo'), '.3g')} GFLOP/photo: {mod.get('source')})")
    if mod.get("int8_path"):
        L.append(f"INT8 model: {mod['int8_path']}")
    L.append(f"photos: {r['photos']['count']} from {r['photos']['source']}")
    if r.get("flop_limit"):
        L.append(f"FLOP limit: {r['flop_limit']['photos_per_s_at_peak']} photos/s "
                 f"(= {r['flop_limit']['peak_gflops_fp32']} GFLOP/s / {r['flop_limit']['gflop_per_photo']} GFLOP)")
    bss = [str(b) for b in r["settings"]["batch_sizes"]]
    head = (f"{'configuration':<18} {'e2e ph/s':>9} {'%limit':>7} " + " ".join(f"{'b' + b + ' ph/s':>10}" for b in bss)
            + f" {'1-photo p50/p95 ms':>19} {'b1 p50 ms':>9} {'peak RSS MB':>11}")
    L.append("")
    L.append(head)
    L.append("-" * len(head))
    for name, res in r["configs"].items():
        label = CONFIG_NAMES[name]
        if "skipped" in res or "error" in res:
            L.append(f"{label:<18} {'skipped: ' + res['skipped'] if 'skipped' in res else res['error'][:200]}")
            continue
        e = res["e2e"]
        mo = res["model_only"]
        lat = res["latency_one_photo"]
        frac = e.get("fraction_of_flop_limit")
        L.append(f"{label:<18} {e['photos_per_s']:>9.1f} {_f(frac * 100 if frac is not None else None, '.1f'):>6}% "
                 + " ".join(f"{mo[b]['photos_per_s']:>10.1f}" if b in mo else f"{'-':>10}" for b in bss)
                 + f" {lat['p50_ms']:>9.1f} / {lat['p95_ms']:<7.1f} {mo.get('1', {}).get('p50_ms', float('nan')):>9.2f}"
                   f" {res['peak_rss_mb']:>11.0f}")
    L.append("")
    for name, res in r["configs"].items():
        if "e2e" in res and "by_decode_workers" in res["e2e"]:
            by = res["e2e"]["by_decode_workers"]
            L.append(f"{CONFIG_NAMES[name]} end to end by decoding threads: "
                     + ", ".join(f"{w}: {by[w]['photos_per_s']:.1f}" for w in by)
                     + f" photos/s (best {res['e2e']['best_decode_workers']}; scores identical across settings: "
                       f"max diff {res['e2e']['max_abs_score_diff_between_worker_settings']:.1e})")
        if name == "torch_eager" and "weights" in res:
            L.append(f"torch eager: {res['torch_threads']} torch threads, weights: {res['weights']}")
    if r.get("ratios"):
        L.append("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in r["ratios"].items()))
    acc = r.get("accuracy", {})
    if "int8_macro_ap_change" in acc:
        f32, i8 = acc["ort_fp32"], acc["ort_int8"]
        per = ", ".join(f"{lab} {_f(f32['per_label_ap'][lab], '.4f')} -> {_f(i8['per_label_ap'][lab], '.4f')}"
                        for lab in acc["labels"])
        L.append(f"validation AP on {acc['val_photos']} photos, fp32 -> INT8: macro {f32['macro_ap']:.4f} -> "
                 f"{i8['macro_ap']:.4f} ({acc['int8_macro_ap_change']:+.4f}); {per}; max |score diff| "
                 f"{acc['int8_max_abs_score_diff']:.3f}")
    elif acc.get("note"):
        L.append(f"accuracy: {acc['note']}")
    tr = r.get("training") or {}
    if tr.get("variants"):
        for v, res in tr["variants"].items():
            if "error" in res:
                L.append(f"training {v}: {res['error'][:300]}")
            else:
                L.append(f"training {v:<5}: {res['photos_per_s']:.1f} photos/s ({res['steps']} steps of "
                         f"{res['batch_size']} after {res['warmup_steps']} warm-up, p50 step {res['step_ms_p50']:.0f} ms, main-process"
                         f" peak RSS {res['peak_rss_mb']:.0f} MB); {_settings_text(res.get('settings', {}))}")
        if "ratio_ours_vs_plain" in tr:
            L.append(f"training ours / plain: {tr['ratio_ours_vs_plain']:.2f}x ({tr['backbone']} at "
                     f"{tr['image_size']} px, batch {tr['batch_size']})")
    elif tr.get("skipped"):
        L.append(f"training: skipped ({tr['skipped']})")
    L.append("")
    L.append("targets (issue #5):")
    for t in r["targets"]:
        val = _f(t["value"], ".3f") if t["value"] is not None else "n/a"
        L.append(f"  [{t['status']}] {t['what']}: {val}" + (f" ({t['note']})" if t.get("note") else ""))
    for n in r.get("notes", []):
        L.append(f"note: {n}")
    return "\n".join(L)


def _settings_text(s: Dict[str, Any]) -> str:
    return "; ".join(f"{k} {v}" for k, v in s.items())


# ---- command line ------------------------------------------------------------------------------------------

DESCRIPTION = """\
Measure photos/s from JPEG files to scores (decode + preprocess + inference), model-only photos/s at several
batch sizes, one-photo latency and peak memory for torch eager (when installed), onnxruntime fp32 and
onnxruntime INT8, on real photos (../shared/data/wildtrade-v1 when present, else --data, else generated),
plus training photos/s of a plain torch loop vs ours. Prints a table with the targets of issue #5 and
writes JSON (--json). Each configuration runs in a fresh subprocess. See docs/benchmark.md.
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
    p.add_argument("--no-torch", action="store_true", help="skip torch eager and the training comparison")
    p.add_argument("--torch-weights", metavar="RUN_DIR|best.pt",
                   help="weights for torch eager (default: random; speed does not depend on them)")
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
    m.add_argument("--flops-per-cycle", type=int, default=DEFAULT_FLOPS_PER_CYCLE,
                   help="fp32 FLOP per cycle per core (default 32: AVX2, 2 FMA pipes x 8 lanes x 2)")
    p.add_argument("--json", metavar="FILE", help="write the full report (schema wildlife-vision/benchmark/v1) here")
    p.set_defaults(func=run_command)


def _busy_note() -> str:
    """A warning when other processes are using the CPU: the figures would be distorted."""
    try:
        import psutil

        me = os.getpid()
        busy = []
        for proc in psutil.process_iter(["pid", "name", "cpu_percent"]):
            try:
                if proc.info["pid"] != me:
                    proc.cpu_percent(None)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        time.sleep(0.5)
        for proc in psutil.process_iter(["pid", "name"]):
            try:
                if proc.info["pid"] == me:
                    continue
                c = proc.cpu_percent(None)
                if c > 20:
                    busy.append(f"{proc.info['name']} (pid {proc.info['pid']}, {c:.0f}% CPU)")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        if busy:
            return ("other processes were busy when the benchmark started, so its figures are distorted: "
                    + ", ".join(busy[:5]))
    except ImportError:
        pass
    return ""


def run_command(args: argparse.Namespace) -> int:
    for name in ("photos", "e2e_batch_size", "latency_photos", "repeats"):
        v = getattr(args, name)
        if v is not None and v < 1:
            print(f"wildlife-vision benchmark: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    if any(b < 1 for b in args.batch_sizes) or any(w < 1 for w in args.decode_workers) or args.threads < 0:
        print("wildlife-vision benchmark: batch sizes and decode workers must be at least 1, --threads 0 or more",
              file=sys.stderr)
        return 2
    args.argv = sys.argv[2:] if len(sys.argv) > 2 and sys.argv[1] == "benchmark" else []
    args.busy_note = _busy_note()
    if args.busy_note:
        log.warning(args.busy_note)
    report = run_benchmark(args)
    print(format_report(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(f"\nJSON report: {args.json}")
    failed = [name for name, res in report["configs"].items() if "error" in res]
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[2:]))
    from wildlife_vision.cli import main as _main

    sys.exit(_main(["benchmark", *sys.argv[1:]]))
