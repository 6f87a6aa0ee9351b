"""Per-step helpers of the training loop: learning-rate schedule, weight-EMA update rule,
seeding per epoch and the memory layout to train in."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import torch
from torch import nn


def learning_rate(base: float, progress: float, schedule: str, warmup: float) -> float:
    """Learning rate at ``progress`` in [0, 1] of the budget (linear warm-up first)."""
    p = min(max(progress, 0.0), 1.0)
    if warmup > 0 and p < warmup:
        return base * max(p / warmup, 0.01)
    if schedule == "constant":
        return base
    q = (p - warmup) / max(1.0 - warmup, 1e-8)
    if schedule == "poly":
        return base * (1.0 - q) ** 0.9 + 1e-6
    return base * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * q)))


# Networks whose CPU training step is faster in channels-last-3d layout, measured with
# benchmarks/train_step_layout.py on 2 cores (step time ratio channels-last / contiguous:
# UNet with its full-resolution level 0.71, UNet in MONAI's half-resolution layout 0.89-0.92,
# SegResNet 0.79-0.80, DynUNet 0.82-0.90, VNet 0.75; BasicUNet 0.96-1.0, no gain, left out).
# On CUDA the gain is unmeasured here (no GPU was available), so "auto" keeps it off there.
CHANNELS_LAST_CPU = ("unet", "segresnet", "dynunet", "vnet")


def memory_format(setting: str, network: str, device: str) -> torch.memory_format:
    """The memory layout to train in: ``channels_last_3d`` or ``contiguous_format``."""
    on = setting == "on" or (setting == "auto" and device == "cpu" and network in CHANNELS_LAST_CPU)
    return torch.channels_last_3d if on else torch.contiguous_format


def pointwise_standard_strides(net: nn.Module) -> None:
    """Give parameters with only size-1 spatial dimensions (1x1x1 convolution weights) the
    standard strides, in place, before DDP wraps ``net``.

    In ``channels_last_3d`` such a weight ``(O, I, 1, 1, 1)`` has strides
    ``(I, 1, I, I, I)``: the same memory order as ``(I, 1, 1, 1, 1)``, but autograd returns
    its gradient with the standard strides, so DDP, whose bucket views copy each parameter's
    strides, warned "Grad strides do not match bucket view strides" on every rank (and
    copied that gradient each step). Restriding only these weights keeps every other layer
    channels-last (the CPU speed-up of ``memory_format``) and silences the warning; the
    values are unchanged. Measured with 2 gloo ranks on 2 shared cores (UNet 8..96 with its
    full-resolution level, batch 2 of 32x48x32, median step over 15): restrided 0.35-0.38 s,
    as fast as channels-last with the warning (0.33-0.42 s) and faster than channels-last
    off (0.45-0.51 s), so DDP keeps the layout.
    """
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() == 5 and all(n == 1 for n in p.shape[2:]):
                p.data = p.data.clone(memory_format=torch.contiguous_format)


def warmup_ema(decay: float) -> Any:
    """``multi_avg_fn`` for ``AveragedModel``: an EMA whose decay warms up with the step count.

    ``torch.optim.swa_utils.get_ema_multi_avg_fn`` uses a fixed decay, so with 0.999 the
    average still holds 37 % of the random initial weights after 1,000 steps; here the decay
    is ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (the warm-up used by timm's
    ``ModelEmaV3`` and TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``).
    """

    @torch.no_grad()
    def update(
        averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor | int
    ) -> None:
        steps = int(n)
        d = min(decay, (1.0 + steps) / (10.0 + steps))
        for a, c in zip(averaged, current, strict=True):
            if a.is_floating_point():
                a.lerp_(c, 1.0 - d)
            else:  # integer buffers (counters) follow the model
                a.copy_(c)

    return update


def seed_epoch(seed: int, epoch: int, transform: Any | None) -> None:
    """Seed python, numpy, torch and the augmentation from ``(seed, epoch)``."""
    s = (seed * 1_000_003 + epoch) % (2**31)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
    if transform is not None:
        transform.set_random_state(seed=s)
