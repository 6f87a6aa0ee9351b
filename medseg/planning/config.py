"""``PlansConfig``: the ``plans`` section of a run config (overrides of planned values)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from medseg.errors import MedsegError
from medseg.planning.plans import NetworkName

# "auto" or a registry name (``NetworkName``; nested Literals flatten: one list of names).
ModelName = Literal["auto", NetworkName]


@dataclass(frozen=True)
class PlansConfig:
    """Overrides of the automatically planned values (``None``/0/empty: keep the plan).

    ``model`` is a network of the registry (``medseg train --help`` lists each with the
    ``NetworkSpec`` fields it reads) or ``auto`` (``unet`` on CPU, ``dynunet`` on CUDA).
    ``channels`` are its widths per level where it has them; ``vnet`` has fixed widths and
    ignores them (planning logs a warning); ``swinunetr`` reads ``channels[0]`` (its
    ``feature_size``, a multiple of 12) and ``unetr`` ``channels[0]`` and ``channels[-1]``
    (``feature_size``, ``hidden_size``): their other widths follow from those.
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
    ``normalization`` is channel 0's intensity normalisation; ``channel_normalization``
    gives one per input channel (``auto`` entries, and channels beyond the list, take
    :func:`medseg.planning.normalization.default_normalization` of their modality: ``ct`` for CT,
    per-image ``zscore`` for PET, ``zscore_nonzero`` otherwise).
    ``configuration`` (``medseg train --configuration``): ``3d`` plans a 3D network on 3D
    patches; ``2d`` nnU-Net's 2d configuration (:func:`medseg.planning.planner_2d.plan_2d`:
    a 2D ``unet``/``dynunet`` run slice by slice along the coarsest axis); ``3d_lowres``
    3D at a coarser spacing (:func:`medseg.planning.configurations.plan_lowres`); ``auto``
    trains every configuration that
    :func:`medseg.planning.configurations.sensible_configurations` names, compares them (and
    the ensemble of the two best) on the pooled cross-validation predictions and records the
    choice in ``RUN_DIR/configuration.json`` (:mod:`medseg.workflows.configurations`). The
    default is ``3d``: ``auto`` trains at least two networks, so it is asked for explicitly
    (the planner itself plans ``auto`` as ``3d``).
    """

    model: ModelName = "auto"
    configuration: Literal["auto", "3d", "2d", "3d_lowres"] = "3d"
    target_spacing: tuple[float, float, float] | None = None
    patch_size: tuple[int, int, int] | None = None
    batch_size: int = 0
    channels: tuple[int, ...] = ()
    unet_full_res: bool | None = None
    unet_head_channels: int | None = None
    dropout: float = 0.0
    normalization: Literal["auto", "ct", "zscore_nonzero", "zscore"] = "auto"
    channel_normalization: tuple[Literal["auto", "ct", "zscore_nonzero", "zscore"], ...] = ()
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
