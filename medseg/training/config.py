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

from medseg.config import apply_overrides, from_dict, load_yaml
from medseg.errors import MedsegError

Device = Literal["auto", "cpu", "cuda"]
ModelName = Literal["auto", "unet", "vnet", "dynunet", "segresnet", "basicunet"]


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how it is split.

    ``fold`` is a fold index or ``"all"`` (train every fold in turn); ``cache_dir`` holds
    preprocessed cases, shared by runs and folds (empty: ``~/.cache/medseg/preprocessed``).
    """

    manifest: str = ""
    data_root: str = ""
    fold: int | Literal["all"] = 0
    folds: int = 5
    split_seed: int = 12345
    cache_dir: str = ""
    validate_files: bool = True

    def validate(self) -> None:
        """Check the fold index against the number of folds."""
        if self.folds < 2:
            raise MedsegError(f"data.folds: expected >= 2, found {self.folds}")
        if isinstance(self.fold, int) and not 0 <= self.fold < self.folds:
            raise MedsegError(
                f"data.fold: expected 0..{self.folds - 1} or 'all', found {self.fold}"
            )


@dataclass(frozen=True)
class PlansConfig:
    """Overrides of the automatically planned values (``None``/0/empty: keep the plan).

    ``step_voxels`` is the budget of voxels per optimisation step (patch voxels x batch)
    that sizes the batch, ``patch_voxels`` the largest patch; 0 picks device defaults
    (CPU 0.3 M and 0.3 M: about 0.6 s per step of the default U-Net on 2 idle cores; CUDA
    4 M and 2 M). ``unet_full_res`` gives MONAI's ``UNet`` a level at the input
    resolution (``channels[0]`` there; see ``NetworkSpec.full_res_level``); false keeps
    MONAI's own layout, whose first block halves the resolution (about 2.5x faster steps,
    lower Dice at boundaries); ``None`` (auto) adds the level when the planned step
    (patch voxels x batch) fits ``step_voxels``, not when even a batch of 2 overshoots it.
    ``unet_head_channels`` (``NetworkSpec.head_channels``): N > 0 widens the ``UNet``'s top
    block to N maps followed by a 1x1x1 classifier; ``None``/0 keeps MONAI's block, which
    ends in the class maps (on MSD Hippocampus, 16 made steps 25 % slower and Dice no better
    in 30 CPU minutes). ``dropout`` is the network's dropout probability, placed where each
    MONAI network puts it: after every convolution in ``unet``, ``dynunet`` and
    ``basicunet``; once, after the first convolution, in ``segresnet``; whole-channel
    (``Dropout3d``) in ``vnet``'s two deepest down and up transitions and their skip
    connections. 0: none, as nnU-Net (on MSD Hippocampus 0.1 made CPU steps about 25 %
    slower and Dice no better in 30 minutes), except that MONAI's ``VNet``, like the original
    V-Net, always drops half the skip channels of its two top up-transitions.
    """

    model: ModelName = "auto"
    target_spacing: tuple[float, float, float] | None = None
    patch_size: tuple[int, int, int] | None = None
    batch_size: int = 0
    channels: tuple[int, ...] = ()
    unet_full_res: bool | None = None
    unet_head_channels: int | None = None
    dropout: float = 0.0
    normalization: Literal["auto", "ct", "zscore_nonzero", "zscore"] = "auto"
    step_voxels: int = 0
    patch_voxels: int = 0
    anisotropy_threshold: float = 3.0

    def validate(self) -> None:
        """Check ranges on load, so a bad override names its key, not a later failure."""
        counts = {
            "batch_size": self.batch_size,
            "step_voxels": self.step_voxels,
            "patch_voxels": self.patch_voxels,
            "unet_head_channels": self.unet_head_channels or 0,
        }
        for name, value in counts.items():
            if value < 0:
                raise MedsegError(f"plans.{name}: expected >= 0 (0: planned), found {value}")
        sizes = {"channels": self.channels, "patch_size": self.patch_size or ()}
        for name, values in sizes.items():
            if any(v < 1 for v in values):
                raise MedsegError(f"plans.{name}: expected positive sizes, found {list(values)}")
        if self.target_spacing is not None and not all(s > 0 for s in self.target_spacing):
            raise MedsegError(
                f"plans.target_spacing: expected positive mm, found {list(self.target_spacing)}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise MedsegError(f"plans.dropout: expected a probability 0..<1, found {self.dropout}")
        if self.anisotropy_threshold <= 1.0:
            raise MedsegError(
                f"plans.anisotropy_threshold: expected > 1, found {self.anisotropy_threshold}"
            )


@dataclass(frozen=True)
class AugmentConfig:
    """Data augmentation (MONAI transforms), probabilities in the spirit of nnU-Net's.

    ``mirror_axes`` are RAS axes (0 = left-right); ``None`` takes ``Plans.mirror_axes``,
    which planning derives from the label layout (an axis along which labels always lie in
    the same order, such as left/right organs, is not mirrored). Set a probability to 0 to
    switch a transform off.
    """

    mirror_axes: tuple[int, ...] | None = None
    mirror_prob: float = 0.5
    rotate_prob: float = 0.2
    rotate_degrees: float = 30.0
    scale_prob: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)
    noise_prob: float = 0.1
    blur_prob: float = 0.2
    brightness_prob: float = 0.15
    contrast_prob: float = 0.15
    gamma_prob: float = 0.3
    lowres_prob: float = 0.25

    def validate(self) -> None:
        """Check axes and probabilities."""
        if self.mirror_axes is not None and any(a not in (0, 1, 2) for a in self.mirror_axes):
            raise MedsegError(
                f"augment.mirror_axes: expected axes in 0..2, found {self.mirror_axes}"
            )
        for name, value in vars(self).items():
            if name.endswith("_prob") and not 0.0 <= value <= 1.0:
                raise MedsegError(f"augment.{name}: expected a probability 0..1, found {value}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, validation, devices and budgets.

    ``epochs`` of ``iterations_per_epoch`` steps; ``time_limit_minutes`` (0: none) stops
    cleanly with a validated best checkpoint. The learning-rate schedule runs over whichever
    budget ends first (epochs or time), so a time-limited run still anneals.
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
    max_steps: int = 0
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
    data = load_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or {})
    try:
        return from_dict(RunConfig, data, "config")
    except MedsegError as exc:
        if path is not None and exc.path is None:
            raise MedsegError(exc.message, path) from exc
        raise
