"""A DeepLabV3+-style 3D network: a residual encoder, MONAI's ``SimpleASPP`` at the bottleneck.

MONAI has no DeepLab network; this one is composed of MONAI blocks (``ResidualUnit``,
``SimpleASPP``, ``Convolution``) in the layout of DeepLabV3+ (Chen et al., 2018), adapted
to 3D patches:

* encoder: one residual unit per level, level 0 at the input resolution, each later level
  down-sampled by its stride (per RAS axis, as planned; the product of the strides is the
  output stride, 8 for the planned three);
* bottleneck: the atrous spatial pyramid (parallel dilated convolutions, dilations
  1, 2, 4, 6, each ``channels[-1] // 4`` maps, fused by a 1x1x1 convolution);
* decoder: the pyramid's output projected (1x1x1) to ``decoder`` maps, up-sampled
  (trilinear) to the level-0 resolution, concatenated with the level-0 features
  (DeepLabV3+'s low-level skip; here at full resolution because 3D organ boundaries are a
  few voxels wide), two 3x3x3 convolutions and a 1x1x1 classifier.

Unlike a U-Net there is one skip connection: the levels between the input resolution and
the bottleneck reach the output only through the pyramid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, ResidualUnit, SimpleASPP
from torch import nn
from torch.nn import functional as F  # noqa: N812

from medseg.errors import MedsegError

ASPP_DILATIONS = (1, 2, 4, 6)
_NORM = "INSTANCE"


class DeepLab3D(nn.Module):
    """DeepLabV3+-style segmentation network for ``(B, C, X, Y, Z)`` volumes (RAS axes).

    Parameters
    ----------
    in_channels, out_channels
        Input image channels and output classes.
    channels
        Feature maps per encoder level, level 0 at the input resolution; the last level
        feeds the atrous pyramid and must be divisible by 4 (one quarter per branch).
    strides
        Down-sampling ``(sx, sy, sz)`` per level transition (``len(channels) - 1`` of them).
    decoder
        Feature maps of the decoder at full resolution (0: ``2 * channels[0]``).
    dropout
        Dropout probability after every convolution of the encoder and decoder.

    Input sizes that are not multiples of the total stride work (the up-sampling goes to
    the skip's exact size), but the planned patch is one.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        strides: Sequence[Sequence[int]],
        *,
        decoder: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(channels) < 2 or len(strides) != len(channels) - 1:
            raise MedsegError(
                f"deeplab: expected at least 2 channel levels and one stride per level "
                f"transition, found channels {list(channels)} and {len(strides)} strides"
            )
        if channels[-1] % len(ASPP_DILATIONS):
            raise MedsegError(
                f"deeplab: expected the last channels entry divisible by "
                f"{len(ASPP_DILATIONS)} (one share per atrous branch), found {channels[-1]}"
            )
        dec = decoder or 2 * channels[0]
        widths = [in_channels, *channels]
        stage_strides = [(1, 1, 1), *[tuple(s) for s in strides]]
        self.encoder = nn.ModuleList(
            ResidualUnit(
                spatial_dims=3,
                in_channels=widths[i],
                out_channels=widths[i + 1],
                strides=stage_strides[i],
                subunits=2,
                norm=_NORM,
                dropout=dropout,
            )
            for i in range(len(channels))
        )
        self.aspp = SimpleASPP(
            spatial_dims=3,
            in_channels=channels[-1],
            conv_out_channels=channels[-1] // len(ASPP_DILATIONS),
            kernel_sizes=(1, 3, 3, 3),
            dilations=ASPP_DILATIONS,
            norm_type=_NORM,
        )
        self.project = Convolution(3, channels[-1], dec, kernel_size=1, norm=_NORM)
        self.fuse = nn.Sequential(
            Convolution(3, dec + channels[0], dec, kernel_size=3, norm=_NORM, dropout=dropout),
            Convolution(3, dec, dec, kernel_size=3, norm=_NORM, dropout=dropout),
        )
        self.head = nn.Conv3d(dec, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels, X, Y, Z)`` of ``x`` ``(B, in_channels, X, Y, Z)``."""
        skip = x
        for i, stage in enumerate(self.encoder):
            x = stage(x)
            if i == 0:
                skip = x
        y = self.project(self.aspp(x))
        y = F.interpolate(y, size=skip.shape[2:], mode="trilinear", align_corners=False)
        return self.head(self.fuse(torch.cat([y, skip], dim=1)))
