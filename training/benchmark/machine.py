"""The machine the benchmark runs on: CPU, cores, clock, SIMD, versions, its fp32 FLOP limit and a model's FLOPs
per photo; and the process-level measuring tools (peak RSS, timed loops, percentiles, a busy-machine warning).

Importing this module needs neither torch nor onnx.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

log = logging.getLogger(__name__)

#: fp32 FLOP per cycle per core: 2 FMA pipes x 8 fp32 lanes (256 bit) x 2 FLOP per FMA (AVX2 + FMA)
DEFAULT_FLOPS_PER_CYCLE = 32
#: documented per-backbone cost (GFLOP per 224x224 photo, 1 multiply-add = 2 FLOP), used only when the ONNX
#: graph cannot be counted (the `onnx` package is missing)
KNOWN_GFLOP_224 = {"tf_efficientnet_lite0": 0.78, "tf_efficientnet_lite1": 1.22, "tf_efficientnet_lite2": 1.74,
                   "mobilenetv3_large_100": 0.44, "resnet50": 8.2, "convnext_tiny": 8.9}

def _cpuinfo() -> Dict[str, str]:
    from wildlife_vision.cpu import read_cpuinfo  # the one /proc/cpuinfo reader

    return read_cpuinfo()


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
    for mod in ("onnxruntime", "openvino", "PIL", "torch", "torchvision", "timm", "onnx"):
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
        "vendor": info.get("vendor_id", ""),
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


# ---- measuring, inside one subprocess per configuration --------------------------------------------------

def peak_rss_bytes() -> int:
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


def timed_loop(fn, min_seconds: float, min_iters: int, warmup: int = 2) -> List[float]:
    for _ in range(warmup):
        fn()
    times: List[float] = []
    start = time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def latency(times: Sequence[float]) -> Dict[str, float]:
    return {"p50_ms": round(1000 * pct(times, 50), 2), "p95_ms": round(1000 * pct(times, 95), 2),
            "n": len(times)}


def busy_note() -> str:
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

