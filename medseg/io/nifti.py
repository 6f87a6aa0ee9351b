"""NIfTI reading and atomic writing (nibabel)."""

from __future__ import annotations

import gzip
import json
import logging
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from medseg.errors import MedsegError
from medseg.io.atomic import atomic_path, atomic_write_text
from medseg.io.file_names import sidecar_path
from medseg.io.nifti_header import check_nifti_header, dtype_name, header_shape
from medseg.io.volume import Volume

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    """True for ``.nii`` and ``.nii.gz`` file names."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def read_nifti(path: Path) -> Volume:
    """Read a NIfTI-1/2 file into a :class:`Volume` (array in file voxel order, RAS affine).

    The affine is nibabel's best affine (sform if set, else qform). Scaling
    (``scl_slope``/``scl_inter``) is applied; integer data without scaling keeps its dtype.
    The raw header is checked first (:func:`medseg.io.nifti_header.check_nifti_header`), so
    nibabel never repairs a spacing silently nor allocates for a header larger than the file.

    Raises
    ------
    MedsegError
        If the file is not a readable NIfTI, is truncated, has an impossible header (zero,
        negative or NaN spacing; dimensions larger than the file) or non-scalar voxels.
    """
    raw_hdr = check_nifti_header(path)
    try:
        img = nib.load(str(path))
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise MedsegError(f"expected a NIfTI image, found {type(img).__name__}", path)
        hdr = img.header
        slope, inter = hdr.get_slope_inter()
        scaled = slope not in (None, 1.0) or inter not in (None, 0.0)
        raw = np.asanyarray(img.dataobj)
        array = np.asarray(img.get_fdata(dtype=np.float32)) if scaled else np.asarray(raw)
    except MedsegError:
        raise
    except nib.filebasedimages.ImageFileError as exc:
        raise MedsegError(
            "cannot read as NIfTI: expected a .nii/.nii.gz file with a NIfTI header, "
            "found none (not a NIfTI file, or empty)",
            path,
        ) from exc
    except MemoryError as exc:
        raise MedsegError(
            f"cannot read as NIfTI: expected voxel data that fits in memory, found a header "
            f"asking for {header_shape(raw_hdr)} voxels of {dtype_name(raw_hdr)}",
            path,
        ) from exc
    except (
        OSError,
        EOFError,
        ValueError,
        zlib.error,
        gzip.BadGzipFile,
    ) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MedsegError(
            f"cannot read as NIfTI (expected a valid .nii/.nii.gz file): {first}", path
        ) from exc
    qcode = int(hdr["qform_code"])
    scode = int(hdr["sform_code"])
    meta = {
        "format": "nifti",
        "qform_code": qcode,
        "sform_code": scode,
        "dtype": str(raw.dtype),
    }
    return Volume(array=array, affine=img.affine, path=Path(path), meta=meta)


def write_nifti(
    array: np.ndarray,
    affine: np.ndarray,
    path: Path,
    *,
    qform_code: int = 1,
    sform_code: int = 1,
) -> Path:
    """Write ``array`` with ``affine`` (RAS mm) to ``path`` atomically (temp file + rename).

    The affine goes into both the qform and the sform so every viewer (3D Slicer,
    ITK-SNAP, FSLeyes) places the voxels at the same world positions.
    """
    path = Path(path)
    img = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
    img.set_qform(affine, code=qform_code or 1)
    img.set_sform(affine, code=sform_code or 1)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def label_dtype(values: np.ndarray | Sequence[int]) -> np.dtype:
    """The dtype of a label map holding ``values``: ``uint8`` up to 255, else ``uint16``.

    Parameters
    ----------
    values
        The label map itself (any shape) or its label values; empty gives ``uint8``.

    Raises
    ------
    MedsegError
        For a negative value or one above 65535.
    """
    arr = np.asarray(values)
    if arr.size == 0:
        return np.dtype(np.uint8)
    low, top = int(arr.min()), int(arr.max())
    if low < 0:
        raise MedsegError(f"label maps must be non-negative, found minimum {low}")
    if top > 65535:
        raise MedsegError(f"label values up to 65535 are supported, found {top}")
    return np.dtype(np.uint8 if top <= 255 else np.uint16)


def save_mask(
    mask: np.ndarray | Volume,
    reference: Volume,
    path: str | os.PathLike[str],
    *,
    label_names: Mapping[int, str] | None = None,
) -> Path:
    """Write a label map on the reference scan's grid as NIfTI, atomically.

    Parameters
    ----------
    mask
        Integer label map of shape ``(I, J, K)`` on the reference's voxel grid (or a
        :class:`Volume` whose affine must equal the reference's).
    reference
        The scan the mask belongs to; its affine (RAS, mm) is written to qform and sform.
    path
        Output ``.nii`` or ``.nii.gz`` file.
    label_names
        ``{value: name}``; written next to the mask as ``<name>.json`` (sidecar).

    Returns
    -------
    pathlib.Path
        The written mask path.
    """
    path = Path(path)
    if not is_nifti(path):
        raise MedsegError("expected an output name ending in .nii or .nii.gz", path)
    array = mask.array if isinstance(mask, Volume) else np.asarray(mask)
    if array.ndim != 3 or tuple(array.shape) != reference.spatial_shape:
        raise MedsegError(
            f"mask shape {tuple(array.shape)} does not match the reference grid "
            f"{reference.spatial_shape} of {reference.path}",
            path,
        )
    if not np.all(np.isfinite(array)) or not np.all(np.equal(np.mod(array, 1), 0)):
        raise MedsegError("a mask must hold finite integer labels", path)
    out = array.astype(label_dtype(array), copy=False)
    codes = {
        "qform_code": int(reference.meta.get("qform_code", 1) or 1),
        "sform_code": int(reference.meta.get("sform_code", 1) or 1),
    }
    write_nifti(out, reference.affine, path, **codes)
    if label_names:
        sidecar = sidecar_path(path)
        payload = {"labels": {str(int(k)): v for k, v in sorted(label_names.items())}}
        atomic_write_text(sidecar, json.dumps(payload, indent=2))
    return path
