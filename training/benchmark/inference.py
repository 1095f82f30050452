"""Inference measurements, each in a fresh subprocess: the onnxruntime worker (``Model.predict_iter`` end to end,
model-only batches, one-photo latency) and the torch eager worker (the plain path a typical user writes), and
:func:`run_worker`, which runs one worker kind in its own Python process (``python -m
wildlife_vision_train.benchmark --worker SPEC OUT``, see ``__main__.py``) so peak memory does not mix.

Importing this module needs neither torch nor onnx; the workers import them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from .machine import latency, peak_rss_bytes, timed_loop
from .photos import input_pool

def ort_worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    from wildlife_vision import load_model

    t = time.perf_counter()
    model = load_model(spec["model"], providers=["cpu"], threads=spec.get("threads") or None, batch_size=32)
    load_s = time.perf_counter() - t
    sess = model.session
    in_name, out_name = model._input_name, model._output_name  # noqa: SLF001 - the raw session, model only
    paths = spec["paths"]
    pool = input_pool(paths, model.preprocess_config, max(spec["batch_sizes"]))
    res: Dict[str, Any] = {"model_load_s": round(load_s, 3), "provider": model.provider,
                           "intra_op_threads": spec.get("threads") or "onnxruntime default",
                           "model_only": {}}
    for bs in spec["batch_sizes"]:
        x = np.ascontiguousarray(pool[:bs])
        times = timed_loop(lambda: sess.run([out_name], {in_name: x}), spec["seconds"], 3)
        res["model_only"][str(bs)] = {"photos_per_s": round(bs * len(times) / sum(times), 2), **latency(times)}
    # latency of one photo, file -> scores
    lat_paths = paths[:spec["latency_photos"]]
    for p in lat_paths[:3]:
        model.predict(p, batch_size=1)
    times = []
    for p in lat_paths:
        t = time.perf_counter()
        model.predict(p, batch_size=1)
        times.append(time.perf_counter() - t)
    res["latency_one_photo"] = latency(times)
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
    res["peak_rss_mb"] = round(peak_rss_bytes() / 2 ** 20, 1)
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


def torch_worker(spec: Dict[str, Any]) -> Dict[str, Any]:
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
    pool = torch.from_numpy(input_pool(paths, cfg, max(spec["batch_sizes"])))
    res: Dict[str, Any] = {"model_load_s": round(load_s, 3), "weights": source,
                           "torch_threads": torch.get_num_threads(), "model_only": {}}
    with torch.no_grad():
        for bs in spec["batch_sizes"]:
            x = pool[:bs].contiguous()
            times = timed_loop(lambda: model(x), spec["seconds"], 3)
            res["model_only"][str(bs)] = {"photos_per_s": round(bs * len(times) / sum(times), 2), **latency(times)}

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
        res["latency_one_photo"] = latency(times)
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
    res["peak_rss_mb"] = round(peak_rss_bytes() / 2 ** 20, 1)
    return res


def run_worker(kind: str, spec: Dict[str, Any], workdir: Path, timeout: float = 3600) -> Dict[str, Any]:
    """Run one measurement in a fresh Python process; returns its result, or {"error": ...}."""
    spec_path = workdir / f"{kind}.spec.json"
    out_path = workdir / f"{kind}.result.json"
    spec_path.write_text(json.dumps({"kind": kind, **spec}), encoding="utf-8")
    cmd = [sys.executable, "-m", "wildlife_vision_train.benchmark", "--worker", str(spec_path), str(out_path)]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the checkout: the worker imports this wildlife_vision
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0 or not out_path.is_file():
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:])
        return {"error": f"{kind} measurement failed (exit {proc.returncode}): {tail}"}
    result = json.loads(out_path.read_text(encoding="utf-8"))
    result["wall_s"] = round(time.perf_counter() - t, 1)
    return result
