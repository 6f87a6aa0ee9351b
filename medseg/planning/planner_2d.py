"""Plans of the 2d configuration (nnU-Net's ``2d``): a 2D network run slice by slice.

Everything but the patch, the batch and the network is planned as for 3D
(:func:`medseg.planning.planner.plan`: target spacing, normalisation, mirroring), so that
preprocessing, caching, patch sampling, sliding windows and the resampling back to the
source grid are the 3D pipeline unchanged. The 2D choices:

* slice axis: the RAS axis with the coarsest target spacing; ties go to the axis with the
  fewest median voxels (an isotropic cohort is sliced along its shortest axis);
* patch: the median in-plane shape (resampled), shrunk along its physically longest
  in-plane axis until it fits the 2D patch budget, rounded up to a multiple of the
  network's in-plane stride, x 1 voxel along the slice axis;
* batch: the 2D step budget over the patch pixels, clipped to ``MIN_BATCH_2D`` ..
  ``MAX_BATCH_2D`` (nnU-Net 2d trains batches of about 12 to 48 slices);
* pooling: :func:`medseg.planning.planner.pooling` on the in-plane axes (the slice axis,
  1 voxel, is never pooled).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Literal

import numpy as np

from medseg.errors import MedsegError
from medseg.planning import planner
from medseg.planning.config import PlansConfig
from medseg.planning.fingerprint import Fingerprint
from medseg.planning.plans import Plans

logger = logging.getLogger(__name__)

# A 2D 3x3 convolution costs 9 multiply-adds per pixel and channel pair, a 3D 3x3x3 one 27:
# the 3D step budgets (planner.CPU_STEP_VOXELS, CUDA_STEP_VOXELS) times 3 make a 2D step
# about as long as a 3D one. Not measured here: the 2-core test machine was shared by other
# jobs throughout, so no step time could be timed reliably.
CPU_STEP_PIXELS_2D = 3 * planner.CPU_STEP_VOXELS
CUDA_STEP_PIXELS_2D = 3 * planner.CUDA_STEP_VOXELS
# At least MIN_BATCH_2D slices per step (one slice carries far less context than a 3D
# patch; several slices from different cases keep the gradient from following one case),
# so the largest patch is the step budget over that minimum: 330^2 on CPU, 512^2 (a whole
# CT slice, nnU-Net's usual 2d patch) and more on CUDA.
MIN_BATCH_2D = 8
MAX_BATCH_2D = 48
Model2D = Literal["unet", "dynunet"]
MODELS_2D: tuple[Model2D, ...] = ("unet", "dynunet")


def slice_axis(spacing: np.ndarray, median_shape: np.ndarray) -> int:
    """The RAS axis to slice along: coarsest ``spacing`` (mm), ties -> fewest median voxels."""
    sp = np.round(np.asarray(spacing, dtype=float), 5)
    coarsest = [a for a in range(3) if sp[a] == sp.max()]
    return min(coarsest, key=lambda a: (float(median_shape[a]), a))


def _fit_plane(median: np.ndarray, spacing: np.ndarray, axis: int, max_pixels: float) -> np.ndarray:
    """Median shape with 1 along ``axis``, in-plane at least 8, shrunk 10 % at a time along
    the physically longest in-plane axis until it fits ``max_pixels`` (as
    ``planner._fit_patch`` does in 3D, which cannot keep one axis at 1 voxel)."""
    patch = np.maximum(np.asarray(median, dtype=float).copy(), 8.0)
    patch[axis] = 1.0
    extent = np.where(np.arange(3) == axis, -np.inf, 1.0)
    while np.prod(patch) > max_pixels and np.any(patch[np.arange(3) != axis] > 8.0):
        longest = int(np.argmax(patch * spacing * extent))
        patch[longest] = max(8.0, patch[longest] * 0.9)
    return patch


def _model(cfg: PlansConfig, device: str) -> Model2D:
    if cfg.model == "auto":
        return "dynunet" if device == "cuda" else "unet"
    if cfg.model not in MODELS_2D:
        raise MedsegError(
            f"plans.model: expected one of {list(MODELS_2D)} (or auto) for configuration "
            f"'2d', found '{cfg.model}'"
        )
    return cfg.model


def _patch_and_pooling(
    cfg: PlansConfig,
    model: str,
    median: np.ndarray,
    spacing: np.ndarray,
    axis: int,
    step: float,
) -> tuple[np.ndarray, list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """Patch (voxels, RAS; 1 along ``axis`` unless ``cfg.patch_size`` says otherwise),
    strides (1 along ``axis``) and kernels; in-plane a multiple of the total stride."""
    max_patch = cfg.patch_voxels or step / MIN_BATCH_2D
    if cfg.patch_size is not None:
        patch = np.asarray(cfg.patch_size, dtype=float)
    else:
        patch = _fit_plane(median, spacing, axis, max_patch)
    flat, plane = patch.copy(), spacing.astype(float).copy()
    flat[axis] = 1.0  # never pooled: pooling() needs >= 8 voxels along an axis
    # the slice axis's spacing must never count as the finest current spacing, which would
    # stop in-plane pooling once the in-plane spacing passes twice the slice thickness
    plane[axis] = np.inf
    strides, kernels = planner.pooling(flat, plane, planner._MAX_POOLS[model])
    divisor = np.prod(np.asarray(strides or [(1, 1, 1)]), axis=0)
    rounded = np.maximum(np.ceil(patch / divisor) * divisor, divisor)
    rounded[axis] = max(1.0, patch[axis])
    if cfg.patch_size is not None and np.any(rounded != patch):
        logger.warning("patch_size rounded up to %s (in-plane multiple of %s)", rounded, divisor)
    return rounded, strides, kernels


def plan_2d(fp: Fingerprint, device: str = "cpu", cfg: PlansConfig | None = None) -> Plans:
    """Derive 2d-configuration :class:`Plans` from ``fp`` for ``device`` (``cpu``/``cuda``).

    The 3D plan's spacing, normalisation and channels, with a patch of 1 voxel along
    :attr:`Plans.slice_axis`, a batch of slices and a 2D ``unet`` (CPU default) or
    ``dynunet`` (CUDA default) run slice-wise. Mirroring (training and TTA) keeps the
    in-plane axes only: flipping the slice order changes nothing for a 2D network.

    Raises
    ------
    MedsegError
        For a model other than ``unet``/``dynunet``/``auto``.
    """
    cfg = cfg or PlansConfig()
    model = _model(cfg, device)
    # the 3D plan of the same cohort: spacing, normalisation, channels, mirror axes
    base = planner.plan(fp, device, replace(cfg, configuration="3d", model=model, patch_size=None))
    spacing = np.asarray(base.target_spacing, dtype=float)
    median = np.asarray(base.median_shape, dtype=float)
    axis = slice_axis(spacing, median)
    step = cfg.step_voxels or (CUDA_STEP_PIXELS_2D if device == "cuda" else CPU_STEP_PIXELS_2D)
    patch, strides, kernels = _patch_and_pooling(cfg, model, median, spacing, axis, step)
    pixels = float(np.prod(patch))
    batch = cfg.batch_size or int(np.clip(step // pixels, MIN_BATCH_2D, MAX_BATCH_2D))
    full_res = cfg.unet_full_res
    if full_res is None:  # as in 3D (see planner._WIDTHS): when the step fits the budget
        full_res = batch * pixels <= step
    patch_int = (int(patch[0]), int(patch[1]), int(patch[2]))
    network = planner._network(cfg, model, strides, kernels, full_res, patch_int)
    plans = replace(
        base,
        patch_size=patch_int,
        batch_size=batch,
        network=replace(network, slice_axis=axis),
        mirror_axes=tuple(a for a in base.mirror_axes if a != axis),
        configuration="2d",
        slice_axis=axis,
    )
    plans.network.validate()
    plans.validate()
    logger.info(
        "2d configuration: slices along RAS axis %d, patch %s, batch %d", axis, patch_int, batch
    )
    return plans
