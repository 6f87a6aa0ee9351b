"""DistributedDataParallel set-up for ``torchrun --nproc_per_node N -m medseg train``.

``torchrun`` describes the process group through ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
``MASTER_ADDR``/``MASTER_PORT`` (its launch protocol, not medseg configuration). Backends:
``nccl`` on CUDA, ``gloo`` on CPU. Rank 0 writes logs and checkpoints; every rank reads
the checkpoint on ``--resume``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the group (``world_size == 1`` without DDP)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the one that logs and writes files)."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when running under DDP."""
        return self.world_size > 1


def env_info() -> DistInfo:
    """Rank information from the ``torchrun`` environment (single process when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(
        rank=int(os.environ.get("RANK", "0")),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def init(device: str) -> DistInfo:
    """Join the process group if launched by ``torchrun``; pick the backend for ``device``."""
    info = env_info()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device == "cuda" else "gloo"
        if device == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
        logger.info("DDP rank %d/%d (%s)", info.rank, info.world_size, backend)
    return info


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op without DDP)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()


def broadcast_flag(value: bool, info: DistInfo) -> bool:
    """Rank 0's ``value`` on every rank (stop decisions must agree)."""
    if not (info.enabled and dist.is_initialized()):
        return value
    t = torch.tensor([1 if value else 0], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.broadcast(t, src=0)
    return bool(t.item())


def mean_across(value: float, info: DistInfo) -> float:
    """Mean of ``value`` over ranks (for logging the training loss)."""
    if not (info.enabled and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def sum_across(values: np.ndarray, info: DistInfo) -> np.ndarray:
    """Element-wise sum of ``values`` over ranks, as float64 (a copy without DDP)."""
    if not (info.enabled and dist.is_initialized()):
        return np.array(values, dtype=np.float64)
    t = torch.as_tensor(np.asarray(values, dtype=np.float64))
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().numpy()


def cleanup(info: DistInfo) -> None:
    """Leave the process group."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
