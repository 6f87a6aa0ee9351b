"""The sarcoma manifests in data_manifests/ against the real data (skipped without ../shared)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from medseg.data.loading import load_case
from medseg.data.manifest import load_manifest
from medseg.data.validation import validate_manifest

MANIFESTS = Path(__file__).resolve().parents[2] / "data_manifests"


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["sts_ct", "sts_ct_pet"])
def test_sarcoma_manifests_validate(shared_data: Path, name: str) -> None:
    root = shared_data / "sts_ct_pet"
    manifest = load_manifest(MANIFESTS / f"{name}.json", root)
    assert len(manifest.training) == 36 and manifest.n_channels == (2 if "pet" in name else 1)
    assert len({c.case_id for c in manifest.training}) == 36  # ids from the "id" keys
    few = replace(manifest, training=manifest.training[:3])  # the whole check: validate-manifest
    report = validate_manifest(few, max_workers=2)
    assert report.ok, report.problems


@pytest.mark.realdata
def test_dicom_rtstruct_manifest_gives_the_nifti_cases(shared_data: Path) -> None:
    """CT series + RTSTRUCT (rasterised by medseg) vs the NIfTI CT and MIRP's mask."""
    root = shared_data / "sts_ct_pet"
    dicom = load_manifest(MANIFESTS / "sts_ct_pet_dicom.json", root)
    nifti = {c.case_id: c for c in load_manifest(MANIFESTS / "sts_ct_pet.json", root).training}
    assert [c.case_id for c in dicom.training] == ["STS_019", "STS_033", "STS_036", "STS_038"]
    case = dicom.training[0]
    image, label = load_case(case, 2)
    ref_image, ref_label = load_case(nifti[case.case_id], 2)
    assert label is not None and ref_label is not None
    np.testing.assert_allclose(image.affine, ref_image.affine, atol=1e-3)
    np.testing.assert_array_equal(image.array[0], ref_image.array[0])  # CT voxel for voxel
    np.testing.assert_allclose(image.array[1], ref_image.array[1], atol=1e-4)  # PET resampled alike
    a, b = np.asarray(label.array) > 0, np.asarray(ref_label.array) > 0
    assert 2 * np.count_nonzero(a & b) / (a.sum() + b.sum()) >= 0.99
