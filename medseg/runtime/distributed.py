"""The ``torchrun`` process group, shared by ``medseg train`` (DDP) and ``medseg predict``.

``torchrun`` describes the process group through ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
``MASTER_ADDR``/``MASTER_PORT`` (its launch protocol, not medseg configuration). Training
uses ``nccl`` on CUDA and ``gloo`` on CPU; prediction only gathers per-case results, so it
always uses ``gloo``. Rank 0 writes logs, checkpoints and summaries.
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


def init(device: str, backend: str | None = None) -> DistInfo:
    """Join the process group if launched by ``torchrun``.

    Parameters
    ----------
    device
        ``cpu`` or ``cuda`` (the device this process computes on).
    backend
        ``None``: ``nccl`` on CUDA (each rank then takes the GPU of its ``LOCAL_RANK``),
        ``gloo`` on CPU; or a backend name.
    """
    info = env_info()
    if info.enabled and not dist.is_initialized():
        backend = backend or ("nccl" if device == "cuda" else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
        logger.info("DDP rank %d/%d (%s)", info.rank, info.world_size, backend)
    return info


def rank_device(device: str, info: DistInfo) -> str:
    """The device of this rank: ``cuda:<LOCAL_RANK mod GPUs>`` for ``auto``/``cuda`` with GPUs."""
    if info.enabled and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{info.local_rank % torch.cuda.device_count()}"
    return device


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
