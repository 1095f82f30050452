"""Fine-tune a timm backbone on a labelled manifest: the engine behind ``wildlife-vision train``.

``main(argv)`` takes the same arguments as the command line (tests call it directly); :func:`train` takes a
:class:`~wildlife_vision_train.config.TrainConfig`. The run folder receives ``config.yaml`` (the resolved config),
``metrics.jsonl`` (one JSON object per epoch, with training images/sec), ``train.log``, ``last.pt`` (every epoch,
for ``--resume``), ``best.pt`` (best validation macro-AP), ``calibration.json`` (thresholds and review bands)
and ``eval/`` (the validation report of the best checkpoint); a tracked run also ``tracking.json`` (where its MLflow
run is) and ``tensorboard/`` (:mod:`wildlife_vision_train.tracking`). Checkpoints hold only tensors and plain data,
so they load with ``torch.load(..., weights_only=True)``.

Under torchrun every process runs :func:`train`; the gradients are averaged by DistributedDataParallel, and rank 0
alone writes the run folder, validates and evaluates (:mod:`wildlife_vision_train.distributed`).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from wildlife_vision._version import __version__
from wildlife_vision.data.manifest import Sample, read_manifest, targets_for
from wildlife_vision.data.splits import fill_missing_splits, label_counts
from wildlife_vision.evaluation.calibrate import calibrate
from wildlife_vision.evaluation.evaluate import build_report, default_slice_columns, write_report
from wildlife_vision.evaluation.metrics import average_precision, macro_ap
from wildlife_vision.preprocess import PreprocessConfig

from wildlife_vision_train.backbones import PretrainedInfo, create_backbone, init_head, preflight, preprocess_config_for
from wildlife_vision_train.checkpoint import (CHECKPOINT_FORMAT, build_model_from_checkpoint, load_checkpoint, predict,
                                               save_checkpoint, unscored)
from wildlife_vision_train.config import ConfigError, TrainConfig
from wildlife_vision_train.data import EpochSampler, ImageDataset, ShardedEpochSampler, make_loader
from wildlife_vision_train.distributed import (World, epoch_seed, per_rank_batch, quiet_unless_main,
                                               resolve_rank_device, session, wrap)
from wildlife_vision_train.losses import build_loss
from wildlife_vision_train.mixing import BatchMixer
from wildlife_vision_train.runtime import apply_keep_freed_memory
from wildlife_vision_train.step import WarmupCosine, TrainStep, make_ema, make_optimizer, make_schedule
from wildlife_vision_train.tracking import Tracker, TrackingCfg, open_trackers

log = logging.getLogger("training")


# ---- small helpers ---------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """The torch device for ``--device``; a :class:`ConfigError` when CUDA is asked for and torch sees none."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but torch sees no CUDA device "
                          f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); use --device cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _subset(samples: List[Sample], n: Optional[int], seed: int, what: str) -> List[Sample]:
    if n is None or n >= len(samples):
        return samples
    idx = np.sort(np.random.default_rng([seed, 7]).permutation(len(samples))[:n])
    log.info("using %d of %d %s images (--max-%s-images)", n, len(samples), what, what)
    return [samples[i] for i in idx]


def _set_frozen(model: nn.Module, frozen: bool) -> None:
    head = {id(p) for p in model.get_classifier().parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in head or not frozen)


class TrainingError(RuntimeError):
    """The run itself failed (as opposed to being asked for something impossible)."""


# ---- the run ---------------------------------------------------------------------------------------------

@dataclass
class RunResult:
    run_dir: Path
    best_epoch: int
    val_macro_ap: Optional[float]
    report: Dict[str, Any]
    calibration: Dict[str, Any]
    thresholds: Dict[str, float]
    images_per_sec: float
    skipped_images: int
    stopped_early: bool


class _RunLog:
    """Attach ``RUN_DIR/train.log`` to the root logger for the duration of a run."""

    def __init__(self, path: Path):
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.handler.setLevel(logging.INFO)

    def __enter__(self) -> "_RunLog":
        root = logging.getLogger()
        root.addHandler(self.handler)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            self._old_level = root.level
            root.setLevel(logging.INFO)
        else:
            self._old_level = None
        return self

    def __exit__(self, *exc: Any) -> None:
        root = logging.getLogger()
        root.removeHandler(self.handler)
        self.handler.close()
        if self._old_level is not None:
            root.setLevel(self._old_level)


