"""NIfTI files with raw header fields patched, as a broken converter would have written them."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np


def patched_nifti(
    path: Path, array: np.ndarray, *, sform: int = 1, qform: int = 1, **fields: dict
) -> Path:
    """Save ``array`` (2 mm voxels), then overwrite raw header fields (``{index: value}``).

    nibabel rewrites ``pixdim`` from the affine when it saves, so impossible values can only
    be made by patching the bytes afterwards, as a broken converter would have written them.
    """
    img = nib.Nifti1Image(array, np.diag([2.0, 2.0, 2.0, 1.0]))
    img.set_sform(img.affine, code=sform)
    img.set_qform(img.affine, code=qform)
    img.to_filename(str(path))
    gz = path.name.endswith(".gz")
    raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=False)
    for name, values in fields.items():
        field = hdr[name].copy()
        for index, value in values.items():
            field[index] = value
        hdr[name] = field
    data = hdr.binaryblock + raw[348:]
    path.write_bytes(gzip.compress(data) if gz else data)
    return path
