"""Datasets and loaders over cached preprocessed cases held in RAM.

Training: each epoch draws ``iterations_per_epoch x batch_size`` patches; case indices
come from a ``DistributedSampler`` over a virtual list that repeats the training cases
(one replica without DDP), re-seeded per epoch so a resumed run sees the same patches
as an uninterrupted one. Validation: whole preprocessed volumes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import DataLoader, Dataset
from monai.transforms import ClassesToIndicesd
from monai.utils import convert_to_tensor
from torch.utils.data import DistributedSampler

from medseg.preprocessing.cache import PreprocessedCache

logger = logging.getLogger(__name__)


def load_cached(
    paths: Sequence[Path],
    num_classes: int,
    *,
    indices: bool = True,
    pad: Callable[[dict], dict] | None = None,
) -> list[dict]:
    """Read cache files into RAM as tensors; optionally precompute per-class voxel indices.

    ``pad`` (training cases: :class:`medseg.transforms.augmentation.PadForSamplingd`) is
    applied before the indices are computed, so that patch sampling never pads again.

    Returns
    -------
    list of dict
        ``image`` float32 ``(1, X, Y, Z)``, ``label`` uint8 ``(1, X, Y, Z)``, ``affine`` (4, 4)
        and ``label_cls_indices`` (flat indices of each class, for patch sampling).
    """
    to_indices = ClassesToIndicesd("label", num_classes=num_classes) if indices else None
    out = []
    for path in paths:
        arrays = PreprocessedCache.read(path)
        item: dict[str, Any] = {
            "image": torch.from_numpy(arrays["image"]),
            "label": torch.from_numpy(arrays["label"]),
            "affine": torch.from_numpy(arrays["affine"]),
            "case": path.stem,
        }
        if pad is not None:
            item = pad(item)
            item["image"] = convert_to_tensor(item["image"], track_meta=False)
            item["label"] = convert_to_tensor(item["label"], track_meta=False)
        if to_indices is not None:
            item = dict(to_indices(item))  # type: ignore[arg-type]
        out.append(item)
    return out


def default_workers(device: str) -> int:
    """Loader worker processes: one on small CPU machines (the model needs the cores)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    if device == "cuda":
        return min(8, max(2, cpus - 1))
    return 1 if cpus <= 4 else min(4, cpus // 4)


def train_loader(
    cases: list[dict],
    transform: Any,
    *,
    batch_size: int,
    iterations: int,
    world_size: int = 1,
    rank: int = 0,
    num_workers: int = 0,
    seed: int = 0,
    pin_memory: bool = False,
) -> tuple[DataLoader, DistributedSampler]:
    """Loader yielding ``iterations`` batches of patches per epoch on this rank.

    Call ``sampler.set_epoch(epoch)`` and re-seed ``transform`` before each epoch.
    """
    n_virtual = iterations * batch_size * world_size
    data = [cases[i % len(cases)] for i in range(n_virtual)]
    dataset = Dataset(data, transform)
    sampler: DistributedSampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=False,
    )
    return loader, sampler