def train(cfg: TrainConfig, resume: Optional[Path] = None, epochs_override: Optional[int] = None,
          exist_ok: bool = False, tracking: Optional[TrackingCfg] = None) -> RunResult:
    """Run (or resume) training and finish with evaluation and calibration of the best checkpoint.

    A run folder that already holds a run is refused unless resuming or ``exist_ok`` (then it is overwritten).
    The device, the backbone name and the reachability of its pretrained weights are checked before the
    manifest's photos are read. Started by torchrun (WORLD_SIZE > 1), each process trains its share of every
    global batch and every process returns rank 0's result.

    ``tracking``: MLflow and/or TensorBoard (:mod:`wildlife_vision_train.tracking`), opened by rank 0 alone
    before the photos are read; one that cannot start raises :class:`~wildlife_vision_train.tracking.TrackingError`.
    """
    world = World.from_env()
    ckpt: Optional[Dict[str, Any]] = None
    if resume is None and not exist_ok and (Path(cfg.run.output) / "last.pt").exists():
        raise FileExistsError(f"{cfg.run.output} already holds a training run; continue it with --resume, choose "
                              "another --output, or pass --exist-ok to overwrite it")
    if resume is not None:
        ckpt = load_checkpoint(resume)
        requested = cfg
        cfg = TrainConfig.from_dict(ckpt["config"]).replace("data", workers=requested.data.workers)
        cfg = cfg.replace("run", output=requested.run.output, device=requested.run.device)
        if epochs_override:
            cfg = cfg.replace("optim", epochs=epochs_override)
        for key in ("test_image_size", "test_crop_pct"):  # evaluation settings may change on resume
            if getattr(requested.data, key) is not None:
                cfg = cfg.replace("data", **{key: getattr(requested.data, key)})
    cfg = cfg.replace("run", world_size=world.world_size)
    cfg.validate()
    per_rank_batch(cfg.data.batch_size, world)
    device = resolve_rank_device(resolve_device(cfg.run.device), world)
    preflight(cfg.model.name, "none" if ckpt is not None else cfg.model.pretrained)
    run_dir = Path(cfg.run.output)
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    with session(world, device) as world, quiet_unless_main(world):
        if not world.is_main:
            return _train(cfg, run_dir, ckpt, world, device)
        with _RunLog(run_dir / "train.log"):
            if world.distributed:
                log.info("distributed: %d processes (%s), global batch %d = %d per process", world.world_size,
                         world.backend, cfg.data.batch_size, per_rank_batch(cfg.data.batch_size, world))
            with open_trackers(tracking, run_dir, int(ckpt["epoch"]) + 1 if ckpt is not None else None) as tracker:
                return _train(cfg, run_dir, ckpt, world, device, tracker)


