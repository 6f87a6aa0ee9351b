"""Preprocessing steps with bounded memory, for scans of hundreds of millions of voxels.

MONAI computes them on the whole volume at once, which is what dominates the peak memory of
``medseg predict`` on a 512 x 512 x 600 scan (measured: 6.8 GB for the per-image z-score and
4.0 GB for the resampling, of a float32 image of 0.63 GB; ``benchmarks/predict_memory.py``):

* :class:`ZScoreIntensity` is MONAI ``NormalizeIntensity(nonzero=..., channel_wise=True)``
  done in place, with its mean and (population) standard deviation accumulated slab by slab
  in float64: MONAI's version copies the selected voxels several times (about 34 bytes per
  voxel at its peak), this one needs a boolean slab. The pipeline uses it for training and
  inference alike, so both still see the same data.
* :class:`ClipScaleIntensity` is MONAI ``ScaleIntensityRange(..., clip=True)`` (the CT
  clip-and-z-score) in place: the same operations without three temporaries of the image.
* :func:`resample_in_slabs` runs the pipeline's final ``Spacingd`` through MONAI's own
  ``SpatialResample`` one output slab at a time (MONAI builds the sampling grid of the whole
  output, 12 bytes per output voxel, at once). The target grid is the one ``Spacingd``
  computes (asked lazily), so the values equal ``Spacingd``'s up to float32 rounding of the
  grid coordinates (tested). Inference only: the output has no MONAI inverse information,
  which the predictor does not use (it maps back by world coordinates).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Spacingd, Transform

from medseg.postprocessing.slabs import slabs

_SLAB_VOXELS = 1 << 21  # voxels per slab of the z-score passes


class ZScoreIntensity(Transform):
    """Z-score each channel of a ``(C, X, Y, Z)`` float tensor in place (MONAI semantics).

    As ``monai.transforms.NormalizeIntensity(nonzero=nonzero, channel_wise=True)``: subtract
    the mean and divide by the population standard deviation (1 where it is 0) of the channel's
    voxels, or of its non-zero voxels only with ``nonzero`` (zeros stay 0; a channel without
    any is left alone). Statistics are accumulated in float64 over slabs, so the only
    temporaries are one slab's float64 copy and boolean mask.

    The tensor is modified and returned (callers pass a copy of anything they must keep).
    """

    def __init__(self, nonzero: bool = False) -> None:
        self.nonzero = nonzero

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        data = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
        if not data.is_floating_point():
            raise TypeError(f"ZScoreIntensity expects a float tensor, found {data.dtype}")
        for c in range(data.shape[0]):
            self._channel(data[c])
        return img

    def _stats(self, chan: torch.Tensor) -> tuple[float, float] | None:
        plane = int(np.prod(chan.shape[1:]))
        count, total = 0, 0.0
        for sl in slabs(chan.shape[0], plane, _SLAB_VOXELS):
            x = chan[sl].double()
            count += int(torch.count_nonzero(x)) if self.nonzero else x.numel()
            total += float(x.sum())  # zeros add nothing, so the non-zero sum is the sum
        if count == 0:
            return None
        mean = total / count
        squares = 0.0
        for sl in slabs(chan.shape[0], plane, _SLAB_VOXELS):
            x = chan[sl].double()
            d = x - mean
            if self.nonzero:
                d[x == 0] = 0.0
            squares += float((d * d).sum())
        std = float(np.sqrt(squares / count))
        return mean, (std if std != 0.0 else 1.0)

    def _channel(self, chan: torch.Tensor) -> None:
        stats = self._stats(chan)
        if stats is None:
            return
        mean, std = stats
        plane = int(np.prod(chan.shape[1:]))
        for sl in slabs(chan.shape[0], plane, _SLAB_VOXELS):
            x = chan[sl]
            zero = x == 0 if self.nonzero else None
            x.sub_(mean).div_(std)
            if zero is not None:
                x[zero] = 0.0


class ClipScaleIntensity(Transform):
    """MONAI ``ScaleIntensityRange(a_min, a_max, b_min, b_max, clip=True)``, in place.

    The same float32 operations in the same order (so the same values, tested), applied to
    the tensor itself instead of through three temporaries of its size.
    """

    def __init__(self, a_min: float, a_max: float, b_min: float, b_max: float) -> None:
        self.a_min, self.a_max, self.b_min, self.b_max = a_min, a_max, b_min, b_max

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        data = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
        if not data.is_floating_point():
            raise TypeError(f"ClipScaleIntensity expects a float tensor, found {data.dtype}")
        if self.a_max - self.a_min == 0.0:  # as MONAI: shift only, no clipping
            data.sub_(self.a_min).add_(self.b_min)
            return img
        data.sub_(self.a_min).div_(self.a_max - self.a_min)
        data.mul_(self.b_max - self.b_min).add_(self.b_min)
        data.clamp_(self.b_min, self.b_max)
        return img


def resample_in_slabs(
    image: MetaTensor, spacing: Spacingd, *, slab_mvox: float = 4.0
) -> tuple[torch.Tensor, np.ndarray]:
    """``spacing`` (a ``Spacingd`` with the image as its first key) applied by output slabs.

    Parameters
    ----------
    image
        ``(C, X, Y, Z)`` MetaTensor with its voxel-to-RAS affine (mm).
    spacing
        The pipeline's ``Spacingd``; its first key's mode, padding, alignment and dtype are used.
    slab_mvox
        Millions of output voxels resampled per call (the sampling grid takes 12 bytes each).

    Returns
    -------
    image, affine
        ``(C, X', Y', Z')`` float32 tensor on the target grid and its 4x4 voxel-to-RAS affine,
        the geometry ``spacing`` itself produces.
    """
    sp = spacing.spacing_transform
    opts: dict[str, Any] = {
        "mode": spacing.mode[0],
        "padding_mode": spacing.padding_mode[0],
        "align_corners": spacing.align_corners[0],
        "dtype": spacing.dtype[0],
    }
    planned: Any = sp(image, scale_extent=spacing.scale_extent[0], lazy=True, **opts)
    dst = np.asarray(planned.peek_pending_affine(), dtype=np.float64)
    shape = [int(s) for s in planned.peek_pending_shape()]
    del planned
    src = np.asarray(image.peek_pending_affine(), dtype=np.float64)
    if list(image.shape[1:]) == shape and np.allclose(src, dst, atol=1e-3):
        return image.as_tensor().to(torch.float32), src  # Spacingd leaves it as it is, too
    out = torch.empty((image.shape[0], *shape), dtype=torch.float32)
    for sl in slabs(shape[0], shape[1] * shape[2], int(slab_mvox * 1e6)):
        shift = np.eye(4)
        shift[0, 3] = sl.start
        piece = sp.sp_resample(
            image,
            dst_affine=torch.as_tensor(dst @ shift),
            spatial_size=[sl.stop - sl.start, shape[1], shape[2]],
            lazy=False,
            **opts,
        )
        out[:, sl] = piece.as_tensor() if isinstance(piece, MetaTensor) else piece
        del piece
    return out, dst


def apply_preprocessing(
    transforms: Compose, image: MetaTensor, *, key: Hashable = "image", slab_mvox: float = 4.0
) -> tuple[torch.Tensor, np.ndarray]:
    """Run ``transforms`` on ``{key: image}``, a final ``Spacingd`` by :func:`resample_in_slabs`.

    Returns the preprocessed ``(C, X, Y, Z)`` tensor and its voxel-to-RAS affine (mm).
    """
    steps: Sequence[Any] = transforms.transforms
    last = steps[-1] if steps else None
    head = steps[:-1] if isinstance(last, Spacingd) else steps
    data: dict[Hashable, Any] = {key: image}
    for step in head:
        data = step(data)
    out = data.pop(key)
    if isinstance(last, Spacingd):
        return resample_in_slabs(out, last, slab_mvox=slab_mvox)
    return out.as_tensor(), np.asarray(out.affine, dtype=np.float64)
