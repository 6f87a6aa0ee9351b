"""A 2D network run slice by slice on 3D input: the network of the ``2d`` configuration.

:class:`SliceWise2D` keeps the registry's call contract ``(B, C, X, Y, Z) -> logits
(B, K, X, Y, Z)``, so training, validation, sliding-window inference (windows of 1 voxel
along the slice axis), test-time mirroring, fold ensembles, bundles and ONNX export all run
it as they run a 3D network. It scripts with ``torch.jit.script`` (bundle ``model.ts``
takes any input size).
"""

from __future__ import annotations

import torch
from torch import nn


def in_plane(values: tuple[tuple[int, int, int], ...], axis: int | None) -> list[tuple[int, ...]]:
    """Per-level ``(sx, sy, sz)`` entries without the ``axis`` component (unchanged: ``None``).

    Examples
    --------
    >>> in_plane(((2, 2, 1), (2, 2, 1)), 2)
    [(2, 2), (2, 2)]
    """
    if axis is None:
        return [tuple(v) for v in values]
    return [tuple(int(x) for a, x in enumerate(v) if a != axis) for v in values]


class SliceWise2D(nn.Module):
    """Run a 2D network on every slice of a 3D input along one RAS axis.

    Parameters
    ----------
    net2d
        A ``spatial_dims=2`` network mapping ``(N, C, H, W)`` to ``(N, K, H, W)``, or, in
        training mode with deep supervision (MONAI ``DynUNet``), ``(N, 1 + n, K, H, W)``.
    slice_axis
        The RAS axis (0, 1 or 2 of ``(X, Y, Z)``) slices are taken along; the other two,
        in order, are the 2D network's ``(H, W)``.

    Notes
    -----
    ``forward`` moves the slice axis into the batch, ``(B, C, X, Y, Z) -> (B * S, C, H, W)``,
    and moves it back after the network: the slices are independent samples (instance
    normalisation is per slice), exactly as nnU-Net's 2d configuration sees them.
    """

    def __init__(self, net2d: nn.Module, slice_axis: int) -> None:
        super().__init__()
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis: expected 0, 1 or 2, found {slice_axis}")
        self.net = net2d
        self.slice_axis = slice_axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, X, Y, Z)`` (deep supervision: ``(B, 1 + n, K, X, Y, Z)``) of ``x``,
        shape ``(B, C, X, Y, Z)``."""
        dim = self.slice_axis + 2
        b, s = x.shape[0], x.shape[dim]
        planes = x.movedim(dim, 1).flatten(0, 1)  # (B * S, C, H, W)
        out = self.net(planes)
        # list concatenation, not [b, s, *...]: TorchScript has no starred list literals
        out = out.reshape([b, s] + list(out.shape[1:]))  # noqa: RUF005  # (B, S, ..., H, W)
        return out.movedim(1, out.dim() - 3 + self.slice_axis)
