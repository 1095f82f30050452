"""Inference measurements, each in a fresh subprocess: the onnxruntime worker (``Model.predict_iter`` end to end,
model-only batches, one-photo latency), the torch workers (the competent baseline: DataLoader workers,
channels-last, inference mode; and the naive path many users write first), and :func:`run_worker`, which runs
one worker kind in its own Python process (``python -m wildlife_vision_train.benchmark --worker SPEC OUT``, see
``__main__.py``) so peak memory does not mix.

Importing this module needs neither torch nor onnx; the workers import them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .machine import latency, peak_rss_bytes, timed_loop
from .photos import input_pool

def ort_worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    from wildlife_vision import load_model

    t = time.perf_counter()
    if spec.get("precision") or spec.get("runtime"):  # an execution profile (its own thresholds and runtime)
        model = load_model(spec["model"], threads=spec.get("threads") or None, batch_size=32,
                           runtime=spec.get("runtime"), precision=spec.get("precision"))
    else:
        model = load_model(spec["model"], providers=["cpu"], threads=spec.get("threads") or None, batch_size=32)
    load_s = time.perf_counter() - t
    sess = model.session
    in_name, out_name = model._input_name, model._output_name  # noqa: SLF001 - the raw session, model only
    paths = spec["paths"]
    pool = input_pool(paths, model.preprocess_config, max(spec["batch_sizes"]))
    res: Dict[str, Any] = {"model_load_s": round(load_s, 3), "provider": model.provider, "profile": model.profile,
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


def _eval_transform(cfg: Any):
    """The model's eval transform in torchvision terms (what a torch user writes): Resize(shorter side),
    CenterCrop, ToTensor, Normalize, with the model's interpolation."""
    from torchvision import transforms as T

    interp = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC,
              "nearest": T.InterpolationMode.NEAREST, "lanczos": T.InterpolationMode.LANCZOS,
              "box": T.InterpolationMode.BOX}[cfg.interpolation]
    return T.Compose([T.Resize(cfg.resize_shorter, interpolation=interp), T.CenterCrop(cfg.input_size),
                      T.ToTensor(), T.Normalize(cfg.mean, cfg.std)])


class EvalPhotos:
    """Map-style dataset of the competent torch baseline: PIL decode + the torchvision eval transform, one photo
    per item (a plain class, so it pickles under any multiprocessing start method)."""

    def __init__(self, paths: List[str], transform: Any):
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.paths[i]) as img:
            return self.transform(img.convert("RGB"))


def _one_thread(_: int) -> None:
    """DataLoader worker init: one torch thread per decoding process, so workers do not oversubscribe the cores."""
    import torch

    torch.set_num_threads(1)


def _model_only(model: Any, pool: Any, spec: Dict[str, Any], channels_last: bool) -> Dict[str, Any]:
    import torch

    out = {}
    for bs in spec["batch_sizes"]:
        x = pool[:bs].contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        times = timed_loop(lambda: model(x), spec["seconds"], 3)
        out[str(bs)] = {"photos_per_s": round(bs * len(times) / sum(times), 2), **latency(times)}
    return out


def _latency(one: Any, paths: List[str]) -> Dict[str, float]:
    for p in paths[:3]:
        one(p)
    times = []
    for p in paths:
        t = time.perf_counter()
        one(p)
        times.append(time.perf_counter() - t)
    return latency(times)


