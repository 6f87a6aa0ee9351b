"""Multi-channel images: several scans of one case stacked on the grid of channel 0.

A case may have several input channels (CT + PET of one visit, several MR sequences), each
its own file or DICOM series folder, each on its own grid. :func:`load_channels` reads them
and resamples channel 1.. onto channel 0's grid *through the two affines* (world RAS mm),
trilinear, once. An MSD-style 4D NIfTI (``X, Y, Z, C``) is read as its channels, which share
one grid.

Coverage
--------
Before resampling, the share of channel 0's voxel centres that fall inside the other
channel's field of view (its voxel boxes, ``-0.5 .. n - 0.5`` along each axis, widened by half
a voxel) is computed.
Below ``min_overlap`` (default :data:`DEFAULT_MIN_OVERLAP`, 0.9) the load is an error naming
both files: a channel that misses a tenth of the reference field of view is far more likely a
wrong pairing (another visit, another body part) than a usable input. On the 36 soft-tissue
sarcoma CT/PET pairs of ``../shared/data/sts_ct_pet`` every PET covers at least 94 % of its
CT (the least: STS_019, 94.3 %, whose PET stops two slices short of its CT; the other 35 cover
100 %). Reference voxels within one source voxel outside the channel's box take the edge value;
further out, the channel's minimum (0 SUV for PET).

Two DICOM channels with different FrameOfReferenceUIDs are still resampled by their affines,
with a WARNING: their patient coordinates are not known to agree unless the scans are registered.

Why scipy, not MONAI's ``ResampleToMatch``: the same trilinear map through ``inv(A_src) @
A_ref``, but on a numpy array without building MetaTensors, and with the coverage check in
the same coordinates.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from medseg.errors import MedsegError
from medseg.io.nifti import is_nifti
from medseg.io.reader import check_volume, load_volume
from medseg.io.volume import Volume

logger = logging.getLogger(__name__)

DEFAULT_MIN_OVERLAP = 0.9


def field_of_view_overlap(
    ref_affine: np.ndarray,
    ref_shape: Sequence[int],
    src_affine: np.ndarray,
    src_shape: Sequence[int],
    *,
    stride: int = 4,
) -> float:
    """Share (0..1) of the reference grid's voxel centres inside the source field of view.

    The field of view is the source's voxel boxes (``-0.5 .. n - 0.5``) widened by half a
    source voxel on each side, where :func:`resample_to_grid` takes edge values.

    Parameters
    ----------
    ref_affine, ref_shape
        Reference grid: 4x4 voxel-to-RAS (mm) and ``(I, J, K)``.
    src_affine, src_shape
        The other channel's grid.
    stride
        At most every ``stride``-th voxel along each axis is tested; an axis of fewer than
        ``64 * stride`` voxels is sampled more densely (every voxel below 128), so that a few
        uncovered end slices of a thin stack are not skipped by the sampling.
    """
    steps = [min(int(stride), max(1, int(n) // 64)) for n in ref_shape]
    axes = [
        np.arange(0, int(n), step, dtype=np.float64)
        for n, step in zip(ref_shape, steps, strict=True)
    ]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    to_src = np.linalg.inv(src_affine) @ ref_affine
    pts = grid @ to_src[:3, :3].T + to_src[:3, 3]
    upper = np.asarray(src_shape, dtype=np.float64)
    inside = np.all((pts >= -1.0 - 1e-6) & (pts <= upper + 1e-6), axis=1)
    return float(inside.mean())


def resample_to_grid(
    volume: Volume,
    affine: np.ndarray,
    shape: Sequence[int],
    *,
    order: int = 1,
) -> np.ndarray:
    """Sample ``volume`` at the voxel centres of another grid, through world coordinates.

    Parameters
    ----------
    volume
        A 3D volume ``(I', J', K')`` with its voxel-to-RAS affine.
    affine, shape
        The target grid (4x4 voxel-to-RAS in mm, ``(I, J, K)``).
    order
        Spline order: 1 (trilinear) for images, 0 (nearest) for label maps.

    Returns
    -------
    numpy.ndarray
        ``(I, J, K)`` float32 (``order=1``) or the source dtype (``order=0``). Target voxels up
        to one source voxel outside the source box take the edge value; further out, the
        source minimum.
    """
    src = np.asarray(volume.array)
    to_src = np.linalg.inv(volume.affine) @ np.asarray(affine, dtype=np.float64)
    data = src.astype(np.float32) if order > 0 else src
    out = ndimage.affine_transform(
        data,
        to_src[:3, :3],
        offset=to_src[:3, 3],
        output_shape=tuple(int(n) for n in shape),
        order=order,
        mode="nearest",
    )
    far = _outside_mask(to_src, shape, src.shape, margin=1.5)
    if far is not None:
        out[far] = src.min()
    return out


def _outside_mask(
    to_src: np.ndarray, shape: Sequence[int], src_shape: Sequence[int], margin: float
) -> np.ndarray | None:
    """Target voxels whose source position lies more than ``margin - 0.5`` voxels out."""
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float)
    corners *= np.asarray(shape, dtype=np.float64) - 1
    pts = corners @ to_src[:3, :3].T + to_src[:3, 3]
    hi = np.asarray(src_shape, dtype=np.float64) - 1 + margin
    if np.all(pts >= -margin) and np.all(pts <= hi):
        return None
    mask = np.zeros(tuple(int(n) for n in shape), dtype=bool)
    for k in range(mask.shape[2]):  # slab-wise: no (I, J, K, 3) coordinate array
        ij = np.stack(
            np.meshgrid(np.arange(mask.shape[0]), np.arange(mask.shape[1]), [k], indexing="ij"),
            axis=-1,
        ).reshape(-1, 3)
        p = ij @ to_src[:3, :3].T + to_src[:3, 3]
        bad = np.any((p < -margin) | (p > hi), axis=1)
        mask[:, :, k] = bad.reshape(mask.shape[0], mask.shape[1])
    return mask


def load_channels(
    paths: Sequence[str | os.PathLike[str]],
    *,
    series: Sequence[str | None] | None = None,
    n_channels: int | None = None,
    min_overlap: float = DEFAULT_MIN_OVERLAP,
) -> Volume:
    """Read the input channels of one case onto channel 0's grid.

    Parameters
    ----------
    paths
        One file or DICOM series folder per channel; or a single 4D NIfTI holding
        ``n_channels`` channels along its last axis (MSD layout).
    series
        Per channel, the DICOM series to read from a folder holding several (UID or the
        1-based listing number); ``None`` entries read the only series.
    n_channels
        Channels the caller expects (the model's or the manifest's); ``None``: one per path.
    min_overlap
        Smallest accepted share of channel 0's voxels inside each other channel's field of
        view.

    Returns
    -------
    Volume
        One path and one channel: the scan itself, ``(I, J, K)``. Otherwise ``(C, I, J, K)``
        float32 on channel 0's grid (its affine, voxel-to-RAS in mm); ``meta["channels"]``
        lists each channel's path, modality and field-of-view overlap.

    Raises
    ------
    MedsegError
        A channel is unreadable (the reader's error, naming the file), the channel count
        differs from ``n_channels``, a 4D file's last axis differs from ``n_channels``, or a
        channel covers less than ``min_overlap`` of channel 0 (naming both files).
    """
    files = [Path(p) for p in paths]
    if not files:
        raise MedsegError("expected at least one image channel, found none")
    picks = list(series) if series is not None else [None] * len(files)
    if len(files) == 1 and (n_channels or 1) > 1 and is_nifti(files[0]):
        return _read_4d_channels(files[0], int(n_channels or 1))
    if n_channels is not None and len(files) != n_channels:
        raise MedsegError(
            f"expected {n_channels} image channel(s), found {len(files)}: "
            + ", ".join(str(p) for p in files),
            files[0],
        )
    first = load_volume(files[0], series=picks[0] if picks else None)
    if len(files) == 1:
        return first
    arrays = [np.asarray(first.array, dtype=np.float32)]
    infos = [_channel_info(first, 1.0)]
    for n, path in enumerate(files[1:], start=1):
        vol = load_volume(path, series=picks[n] if n < len(picks) else None)
        overlap = field_of_view_overlap(
            first.affine, first.spatial_shape, vol.affine, vol.spatial_shape
        )
        if overlap < min_overlap:
            raise MedsegError(
                f"channel {n} ({path}) covers {overlap:.1%} of channel 0's field of view "
                f"({files[0]}); expected at least {min_overlap:.0%} (same patient, same "
                "visit, same body region)",
                path,
            )
        _warn_other_frame(first, vol, n)
        same = vol.spatial_shape == first.spatial_shape and np.allclose(
            vol.affine, first.affine, atol=1e-4
        )
        arrays.append(
            np.asarray(vol.array, np.float32)
            if same
            else resample_to_grid(vol, first.affine, first.spatial_shape)
        )
        infos.append(_channel_info(vol, overlap))
        logger.debug("%s: channel %d on channel 0's grid (overlap %.3f)", path, n, overlap)
    meta = {**first.meta, "channels": infos}
    return Volume(np.stack(arrays), first.affine, path=first.path, meta=meta)


def _warn_other_frame(first: Volume, volume: Volume, n: int) -> None:
    """Log when two DICOM channels name different frames of reference (their patient
    coordinates are then not known to agree; the channel is still placed by its affine)."""
    ref = str(first.meta.get("frame_of_reference_uid") or "")
    other = str(volume.meta.get("frame_of_reference_uid") or "")
    if ref and other and ref != other:
        logger.warning(
            "%s: channel %d has FrameOfReferenceUID %s, channel 0 (%s) has %s: expected one "
            "frame of reference (e.g. one PET/CT visit); resampled by patient coordinates as "
            "they are, check that the scans are registered",
            volume.path, n, other, first.path, ref,
        )  # fmt: skip


def _channel_info(volume: Volume, overlap: float) -> dict[str, object]:
    return {
        "path": str(volume.path),
        "modality": volume.meta.get("modality", ""),
        "shape": list(volume.spatial_shape),
        "spacing": [round(s, 6) for s in volume.spacing],
        "overlap": round(overlap, 4),
    }


def _read_4d_channels(path: Path, n_channels: int) -> Volume:
    """An MSD 4D NIfTI ``(X, Y, Z, C)`` as a ``(C, X, Y, Z)`` volume."""
    from medseg.io.nifti import read_nifti

    vol = read_nifti(path)
    arr = np.asarray(vol.array)
    if arr.ndim != 4 or arr.shape[3] != n_channels:
        raise MedsegError(
            f"expected a 4D NIfTI with {n_channels} channels on its last axis (MSD layout), "
            f"found shape {tuple(arr.shape)}",
            path,
        )
    channels = np.moveaxis(arr, 3, 0).astype(np.float32)
    for c in range(n_channels):
        check_volume(Volume(channels[c], vol.affine, path=path, meta=vol.meta))
    infos = [
        {
            "path": f"{path}[{c}]",
            "modality": "",
            "shape": list(channels.shape[1:]),
            "spacing": [round(s, 6) for s in vol.spacing],
            "overlap": 1.0,
        }
        for c in range(n_channels)
    ]
    return Volume(channels, vol.affine, path=path, meta={**vol.meta, "channels": infos})
