"""Training of one fold: epochs of patch steps, validation, checkpoints, logs.

One epoch is ``iterations_per_epoch`` optimisation steps. Every ``val_every`` epochs (and
at the end) the whole validation volumes are segmented with MONAI
``sliding_window_inference`` and scored with Dice per label
(:mod:`medseg.training.validation`, shared across DDP ranks); the best checkpoint follows an
exponential moving average of the mean foreground Dice. The learning rate follows the
schedule over whichever budget ends first (epochs or the time limit). Randomness is
re-seeded from ``(seed, epoch)`` at each epoch start, so a run resumed from
``checkpoint_last.pt`` repeats exactly what an uninterrupted run would have done.

With a time limit the budget is checked after every step: an epoch is cut short when one more
step, the final validation and the reserve for work after training (``reserve_factor`` times
the validation time) would no longer fit before ``stop_at``. A cut epoch counts as done (its
``log.csv`` row has ``iterations`` < ``iterations_per_epoch``) and is validated, so the
``checkpoint_last.pt`` written after it holds epoch + 1 with its step count: a resumed run
starts the next epoch at its first step, seeded from ``(seed, epoch)`` as always, so resuming
after a time stop is as exact as after any other epoch; the cut epoch's remaining steps are
not made up.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss
from torch import nn
from torch.optim.swa_utils import AveragedModel

from medseg.config import to_dict
from medseg.networks.loading import load_checkpoint
from medseg.networks.registry import build_network
from medseg.planning.plans import Plans
from medseg.runtime import distributed as ddp
from medseg.training.checkpoint import rng_state, set_rng_state
from medseg.training.config import RunConfig
from medseg.training.data import train_loader
from medseg.training.logs import RunLogger
from medseg.training.schedule import (
    learning_rate,
    memory_format,
    pointwise_standard_strides,
    seed_epoch,
    warmup_ema,
)
from medseg.training.state import FoldState
from medseg.training.validation import validate_cases, window_count
from medseg.transforms.augmentation import training_transforms

logger = logging.getLogger(__name__)

# At most this share of a fold's time budget is left for work after training (the
# post-processing decision), whatever reserve_factor x validation time asks for.
RESERVE_MAX_SHARE = 0.25


class FoldTrainer:
    """Train one fold into ``fold_dir`` (see the run-directory contract in ``run.py``).

    Parameters
    ----------
    fold_dir
        Output folder ``RUN_DIR/fold_<k>``.
    plans, cfg
        Plans and resolved run configuration.
    train_cases, val_cases
        Cached cases from :func:`medseg.training.data.load_cached`.
    device
        ``"cpu"`` or ``"cuda"``.
    dist
        DDP rank information.
    stop_at
        ``time.perf_counter()`` value by which this fold must be done, its final validation
        and its ``reserve_factor`` share included (``inf``: no time limit).
    reserve_factor
        Seconds to leave after the fold per second of its validation, for work that follows
        training inside the same time limit (the post-processing decision).
    """

    def __init__(
        self,
        fold_dir: Path,
        plans: Plans,
        cfg: RunConfig,
        train_cases: list[dict],
        val_cases: list[dict],
        *,
        device: str,
        dist: ddp.DistInfo,
        stop_at: float = math.inf,
        reserve_factor: float = 0.0,
        progress: bool = False,
    ) -> None:
        self.fold_dir, self.plans, self.cfg, self.device = fold_dir, plans, cfg, device
        self.tc = cfg.train
        self.dist, self.stop_at, self.reserve_factor = dist, stop_at, reserve_factor
        self._created = time.perf_counter()
        # the time horizon of the learning-rate schedule (seconds of training, set when timed)
        self.deadline_s = math.inf
        self.step_s = 0.0  # duration of the last step (data wait included)
        self.val_s = 0.0  # duration of the last validation (0: none yet)
        self.val_cases = val_cases
        self.state = FoldState()
        seed_epoch(self.tc.seed, -1, None)  # weight initialisation follows the seed
        self.net = build_network(plans.network, plans.in_channels, plans.num_classes).to(device)
        # channels_last_3d needs 5D weights: a 2d (slice-wise) network stays contiguous
        layout = self.tc.channels_last if plans.slice_axis is None else "off"
        self.memory_format = memory_format(layout, plans.network.name, device)
        self.net = self.net.to(memory_format=self.memory_format)  # type: ignore[call-overload]
        self.model: nn.Module = self.net
        # Weight averaging from torch itself (no hand-written EMA); buffers (norm statistics)
        # are averaged too. Validation and the checkpoints' "model" use the averaged weights.
        self.averaged: AveragedModel | None = None
        if self.tc.weight_ema > 0:
            self.averaged = AveragedModel(
                self.net,
                multi_avg_fn=warmup_ema(self.tc.weight_ema),
                use_buffers=True,
            )
        if dist.enabled:
            pointwise_standard_strides(self.net)
            ids = [dist.local_rank] if device == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        self.base_lr = self.tc.learning_rate or (1e-2 if self.tc.optimizer == "sgd" else 2e-3)
        self.optimizer = self._optimizer()
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.amp_dtype == torch.float16 and device == "cuda"
        )
        self.loss_fn = self._loss()
        self.transform = training_transforms(plans, cfg.augment, self.tc.foreground_ratio)
        self.loader, self.sampler = train_loader(
            train_cases,
            self.transform,
            batch_size=plans.batch_size,
            iterations=self.tc.iterations_per_epoch,
            world_size=dist.world_size,
            rank=dist.rank,
            num_workers=self.tc.num_workers,
            seed=self.tc.seed,
            pin_memory=device == "cuda",
        )
        self.log = RunLogger(fold_dir, plans.labels, enabled=dist.is_main, progress=progress)

    def _optimizer(self) -> torch.optim.Optimizer:
        params = self.net.parameters()
        if self.tc.optimizer == "sgd":
            return torch.optim.SGD(
                params,
                lr=self.base_lr,
                momentum=0.99,
                nesterov=True,
                weight_decay=self.tc.weight_decay,
            )
        return torch.optim.AdamW(params, lr=self.base_lr, weight_decay=self.tc.weight_decay)

    def _amp_dtype(self) -> torch.dtype | None:
        # Never autocast on CPU: bf16 there is ~30x slower than fp32 on CPUs without bf16 units.
        if self.device != "cuda" or not self.tc.amp:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _loss(self) -> nn.Module:
        base = DiceCELoss(
            include_background=False,
            to_onehot_y=True,
            softmax=True,
            batch=True,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
        )
        if self.plans.network.deep_supervision:
            return DeepSupervisionLoss(base, weight_mode="exp")
        return base

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        """The full training state (``weights_only``-loadable)."""
        s = self.state
        state: dict[str, Any] = {
            "model": self.eval_net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "schedule": {"step": s.step, "elapsed_s": s.elapsed_s, "base_lr": self.base_lr},
            "epoch": s.epoch,
            "best_metric": s.best_metric,
            "best_epoch": s.best_epoch,
            "ema_metric": s.ema_metric,
            "history": s.history,
            "rng": rng_state(),
            "plans": _plans_dict(self.plans),
            "config": to_dict(self.cfg),
        }
        if self.averaged is not None:  # resume needs the raw weights and the average's count
            state["train_model"] = self.net.state_dict()
            state["averaged"] = self.averaged.state_dict()
        return state

    @property
    def eval_net(self) -> nn.Module:
        """The network that is validated and checkpointed (the weight average when on)."""
        return self.averaged.module if self.averaged is not None else self.net

    def resume(self) -> bool:
        """Restore from ``checkpoint_last.pt`` if it exists; return whether it did."""
        path = self.fold_dir / "checkpoint_last.pt"
        if not path.is_file():
            return False
        ck = load_checkpoint(path, self.device)
        if self.averaged is not None and "averaged" in ck:
            self.net.load_state_dict(ck["train_model"])
            self.averaged.load_state_dict(ck["averaged"])
        else:
            self.net.load_state_dict(ck.get("train_model", ck["model"]))
            if self.averaged is not None:  # averaging switched on at resume: start it here
                self.averaged.module.load_state_dict(self.net.state_dict())
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scaler.load_state_dict(ck["scaler"])
        s = self.state
        s.epoch, s.step = int(ck["epoch"]), int(ck["schedule"]["step"])
        s.elapsed_s = float(ck["schedule"]["elapsed_s"])
        s.best_metric, s.best_epoch = float(ck["best_metric"]), int(ck.get("best_epoch", -1))
        s.ema_metric, s.history = float(ck["ema_metric"]), list(ck.get("history", []))
        set_rng_state(ck["rng"])
        logger.info("resumed %s at epoch %d", self.fold_dir, s.epoch)
        return True

    # ------------------------------------------------------------------ training
    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Run one epoch of steps; return loss, learning rate and timing figures.

        The epoch is cut short when :meth:`out_of_time` says so after a step (never before
        the first); the row then has ``iterations``, the number of steps taken.
        """
        self.model.train()
        seed_epoch(self.tc.seed, epoch, self.transform)
        self.sampler.set_epoch(epoch)
        losses, wait, t_start = [], 0.0, time.perf_counter()
        t_ready = t_start
        n_it = self.tc.iterations_per_epoch
        lr = self.base_lr
        done = 0
        for i, batch in enumerate(self.loader):
            t_got = time.perf_counter()
            wait += t_got - t_ready
            frac = epoch + i / n_it
            elapsed_now = self.state.elapsed_s + (t_got - t_start)
            lr = learning_rate(
                self.base_lr,
                self._progress_at(frac, elapsed_now),
                self.tc.schedule,
                self.tc.warmup_fraction,
            )
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            losses.append(self.step(batch))
            self.state.step += 1
            done += 1
            now = time.perf_counter()
            self.step_s, t_ready = now - t_ready, now
            if done < n_it and self.out_of_time():
                break
        seconds = time.perf_counter() - t_start
        self.state.elapsed_s += seconds
        loss = ddp.mean_across(float(np.mean(losses)), self.dist)
        row = {
            "train_loss": loss,
            "lr": lr,
            "epoch_s": seconds,
            "it_per_s": done / max(seconds, 1e-9),
            "data_wait_share": wait / max(seconds, 1e-9),
        }
        if done < n_it:
            row["iterations"] = done
        if done < n_it and self.dist.is_main:
            logger.info(
                "%s: time limit, epoch %d stopped after %d of %d steps",
                self.fold_dir.name,
                epoch,
                done,
                n_it,
            )
        return row

    def out_of_time(self) -> bool:
        """Whether the time budget ends here (rank 0 decides for every rank).

        True when one more step (as long as the last one), the final validation (as long as
        the last one; estimated before the first) and ``reserve_factor`` times the
        validation time would end after ``stop_at``. Always False without a time limit.
        """
        if not math.isfinite(self.stop_at):
            return False
        val_s = self.val_s or self.estimated_val_s()
        need = self.step_s + val_s + self.reserve_s(val_s)
        return ddp.broadcast_flag(time.perf_counter() + need > self.stop_at, self.dist)

    def reserve_s(self, val_s: float | None = None) -> float:
        """Seconds this fold leaves for work after training: ``reserve_factor`` times its
        validation time, at most :data:`RESERVE_MAX_SHARE` of the fold's time budget (with a
        42-case validation of 41 s on one thread, 4x that exceeded a 2-minute budget and the
        fold trained one step; the decision is cut short at its deadline instead)."""
        val_s = self.val_s if val_s is None else val_s
        if not math.isfinite(self.stop_at):
            return self.reserve_factor * val_s
        budget = max(self.stop_at - self._created, 0.0)
        return min(self.reserve_factor * val_s, RESERVE_MAX_SHARE * budget)

    def estimated_val_s(self) -> float:
        """Seconds of a validation before one is measured: this rank's sliding windows, each
        costing half a training step per patch (a forward pass is about a third)."""
        mine = self.val_cases[self.dist.rank :: self.dist.world_size]
        windows = sum(
            window_count(c["image"].shape[1:], self.plans.patch_size, self.tc.val_overlap)
            for c in mine
        )
        return 0.5 * windows * self.step_s / max(self.plans.batch_size, 1)

    def _progress_at(self, epoch_fraction: float, elapsed: float) -> float:
        by_time = elapsed / self.deadline_s if math.isfinite(self.deadline_s) else 0.0
        return max(epoch_fraction / self.tc.epochs, by_time)

    def step(self, batch: dict[str, Any]) -> float:
        """One optimisation step on a batch; return the loss."""
        image = batch["image"].to(self.device, non_blocking=True).as_tensor()
        image = image.contiguous(memory_format=self.memory_format)
        label = batch["label"].to(self.device, non_blocking=True).as_tensor().long()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(
            "cuda", dtype=self.amp_dtype or torch.float16, enabled=self.amp_dtype is not None
        ):
            out = self.model(image)
            if self.plans.network.deep_supervision and out.dim() == image.dim() + 1:
                loss = self.loss_fn(list(torch.unbind(out, dim=1)), label)
            else:
                loss = self.loss_fn(out, label)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.net.parameters(), self.tc.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.averaged is not None:
            self.averaged.update_parameters(self.net)
        return float(loss.detach())

    # ------------------------------------------------------------------ validation
    @torch.inference_mode()
    def validate(self) -> dict[int, float]:
        """Mean Dice per foreground label over the whole validation volumes (all ranks)."""
        net = self.eval_net
        net.eval()
        try:
            return validate_cases(
                net,
                self.val_cases,
                [k for k in self.plans.labels if k != 0],
                self.plans.patch_size,
                overlap=self.tc.val_overlap,
                amp_dtype=self.amp_dtype,
                dist=self.dist,
            )
        finally:
            net.train()

    def record_validation(self, dice: dict[int, float]) -> bool:
        """Update the EMA of mean Dice; return True when it is a new best."""
        s = self.state
        mean = float(np.mean(list(dice.values()))) if dice else 0.0
        a = self.tc.ema_alpha
        s.ema_metric = mean if s.ema_metric < 0 else a * s.ema_metric + (1 - a) * mean
        s.last_dice = dice
        if s.ema_metric > s.best_metric:
            s.best_metric, s.best_epoch = s.ema_metric, s.epoch
            return True
        return False


def _plans_dict(plans: Plans) -> dict[str, Any]:
    data = to_dict(plans)
    data["labels"] = {str(k): v for k, v in plans.labels.items()}
    return data