def torch_worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """One torch baseline, ``spec["style"]``:

    * ``competent`` (the baseline a reviewer accepts): decoding (PIL) and the eval transform (torchvision) in
      ``DataLoader`` worker processes (persistent, ``pin_memory`` off on CPU, one torch thread each; the best of
      ``spec["decode_workers"]`` worker counts, as for onnxruntime's decoding threads), the model and its input
      in channels-last, ``torch.inference_mode()``, torch intra-op threads = ``spec["threads"]`` (the number
      onnxruntime gets), the same batch size as onnxruntime end to end;
    * ``naive`` (the slow path many users write first): decoding and transforms in the main process, NCHW,
      ``torch.no_grad()``, torch's default threads.
    """
    import torch
    from PIL import Image

    from wildlife_vision.preprocess import PreprocessConfig

    style = spec.get("style", "naive")
    if style not in ("competent", "naive"):
        raise ValueError(f"torch baseline style must be 'competent' or 'naive', got {style!r}")
    competent = style == "competent"
    if competent and spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    cfg = PreprocessConfig.from_dict(spec["preprocess"])
    t = time.perf_counter()
    model, source = _torch_model(spec["backbone"], len(spec["labels"]), spec.get("weights"))
    if competent:
        model = model.to(memory_format=torch.channels_last)
    load_s = time.perf_counter() - t
    tf = _eval_transform(cfg)
    paths = spec["paths"]
    bs = spec["e2e_batch_size"]
    pool = torch.from_numpy(input_pool(paths, cfg, max(spec["batch_sizes"])))
    layout = torch.channels_last if competent else torch.contiguous_format
    res: Dict[str, Any] = {"style": style, "model_load_s": round(load_s, 3), "weights": source,
                           "torch_threads": torch.get_num_threads()}
    grad_off = torch.inference_mode if competent else torch.no_grad
    with grad_off():
        res["model_only"] = _model_only(model, pool, spec, competent)

        def one(p: str) -> np.ndarray:
            with Image.open(p) as img:
                x = tf(img.convert("RGB")).unsqueeze(0).contiguous(memory_format=layout)
            return torch.sigmoid(model(x)).numpy()

        res["latency_one_photo"] = _latency(one, paths[:spec["latency_photos"]])
        if competent:
            res["e2e"], scores = _competent_e2e(model, paths, tf, spec)
        else:
            best, scores = None, None
            for _ in range(spec.get("repeats", 1)):
                t = time.perf_counter()
                got = []
                for i in range(0, len(paths), bs):
                    x = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths[i:i + bs]])
                    got.append(torch.sigmoid(model(x)).numpy())
                dt = time.perf_counter() - t
                if best is None or dt < best:
                    best, scores = dt, np.concatenate(got)
            res["e2e"] = {"photos_per_s": round(len(paths) / best, 2), "seconds": round(best, 3), "batch_size": bs,
                          "photos": len(paths)}
    res["settings"] = ({"data": "PIL decode + torchvision Resize/CenterCrop/ToTensor/Normalize in DataLoader worker "
                                "processes (persistent, pin_memory off, 1 torch thread each; best worker count "
                                "reported)", "layout": "channels_last", "autograd": "torch.inference_mode()",
                        "torch_threads": torch.get_num_threads(), "batch_size": bs} if competent else
                       {"data": "PIL decode + torchvision Resize/CenterCrop/ToTensor/Normalize in the main process",
                        "layout": "NCHW", "autograd": "torch.no_grad()",
                        "torch_threads": f"{torch.get_num_threads()} (torch default)", "batch_size": bs})
    res["scores"] = scores.astype(np.float64).tolist()
    res["labels"] = list(spec["labels"])
    res["peak_rss_mb"] = round(peak_rss_bytes() / 2 ** 20, 1)
    return res


def _competent_e2e(model: Any, paths: List[str], tf: Any, spec: Dict[str, Any]) -> Tuple[Dict[str, Any], np.ndarray]:
    """Photos/s from JPEG paths to scores through a DataLoader, for each worker count; the best is reported and
    the scores of every setting must agree."""
    import torch
    from torch.utils.data import DataLoader

    bs = spec["e2e_batch_size"]
    by: Dict[str, Any] = {}
    scores_by: Dict[int, np.ndarray] = {}
    for w in spec["decode_workers"]:
        loader = DataLoader(EvalPhotos(paths, tf), batch_size=bs, shuffle=False, num_workers=w,
                            persistent_workers=w > 0, pin_memory=False, worker_init_fn=_one_thread if w else None)
        for _ in range(spec.get("repeats", 1)):  # the first pass includes starting the workers, as a job would
            t = time.perf_counter()
            got = [torch.sigmoid(model(x.contiguous(memory_format=torch.channels_last))).numpy() for x in loader]
            dt = time.perf_counter() - t
            rate = len(paths) / dt
            if str(w) not in by or rate > by[str(w)]["photos_per_s"]:
                by[str(w)] = {"photos_per_s": round(rate, 2), "seconds": round(dt, 3)}
            scores_by[w] = np.concatenate(got).astype(np.float64)
        del loader  # stops its persistent workers before the next setting starts its own
    best_w = max(by, key=lambda k: by[k]["photos_per_s"])
    ref = scores_by[int(best_w)]
    same = max(float(np.max(np.abs(s - ref))) if s.size else 0.0 for s in scores_by.values())
    return ({"by_decode_workers": by, "best_decode_workers": int(best_w), "photos_per_s": by[best_w]["photos_per_s"],
             "seconds": by[best_w]["seconds"], "batch_size": bs, "photos": len(paths),
             "max_abs_score_diff_between_worker_settings": same}, ref)


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
