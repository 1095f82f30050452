"""Torch datasets and loaders over manifest samples.

Decoding is always ``wildlife_vision.preprocess.load_image`` (training decodes large JPEGs in draft mode, since its
crops are resampled anyway; evaluation decodes exactly as the exported model will), and pixels are always scaled
by ``wildlife_vision.preprocess.normalize``; the eval dataset is exactly ``wildlife_vision.preprocess.preprocess``.
Training adds albumentations between decode and normalise. A photo that cannot be decoded is logged and
skipped (the loader's batches carry the count), so one corrupt file does not stop a run.

Augmentation randomness is a function of (seed, epoch, sample index) only, so runs are reproducible whatever
the number of workers and after ``--resume``; under torchrun, :class:`ShardedEpochSampler` gives each process its
share of the same global batches, so the number of processes changes neither the batches nor their augmentation.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from wildlife_vision.errors import ImageDecodeError
from wildlife_vision.preprocess import PreprocessConfig, load_image, normalize, preprocess

from wildlife_vision.data.manifest import Sample, targets_for

log = logging.getLogger(__name__)


class EpochSampler(Sampler):
    """Yields ``(index, sample_seed)`` pairs; the order and the seeds depend only on (seed, epoch)."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, int(seed), shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        seeds = rng.integers(0, 2 ** 31 - 1, size=self.n)
        for i in order:
            yield int(i), int(seeds[i])


class ShardedEpochSampler(EpochSampler):
    """One rank's share of :class:`EpochSampler`'s epoch, for ``world_size`` processes with a global batch.

    Every rank draws the same (seed, epoch) order and takes every ``world_size``-th entry from ``rank`` on, so the
    per-rank batches of step k (``global_batch / world_size`` entries each) are together exactly the global
    batch k a single process draws, with the same per-photo augmentation seeds. ``drop_last`` (as the single
    process): only whole global batches; otherwise the epoch is padded from its start to a whole number of
    entries per rank, so every rank takes the same number of steps.
    """

    def __init__(self, n: int, seed: int, rank: int, world_size: int, global_batch: int, drop_last: bool,
                 shuffle: bool = True):
        super().__init__(n, seed, shuffle)
        if not 0 <= rank < world_size or global_batch % world_size:
            raise ValueError(f"rank {rank} of {world_size} with a global batch of {global_batch}")
        self.rank, self.world_size, self.global_batch = int(rank), int(world_size), int(global_batch)
        if drop_last and n >= global_batch:
            self.total = n // global_batch * global_batch
        else:
            self.total = -(-n // world_size) * world_size if n else 0

    def __len__(self) -> int:
        return self.total // self.world_size

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        epoch = list(super().__iter__())
        if self.total > len(epoch):  # pad from the start (as torch's DistributedSampler does)
            epoch += (epoch * (-(-self.total // max(1, len(epoch)))))[: self.total - len(epoch)]
        return iter(epoch[self.rank: self.total: self.world_size])


class ImageDataset(Dataset):
    """``(index or (index, seed))`` -> ``(CHW float32 tensor, target tensor, index)``, or None if undecodable.

    With ``transform`` (an albumentations pipeline) it is the training dataset: decode, augment, normalise.
    Without, it is the eval dataset: ``wildlife_vision.preprocess.preprocess`` and nothing else.
    With ``twin_fraction`` > 0 (training only), that share of samples also carries an edited twin
    (:mod:`wildlife_vision_train.consistency`) as a fourth item, else None.
    """

    def __init__(self, samples: Sequence[Sample], labels: Sequence[str], cfg: PreprocessConfig,
                 transform: Any = None, twin_fraction: float = 0.0, twin_edits: Sequence[str] = ()):
        self.paths = [s.path for s in samples]
        self.targets = targets_for(samples, labels)
        self.cfg = cfg
        self.transform = transform
        self.twin_fraction = float(twin_fraction) if transform is not None else 0.0
        self.twin_edits = tuple(twin_edits)  # () = every edit
        # augmented training decodes at (at least) the training size: JPEG draft mode skips most of the work on
        # large photos; the random crop and resize that follow make its rounding differences irrelevant
        self._decode_cfg = PreprocessConfig(input_size=cfg.input_size, crop_pct=1.0, mean=cfg.mean, std=cfg.std,
                                            interpolation=cfg.interpolation, draft=True)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        path = self.paths[index]
        twin = None
        try:
            if self.transform is None:
                x = preprocess(path, self.cfg)
            else:
                img = load_image(path, self._decode_cfg)
                x = self._augment(np.asarray(img, dtype=np.uint8), seed)
                if self.twin_fraction > 0 and seed is not None:
                    from wildlife_vision_train.consistency import TWIN_EDITS, edited_twin

                    got = edited_twin(img, seed, self.twin_fraction, self.twin_edits or TWIN_EDITS)
                    if got is not None:  # the same augmentation draw on the edited photo
                        twin = torch.from_numpy(self._augment(np.asarray(got[0], dtype=np.uint8), seed))
        except ImageDecodeError as e:
            log.warning("skipping unreadable image %s: %s", path, e)
            return None
        return torch.from_numpy(x), torch.from_numpy(self.targets[index]), index, twin

    def _augment(self, rgb: np.ndarray, seed: Optional[int]) -> np.ndarray:
        if seed is not None:
            self.transform.set_random_seed(seed)
        rgb = self.transform(image=rgb)["image"]
        return normalize(np.ascontiguousarray(rgb), self.cfg)


@dataclass
class Batch:
    images: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor
    skipped: int
    twins: Optional[torch.Tensor] = None      # edited twins of images[twin_of]
    twin_of: Optional[torch.Tensor] = None

    def pin_memory(self) -> "Batch":
        twins = None if self.twins is None else self.twins.pin_memory()
        return Batch(self.images.pin_memory(), self.targets.pin_memory(), self.indices, self.skipped, twins,
                     self.twin_of)


def collate(items: List[Optional[tuple]]) -> Batch:
    good = [it for it in items if it is not None]
    skipped = len(items) - len(good)
    if not good:
        return Batch(torch.empty(0), torch.empty(0), torch.empty(0, dtype=torch.long), skipped)
    twin_pos = [i for i, g in enumerate(good) if len(g) > 3 and g[3] is not None]
    twins = torch.stack([good[i][3] for i in twin_pos]) if twin_pos else None
    return Batch(torch.stack([g[0] for g in good]), torch.stack([g[1] for g in good]),
                 torch.tensor([g[2] for g in good], dtype=torch.long), skipped, twins,
                 torch.tensor(twin_pos, dtype=torch.long) if twin_pos else None)


def _worker_init(_: int) -> None:
    # each worker decodes one image at a time: keep OpenCV and torch from oversubscribing the cores
    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(0)
    except ImportError:  # pragma: no cover - albumentations depends on opencv
        pass


def make_loader(dataset: ImageDataset, batch_size: int, workers: int, device: torch.device,
                sampler: Optional[EpochSampler] = None, drop_last: bool = False) -> DataLoader:
    workers = max(0, min(int(workers), len(dataset) // max(1, batch_size) + 1, os.cpu_count() or 1))
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
        collate_fn=collate, pin_memory=device.type == "cuda", drop_last=drop_last,
        persistent_workers=workers > 0, worker_init_fn=_worker_init if workers > 0 else None,
        prefetch_factor=4 if workers > 0 else None,
    )
