"""Plans: every data-dependent choice of a run (spacing, normalisation, patch, network).

Plans are derived from the dataset fingerprint (``medseg.planning.planner``), written to
``RUN_DIR/plans.json`` and read back by inference and bundle export, so that inference
preprocesses exactly as training did. Every field can be overridden from the config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medseg.config import from_dict, to_dict
from medseg.errors import MedsegError
from medseg.io.jsonfile import read_json

Normalization = Literal["ct", "zscore_nonzero", "zscore"]
NetworkName = Literal[
    "unet",
    "dynunet",
    "vnet",
    "segresnet",
    "basicunet",
    "swinunetr",
    "unetr",
    "attentionunet",
    "basicunetplusplus",
    "highresnet",
    "deeplab",
]


@dataclass(frozen=True)
class NetworkSpec:
    """Architecture of the network (see :func:`medseg.networks.build_network`).

    Parameters
    ----------
    name
        Registry name: ``unet`` (MONAI ``UNet``), ``dynunet`` (nnU-Net layout, deep
        supervision), ``vnet``, ``segresnet``, ``basicunet``, ``swinunetr``, ``unetr``,
        ``attentionunet``, ``basicunetplusplus`` (U-Net++), ``highresnet`` and ``deeplab``
        (DeepLabV3+-style, MONAI ``SimpleASPP``). Which of the fields below each network
        reads: ``medseg.networks.registry.NETWORKS`` (``honours``; ``medseg train --help``).
    channels
        Feature maps per resolution level (first = full resolution; for ``unet`` only with
        ``full_res_level``).
    strides
        Down-sampling per level after the first, one ``(sx, sy, sz)`` per level transition;
        anisotropic strides keep coarse axes from being pooled too early.
    kernel_sizes
        Convolution kernel per level (``dynunet`` only; ``unet`` uses 3).
    num_res_units
        Residual units per block (``unet`` only).
    deep_supervision
        Extra outputs at coarser levels (``dynunet`` only).
    dropout
        Dropout probability.
    full_res_level
        ``unet`` only. True: ``channels[i]`` runs at level ``i`` (level 0 = input
        resolution) and MONAI's bottom block at the coarsest level gets
        ``2 * channels[-1]``. False (plans written before this field): MONAI ``UNet``'s own
        layout, whose first block already halves the resolution, so no features are
        computed at full resolution.
    head_channels
        ``unet`` only. 0 (plans written before this field): MONAI ``UNet``'s top block
        emits the classes itself, so its last transposed convolution, instance norm and
        residual unit run on ``out_channels`` maps (3 for two labels). N > 0: that block
        emits N feature maps and a 1x1x1 convolution maps them to the classes.
    input_size
        ``unetr`` only: the one input size (voxels, RAS) the network is built for (MONAI
        ``UNETR``'s ``img_size``, sizing its position embeddings): the planned patch.
        Empty for every other network (they take any multiple of their total stride).
    slice_axis
        ``None``: a 3D network. 0, 1 or 2 (``unet``, ``dynunet`` only): the network is
        built 2D (``spatial_dims=2``) and run slice by slice along this RAS axis
        (:class:`medseg.networks.slicewise.SliceWise2D`); ``strides`` and ``kernel_sizes``
        keep their ``(sx, sy, sz)`` form, the entry along ``slice_axis`` ignored (stride 1).
    """

    name: NetworkName = "unet"
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    strides: tuple[tuple[int, int, int], ...] = ((2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2))
    kernel_sizes: tuple[tuple[int, int, int], ...] = ()
    num_res_units: int = 2
    deep_supervision: bool = False
    dropout: float = 0.0
    full_res_level: bool = False
    head_channels: int = 0
    input_size: tuple[int, ...] = ()
    slice_axis: int | None = None

    def validate(self) -> None:
        """Check that level counts agree; raise :class:`MedsegError` otherwise."""
        if self.slice_axis is not None and self.slice_axis not in (0, 1, 2):
            raise MedsegError(
                f"network.slice_axis: expected a RAS axis 0..2 or null, found {self.slice_axis}"
            )
        if len(self.strides) != len(self.channels) - 1:
            raise MedsegError(
                f"network: expected {len(self.channels) - 1} strides for "
                f"{len(self.channels)} channel levels, found {len(self.strides)}"
            )
        if self.head_channels < 0:
            raise MedsegError(f"network: expected head_channels >= 0, found {self.head_channels}")
        if self.kernel_sizes and len(self.kernel_sizes) != len(self.channels):
            raise MedsegError(
                f"network: expected {len(self.channels)} kernel sizes, "
                f"found {len(self.kernel_sizes)}"
            )


@dataclass(frozen=True)
class ChannelPlan:
    """Normalisation of one input channel (see :attr:`Plans.normalization` for the schemes).

    Parameters
    ----------
    modality
        The manifest's name for the channel (``"CT"``, ``"PET"``, ``"T2"``, ...).
    normalization, intensity_clip, intensity_mean, intensity_std
        As the fields of the same names of :class:`Plans`, for this channel.
    """

    modality: str
    normalization: Normalization
    intensity_clip: tuple[float, float] | None = None
    intensity_mean: float | None = None
    intensity_std: float | None = None


@dataclass(frozen=True)
class Plans:
    """Data-dependent choices of a run; axis order is RAS after reorientation.

    Parameters
    ----------
    modality
        ``"CT"``, ``"MR"`` or another modality name from the manifest.
    labels
        ``{value: name}`` including 0 (background).
    target_spacing
        Voxel size (mm) along R, A, S that every case is resampled to.
    normalization
        ``ct``: clip to ``intensity_clip`` then z-score with ``intensity_mean``/``intensity_std``
        (dataset statistics of foreground voxels); ``zscore_nonzero``: per-image z-score
        over non-zero voxels; ``zscore``: per-image z-score over all voxels.
    crop_foreground
        Crop each case to the bounding box of its non-zero voxels before training/inference.
    patch_size
        Training patch (voxels, RAS order) and sliding-window ROI at inference.
    batch_size
        Patches per optimisation step.
    network
        The architecture.
    median_shape
        Median shape (voxels) of the resampled training cases.
    mirror_axes
        RAS axes along which mirroring keeps labels meaningful (training augmentation and
        test-time mirroring). Planning drops an axis along which two labels always lie in
        the same order (anterior/posterior, left/right structures).
    input_channels
        One :class:`ChannelPlan` per input channel when there are several (channel 0's
        entry repeats ``modality``, ``normalization`` and the intensity fields above, which
        always describe channel 0). Empty (single-channel plans, and plans written before
        multi-channel input): one channel, described by those fields.
    configuration
        ``3d`` (plans written before this field): a 3D network on 3D patches. ``2d``:
        nnU-Net's 2d configuration, a 2D network run slice by slice along ``slice_axis``
        (``network.slice_axis``); ``patch_size`` is 1 voxel (or a few slices, seen as a
        batch of independent slices) along that axis, and the rest of the pipeline
        (preprocessing, sampling, sliding windows, resampling back) is the 3D one.
        ``3d_lowres``: the 3D pipeline at a coarser ``target_spacing``
        (:func:`medseg.planning.configurations.plan_lowres`).
    slice_axis
        ``2d`` only: the RAS axis slices are taken along (the coarsest target spacing);
        ``None`` for ``3d``.
    """

    modality: str
    labels: dict[int, str]
    target_spacing: tuple[float, float, float]
    normalization: Normalization
    patch_size: tuple[int, int, int]
    batch_size: int
    network: NetworkSpec = field(default_factory=NetworkSpec)
    intensity_clip: tuple[float, float] | None = None
    intensity_mean: float | None = None
    intensity_std: float | None = None
    crop_foreground: bool = True
    median_shape: tuple[int, int, int] = (0, 0, 0)
    mirror_axes: tuple[int, ...] = (0, 1, 2)
    input_channels: tuple[ChannelPlan, ...] = ()
    version: int = 1
    configuration: Literal["3d", "2d", "3d_lowres"] = "3d"
    slice_axis: int | None = None

    @property
    def num_classes(self) -> int:
        """Number of output channels (background included)."""
        return max(self.labels) + 1

    @property
    def channel_plans(self) -> tuple[ChannelPlan, ...]:
        """Every input channel's normalisation, channel 0 first."""
        if self.input_channels:
            return self.input_channels
        first = ChannelPlan(
            self.modality,
            self.normalization,
            self.intensity_clip,
            self.intensity_mean,
            self.intensity_std,
        )
        return (first,)

    @property
    def in_channels(self) -> int:
        """Input channels of the network."""
        return len(self.channel_plans)

    @property
    def channel_names(self) -> tuple[str, ...]:
        """Modality name of each input channel, channel 0 first."""
        return tuple(c.modality for c in self.channel_plans)

    def validate(self) -> None:
        """Check consistency; raise :class:`MedsegError` naming the field otherwise."""
        if 0 not in self.labels:
            raise MedsegError("plans.labels: expected label 0 (background) to be named")
        if any(s <= 0 for s in self.target_spacing):
            raise MedsegError(f"plans.target_spacing: expected > 0 mm, found {self.target_spacing}")
        self._validate_configuration()
        in_plane = [p for a, p in enumerate(self.patch_size) if a != self.slice_axis]
        if any(p < 8 for p in in_plane) or any(p < 1 for p in self.patch_size):
            raise MedsegError(
                f"plans.patch_size: expected >= 8 voxels (2d: >= 1 along slice_axis), "
                f"found {self.patch_size}"
            )
        for n, c in enumerate(self.channel_plans):
            if c.normalization == "ct" and (
                c.intensity_clip is None or c.intensity_mean is None or not c.intensity_std
            ):
                raise MedsegError(
                    f"plans: 'ct' normalisation of channel {n} ({c.modality}) needs "
                    "intensity_clip, intensity_mean and intensity_std"
                )

    def _validate_configuration(self) -> None:
        """``configuration``, ``slice_axis`` and ``network.slice_axis`` agree."""
        want = self.slice_axis if self.configuration == "2d" else None
        if self.configuration == "2d" and self.slice_axis not in (0, 1, 2):
            raise MedsegError(
                f"plans.slice_axis: expected a RAS axis 0..2 for configuration '2d', "
                f"found {self.slice_axis}"
            )
        if self.slice_axis != want or self.network.slice_axis != want:
            raise MedsegError(
                f"plans: expected slice_axis and network.slice_axis {want} for configuration "
                f"'{self.configuration}', found {self.slice_axis} and {self.network.slice_axis}"
            )


def save_plans(plans: Plans, path: str | Path) -> Path:
    """Write plans as JSON (atomic)."""
    from medseg.io.atomic import atomic_write_text

    data = to_dict(plans)
    data["labels"] = {str(k): v for k, v in plans.labels.items()}
    return atomic_write_text(Path(path), json.dumps(data, indent=2))


def plans_from_dict(data: dict[str, Any], where: str = "plans") -> Plans:
    """Build validated :class:`Plans` from JSON-like data (label keys may be strings)."""
    if not isinstance(data, dict):
        raise MedsegError(f"{where}: expected a JSON object, found {type(data).__name__}")
    data = dict(data)
    if "labels" in data and isinstance(data["labels"], dict):
        try:
            data["labels"] = {int(k): v for k, v in data["labels"].items()}
        except ValueError as exc:
            raise MedsegError(f"{where}.labels: expected integer keys, found {exc}") from exc
    return from_dict(Plans, data, where)


def load_plans(path: str | Path) -> Plans:
    """Read ``plans.json``; a missing or malformed file is a :class:`MedsegError`."""
    p = Path(path)
    data = read_json(
        p,
        what="a medseg plans.json",
        missing="plans file not found (is this a medseg run directory?)",
    )
    try:
        return plans_from_dict(data)
    except MedsegError as exc:
        raise MedsegError(str(exc), p) from exc
