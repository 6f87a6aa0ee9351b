"""Builders of the transformer, attention, nested and dilated MONAI networks of the registry.

Each builder maps a :class:`~medseg.planning.plans.NetworkSpec` onto one MONAI network and
reads only the spec fields listed for it in :data:`medseg.networks.registry.NETWORKS`
(``honours``); planning (``medseg.planning.planner``) writes specs whose channels, strides
and patch the network can build. Networks with fixed width ratios (``swinunetr``,
``unetr``) take their base width from ``channels`` and log a warning when the other
entries are not the ones built, as ``vnet`` does.
"""

from __future__ import annotations

import logging

import torch
from monai.networks.nets import (
    UNETR,
    AttentionUnet,
    BasicUNetPlusPlus,
    HighResNet,
    SwinUNETR,
)
from torch import nn

from medseg.errors import MedsegError
from medseg.networks.deeplab import DeepLab3D
from medseg.planning.planner import swinunetr_channels, unetr_channels
from medseg.planning.plans import NetworkSpec

logger = logging.getLogger(__name__)

# Head widths of MONAI's defaults: SwinUNETR feature_size 48 with heads (3, 6, 12, 24) is 16
# channels per head at every stage; UNETR hidden 768 with 12 heads is 64 per head.
SWIN_HEAD_WIDTH = 16
VIT_HEAD_WIDTH = 64
SWIN_DEPTHS = (2, 2, 2, 2)


