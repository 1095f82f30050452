"""Training under torchrun: where this process stands, the process group, DDP and the few collectives a run needs.

``torchrun --standalone --nproc_per_node N -m wildlife_vision train ...`` starts N copies of the command; each
reads its place from the environment torchrun sets (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), joins the process
group from that environment (``nccl`` when the run's device is CUDA, one GPU per process by local rank; ``gloo``
on CPU) and wraps the model in :class:`~torch.nn.parallel.DistributedDataParallel`. Without those variables
everything here is a no-op for one process, so a plain ``wildlife-vision train`` runs exactly as before.

``--batch-size`` is the global batch: each of N processes takes ``batch_size / N`` images per step (refused when
it does not divide), and :class:`~wildlife_vision_train.data.ShardedEpochSampler` gives each rank its share of
the very same global batches a single process would draw, so the recipe, its hash and its data order do not
depend on N. Rank 0 alone validates, saves checkpoints, writes metrics, logs and the final evaluation; the
other ranks wait for it in a collective, never in a branch of their own (a collective inside a rank-0-only
branch would hang the run).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from wildlife_vision_train.config import ConfigError

log = logging.getLogger(__name__)

# rank 0 validates, saves and finally evaluates and calibrates alone while the others wait in a collective: allow
# it more than the 10 (NCCL) or 30 (gloo) minutes torch waits by default
WAIT_TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run; ``World()`` is a single process."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: Optional[str] = None     # set once the process group is joined

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, environ: Optional[dict] = None) -> "World":
        """Read WORLD_SIZE, RANK and LOCAL_RANK as torchrun sets them (absent: one process)."""
        env = os.environ if environ is None else environ
        try:
            size = int(env.get("WORLD_SIZE", "1"))
            rank = int(env.get("RANK", "0"))
            local = int(env.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise ConfigError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them); got "
                              f"{env.get('WORLD_SIZE')!r}, {env.get('RANK')!r}, {env.get('LOCAL_RANK')!r}") from None
        if size < 1 or not 0 <= rank < size or local < 0:
            raise ConfigError(f"inconsistent torchrun environment: WORLD_SIZE={size}, RANK={rank}, "
                              f"LOCAL_RANK={local}")
        return cls(size, rank, local)

    # ---- collectives (every rank must call each of them, in the same order) --------------------------

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (any picklable object)."""
        if not self.distributed:
            return obj
        box = [obj if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, values: Sequence[float], device: torch.device) -> List[float]:
        """Element-wise sums of ``values`` over the ranks (float64)."""
        if not self.distributed:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._comm_device(device))
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t.cpu().tolist()

    def all_true(self, flag: bool, device: torch.device) -> bool:
        """True when ``flag`` is true on every rank."""
        if not self.distributed:
            return bool(flag)
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self._comm_device(device))
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        return bool(t.item())

    def out_of_sync(self, model: nn.Module, device: torch.device) -> Optional[str]:
        """Why the weights differ between ranks, or None when they agree (under DDP they stay identical: one
        broadcast at the start, then the same averaged gradients and optimiser steps everywhere)."""
        if not self.distributed:
            return None
        with torch.no_grad():  # per parameter tensor: its sum and its sum of squares
            mine = torch.stack([v for p in model.parameters() for v in (p.double().sum(), p.double().square().sum())])
            mine = mine.to(self._comm_device(device))
        theirs = [torch.zeros_like(mine) for _ in range(self.world_size)]
        torch.distributed.all_gather(theirs, mine)
        ref = theirs[0]
        for r, t in enumerate(theirs[1:], start=1):
            if not torch.allclose(t, ref, rtol=1e-9, atol=1e-12):
                names = [n for n, _ in model.named_parameters()]
                first = names[int(torch.nonzero(~torch.isclose(t, ref, rtol=1e-9, atol=1e-12))[0, 0]) // 2]
                return (f"the weights of rank {r} differ from rank 0's (first in {first}): the processes no longer "
                        "train the same model")
        return None

    def _comm_device(self, device: torch.device) -> torch.device:
        return device if self.backend == "nccl" else torch.device("cpu")


def per_rank_batch(global_batch: int, world: World) -> int:
    """Images per process and step for the global ``--batch-size``; a ConfigError when it does not divide."""
    if global_batch % world.world_size:
        lower = global_batch - global_batch % world.world_size
        options = [b for b in (lower, lower + world.world_size) if b > 0]
        raise ConfigError(f"--batch-size {global_batch} is the global batch (images per step over all processes) "
                          f"and must divide evenly over the {world.world_size} processes torchrun started; use "
                          + " or ".join(str(b) for b in options))
    return global_batch // world.world_size


def resolve_rank_device(device: torch.device, world: World) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for a CUDA run under torchrun, else ``device``."""
    if device.type != "cuda" or not world.distributed:
        return device
    count = torch.cuda.device_count()
    if world.local_rank >= count:
        raise ConfigError(f"torchrun started local rank {world.local_rank} but torch sees {count} CUDA device(s); "
                          f"start at most --nproc_per_node {count} processes per machine (one per GPU)")
    return torch.device("cuda", world.local_rank)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The torch seed of one rank for one epoch (dropout, drop-path): distinct per rank, and the same again
    after ``--resume``, so no per-rank RNG state needs saving."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(rank), 17]).generate_state(1)[0])


@contextmanager
def session(world: World, device: torch.device) -> Iterator[World]:
    """Join the process group for a distributed ``world`` (a no-op for one process) and leave it at the end.

    Yields the world with its backend set: ``nccl`` for CUDA (this rank's GPU made current), ``gloo`` else.
    """
    if not world.distributed:
        yield world
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owned = not torch.distributed.is_initialized()
    if owned:
        kwargs = {"device_id": device} if backend == "nccl" else {}
        torch.distributed.init_process_group(backend=backend, timeout=WAIT_TIMEOUT, **kwargs)
    ok = False
    try:
        yield World(world.world_size, world.rank, world.local_rank, backend)
        ok = True
    finally:
        if owned and torch.distributed.is_initialized():
            if ok:  # leave together: a rank that tears gloo down while another still talks to it can abort
                try:
                    torch.distributed.barrier()
                except Exception:  # noqa: BLE001 - leaving anyway
                    pass
            torch.distributed.destroy_process_group()


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel for a distributed world (its trainable parameters as they are now:
    wrap again when ``requires_grad`` changes), else ``model`` itself."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


class _OtherRanks(logging.Filter):
    """On ranks other than 0: only errors, and the data loader's warnings (unreadable photos), prefixed."""

    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        keep = record.levelno >= logging.ERROR or (record.levelno >= logging.WARNING
                                                   and record.name.startswith("wildlife_vision_train.data"))
        if keep and not str(record.msg).startswith("rank "):
            record.msg = f"rank {self.rank}: {record.msg}"
        return keep


@contextmanager
def quiet_unless_main(world: World) -> Iterator[None]:
    """Rank 0 logs the run; the other ranks' records are filtered from the root logger's handlers meanwhile."""
    if world.is_main:
        yield
        return
    flt = _OtherRanks(world.rank)
    handlers = list(logging.getLogger().handlers) or [h for h in (logging.lastResort,) if h is not None]
    for h in handlers:
        h.addFilter(flt)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(flt)