@dataclass
class _Run:
    """Everything a run's epochs use, built once by :func:`_setup`."""

    cfg: TrainConfig
    run_dir: Path
    world: World
    labels: Tuple[str, ...]
    val_samples: List[Sample]
    device: torch.device
    amp: bool
    channels_last: bool
    eval_cfg: PreprocessConfig
    model: nn.Module
    val_ds: ImageDataset
    sampler: EpochSampler
    train_loader: Any
    val_loader: Any
    loss_fn: nn.Module
    step: TrainStep
    schedule: WarmupCosine
    common: Dict[str, Any]            # the fields every checkpoint of this run carries
    wrapped_frozen: Optional[bool] = None  # the frozen state step.model's DDP wrapper was built for

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and saved as best.pt: the EMA when there is one."""
        return self.step.ema.module if self.step.ema is not None else self.model


@dataclass
class _Progress:
    """Model selection and early-stopping state (saved in last.pt), and totals for the summary."""

    start_epoch: int = 0
    best_metric: float = -1.0
    best_epoch: int = -1
    bad_epochs: int = 0
    skipped: int = 0
    ips_history: List[float] = field(default_factory=list)
    stopped_early: bool = False


def _train(cfg: TrainConfig, run_dir: Path, ckpt: Optional[Dict[str, Any]], world: World,
           device: torch.device, tracker: Tracker = Tracker()) -> RunResult:
    t_start = time.time()
    run = _setup(cfg, run_dir, ckpt, world, device)
    progress = _restore(run, ckpt) if ckpt is not None else _Progress()
    metrics_path = run_dir / "metrics.jsonl"
    if world.is_main and ckpt is None and metrics_path.exists():
        metrics_path.unlink()
    tracker.start(run.cfg, run.common, metrics_path)
    epochs_done = progress.start_epoch
    for epoch in range(progress.start_epoch, run.cfg.optim.epochs):
        stats = _run_epoch(run, epoch)
        epochs_done = epoch + 1
        progress.skipped += stats["train_skipped"]
        stop = False
        if world.is_main:  # the other ranks wait in the broadcast below: rank 0 validates, saves and records
            progress.ips_history.append(stats["_ips"])
            val = _validate(run)
            improved = _update_best(progress, val["metric"], epoch)
            _save_checkpoints(run, progress, epoch, improved, val["val_macro_ap"])
            tracker.log_epoch(_record_epoch(run, metrics_path, epoch, stats, val, improved))
            stop = _should_stop(run.cfg, progress, epoch)
        if world.broadcast(stop):
            log.info("early stopping: validation macro-AP has not improved for %d epoch(s)", progress.bad_epochs)
            progress.stopped_early = True
            break
    if not world.is_main:
        return world.broadcast(None)  # rank 0's result, once it has evaluated and calibrated
    if not (run_dir / "best.pt").exists():
        raise TrainingError("no checkpoint was saved: no validation image could be scored")
    result = finalize(run_dir, run.cfg, run.val_samples, run.device, run.channels_last, run.eval_cfg)
    tracker.finish(run_dir, result.report, result.best_epoch, epochs_done)
    ips = _ips_from_metrics(metrics_path) or progress.ips_history  # all epochs, also of a resumed run
    result.images_per_sec = float(np.mean(ips)) if ips else 0.0
    result.skipped_images = progress.skipped
    result.stopped_early = progress.stopped_early
    log.info("run finished in %.1f s", time.time() - t_start)
    return world.broadcast(result)


# ---- setup -----------------------------------------------------------------------------------------------

def _read_samples(cfg: TrainConfig, ckpt: Optional[Dict[str, Any]]):
    """The manifest and its train/val samples (checked); returns (cfg with the labels, manifest, train, val)."""
    manifest = read_manifest(cfg.data.manifest, labels=cfg.data.labels or None)
    labels = manifest.labels
    if not labels:
        raise ValueError("the manifest has no labelled rows, so there is nothing to learn; pass --labels to name "
                         "the labels explicitly")
    if ckpt is not None and tuple(ckpt["labels"]) != tuple(labels):
        raise ValueError(f"the checkpoint was trained on labels {ckpt['labels']}, the manifest now gives "
                         f"{list(labels)}; pass --labels {' '.join(ckpt['labels'])} or start a new run")
    cfg = cfg.replace("data", labels=tuple(labels))
    samples, split_note = fill_missing_splits(manifest.samples, cfg.data.val_fraction)
    if split_note:
        log.warning(split_note)
    train_samples = _subset([s for s in samples if s.split == "train"], cfg.data.max_train_images,
                            cfg.run.seed, "train")
    val_samples = _subset([s for s in samples if s.split == "val"], cfg.data.max_val_images, cfg.run.seed, "val")
    if not train_samples or not val_samples:
        raise ValueError(f"need training and validation images, got {len(train_samples)} train and "
                         f"{len(val_samples)} val")
    for lab, n in label_counts(train_samples, labels).items():
        if n == 0:
            log.warning("label '%s' has no positive training example in this run", lab)
    log.info("labels %s; %d train / %d val images; positives in train: %s", list(labels), len(train_samples),
             len(val_samples), label_counts(train_samples, labels))
    return cfg, manifest, train_samples, val_samples


def _device_settings(cfg: TrainConfig, device: torch.device) -> Tuple[torch.device, bool, bool]:
    """(device, float16 autocast, channels-last) from the run settings; CPU process settings applied."""
    amp = bool(cfg.run.amp if cfg.run.amp is not None else device.type == "cuda") and device.type == "cuda"
    channels_last = bool(cfg.run.channels_last if cfg.run.channels_last is not None else device.type == "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if apply_keep_freed_memory(cfg.run.keep_freed_memory, device.type):
        log.info("malloc keeps freed memory for reuse")
    return device, amp, channels_last


def _teacher(cfg: TrainConfig, device: torch.device, channels_last: bool) -> torch.nn.Module:
    """The frozen model of ``--consistency-teacher`` (a run's best.pt, or its folder), in eval mode."""
    path = Path(cfg.aug.consistency_teacher)
    path = path / "best.pt" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"--consistency-teacher {cfg.aug.consistency_teacher}: no such checkpoint")
    ckpt = load_checkpoint(path)
    if list(ckpt["labels"]) != list(cfg.data.labels):
        raise ConfigError(f"--consistency-teacher {path} scores {list(ckpt['labels'])}, this run trains "
                          f"{list(cfg.data.labels)}")
    teacher, _ = build_model_from_checkpoint(ckpt)
    teacher.requires_grad_(False)
    teacher.to(device)
    if channels_last:
        teacher.to(memory_format=torch.channels_last)
    log.info("edit consistency: both views pulled to the mean score of the frozen teacher %s", path)
    return teacher.eval()


