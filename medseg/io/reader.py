"""``load_volume``: one entry point for NIfTI, NRRD, MetaImage files and DICOM series folders."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError
from medseg.io.itk import is_itk_file, read_itk_file
from medseg.io.nifti import is_nifti, read_nifti
from medseg.io.volume import Volume

logger = logging.getLogger(__name__)

SUPPORTED = ".nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd, or a DICOM series folder"


def load_volume(
    path: str | os.PathLike[str],
    *,
    series: str | None = None,
    allow_empty: bool = False,
) -> Volume:
    """Read a 3D scan or label map with its geometry.

    Parameters
    ----------
    path
        A ``.nii``/``.nii.gz``/``.nrrd``/``.mha``/``.mhd`` file or a folder holding one
        DICOM series (or several, with ``series`` choosing one).
    series
        For DICOM folders: a SeriesInstanceUID, or the 1-based number of the series in the
        listing that the error for multi-series folders prints.
    allow_empty
        Accept volumes whose voxels are all equal (e.g. an empty label map).

    Returns
    -------
    Volume
        ``array`` of shape ``(I, J, K)``, ``affine`` voxel-to-RAS in mm.

    Raises
    ------
    MedsegError
        For missing or unreadable files, unsupported formats, and volumes that are not 3D,
        contain NaN/inf, have zero spacing or no voxels. The message names the file.
    """
    p = Path(path)
    if not p.exists():
        raise MedsegError(f"no such file or folder (expected {SUPPORTED})", p)
    if p.is_dir():
        from medseg.io.dicom import read_dicom_series

        volume = read_dicom_series(p, series=series)
    elif is_nifti(p):
        volume = read_nifti(p)
    elif is_itk_file(p):
        volume = read_itk_file(p)
    else:
        raise MedsegError(f"unsupported file type (expected {SUPPORTED})", p)
    check_volume(volume, allow_empty=allow_empty)
    return volume


def check_volume(volume: Volume, *, allow_empty: bool = False) -> None:
    """Raise :class:`MedsegError` unless ``volume`` is a usable 3D scan.

    Checks: exactly three dimensions (a trailing axis of length 1 in 4D NIfTI is *not*
    squeezed silently: it is an error too), no zero-size axis, finite voxel values,
    positive finite spacing and an invertible affine.
    """
    path = volume.path
    arr = volume.array
    if arr.size == 0:
        raise MedsegError(f"expected a 3D volume with voxels, found shape {tuple(arr.shape)}", path)
    if arr.ndim > 3:
        extra = [n for n in arr.shape[3:]]
        hint = (
            " (trailing axes of length 1 are not dropped silently)"
            if all(n == 1 for n in extra)
            else ""
        )
        raise MedsegError(
            f"expected a 3D volume, found {arr.ndim}D with shape {tuple(arr.shape)}{hint}; "
            "extract one 3D volume first (e.g. nibabel `img.slicer[..., 0]` or `fslroi`)",
            path,
        )
    if arr.ndim != 3:
        raise MedsegError(
            f"expected a 3D volume, found {arr.ndim}D with shape {tuple(arr.shape)}", path
        )
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        n_nan = int(np.count_nonzero(np.isnan(arr)))
        n_inf = int(np.count_nonzero(np.isinf(arr)))
        raise MedsegError(
            f"expected finite voxel values, found {n_nan} NaN and {n_inf} inf voxel(s) "
            f"out of {arr.size}",
            path,
        )
    spacing = np.asarray(volume.spacing)
    if not np.all(np.isfinite(volume.affine)) or np.any(spacing <= 1e-6):
        shown = ", ".join(f"{v:g}" for v in spacing)
        raise MedsegError(f"expected positive voxel spacing, found ({shown}) mm", path)
    if abs(np.linalg.det(volume.affine[:3, :3])) < 1e-12:
        raise MedsegError("the affine is singular (axes are collinear)", path)
    if not allow_empty and arr.size > 1 and np.ptp(arr) == 0 and volume.meta.get("is_image", True):
        logger.warning("%s: every voxel has the value %s", path, arr.flat[0])
