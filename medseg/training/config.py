"""The configuration tree of a training run: frozen dataclasses <-> YAML.

``RunConfig`` is what ``medseg train --config run.yaml`` reads; CLI flags override its
fields (``medseg.config.apply_overrides``) and the resolved tree is written to
``RUN_DIR/config.yaml``. Unknown keys and wrong types are :class:`~medseg.errors.MedsegError`
with a "did you mean" hint (``medseg.config.from_dict``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medseg.config import load_config
from medseg.errors import MedsegError
from medseg.planning.config import PlansConfig
from medseg.transforms.config import AugmentConfig

Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how it is split.

    ``fold`` is a fold index or ``"all"`` (train every fold in turn); ``cache_dir`` holds
    preprocessed cases, shared by runs and folds (empty: ``~/.cache/medseg/preprocessed``),
    kept under ``cache_max_gb`` (least recently used entries go first, never the run's own;
    0: no cap). ``allow_outside_root`` accepts manifest paths that leave ``data_root``
    (refused by default). ``min_channel_overlap``: the smallest share of channel 0's field
    of view that every other input channel must cover (multi-channel manifests; see
    :mod:`medseg.io.channels`).
    """

    manifest: str = ""
    data_root: str = ""
    fold: int | Literal["all"] = 0
    folds: int = 5
    split_seed: int = 12345
    cache_dir: str = ""
    cache_max_gb: float = 20.0
    allow_outside_root: bool = False
    validate_files: bool = True
    min_channel_overlap: float = 0.9

    def validate(self) -> None:
        """Check the fold index against the number of folds."""
        if self.cache_max_gb < 0:
            raise MedsegError(
                f"data.cache_max_gb: expected >= 0 (0: no cap), found {self.cache_max_gb}"
            )
        if not 0.0 <= self.min_channel_overlap <= 1.0:
            raise MedsegError(
                "data.min_channel_overlap: expected a share in 0..1, found "
                f"{self.min_channel_overlap}"
            )
        if self.folds < 2:
            raise MedsegError(f"data.folds: expected >= 2, found {self.folds}")
        if isinstance(self.fold, int) and not 0 <= self.fold < self.folds:
            raise MedsegError(
                f"data.fold: expected 0..{self.folds - 1} or 'all', found {self.fold}"
            )


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, validation, devices and budgets.

    ``epochs`` of ``iterations_per_epoch`` steps; ``time_limit_minutes`` (0: none) bounds the
    whole ``medseg train`` command: the folds share it equally, each stops between steps (in
    the first epoch too) with a validated best checkpoint, and the post-processing decision
    gets what they leave (it is skipped with a warning when nothing is left). A resumed run
    gets a new budget. The learning-rate schedule runs over whichever budget ends first
    (epochs or time), so a time-limited run still anneals.
    ``ema_alpha`` smooths the validation metric that picks the best checkpoint;
    ``weight_ema`` (0: off) is the per-step decay of an exponential moving average of the
    weights (``torch.optim.swa_utils.AveragedModel``, decay warmed up over the first
    steps): when on, validation and the checkpoints' ``model`` use the averaged weights.
    ``channels_last`` trains in the channels-last-3d memory layout; ``auto`` turns it on
    where it was measured to help (CPU with U-Net, SegResNet, DynUNet or VNet: 8-30 %
    faster steps, ``benchmarks/train_step_layout.py``).
    """

    epochs: int = 1000
    iterations_per_epoch: int = 50
    time_limit_minutes: float = 0.0
    optimizer: Literal["adamw", "sgd"] = "adamw"
    learning_rate: float = 0.0
    weight_decay: float = 1e-4
    schedule: Literal["cosine", "poly", "constant"] = "cosine"
    warmup_fraction: float = 0.02
    grad_clip: float = 12.0
    foreground_ratio: float = 0.67
    val_every: int = 5
    val_overlap: float = 0.25
    ema_alpha: float = 0.7
    weight_ema: float = 0.0
    device: Device = "auto"
    amp: bool = True
    channels_last: Literal["auto", "on", "off"] = "auto"
    num_workers: int = -1
    threads: int = 0
    seed: int = 0
    deterministic: bool = False
    postprocess_decision: bool = True

    def validate(self) -> None:
        """Check ranges."""
        if self.epochs < 1 or self.iterations_per_epoch < 1:
            raise MedsegError(
                "train: expected epochs >= 1 and iterations_per_epoch >= 1, found "
                f"{self.epochs} and {self.iterations_per_epoch}"
            )
        if self.time_limit_minutes < 0:
            raise MedsegError(
                f"train.time_limit_minutes: expected >= 0, found {self.time_limit_minutes}"
            )
        if not 0.0 <= self.foreground_ratio <= 1.0:
            raise MedsegError(
                f"train.foreground_ratio: expected 0..1, found {self.foreground_ratio}"
            )
        if not 0.0 <= self.weight_ema < 1.0:
            raise MedsegError(f"train.weight_ema: expected 0 <= decay < 1, found {self.weight_ema}")
        if self.val_every < 1:
            raise MedsegError(f"train.val_every: expected >= 1, found {self.val_every}")


@dataclass(frozen=True)
class RunConfig:
    """The whole run: ``data``, ``plans`` overrides, ``augment`` and ``train`` sections."""

    data: DataConfig = field(default_factory=DataConfig)
    plans: PlansConfig = field(default_factory=PlansConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_run_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> RunConfig:
    """Read a YAML config (or start from defaults) and apply dotted overrides.

    Parameters
    ----------
    path
        YAML file with any of the sections ``data``, ``plans``, ``augment``, ``train``.
    overrides
        ``{"train.epochs": 5, ...}``; ``None`` values are ignored (flag not given).

    Raises
    ------
    MedsegError
        For unknown keys (with a "did you mean" hint) or wrong types, naming the file.
    """
    return load_config(RunConfig, path, overrides, "config")