def _build_model(cfg: TrainConfig, ckpt: Optional[Dict[str, Any]], train_samples: Sequence[Sample]):
    """The backbone with its initial weights; returns (model, pretrained info, train and eval preprocessing,
    cfg with the resolved crop and interpolation)."""
    labels = cfg.data.labels
    pretrained = "none" if ckpt is not None else cfg.model.pretrained
    model, pre_info = create_backbone(cfg.model.name, len(labels), pretrained, cfg.model.drop_rate,
                                      cfg.model.drop_path_rate, cfg.model.input_lowpass)
    if ckpt is not None:
        pre_info = PretrainedInfo(**ckpt["pretrained"])
    else:
        counts = label_counts(train_samples, labels)
        init_head(model, [counts[lab] / len(train_samples) for lab in labels])
    log.info("backbone %s, pretrained: %s (%s)", cfg.model.name, pre_info.source, pre_info.detail)
    if cfg.model.input_lowpass:
        log.info("input low-pass: a Gaussian of sigma %g px in front of the first convolution, trained with and "
                 "exported in the graph", cfg.model.input_lowpass)
    pre_cfg = preprocess_config_for(model, cfg.data.image_size, cfg.data.crop_pct, cfg.data.interpolation)
    cfg = cfg.replace("data", crop_pct=pre_cfg.crop_pct, interpolation=pre_cfg.interpolation)  # resolved values
    # validation, calibration and export: the test size (timm's test_input_size), else the training size
    eval_cfg = preprocess_config_for(model, cfg.data.test_image_size or cfg.data.image_size,
                                     cfg.data.test_crop_pct or cfg.data.crop_pct, cfg.data.interpolation)
    if eval_cfg != pre_cfg:
        log.info("training at %d px; validating, calibrating and exporting at %d px (crop_pct %.3f)",
                 cfg.data.image_size, eval_cfg.input_size[0], eval_cfg.crop_pct)
    return model, pre_info, pre_cfg, eval_cfg, cfg


