"""NIfTI round trips: masks written by ``save_mask`` overlay their source in every orientation."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from atomic_helpers import DiskFullError, folder_state, tear_text_writes, temp_leftovers
from io_test_helpers import axcodes_affine, oblique_affine

from medseg.errors import MedsegError
from medseg.io import load_volume, save_mask, write_nifti
from medseg.io.atomic import temp_suffix

ORIGIN = (-12.5, 40.25, -7.0)
SPACING = (0.7, 1.3, 3.0)
AFFINES = {
    "RAS": axcodes_affine("RAS", SPACING, ORIGIN),
    "LAS": axcodes_affine("LAS", SPACING, ORIGIN),
    "LPS": axcodes_affine("LPS", SPACING, ORIGIN),
    "PSR": axcodes_affine("PSR", SPACING, ORIGIN),
    "ASL": axcodes_affine("ASL", SPACING, ORIGIN),
    "oblique": oblique_affine((17.0, -31.0, 53.0), SPACING, ORIGIN),
}


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_save_mask_keeps_source_geometry(tmp_path, rng, name):
    affine = AFFINES[name]
    src = write_nifti(
        rng.normal(size=(7, 6, 5)).astype(np.float32), affine, tmp_path / "img.nii.gz"
    )
    ref = load_volume(src)
    np.testing.assert_allclose(ref.affine, affine, atol=1e-6)
    mask = (ref.array > 0.5).astype(np.int64) + (ref.array > 1.5)
    out = save_mask(mask, ref, tmp_path / "mask.nii.gz", label_names={1: "edge", 2: "core"})

    img = nib.load(str(out))
    np.testing.assert_allclose(img.get_sform(), affine, atol=1e-5)
    np.testing.assert_allclose(img.get_qform(), affine, atol=1e-5)
    assert int(img.header["qform_code"]) > 0 and int(img.header["sform_code"]) > 0
    assert img.get_data_dtype() == np.uint8
    assert nib.aff2axcodes(img.affine) == ref.axcodes
    if name != "oblique":
        assert "".join(ref.axcodes) == name
    np.testing.assert_allclose(img.header.get_zooms(), SPACING, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(img.dataobj), mask)
    # the same voxel lands on the same world point (mm) in source and mask
    idx = np.array([[0, 0, 0], [6, 5, 4], [3, 1, 2]], dtype=float)
    world_src = nib.affines.apply_affine(nib.load(str(src)).affine, idx)
    np.testing.assert_allclose(nib.affines.apply_affine(img.affine, idx), world_src, atol=1e-4)
    # no temporary file is left behind, the label names travel in a sidecar
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.nii.gz", "mask.json", "mask.nii.gz"]
    labels = json.loads((tmp_path / "mask.json").read_text())["labels"]
    assert labels == {"1": "edge", "2": "core"}


def test_save_mask_uses_uint16_above_255_labels(tmp_path):
    ref = load_volume(
        write_nifti(np.zeros((4, 4, 4), np.float32), AFFINES["LAS"], tmp_path / "a.nii")
    )
    mask = np.zeros((4, 4, 4), dtype=np.int32)
    mask[1, 2, 3] = 300
    out = save_mask(mask, ref, tmp_path / "m.nii")
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.uint16
    assert int(np.asarray(img.dataobj)[1, 2, 3]) == 300


def test_save_mask_rejects_wrong_grid(tmp_path):
    ref = load_volume(write_nifti(np.zeros((4, 4, 4), np.float32), np.eye(4), tmp_path / "a.nii"))
    with pytest.raises(MedsegError, match="does not match the reference grid"):
        save_mask(np.zeros((4, 4, 3), np.uint8), ref, tmp_path / "m.nii.gz")
    assert not (tmp_path / "m.nii.gz").exists()


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def boom(img, filename):
        with open(filename, "wb") as fh:
            fh.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        write_nifti(np.zeros((3, 3, 3), np.uint8), np.eye(4), tmp_path / "x.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_write_nifti_replaces_atomically(tmp_path):
    path = tmp_path / "v.nii.gz"
    write_nifti(np.zeros((3, 3, 3), np.int16), np.eye(4), path)
    write_nifti(np.ones((3, 3, 3), np.int16), np.eye(4), path)
    assert [p.name for p in tmp_path.iterdir()] == ["v.nii.gz"]
    assert load_volume(path).array.dtype == np.int16
    assert int(load_volume(path).array.sum()) == 27


@pytest.mark.realdata
def test_real_spinalcord_t2_is_psr(shared_data):
    vol = load_volume(shared_data / "nifti/spinalcord_mr/t2/t2.nii.gz")
    assert vol.axcodes == ("P", "S", "R")
    assert vol.array.ndim == 3
    np.testing.assert_allclose(
        vol.spacing,
        nib.load(str(shared_data / "nifti/spinalcord_mr/t2/t2.nii.gz")).header.get_zooms()[:3],
        rtol=1e-6,
    )


def _nifti_writers(tmp_path):
    ref = load_volume(write_nifti(np.zeros((3, 3, 3), np.float32), np.eye(4), tmp_path / "ref.nii"))
    return {
        "write_nifti": lambda p: write_nifti(np.ones((3, 3, 3), np.int16), np.eye(4), p),
        "save_mask": lambda p: save_mask(np.ones((3, 3, 3), np.uint8), ref, p),
    }


@pytest.mark.parametrize("writer", ["write_nifti", "save_mask"])
@pytest.mark.parametrize("existing", [True, False], ids=["old-file", "no-file"])
@pytest.mark.parametrize("name", ["out.nii.gz", "out.nii"])
def test_failed_nifti_write_keeps_old_file(tmp_path, monkeypatch, writer, existing, name):
    write = _nifti_writers(tmp_path)[writer]
    path = tmp_path / "out" / name
    path.parent.mkdir()
    if existing:
        write_nifti(np.full((3, 3, 3), 7, np.int16), np.eye(4), path)
    before = folder_state(tmp_path)
    real_save = nib.save
    seen = []

    def save_then_fail(img, filename):
        seen.append(Path(filename).name)
        real_save(img, filename)  # the temporary file is complete, then the write fails
        raise DiskFullError()

    monkeypatch.setattr(nib, "save", save_then_fail)
    with pytest.raises(DiskFullError):
        write(path)
    assert seen[0].startswith(f".{name}.") and seen[0].endswith(".part" + temp_suffix(path))
    assert folder_state(tmp_path) == before
    if existing:
        assert int(load_volume(path).array.sum()) == 7 * 27


def test_failed_sidecar_write_keeps_old_sidecar(tmp_path, monkeypatch):
    ref = load_volume(write_nifti(np.zeros((3, 3, 3), np.float32), np.eye(4), tmp_path / "r.nii"))
    out = tmp_path / "m.nii.gz"
    save_mask(np.ones((3, 3, 3), np.uint8), ref, out, label_names={1: "old"})
    old = (tmp_path / "m.json").read_bytes()
    tear_text_writes(monkeypatch)
    with pytest.raises(DiskFullError):
        save_mask(np.ones((3, 3, 3), np.uint8), ref, out, label_names={1: "new"})
    assert (tmp_path / "m.json").read_bytes() == old
    assert temp_leftovers(tmp_path) == []


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o077, 0o600)])
def test_nifti_mode_follows_umask(tmp_path, umask, expected):
    original = os.umask(umask)
    try:
        path = write_nifti(np.zeros((2, 2, 2), np.uint8), np.eye(4), tmp_path / "m.nii.gz")
    finally:
        os.umask(original)
    assert stat.S_IMODE(path.stat().st_mode) == expected
