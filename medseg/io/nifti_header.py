"""Checks of a NIfTI header's raw values, made before nibabel reads (and normalises) it.

nibabel repairs some impossible headers silently when it loads a file: a zero ``pixdim`` of a
spatial axis becomes 1 and a negative one its absolute value, so a scan with a broken spacing
would be read with a made-up one. It also trusts the header's dimensions and allocates their
size before reading, so a corrupt ``dim`` ends in a ``MemoryError``. :func:`check_nifti_header`
reads the header bytes itself (``check=False``: nothing repaired) and refuses such files with a
message that names the file and the values.

Size bound for ``.nii.gz``
--------------------------
The uncompressed size of a gzip file is not stored reliably (the trailer holds it modulo
2**32, and only for the last member of a multi-member file). DEFLATE cannot compress better
than 1032:1 (a 258-byte match coded in two bits), so a ``.nii.gz`` of ``C`` bytes holds at most
``1032 * C`` bytes: a header asking for more is refused before anything is allocated. Below
that bound nibabel reads the data, and a short read (a header larger than its data, or a
truncated file) is reported by :func:`medseg.io.nifti.read_nifti` as expected vs found bytes.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener

from medseg.errors import MedsegError

#: DEFLATE's best compression ratio: a gzip file of C bytes decompresses to at most 1032 * C.
MAX_DEFLATE_RATIO = 1032
#: ``sizeof_hdr`` of NIfTI-1 and NIfTI-2 headers.
HEADER_SIZES = {348: nib.Nifti1Header, 540: nib.Nifti2Header}

_NOT_NIFTI = "cannot read as NIfTI: expected a .nii/.nii.gz file with a NIfTI header, found none"


def _header_block(path: Path) -> bytes:
    """The first 540 bytes of the (decompressed) file."""
    try:
        with ImageOpener(str(path), "rb") as fobj:
            return bytes(fobj.read(540))
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        kind = "gzip data" if path.name.lower().endswith(".gz") else "the file"
        raise MedsegError(f"{_NOT_NIFTI} (cannot read {kind}: {exc})", path) from exc


def raw_header(path: Path) -> nib.Nifti1Header:
    """The NIfTI-1 or NIfTI-2 header of ``path`` exactly as stored (nothing repaired).

    Raises
    ------
    MedsegError
        For an empty file, data that is not gzip (``.nii.gz``) or no NIfTI header.
    """
    block = _header_block(path)
    if not block:
        raise MedsegError(f"{_NOT_NIFTI} (an empty file)", path)
    for order in ("<", ">"):
        size = struct.unpack(f"{order}i", block[:4])[0] if len(block) >= 4 else 0
        klass = HEADER_SIZES.get(size)
        if klass is not None and len(block) >= size:
            return klass(binaryblock=block[:size], endianness=order, check=False)
    raise MedsegError(
        f"{_NOT_NIFTI} (not a NIfTI file: {len(block)} byte(s) read, no sizeof_hdr 348 or 540)",
        path,
    )


def dtype_name(header: nib.Nifti1Header) -> str:
    """The NIfTI name of the header's datatype code (``RGB24``, ``FLOAT32``, ...)."""
    code = int(header["datatype"])
    try:
        return str(nib.nifti1.data_type_codes.niistring[code]).removeprefix("NIFTI_TYPE_")
    except KeyError:
        return f"unknown code {code}"


def _check_dtype(header: nib.Nifti1Header, path: Path) -> np.dtype:
    name = dtype_name(header)
    try:
        dtype = np.dtype(header.get_data_dtype())
    except (KeyError, nib.spatialimages.HeaderDataError) as exc:
        raise MedsegError(
            f"expected a scalar voxel type, found datatype {name} (not a NIfTI data type)", path
        ) from exc
    if dtype.fields is not None or dtype.kind not in "biuf":
        kind = "colour/structured" if dtype.fields is not None else "complex"
        raise MedsegError(
            f"expected a scalar voxel type, found {name} ({kind} voxels); convert the image to "
            "one real-valued channel first",
            path,
        )
    return dtype


def _check_dims(header: nib.Nifti1Header, path: Path) -> tuple[int, ...]:
    dim = [int(v) for v in header["dim"]]
    if not 1 <= dim[0] <= 7:
        raise MedsegError(f"expected dim[0] (the number of axes) in 1..7, found {dim[0]}", path)
    shape = tuple(dim[1 : dim[0] + 1])
    if any(n < 1 for n in shape):
        raise MedsegError(f"expected positive dimensions in the header, found {shape}", path)
    return shape


def _check_pixdim(header: nib.Nifti1Header, n_axes: int, path: Path) -> None:
    pixdim = [float(v) for v in header["pixdim"][1 : 1 + min(n_axes, 3)]]
    if all(math.isfinite(v) and v > 0 for v in pixdim):
        return
    shown = ", ".join(f"{v:g}" for v in pixdim)
    raise MedsegError(
        f"expected positive finite voxel spacing in the header (pixdim[1..{len(pixdim)}]), "
        f"found ({shown}); a zero, negative or NaN spacing is not repaired (nibabel would set "
        "it to 1 or its absolute value)",
        path,
    )


def _check_size(
    header: nib.Nifti1Header, shape: tuple[int, ...], dtype: np.dtype, path: Path
) -> None:
    offset = float(header["vox_offset"])
    if not math.isfinite(offset) or offset < 0:
        raise MedsegError(f"expected a non-negative vox_offset, found {offset:g}", path)
    need = int(offset) + math.prod(shape) * dtype.itemsize
    size = path.stat().st_size
    what = f"{'x'.join(map(str, shape))} voxels x {dtype.itemsize} bytes + vox_offset {int(offset)}"
    if not path.name.lower().endswith(".gz"):
        if need > size:
            raise MedsegError(
                f"file too small for its header: expected {need} bytes ({what}), found {size} "
                "bytes (a truncated file or a corrupt header)",
                path,
            )
        return
    if need > MAX_DEFLATE_RATIO * size:
        raise MedsegError(
            f"file too small for its header: expected at most {MAX_DEFLATE_RATIO * size} "
            f"uncompressed bytes in a gzip file of {size} bytes (DEFLATE's "
            f"{MAX_DEFLATE_RATIO}:1 limit), found a header asking for {need} bytes ({what}); "
            "a corrupt header or a truncated file",
            path,
        )


def header_shape(header: nib.Nifti1Header) -> str:
    """The header's dimensions as ``"IxJxK..."`` (as stored, unchecked)."""
    dim = [int(v) for v in header["dim"]]
    return "x".join(map(str, dim[1 : max(1, min(dim[0], 7)) + 1]))


def check_nifti_header(path: Path) -> nib.Nifti1Header:
    """Refuse a NIfTI file whose raw header is impossible, before any voxel is read.

    Checks: a NIfTI-1/2 header is present; 1 to 7 axes of positive length; a scalar real
    voxel type (not RGB24/RGBA32 or complex); positive finite ``pixdim`` of the spatial axes
    (at most three); and a file large enough for ``dims x bytes per voxel + vox_offset`` (for
    ``.nii.gz`` the DEFLATE bound of the module docstring).

    Returns
    -------
    nibabel.Nifti1Header
        The raw header (a ``Nifti2Header`` for NIfTI-2), as stored.

    Raises
    ------
    MedsegError
        Naming ``path`` and the offending header values.
    """
    path = Path(path)
    header = raw_header(path)
    shape = _check_dims(header, path)
    dtype = _check_dtype(header, path)
    _check_pixdim(header, len(shape), path)
    _check_size(header, shape, dtype, path)
    return header
