"""Training checkpoints: the one run-state format, loading it, and scoring photos with it.

Used by ``train`` (saving, resuming, the final evaluation), ``export`` and ``wildlife-vision evaluate RUN_DIR``
(registered as the ``torch`` checkpoint scorer). A checkpoint is a plain dict of tensors and JSON-like values,
written atomically and loaded with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from wildlife_vision.data.manifest import Sample
from wildlife_vision.preprocess import PreprocessConfig
from wildlife_vision_train.backbones import create_backbone
from wildlife_vision_train.config import TrainConfig

CHECKPOINT_FORMAT = "wildlife_vision.checkpoint.v1"


def save_checkpoint(obj: Dict[str, Any], path: Path) -> None:
    """Write a checkpoint atomically: a temporary file in the same folder, then a rename."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """Load a run checkpoint with ``weights_only=True`` (no arbitrary objects are unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a wildlife-vision training checkpoint (format {CHECKPOINT_FORMAT})")
    return ckpt


def build_model_from_checkpoint(ckpt: Dict[str, Any]) -> Tuple[nn.Module, PreprocessConfig]:
    cfg = TrainConfig.from_dict(ckpt["config"])
    model, _ = create_backbone(cfg.model.name, len(ckpt["labels"]), "none", input_lowpass=cfg.model.input_lowpass)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, PreprocessConfig.from_dict(ckpt["preprocess"])


@torch.no_grad()
def predict(model: nn.Module, loader, device: torch.device, channels_last: bool, amp: bool,
            loss_fn: Optional[nn.Module] = None, desc: str = "eval") -> Tuple[np.ndarray, np.ndarray, int, float]:
    """Sigmoid scores for every decodable image of ``loader``: (scores, dataset indices, skipped, mean loss)."""
    from wildlife_vision.progress import track

    model.eval()
    scores, indices, skipped, loss_sum, n = [], [], 0, 0.0, 0
    for batch in track(loader, desc=desc, unit="batch"):
        skipped += batch.skipped
        if batch.images.numel() == 0:
            continue
        x = batch.images.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.float16) if amp else nullcontext():
            logits = model(x).float()
        if loss_fn is not None:
            loss_sum += float(loss_fn(logits, batch.targets.to(device))) * len(x)
            n += len(x)
        scores.append(torch.sigmoid(logits).cpu().numpy())
        indices.append(batch.indices.numpy())
    if not scores:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), skipped, float("nan")
    return np.concatenate(scores), np.concatenate(indices), skipped, (loss_sum / n if n else float("nan"))


def unscored(samples: Sequence[Sample], scored: Sequence[int], reason: str) -> List[Tuple[Sample, str]]:
    """(sample, reason) for each of ``samples`` whose index is not in ``scored``: the photos a torch loader
    skipped as unreadable (it logs why)."""
    done = set(int(i) for i in scored)
    return [(s, reason) for i, s in enumerate(samples) if i not in done]


def score_checkpoint(checkpoint: Path, samples: Sequence[Sample], batch_size: int = 32, workers: int = 2):
    """Score samples with a training checkpoint (torch, CPU) on ``wildlife_vision.preprocess`` inputs.

    Returns (scores, kept samples, failures as in :func:`score_onnx`, labels, thresholds from the run's
    calibration.json or 0.5).
    """
    from wildlife_vision_train.data import ImageDataset, make_loader

    ckpt = load_checkpoint(checkpoint)
    labels = list(ckpt["labels"])
    model, cfg = build_model_from_checkpoint(ckpt)
    model.to(memory_format=torch.channels_last)
    loader = make_loader(ImageDataset(samples, labels, cfg), batch_size, workers, torch.device("cpu"))
    scores, idx, _, _ = predict(model, loader, torch.device("cpu"), True, False)
    cal_path = Path(checkpoint).parent / "calibration.json"
    thresholds = (json.loads(cal_path.read_text(encoding="utf-8"))["thresholds"] if cal_path.is_file()
                  else {lab: 0.5 for lab in labels})
    failures = unscored(samples, idx, "unreadable image (see the log)")
    return scores.reshape(len(idx), len(labels)), [samples[i] for i in idx], failures, labels, thresholds


def checkpoint_labels(checkpoint: Path) -> List[str]:
    """The labels a checkpoint was trained on, in output order."""
    return list(load_checkpoint(checkpoint)["labels"])


score_checkpoint.labels = checkpoint_labels  # type: ignore[attr-defined]  # what evaluate asks a scorer first
