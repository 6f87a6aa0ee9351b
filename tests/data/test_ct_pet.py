"""CT + PET phantoms: the PET, on its own coarser and shifted grid, lands on the tumour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.data.ct_pet import make_ct_pet_phantom, write_ct_pet_cohort
from medseg.data.manifest import load_manifest
from medseg.data.validation import validate_manifest
from medseg.errors import MedsegError
from medseg.io.channels import resample_to_grid


@pytest.mark.parametrize("axcodes", ["RAS", "LPS", "PSR"])
def test_pet_resampled_onto_the_ct_lies_on_the_tumour(axcodes: str) -> None:
    ct, pet, label = make_ct_pet_phantom((48, 48, 24), (1.0, 1.0, 3.0), seed=3, axcodes=axcodes)
    assert ct.array.dtype == np.int16 and pet.array.dtype == np.float32
    assert label.array.shape == ct.array.shape
    np.testing.assert_allclose(label.affine, ct.affine)
    np.testing.assert_allclose(pet.spacing, (4.0, 4.0, 3.0))
    assert not np.allclose(pet.affine[:3, 3], ct.affine[:3, 3])  # another grid, not a copy
    on_ct = resample_to_grid(pet, ct.affine, ct.array.shape)
    tumour = np.asarray(label.array) > 0
    body = np.asarray(ct.array) > -500
    assert tumour.any() and np.all(on_ct >= 0)
    assert tumour.flat[int(np.argmax(on_ct))]  # the hottest voxel is in the tumour
    assert on_ct[tumour].mean() > 2.0 * on_ct[body & ~tumour].mean()
    again = make_ct_pet_phantom((48, 48, 24), (1.0, 1.0, 3.0), seed=3, axcodes=axcodes)
    np.testing.assert_array_equal(again[1].array, pet.array)  # seeded


def test_cohort_manifest_has_two_channels_and_validates(tmp_path: Path) -> None:
    path = write_ct_pet_cohort(tmp_path, 2, seed=1, shape=(32, 32, 12))
    manifest = load_manifest(path, tmp_path)
    assert manifest.modality == {0: "CT", 1: "PET"}
    assert [c.case_id for c in manifest.training] == ["ctpet_000", "ctpet_001"]
    assert all(len(c.images) == 2 for c in manifest.training)
    report = validate_manifest(manifest)
    assert report.ok, report.problems


def test_bad_pet_grids_are_refused() -> None:
    with pytest.raises(MedsegError, match="three positive PET spacings"):
        make_ct_pet_phantom(seed=0, pet_spacing=(4.0, 0.0, 3.0))
    with pytest.raises(MedsegError, match="PET grid shift under one PET voxel"):
        make_ct_pet_phantom(seed=0, pet_shift_mm=(5.0, 0.0, 0.0))
