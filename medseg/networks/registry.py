"""One explicit registry ``name -> builder`` over MONAI networks (:data:`NETWORKS`).

All networks take ``(B, in_channels, X, Y, Z)`` and return logits
``(B, out_channels, X, Y, Z)``; ``dynunet`` and ``basicunetplusplus`` with deep supervision
return ``(B, 1 + n_ds, out_channels, X, Y, Z)`` in training mode (MONAI DynUNet's
convention). The builders of the older five are here; the others in
:mod:`medseg.networks.zoo`.

CPU cost of one training step (forward + DiceCE backward + AdamW), batch 2, 1 input channel,
3 classes, default widths (``medseg.planning.planner._WIDTHS``), fp32: CPU seconds
(``time.process_time``) with 1 thread, median of 3 steps after a warm-up; 2 vCPU AMD EPYC
Zen 3, torch 2.13.0+cpu, monai 1.6.1. The machine was shared (load average 5-9 from other
jobs on its 2 cores throughout), so wall time with 2 threads could not be measured on a
quiet machine: CPU seconds are the robust figure there (2 idle threads: roughly 0.6x).
"planned" is the patch planned for an MSD-Hippocampus-like cohort (median 36x50x35 at
1 mm); 64^3 a common patch.

==================  ===================  ======  ==========  =======  =======
network             widths               params  planned     planned  64^3
                                                 patch       CPU s    CPU s
==================  ===================  ======  ==========  =======  =======
unet                8|24..96 (*)         2.7 M   40x56x40    0.74     0.54
dynunet             32..256 (64^3: 320)  5.7 M   40x56x40    2.90     12.9
vnet                16..256 (fixed)      45.6 M  48x64x48    7.68     13.8
segresnet           8..64                1.2 M   40x56x40    0.61     1.94
basicunet           32..256              5.8 M   48x64x48    5.12     9.31
swinunetr           feature 12           3.9 M   64x64x64    4.83     4.37
unetr               feature 12, ViT 192  7.8 M   48x64x48    1.77     2.84
attentionunet       8..64 (64^3: 128)    0.4 M   40x56x40    0.44     1.24
basicunetplusplus   8..64                0.4 M   48x64x48    3.52     5.58
highresnet          8, 8, 16, 32, 40     0.2 M   36x50x35    4.02     20.6
deeplab             8..96                0.9 M   40x56x40    0.66     2.78
==================  ===================  ======  ==========  =======  =======

(*) planned with the full-resolution level at 40x56x40; at 64^3 a batch of 2 exceeds the
step budget and planning drops it (``PlansConfig.unet_full_res``), hence the lower time.
HighResNet runs every layer at the input resolution: a GPU network, 5-40x the unet step on
CPU even at half MONAI's widths (16, 16, 32, 64, 80 would be about 4x more again).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from monai.networks.nets import BasicUNet, DynUNet, SegResNet, UNet, VNet
from torch import nn

from medseg.errors import MedsegError
from medseg.networks import zoo
from medseg.networks.slicewise import SliceWise2D, in_plane
from medseg.planning.planner import VNET_CHANNELS
from medseg.planning.plans import NetworkSpec

logger = logging.getLogger(__name__)

Builder = Callable[[NetworkSpec, int, int], nn.Module]


def _dims(spec: NetworkSpec) -> int:
    """3, or 2 for a network run slice-wise (``spec.slice_axis``; see ``build_network``)."""
    return 3 if spec.slice_axis is None else 2


def _unet(spec: NetworkSpec, in_ch: int, out_ch: int) -> nn.Module:
    dims = _dims(spec)
    channels: tuple[int, ...] = spec.channels
    strides = in_plane(spec.strides, spec.slice_axis)
    if spec.full_res_level:
        # MONAI's UNet down-samples in its first block; a leading stride 1 keeps a level at
        # the input resolution (as nnU-Net and DynUNet do), which sharpens boundaries.
        channels = (*spec.channels, 2 * spec.channels[-1])
        strides = [(1,) * dims, *strides]
    head = spec.head_channels
    unet = UNet(
        spatial_dims=dims,
        in_channels=in_ch,
        out_channels=head or out_ch,
        channels=channels,
        strides=strides,  # type: ignore[arg-type]  # per-axis strides work; stub says int
        num_res_units=spec.num_res_units,
        norm="INSTANCE",
        dropout=spec.dropout,
    )
    if not head:
        return unet
    # MONAI's top up-block ends in out_channels maps (instance-normed); a wider block plus a
    # 1x1x1 classifier, as nnU-Net's segmentation head, keeps features there.
    conv = nn.Conv3d if dims == 3 else nn.Conv2d
    return nn.Sequential(unet, conv(head, out_ch, kernel_size=1))


def _dynunet(spec: NetworkSpec, in_ch: int, out_ch: int) -> nn.Module:
    dims = _dims(spec)
    kernels = in_plane(spec.kernel_sizes, spec.slice_axis) or [(3,) * dims] * len(spec.channels)
    strides = in_plane(spec.strides, spec.slice_axis)
    return DynUNet(
        spatial_dims=dims,
        in_channels=in_ch,
        out_channels=out_ch,
        kernel_size=kernels,
        strides=[(1,) * dims, *strides],
        upsample_kernel_size=strides,
        filters=list(spec.channels),
        dropout=spec.dropout or None,
        deep_supervision=spec.deep_supervision,
        deep_supr_num=max(1, min(2, len(spec.channels) - 2)),
        res_block=spec.num_res_units > 0,
    )


def _vnet(spec: NetworkSpec, in_ch: int, out_ch: int) -> nn.Module:
    # MONAI's VNet has fixed widths (VNET_CHANNELS, which planning records in plans.json) and
    # needs inputs divisible by 16.
    if tuple(spec.channels) != VNET_CHANNELS:
        logger.warning(
            "vnet: plans.network.channels %s are not what MONAI's VNet builds; it has fixed "
            "widths %s",
            list(spec.channels),
            list(VNET_CHANNELS),
        )
    # Its two top up-transitions always drop skip channels at 0.5, as the original V-Net
    # does; MONAI's constructor has no argument for them (MONAI issue #6116).
    return VNet(
        spatial_dims=3,
        in_channels=in_ch,
        out_channels=out_ch,
        dropout_prob_down=spec.dropout or None,
        dropout_prob_up=(spec.dropout or None, spec.dropout),
    )


def _segresnet(spec: NetworkSpec, in_ch: int, out_ch: int) -> nn.Module:
    return SegResNet(
        spatial_dims=3,
        in_channels=in_ch,
        out_channels=out_ch,
        init_filters=spec.channels[0],
        # GroupNorm with 8 groups (MONAI's default) needs widths divisible by 8.
        norm=("GROUP", {"num_groups": math.gcd(8, spec.channels[0])}),
        dropout_prob=spec.dropout or None,
    )


def _basicunet(spec: NetworkSpec, in_ch: int, out_ch: int) -> nn.Module:
    feats = (*spec.channels[:5], spec.channels[0])
    if len(feats) != 6:
        raise MedsegError(f"basicunet: expected at least 5 channel levels, found {spec.channels}")
    return BasicUNet(
        spatial_dims=3,
        in_channels=in_ch,
        out_channels=out_ch,
        features=feats,
        dropout=spec.dropout,
    )


@dataclass(frozen=True)
class NetworkEntry:
    """One registered network.

    Parameters
    ----------
    build
        ``(spec, in_channels, out_channels) -> nn.Module``; every builder honours
        ``in_channels`` and ``out_channels``.
    honours
        The :class:`NetworkSpec` fields (besides ``name``) the builder reads, with what
        each means for this network; the others are ignored.
    torchscript
        How bundle export writes ``models/model.ts``: ``"script"`` (``torch.jit.script``
        works) or ``"trace"`` (scripting fails; traced at the patch size, so ``model.ts``
        takes that input size only). ``tests/networks/test_registry.py`` checks it.
    traces_with_deep_supervision
        Scripts without deep supervision but not with it (``dynunet``: MONAI's deep
        supervision branch does not script); see :func:`torchscript_mode`.
    summary
        One line for ``medseg train --help``.
    """

    build: Builder
    honours: str
    torchscript: Literal["script", "trace"]
    summary: str
    traces_with_deep_supervision: bool = False

    def torchscript_text(self) -> str:
        """``script``, ``trace`` or ``script (trace with deep_supervision)``."""
        if self.traces_with_deep_supervision:
            return f"{self.torchscript} (trace with deep_supervision)"
        return self.torchscript


NETWORKS: dict[str, NetworkEntry] = {
    "unet": NetworkEntry(
        _unet,
        "channels, strides, num_res_units, full_res_level, head_channels, dropout",
        "script",
        "MONAI UNet (the CPU default)",
    ),
    "dynunet": NetworkEntry(
        _dynunet,
        "channels, strides, kernel_sizes, num_res_units (>0: residual), deep_supervision, dropout",
        "script",
        "MONAI DynUNet, nnU-Net layout (the CUDA default)",
        traces_with_deep_supervision=True,
    ),
    "vnet": NetworkEntry(
        _vnet,
        "dropout only: fixed widths 16..256, channels ignored (warning)",
        "script",
        "MONAI VNet",
    ),
    "segresnet": NetworkEntry(
        _segresnet, "channels[0] (init_filters), dropout", "script", "MONAI SegResNet"
    ),
    "basicunet": NetworkEntry(_basicunet, "channels[:5], dropout", "script", "MONAI BasicUNet"),
    "swinunetr": NetworkEntry(
        zoo.swinunetr,
        "channels[0] (feature_size, multiple of 12; the rest follow), dropout",
        "trace",
        "MONAI SwinUNETR (patch sides multiples of 32, at least 64)",
    ),
    "unetr": NetworkEntry(
        zoo.unetr,
        "channels[0] (feature_size), channels[-1] (ViT hidden_size), input_size, dropout",
        "script",
        "MONAI UNETR (built for the patch size, divisible by 16)",
    ),
    "attentionunet": NetworkEntry(
        zoo.attentionunet, "channels, strides, dropout", "script", "MONAI AttentionUnet"
    ),
    "basicunetplusplus": NetworkEntry(
        zoo.basicunetplusplus,
        "channels[:5], deep_supervision (planned on), dropout",
        "script",
        "MONAI BasicUNetPlusPlus (U-Net++)",
    ),
    "highresnet": NetworkEntry(
        zoo.highresnet,
        "channels (5 widths: conv_0, res_1, res_2, res_3, conv_1), dropout",
        "script",
        "MONAI HighResNet (no down-sampling)",
    ),
    "deeplab": NetworkEntry(
        zoo.deeplab,
        "channels (last divisible by 4), strides, dropout",
        "script",
        "DeepLabV3+-style: residual encoder + MONAI SimpleASPP",
    ),
}


# Builders that honour ``NetworkSpec.slice_axis`` (``spatial_dims=2``; the 2d configuration).
SLICEWISE = ("unet", "dynunet")


def network_table() -> str:
    """The registry, one paragraph per network: its summary, the ``NetworkSpec`` fields it
    reads (``plans.network`` in ``plans.json``; ``plans.channels`` in a run config) and its
    TorchScript export (``medseg train --help`` prints this)."""
    return "\n\n".join(
        f"{n}: {e.summary}. Reads: {e.honours}. TorchScript: {e.torchscript_text()}."
        for n, e in NETWORKS.items()
    )


def torchscript_mode(spec: NetworkSpec) -> Literal["script", "trace"]:
    """How bundle export writes this network as TorchScript (see :class:`NetworkEntry`)."""
    entry = NETWORKS[spec.name]
    if entry.traces_with_deep_supervision and spec.deep_supervision:
        return "trace"
    return entry.torchscript


def build_network(spec: NetworkSpec, in_channels: int, out_channels: int) -> nn.Module:
    """Build the network named by ``spec.name``.

    Parameters
    ----------
    spec
        The architecture (``Plans.network``); each network reads the fields listed in
        ``NETWORKS[name].honours``.
    in_channels, out_channels
        Input image channels and output classes (background included).

    Returns
    -------
    torch.nn.Module
        Maps ``(B, in_channels, X, Y, Z)`` to logits ``(B, out_channels, X, Y, Z)`` (RAS
        axes, the patch grid).

    Raises
    ------
    MedsegError
        For an unknown name (listing the registry) or a spec the network cannot build.

    Notes
    -----
    ``spec.slice_axis`` set (the ``2d`` configuration): ``unet`` and ``dynunet`` are built
    with ``spatial_dims=2`` and wrapped in :class:`~medseg.networks.slicewise.SliceWise2D`,
    which keeps the contract above (slices along that axis; ``torchscript_mode`` as 3D).
    """
    try:
        entry = NETWORKS[spec.name]
    except KeyError as exc:
        raise MedsegError(
            f"unknown network '{spec.name}', expected one of {sorted(NETWORKS)}"
        ) from exc
    if spec.slice_axis is None:
        return entry.build(spec, in_channels, out_channels)
    if spec.name not in SLICEWISE:
        raise MedsegError(
            f"network '{spec.name}': expected one of {list(SLICEWISE)} for slice_axis "
            f"{spec.slice_axis} (the 2d configuration), found '{spec.name}'"
        )
    return SliceWise2D(entry.build(spec, in_channels, out_channels), spec.slice_axis)
