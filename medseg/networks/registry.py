"""One explicit registry ``name -> builder`` over MONAI networks.

All networks take ``(B, in_channels, X, Y, Z)`` and return logits
``(B, out_channels, X, Y, Z)``; ``dynunet`` with deep supervision returns
``(B, 1 + n_ds, out_channels, X, Y, Z)`` in training mode (MONAI's convention).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from monai.networks.nets import BasicUNet, DynUNet, SegResNet, UNet, VNet
from torch import nn

from medseg.errors import MedsegError
from medseg.planning.planner import VNET_CHANNELS
from medseg.planning.plans import NetworkSpec

logger = logging.getLogger(__name__)

Builder = Callable[[NetworkSpec, int, int], nn.Module]


def _unet(spec: NetworkSpec, in_ch: int, out_ch: int) -> nn.Module:
    channels: tuple[int, ...] = spec.channels
    strides: tuple[tuple[int, int, int], ...] = spec.strides
    if spec.full_res_level:
        # MONAI's UNet down-samples in its first block; a leading stride 1 keeps a level at
        # the input resolution (as nnU-Net and DynUNet do), which sharpens boundaries.
        channels = (*spec.channels, 2 * spec.channels[-1])
        strides = ((1, 1, 1), *spec.strides)
    head = spec.head_channels
    unet = UNet(
        spatial_dims=3,
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
    return nn.Sequential(unet, nn.Conv3d(head, out_ch, kernel_size=1))


def _dynunet(spec: NetworkSpec, in_ch: int, out_ch: int) -> nn.Module:
    kernels = list(spec.kernel_sizes) or [(3, 3, 3)] * len(spec.channels)
    strides = [(1, 1, 1), *spec.strides]
    return DynUNet(
        spatial_dims=3,
        in_channels=in_ch,
        out_channels=out_ch,
        kernel_size=kernels,
        strides=strides,
        upsample_kernel_size=list(spec.strides),
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


NETWORKS: dict[str, Builder] = {
    "unet": _unet,
    "dynunet": _dynunet,
    "vnet": _vnet,
    "segresnet": _segresnet,
    "basicunet": _basicunet,
}


def build_network(spec: NetworkSpec, in_channels: int, out_channels: int) -> nn.Module:
    """Build the network named by ``spec.name``.

    Raises
    ------
    MedsegError
        For an unknown name (listing the registry).
    """
    try:
        builder = NETWORKS[spec.name]
    except KeyError as exc:
        raise MedsegError(
            f"unknown network '{spec.name}', expected one of {sorted(NETWORKS)}"
        ) from exc
    return builder(spec, in_channels, out_channels)
