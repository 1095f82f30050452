"""Training photos/s on this machine: a plain torch loop with default settings vs ``wildlife-vision train``'s.

``plain``: timm model, PIL decode + torchvision transforms in the main process, NCHW float32, AdamW, BCE.
``ours``: the dataset, augmentation and loader of ``train`` with its defaults, and every step is
:class:`wildlife_vision_train.step.TrainStep`, the step ``train`` runs. Each variant runs in a fresh process
(:func:`~wildlife_vision_train.benchmark.inference.run_worker`). Used by ``wildlife-vision benchmark`` (its
training target) and ``benchmarks/train_throughput.py``.

Importing this module needs no torch; the workers import it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from .inference import run_worker
from .machine import pct, peak_rss_bytes
from .photos import PhotoSet, warm_file_cache

log = logging.getLogger(__name__)

def train_worker(spec: Dict[str, Any]) -> Dict[str, Any]:
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
            "warmup_s": round(warm_s, 2), "step_ms_p50": round(1000 * pct(times, 50), 1),
            "settings": settings, "peak_rss_mb": round(peak_rss_bytes() / 2 ** 20, 1)}


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
    model, _ = create_backbone(backbone, len(labels), "none", cfg.model.drop_rate, cfg.model.drop_path_rate,
                               cfg.model.input_lowpass)
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
        out["variants"][v] = run_worker(f"train_{v}", spec, workdir)
    p, o = out["variants"].get("plain", {}), out["variants"].get("ours", {})
    if "photos_per_s" in p and "photos_per_s" in o:
        out["ratio_ours_vs_plain"] = round(o["photos_per_s"] / p["photos_per_s"], 3)
    return out