def _setup(cfg: TrainConfig, run_dir: Path, ckpt: Optional[Dict[str, Any]], world: World,
           device: torch.device) -> _Run:
    """Read the data, build the model, loaders, loss, optimiser, schedule and training step; save config.yaml."""
    seed_everything(cfg.run.seed)  # the same on every rank: the same initial model (DDP also broadcasts rank 0's)
    cfg, manifest, train_samples, val_samples = _read_samples(cfg, ckpt)
    labels = cfg.data.labels
    device, amp, channels_last = _device_settings(cfg, device)
    model, pre_info, pre_cfg, eval_cfg, cfg = _build_model(cfg, ckpt, train_samples)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)

    from wildlife_vision_train.augment import build_train_transform

    transform = build_train_transform(cfg.data.image_size, cfg.aug, pre_cfg.interpolation)
    twin_fraction = cfg.aug.consistency_fraction if cfg.aug.consistency > 0 else 0.0
    train_ds = ImageDataset(train_samples, labels, pre_cfg, transform, twin_fraction=twin_fraction,
                            twin_edits=cfg.aug.consistency_edits)
    if twin_fraction:
        log.info("edit-consistency training: %.0f%% of each batch gets an edited twin (%s), loss weight %g",
                 100 * twin_fraction, ", ".join(cfg.aug.consistency_edits) or "any edit", cfg.aug.consistency)
    val_ds = ImageDataset(val_samples, labels, eval_cfg)
    drop_last = len(train_ds) > cfg.data.batch_size
    if world.distributed:  # this rank's share of the same global batches (whole batches only: drop_last is done)
        sampler = ShardedEpochSampler(len(train_ds), cfg.run.seed, world.rank, world.world_size,
                                      cfg.data.batch_size, drop_last)
        train_loader = make_loader(train_ds, per_rank_batch(cfg.data.batch_size, world), cfg.data.workers, device,
                                   sampler)
    else:
        sampler = EpochSampler(len(train_ds), cfg.run.seed, shuffle=True)
        train_loader = make_loader(train_ds, cfg.data.batch_size, cfg.data.workers, device, sampler, drop_last)
    val_loader = make_loader(val_ds, cfg.data.batch_size, cfg.data.workers, device)
    steps_per_epoch = max(1, len(train_loader))

    mixer = BatchMixer.from_config(cfg.aug, cfg.run.seed + 1000 * (int(ckpt["epoch"]) + 1 if ckpt else 0))
    if mixer is not None:
        log.info("mixing training batches: mixup alpha %g, cutmix alpha %g, %.0f%% of batches", cfg.aug.mixup,
                 cfg.aug.cutmix, 100 * cfg.aug.mixup_prob)
    loss_fn = build_loss(cfg.loss, train_ds.targets).to(device)
    optimizer = make_optimizer(model, cfg.optim)
    schedule = make_schedule(cfg.optim, steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    teacher = _teacher(cfg, device, channels_last) if cfg.aug.consistency_teacher and twin_fraction else None
    step = TrainStep(model, loss_fn, optimizer, scheduler, device, amp_dtype=torch.float16 if amp else None,
                     channels_last=channels_last, grad_clip=cfg.optim.grad_clip, ema=make_ema(model, cfg.optim),
                     mixer=mixer, consistency=cfg.aug.consistency, teacher=teacher)

    if world.is_main:
        cfg.save_yaml(run_dir / "config.yaml")
    common = {
        "format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "labels": list(labels),
        "preprocess": eval_cfg.to_dict(), "pretrained": pre_info.to_dict(), "package_version": __version__,
        "manifest_sha256": manifest.sha256, "config_sha256": cfg.sha256(),
        "counts": {"train_images": len(train_samples), "val_images": len(val_samples),
                   "train_positives": label_counts(train_samples, labels),
                   "val_positives": label_counts(val_samples, labels)},
    }
    return _Run(cfg=cfg, run_dir=run_dir, world=world, labels=labels, val_samples=val_samples, device=device,
                amp=amp, channels_last=channels_last, eval_cfg=eval_cfg, model=model, val_ds=val_ds, sampler=sampler,
                train_loader=train_loader, val_loader=val_loader, loss_fn=loss_fn, step=step, schedule=schedule,
                common=common)


def _restore(run: _Run, ckpt: Dict[str, Any]) -> _Progress:
    """Load last.pt's weights, optimiser, schedule, scaler, EMA and RNG state; returns where the run was."""
    step = run.step
    run.model.load_state_dict(ckpt["model"])
    step.optimizer.load_state_dict(ckpt["optimizer"])
    step.scheduler.load_state_dict(ckpt["scheduler"])
    step.scheduler.lr_lambdas = [run.schedule] * len(step.optimizer.param_groups)  # the new length if --epochs grew
    step.scaler.load_state_dict(ckpt["scaler"])
    if step.ema is not None and ckpt.get("ema") is not None:
        step.ema.module.load_state_dict(ckpt["ema"])
    step.global_step = int(ckpt["global_step"])
    torch.set_rng_state(ckpt["torch_rng"])
    progress = _Progress(start_epoch=int(ckpt["epoch"]) + 1, best_metric=float(ckpt["best_metric"]),
                         best_epoch=int(ckpt["best_epoch"]), bad_epochs=int(ckpt["bad_epochs"]))
    if ckpt["manifest_sha256"] != run.common["manifest_sha256"]:
        log.warning("the manifest changed since this run started (sha256 %s... now %s...); resuming on the "
                    "new contents", ckpt["manifest_sha256"][:12], run.common["manifest_sha256"][:12])
    log.info("resuming after epoch %d (best validation metric %.4f at epoch %d)", progress.start_epoch,
             progress.best_metric, progress.best_epoch + 1)
    return progress


# ---- one epoch -------------------------------------------------------------------------------------------

def _run_epoch(run: _Run, epoch: int) -> Dict[str, Any]:
    """Train one epoch with :class:`TrainStep`; returns the epoch's training figures for metrics.jsonl."""
    from tqdm.auto import tqdm

    cfg, epochs, world = run.cfg, run.cfg.optim.epochs, run.world
    frozen = epoch < cfg.optim.freeze_epochs
    _set_frozen(run.model, frozen)
    if frozen:
        log.info("epoch %d: backbone frozen, training the classifier only", epoch + 1)
    if world.distributed:
        if run.wrapped_frozen is not frozen:  # DDP syncs the parameters that required grad when it was built
            run.step.model = wrap(run.model, world, run.device)
            run.wrapped_frozen = frozen
        torch.manual_seed(epoch_seed(cfg.run.seed, epoch, world.rank))  # own dropout per rank, same on resume
    run.sampler.set_epoch(epoch)
    run.model.train()
    steps_per_epoch = max(1, len(run.train_loader))
    log_every = max(1, steps_per_epoch // 10)
    t0 = time.time()
    loss_sum, seen, skipped, data_wait, steps_done, js_sum = 0.0, 0, 0, 0.0, 0, 0.0
    bar = tqdm(run.train_loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False,
               disable=None if world.is_main else True)
    t_wait = time.time()
    for batch in bar:
        data_wait += time.time() - t_wait
        skipped += batch.skipped
        if not world.all_true(batch.images.numel() > 0, run.device):  # every rank steps, or none does
            continue
        try:
            loss = run.step(batch.images, batch.targets, batch.twins, batch.twin_of)
        except FloatingPointError as e:
            raise FloatingPointError(f"{e} at epoch {epoch + 1}; lower --lr (now {cfg.optim.lr}) or check the "
                                     "data") from None
        loss_sum += loss * len(batch.images)
        js_sum += run.step.last_consistency * len(batch.images)
        seen += len(batch.images)
        bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.4f}", lr=f"{run.step.lr:.2e}")
        steps_done += 1
        if steps_done % log_every == 0 and steps_done < steps_per_epoch:  # progress lines for train.log
            log.info("epoch %d/%d: step %d/%d, loss %.4f, %.1f img/s", epoch + 1, epochs, steps_done,
                     steps_per_epoch, loss_sum / max(seen, 1), seen / max(time.time() - t0, 1e-9))
        t_wait = time.time()
    train_time = time.time() - t0
    if world.distributed:  # the epoch's figures over all ranks
        loss_sum, seen, skipped, js_sum = world.sum([loss_sum, seen, skipped, js_sum], run.device)
        seen, skipped = int(seen), int(skipped)
        problem = world.out_of_sync(run.model, run.device)
        if problem:
            raise TrainingError(f"epoch {epoch + 1}: {problem}")
    ips = seen / train_time if train_time > 0 else 0.0
    if skipped:
        log.warning("epoch %d: skipped %d unreadable training image(s)", epoch + 1, skipped)
    extra = {"train_consistency_js": js_sum / max(seen, 1)} if run.cfg.aug.consistency > 0 else {}
    return {**extra, "frozen": frozen, "lr": run.step.lr, "train_loss": loss_sum / max(seen, 1), "train_images": seen,
            "train_skipped": skipped, "train_seconds": round(train_time, 2), "train_images_per_sec": round(ips, 2),
            "data_wait_seconds": round(data_wait, 2), "world_size": world.world_size, "_ips": ips}


def _validate(run: _Run) -> Dict[str, Any]:
    """Score the validation split with the evaluated weights; returns the figures and the selection metric."""
    t1 = time.time()
    scores, idx, val_skipped, val_loss = predict(run.eval_model, run.val_loader, run.device, run.channels_last,
                                                 run.amp, run.loss_fn, desc="val")
    y_val = run.val_ds.targets[idx]
    m_ap = macro_ap(y_val, scores) if len(idx) else None
    per_label_ap = {lab: average_precision(y_val[:, j], scores[:, j]) for j, lab in enumerate(run.labels)}
    # model selection on macro-AP; -loss only when AP is undefined (no validation positives at all)
    metric = m_ap if m_ap is not None else (-val_loss if math.isfinite(val_loss) else None)
    return {"val_loss": val_loss, "val_macro_ap": m_ap, "val_ap": per_label_ap, "val_images": int(len(idx)),
            "val_skipped": val_skipped, "val_seconds": round(time.time() - t1, 2), "metric": metric}


def _update_best(progress: _Progress, metric: Optional[float], epoch: int) -> bool:
    """Record this epoch's selection metric; True when it is the best so far."""
    improved = metric is not None and (progress.best_epoch < 0 or metric > progress.best_metric + 1e-6)
    if improved:
        progress.best_metric, progress.best_epoch, progress.bad_epochs = float(metric), epoch, 0
    else:
        progress.bad_epochs += 1
    return improved


def _save_checkpoints(run: _Run, progress: _Progress, epoch: int, improved: bool, m_ap: Optional[float]) -> None:
    """best.pt when the epoch improved (the evaluated weights), and last.pt (the whole run state) always."""
    step = run.step
    if improved:
        save_checkpoint({**run.common, "model": run.eval_model.state_dict(), "epoch": epoch, "val_macro_ap": m_ap},
                        run.run_dir / "best.pt")
    save_checkpoint({**run.common, "model": run.model.state_dict(),
                     "ema": step.ema.module.state_dict() if step.ema is not None else None,
                     "optimizer": step.optimizer.state_dict(), "scheduler": step.scheduler.state_dict(),
                     "scaler": step.scaler.state_dict(), "epoch": epoch, "best_metric": progress.best_metric,
                     "best_epoch": progress.best_epoch, "bad_epochs": progress.bad_epochs,
                     "global_step": step.global_step, "torch_rng": torch.get_rng_state()},
                    run.run_dir / "last.pt")


def _record_epoch(run: _Run, metrics_path: Path, epoch: int, stats: Dict[str, Any], val: Dict[str, Any],
                  improved: bool) -> Dict[str, Any]:
    """One line of metrics.jsonl and one of train.log; returns the line's record."""
    record = {"epoch": epoch + 1, **{k: v for k, v in stats.items() if not k.startswith("_")},
              **{k: v for k, v in val.items() if k != "metric"}, "best": improved}
    with open(metrics_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    m_ap = val["val_macro_ap"]
    log.info("epoch %d/%d: train loss %.4f, %.1f img/s | val loss %.4f, macro-AP %s%s", epoch + 1,
             run.cfg.optim.epochs, record["train_loss"], stats["_ips"], val["val_loss"],
             f"{m_ap:.4f}" if m_ap is not None else "n/a", " (best)" if improved else "")
    return record


def _should_stop(cfg: TrainConfig, progress: _Progress, epoch: int) -> bool:
    """Early stopping: ``--patience`` epochs without improvement, unless this was the last epoch anyway."""
    return bool(cfg.optim.patience and progress.bad_epochs >= cfg.optim.patience and epoch + 1 < cfg.optim.epochs)


def _ips_from_metrics(path: Path) -> List[float]:
    """Training images/s of every epoch recorded in metrics.jsonl."""
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError):
        return []
    return [float(r["train_images_per_sec"]) for r in rows if r.get("train_images_per_sec")]


def finalize(run_dir: Path, cfg: TrainConfig, val_samples: Sequence[Sample], device: torch.device,
             channels_last: bool, eval_cfg: Optional[PreprocessConfig] = None) -> RunResult:
    """Evaluate best.pt on the validation split, calibrate thresholds, write calibration.json and eval/.

    ``eval_cfg``: the evaluation preprocessing when it differs from best.pt's (a resumed run given a new
    ``--test-image-size``); best.pt is rewritten with it, so export and evaluation use what was calibrated.
    """
    best = load_checkpoint(run_dir / "best.pt")
    if eval_cfg is not None and best["preprocess"] != eval_cfg.to_dict():
        log.info("best.pt (epoch %d) re-evaluated at %d px (it was validated at %s px)", int(best["epoch"]) + 1,
                 eval_cfg.input_size[0], best["preprocess"]["input_size"][0])
        data = {**best["config"]["data"], "test_image_size": cfg.data.test_image_size,
                "test_crop_pct": cfg.data.test_crop_pct}
        best = {**best, "preprocess": eval_cfg.to_dict(), "config": {**best["config"], "data": data}}
        save_checkpoint(best, run_dir / "best.pt")
    labels = list(best["labels"])
    model, pre_cfg = build_model_from_checkpoint(best)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    ds = ImageDataset(val_samples, labels, pre_cfg)
    loader = make_loader(ds, cfg.data.batch_size, cfg.data.workers, device)
    scores, idx, skipped, _ = predict(model, loader, device, channels_last, False, desc="final val")
    kept = [val_samples[i] for i in idx]
    y = targets_for(kept, labels)
    thresholds, bands, calibration = calibrate(y, scores, labels, cfg.calib.target, cfg.calib.value,
                                               cfg.calib.review_recall)
    (run_dir / "calibration.json").write_text(json.dumps({
        "thresholds": thresholds, "review_bands": {k: list(v) for k, v in bands.items()},
        "calibration": calibration}, indent=2), encoding="utf-8")
    columns = sorted({c for s in kept for c in s.extra})
    info = {"model": str(run_dir / "best.pt"), "manifest": cfg.data.manifest, "manifest_sha256":
            best["manifest_sha256"], "split": "val", "skipped_images": skipped, "epoch": int(best["epoch"]) + 1}
    report = build_report(y, scores, labels, thresholds, kept, default_slice_columns(kept, columns), info,
                          review_bands=bands)
    failures = unscored(val_samples, idx, "unreadable image (see train.log)")
    write_report(report, y, scores, run_dir / "eval", kept, failures)
    return RunResult(run_dir=run_dir, best_epoch=int(best["epoch"]) + 1, val_macro_ap=report["macro"]["ap"],
                     report=report, calibration=calibration, thresholds=thresholds, images_per_sec=0.0,
                     skipped_images=0, stopped_early=False)


def format_summary(result: RunResult) -> str:
    r = result.report
    lines = [f"run folder: {result.run_dir}",
             f"best epoch {result.best_epoch}: val macro-AP {r['macro']['ap']:.4f}" if r["macro"]["ap"] is not None
             else f"best epoch {result.best_epoch}",
             f"training throughput: {result.images_per_sec:.1f} images/s (mean over epochs)" if result.images_per_sec
             else "training throughput: not recorded"]
    if result.skipped_images:
        lines.append(f"unreadable training images skipped: {result.skipped_images}")
    if result.stopped_early:
        lines.append("stopped early (no validation improvement)")
    lines.append("label            AP     thr    precision recall  review band")
    for lab in r["labels"]:
        m = r["per_class"][lab]
        c = result.calibration["per_label"][lab]
        ap = f"{m['ap']:.3f}" if m["ap"] is not None else "  -  "
        lines.append(f"{lab:<16} {ap}  {m['threshold']:.3f}  {m['precision']:.3f}     {m['recall']:.3f}   "
                     f"[{c['review_low']:.3f}, {c['threshold']:.3f})" + ("" if c["met"] else "  (target not met)"))
    lines.append(f"report: {result.run_dir / 'eval' / 'report.md'}")
    lines.append(f"next: wildlife-vision export {result.run_dir} --output model.onnx")
    return "\n".join(lines)