def heads_for(width: int, head_width: int) -> int:
    """Attention heads for ``width`` channels: the most heads of at least ``head_width``
    channels each that divide ``width`` (at least 1)."""
    for heads in range(max(1, width // head_width), 0, -1):
        if width % heads == 0:
            return heads
    return 1


def _warn_if_not_built(name: str, spec: NetworkSpec, built: tuple[int, ...]) -> None:
    if tuple(spec.channels) != built:
        logger.warning(
            "%s: plans.network.channels %s are not what is built; its widths follow from "
            "the base width: %s",
            name,
            list(spec.channels),
            list(built),
        )


def swinunetr(spec: NetworkSpec, in_ch: int, out_ch: int) -> nn.Module:
    """MONAI ``SwinUNETR`` (v1, window 7, depths 2-2-2-2); ``channels[0]`` is its
    ``feature_size`` (a multiple of 12); inputs must be multiples of 32 per axis."""
    feature = spec.channels[0]
    built = swinunetr_channels(feature)  # raises MedsegError unless a multiple of 12
    _warn_if_not_built("swinunetr", spec, built)
    heads = tuple(heads_for(feature * 2**i, SWIN_HEAD_WIDTH) for i in range(len(SWIN_DEPTHS)))
    return SwinUNETR(
        in_channels=in_ch,
        out_channels=out_ch,
        feature_size=feature,
        depths=SWIN_DEPTHS,
        num_heads=heads,
        drop_rate=spec.dropout,
        spatial_dims=3,
    )


def unetr(spec: NetworkSpec, in_ch: int, out_ch: int) -> nn.Module:
    """MONAI ``UNETR`` (12 ViT layers, 16^3 patches); ``channels[0]`` is its
    ``feature_size``, ``channels[-1]`` its ``hidden_size`` (MLP 4x); built for one input
    size, ``spec.input_size`` (the planned patch, a multiple of 16 per axis)."""
    if len(spec.input_size) != 3 or any(s % 16 for s in spec.input_size):
        raise MedsegError(
            "unetr: expected plans.network.input_size to be the patch size, a multiple of 16 "
            f"per axis (UNETR is built for one input size), found {list(spec.input_size)}"
        )
    feature, hidden = spec.channels[0], spec.channels[-1]
    built = unetr_channels(feature, hidden)
    _warn_if_not_built("unetr", spec, built)
    return UNETR(
        in_channels=in_ch,
        out_channels=out_ch,
        img_size=tuple(spec.input_size),
        feature_size=feature,
        hidden_size=hidden,
        mlp_dim=4 * hidden,
        num_heads=heads_for(hidden, VIT_HEAD_WIDTH),
        dropout_rate=spec.dropout,
        spatial_dims=3,
    )


def attentionunet(spec: NetworkSpec, in_ch: int, out_ch: int) -> nn.Module:
    """MONAI ``AttentionUnet``: ``channels[i]`` at level ``i`` (level 0 = input resolution),
    ``strides`` per axis between levels, kernel 3."""
    return AttentionUnet(
        spatial_dims=3,
        in_channels=in_ch,
        out_channels=out_ch,
        channels=spec.channels,
        strides=spec.strides,  # type: ignore[arg-type]  # per-axis strides work; stub says int
        dropout=spec.dropout,
    )


class UNetPlusPlus(nn.Module):
    """MONAI ``BasicUNetPlusPlus`` with medseg's output contract.

    MONAI returns a list of ``(B, C, X, Y, Z)`` maps (one, or four with deep supervision:
    the nested decoders of depth 1..4). This returns the deepest decoder's map as a tensor
    and, with deep supervision in training mode, all four stacked as
    ``(B, 4, C, X, Y, Z)``, deepest first (``DynUNet``'s convention, which the training
    loss unbinds).
    """

    def __init__(self, net: BasicUNetPlusPlus, deep_supervision: bool) -> None:
        super().__init__()
        self.net = net
        self.deep_supervision = deep_supervision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` ``(B, in_channels, X, Y, Z)``, see the class docstring."""
        outs = self.net(x)
        if self.deep_supervision and self.training:
            return torch.stack([outs[3], outs[2], outs[1], outs[0]], dim=1)
        return outs[-1]


def basicunetplusplus(spec: NetworkSpec, in_ch: int, out_ch: int) -> nn.Module:
    """MONAI ``BasicUNetPlusPlus`` (U-Net++): ``channels[:5]`` per level (four 2x2x2
    poolings), ``channels[0]`` for the up-sampled top; ``deep_supervision``."""
    if len(spec.channels) < 5:
        raise MedsegError(
            f"basicunetplusplus: expected at least 5 channel levels, found {list(spec.channels)}"
        )
    net = BasicUNetPlusPlus(
        spatial_dims=3,
        in_channels=in_ch,
        out_channels=out_ch,
        features=(*spec.channels[:5], spec.channels[0]),
        deep_supervision=spec.deep_supervision,
        dropout=spec.dropout,
    )
    return UNetPlusPlus(net, spec.deep_supervision)


def highresnet(spec: NetworkSpec, in_ch: int, out_ch: int) -> nn.Module:
    """MONAI ``HighResNet`` (no down-sampling; residual blocks dilated 1, 2, 4): widths
    ``channels = (conv_0, res_1, res_2, res_3, conv_1)``, instance norm."""
    if len(spec.channels) != 5:
        raise MedsegError(
            "highresnet: expected 5 channels (conv_0, res_1, res_2, res_3, conv_1), "
            f"found {list(spec.channels)}"
        )
    c0, r1, r2, r3, c1 = spec.channels
    layers = (
        {"name": "conv_0", "n_features": c0, "kernel_size": 3},
        {"name": "res_1", "n_features": r1, "kernels": (3, 3), "repeat": 3},
        {"name": "res_2", "n_features": r2, "kernels": (3, 3), "repeat": 3},
        {"name": "res_3", "n_features": r3, "kernels": (3, 3), "repeat": 3},
        {"name": "conv_1", "n_features": c1, "kernel_size": 1},
        {"name": "conv_2", "kernel_size": 1},
    )
    # Instance norm, as every other registry network: batch statistics of 2 patches (the
    # CPU batch) are noisy, and MONAI's default batch norm would use them.
    net = HighResNet(
        spatial_dims=3,
        in_channels=in_ch,
        out_channels=out_ch,
        norm_type=("instance", {"affine": True}),
        dropout_prob=spec.dropout,
        layer_params=layers,
    )
    # MONAI's last block normalises and ReLUs the class maps (logits >= 0); NiftyNet's
    # HighRes3DNet, which it follows, ends in a plain 1x1x1 convolution: use that.
    net.blocks[-1] = nn.Conv3d(c1, out_ch, kernel_size=1)
    return net


def deeplab(spec: NetworkSpec, in_ch: int, out_ch: int) -> nn.Module:
    """:class:`~medseg.networks.deeplab.DeepLab3D`: ``channels`` per encoder level,
    ``strides`` per axis, ``SimpleASPP`` on the last level."""
    return DeepLab3D(in_ch, out_ch, spec.channels, spec.strides, dropout=spec.dropout)
