"""Impossible NIfTI headers are refused from their raw values, before nibabel repairs them."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from io_test_helpers import tree_digest
from nifti_helpers import patched_nifti

from medseg.errors import MedsegError
from medseg.io import load_volume
from medseg.io.nifti_header import MAX_DEFLATE_RATIO, check_nifti_header

ZEROS = np.zeros((4, 4, 4), np.float32)

PIXDIM = {
    "zero, qform only": ("zq.nii", 0, 1, {1: 0.0}, r"\(0, 2, 2\)"),
    "zero, no transform": ("z.nii", 0, 0, {2: 0.0}, r"\(2, 0, 2\)"),
    "zero beside a valid sform": ("zs.nii.gz", 1, 0, {3: 0.0}, r"\(2, 2, 0\)"),
    "negative": ("neg.nii.gz", 0, 1, {2: -2.0}, r"\(2, -2, 2\)"),
    "negative beside a valid sform": ("negs.nii", 1, 1, {1: -2.0}, r"\(-2, 2, 2\)"),
    "NaN": ("nan.nii", 0, 1, {3: np.nan}, r"\(2, 2, nan\)"),
    "inf": ("inf.nii.gz", 0, 1, {1: np.inf}, r"\(inf, 2, 2\)"),
}


@pytest.mark.parametrize("case", sorted(PIXDIM))
def test_impossible_pixdim_is_refused_not_repaired(tmp_path: Path, case: str) -> None:
    name, sform, qform, pixdim, found = PIXDIM[case]
    path = patched_nifti(tmp_path / name, ZEROS, sform=sform, qform=qform, pixdim=pixdim)
    before = tree_digest(path)
    with pytest.raises(
        MedsegError, match=f"expected positive finite voxel spacing.*{found}"
    ) as err:
        load_volume(path, allow_empty=True)
    assert err.value.path == str(path)
    assert tree_digest(path) == before


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_header_larger_than_the_file_is_refused_before_allocating(
    tmp_path: Path, name: str
) -> None:
    path = patched_nifti(tmp_path / name, ZEROS, dim={1: 30000, 2: 30000, 3: 30000})
    with pytest.raises(MedsegError, match="file too small for its header: expected") as err:
        load_volume(path)
    msg = str(err.value)
    assert err.value.path == str(path)
    assert "30000x30000x30000 voxels x 4 bytes + vox_offset 352" in msg
    assert f"found {path.stat().st_size} bytes" in msg or f"{path.stat().st_size} bytes (" in msg
    if name.endswith(".gz"):
        assert f"{MAX_DEFLATE_RATIO}:1" in msg


def test_gz_header_within_the_deflate_bound_ends_in_a_short_read_on_one_line(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    noise = rng.random((16, 16, 16)).astype(np.float32)  # incompressible: a large .gz
    path = patched_nifti(tmp_path / "long.nii.gz", noise, dim={3: 32})
    assert MAX_DEFLATE_RATIO * path.stat().st_size > (16 * 16 * 32 * 4 + 352)
    check_nifti_header(path)  # within the bound: nibabel reads, and finds the data short
    with pytest.raises(MedsegError, match="Expected 32768 bytes, got 16384") as err:
        load_volume(path)
    assert "\n" not in str(err.value) and err.value.path == str(path)


@pytest.mark.parametrize(
    ("dtype", "found"),
    [
        (np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")]), "RGB24"),
        (np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")]), "RGBA32"),
        (np.dtype(np.complex64), "COMPLEX64"),
    ],
    ids=["RGB24", "RGBA32", "complex64"],
)
def test_non_scalar_voxels_are_refused_naming_the_type(
    tmp_path: Path, dtype: np.dtype, found: str
) -> None:
    path = tmp_path / "colour.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), dtype), np.eye(4)), str(path))
    with pytest.raises(MedsegError, match=f"expected a scalar voxel type, found {found}") as err:
        load_volume(path, allow_empty=True)
    assert err.value.path == str(path)


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (b"", "an empty file"),
        (gzip.compress(b"\x07" * 5000), "no sizeof_hdr 348 or 540"),
        (b"\x00\x01" * 400, "cannot read gzip data"),
    ],
    ids=["zero bytes", "gzip of garbage", "not gzip"],
)
def test_not_a_nifti_header(tmp_path: Path, content: bytes, found: str) -> None:
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(content)
    with pytest.raises(MedsegError, match=f"cannot read as NIfTI: expected .*{found}") as err:
        load_volume(path)
    assert err.value.path == str(path)
