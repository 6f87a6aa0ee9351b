"""Synthetic phantoms: seeded, plausible values, labels present, any orientation and spacing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medseg.data.cohorts import write_ct_cohort, write_mr_cohort, write_volume_as_dicom
from medseg.data.manifest import load_manifest
from medseg.data.synthetic import CT_LABELS, MR_LABELS, make_ct_phantom, make_mr_phantom
from medseg.data.validation import validate_manifest
from medseg.errors import MedsegError
from medseg.io import load_volume

SHAPE = (40, 40, 24)
SPACING = (2.0, 2.0, 4.0)
MANIFESTS = Path(__file__).resolve().parents[2] / "data_manifests"


def _canonical(volume) -> nib.Nifti1Image:
    return nib.as_closest_canonical(nib.Nifti1Image(volume.array, volume.affine))


def test_ct_same_seed_identical_other_seed_different() -> None:
    a_img, a_lab = make_ct_phantom(SHAPE, SPACING, seed=5)
    b_img, b_lab = make_ct_phantom(SHAPE, SPACING, seed=5)
    c_img, c_lab = make_ct_phantom(SHAPE, SPACING, seed=6)
    assert np.array_equal(a_img.array, b_img.array) and np.array_equal(a_lab.array, b_lab.array)
    assert not np.array_equal(a_lab.array, c_lab.array)
    assert not np.array_equal(a_img.array, c_img.array)
    # organ sizes vary with the seed: a diverse cohort
    assert np.count_nonzero(a_lab.array == 1) != np.count_nonzero(c_lab.array == 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ct_labels_and_hounsfield_units(seed: int) -> None:
    image, labels = make_ct_phantom((64, 64, 48), (1.5, 1.5, 3.0), seed=seed, n_lesions=3)
    hu, lab = image.array, labels.array
    assert hu.dtype == np.int16 and lab.dtype == np.uint8
    assert np.array_equal(image.affine, labels.affine)
    assert set(np.unique(lab)) == set(CT_LABELS)
    mean = {v: float(hu[ndimage.binary_erosion(lab == v)].mean()) for v in (1, 2, 3, 4)}
    assert hu.min() >= -1024 and np.median(hu[0]) < -950  # air at the border
    assert 45 < mean[1] < 75 and 35 < mean[3] < 65  # liver, spleen
    assert 120 < mean[2] < 180 and mean[4] > 450  # contrast kidneys, bone
    lesion_hu = float(hu[lab == 5].mean())
    assert lesion_hu < mean[1] - 10  # hypodense lesions
    # small lesions: at most three 6 mm spheres, each a lesion in the liver
    voxel_mm3 = np.prod(image.spacing)
    assert np.count_nonzero(lab == 5) * voxel_mm3 <= 3 * 4 / 3 * np.pi * 6.5**3
    around = ndimage.binary_dilation(lab == 5) & (lab != 5)
    assert np.count_nonzero(lab[around] == 1) > 0.5 * around.sum()  # mostly surrounded by liver


def test_lesion_smaller_than_a_voxel_is_still_labelled() -> None:
    _, labels = make_ct_phantom((24, 24, 8), (8.0, 8.0, 20.0), seed=3, n_lesions=2)
    assert np.count_nonzero(labels.array == 5) >= 1


@pytest.mark.parametrize("axcodes", ["LPS", "PSR", "ASL", "LAI"])
@pytest.mark.parametrize("maker", [make_ct_phantom, make_mr_phantom])
def test_orientations_describe_the_same_world(maker, axcodes: str) -> None:
    ras_img, ras_lab = maker(SHAPE, SPACING, seed=11)
    img, lab = maker(SHAPE, SPACING, seed=11, axcodes=axcodes)
    assert img.axcodes == tuple(axcodes) and lab.axcodes == tuple(axcodes)
    assert np.array_equal(img.affine, lab.affine)
    for ras, other in ((ras_img, img), (ras_lab, lab)):
        canon = _canonical(other)
        assert np.allclose(canon.affine, ras.affine, atol=1e-9)
        assert np.array_equal(np.asarray(canon.dataobj), ras.array)
    # a lesion voxel sits at the same world position in both
    idx = np.argwhere(lab.array == lab.array.max())[0]
    world = lab.affine @ [*idx, 1]
    back = np.rint(np.linalg.solve(ras_lab.affine, world)[:3]).astype(int)
    assert ras_lab.array[tuple(back)] == lab.array[tuple(idx)]


def test_anisotropic_spacing_is_respected() -> None:
    img, _ = make_ct_phantom((48, 32, 20), (0.8, 1.2, 3.5), seed=2)
    assert img.spacing == pytest.approx((0.8, 1.2, 3.5)) and img.spatial_shape == (48, 32, 20)
    psr, _ = make_ct_phantom((48, 32, 20), (0.8, 1.2, 3.5), seed=2, axcodes="PSR")
    assert psr.spacing == pytest.approx((1.2, 3.5, 0.8)) and psr.spatial_shape == (32, 20, 48)
    # the same field of view sampled finely in-plane or finely in z: same anatomy in mm^3
    _, fine_xy = make_ct_phantom((64, 64, 24), (1.0, 1.0, 4.0), seed=4)
    _, fine_z = make_ct_phantom((32, 32, 48), (2.0, 2.0, 2.0), seed=4)
    for value in (1, 2, 3):
        a = np.count_nonzero(fine_xy.array == value) * 4.0
        b = np.count_nonzero(fine_z.array == value) * 8.0
        assert a == pytest.approx(b, rel=0.12), CT_LABELS[value]


def test_oblique_rotation_moves_the_grid_not_the_voxels() -> None:
    straight, _ = make_ct_phantom(SHAPE, SPACING, seed=1)
    tilted, tilted_lab = make_ct_phantom(SHAPE, SPACING, seed=1, oblique_deg=(10.0, 0.0, 20.0))
    assert np.array_equal(straight.array, tilted.array)
    assert tilted.spacing == pytest.approx(SPACING)
    assert not np.allclose(straight.affine, tilted.affine)
    assert np.array_equal(tilted.affine, tilted_lab.affine)


def test_mr_phantom() -> None:
    img, lab = make_mr_phantom((48, 48, 32), (1.0, 1.0, 1.5), seed=8)
    again, _ = make_mr_phantom((48, 48, 32), (1.0, 1.0, 1.5), seed=8)
    other, _ = make_mr_phantom((48, 48, 32), (1.0, 1.0, 1.5), seed=9)
    assert img.array.dtype == np.float32 and lab.array.dtype == np.uint8
    assert np.array_equal(img.array, again.array) and not np.array_equal(img.array, other.array)
    assert set(np.unique(lab.array)) == set(MR_LABELS)
    assert img.array.min() >= 0 and np.isfinite(img.array).all()
    # oedema surrounds the core: the core's dilation is mostly oedema or core
    ring = ndimage.binary_dilation(lab.array == 2, iterations=2) & (lab.array != 2)
    assert np.mean(lab.array[ring] == 1) > 0.8
    # bias field and noise: one tissue is not a constant
    assert img.array[lab.array == 1].std() > 0.05 * img.array[lab.array == 1].mean()


@pytest.mark.parametrize(
    "kwargs",
    [{"axcodes": "RRS"}, {"axcodes": "RA"}, {"shape": (2, 10, 10)}, {"spacing": (1.0, 0.0, 1.0)}],
)
def test_bad_options_raise(kwargs: dict) -> None:
    with pytest.raises(MedsegError):
        make_ct_phantom(**{"shape": SHAPE, "spacing": SPACING, **kwargs}, seed=0)


def test_ct_phantom_is_fast() -> None:
    make_ct_phantom(seed=0)
    start = time.perf_counter()
    make_ct_phantom((64, 64, 48), (1.5, 1.5, 3.0), seed=1)
    assert time.perf_counter() - start < 1.0


def test_cohort_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "ct"
    path = write_ct_cohort(root, 3, seed=4, shape=(24, 24, 12), axcodes=["RAS", "LPS", "PSR"])
    manifest = load_manifest(path, root)
    assert [c.case_id for c in manifest.training] == ["phantom_000", "phantom_001", "phantom_002"]
    assert validate_manifest(manifest).ok
    loaded = load_volume(root / "labelsTr" / "phantom_002.nii.gz")
    _, expected = make_ct_phantom(
        (24, 24, 12), (1.5, 1.5, 3.0), seed=np.random.SeedSequence(4, spawn_key=(2,)), axcodes="PSR"
    )
    assert np.array_equal(loaded.array, expected.array)
    assert np.allclose(loaded.affine, expected.affine, atol=1e-5)
    names = json.loads((root / "labelsTr" / "phantom_002.json").read_text())["labels"]
    assert names["5"] == "lesion"
    # case i does not depend on the cohort size
    write_ct_cohort(tmp_path / "one", 1, seed=4, shape=(24, 24, 12))
    first = root / "imagesTr" / "phantom_000.nii.gz"
    again = tmp_path / "one" / "imagesTr" / "phantom_000.nii.gz"
    assert np.array_equal(load_volume(first).array, load_volume(again).array)


def test_mr_cohort(tmp_path: Path) -> None:
    path = write_mr_cohort(tmp_path, 2, seed=1, shape=(24, 24, 16))
    manifest = load_manifest(path, tmp_path)
    assert manifest.modality == {0: "MRI"} and manifest.labels == MR_LABELS
    assert validate_manifest(manifest).ok


def test_shipped_synthetic_manifest_matches_the_writer(tmp_path: Path) -> None:
    # the manifest content does not depend on the grid: a tiny grid keeps this fast
    path = write_ct_cohort(tmp_path, 8, seed=0, shape=(12, 12, 6))
    assert json.loads(path.read_text()) == json.loads((MANIFESTS / "synthetic_ct.json").read_text())


@pytest.mark.parametrize("axcodes", ["RAS", "LPS", "PSR"])
def test_dicom_writer_round_trip(tmp_path: Path, axcodes: str) -> None:
    image, _ = make_ct_phantom((16, 16, 6), (2.0, 2.0, 5.0), seed=3, axcodes=axcodes)
    files = write_volume_as_dicom(image, tmp_path / "series", rng=np.random.default_rng(0))
    assert len(files) == image.spatial_shape[2]
    loaded = load_volume(tmp_path / "series")
    canon_in, canon_out = _canonical(image), _canonical(loaded)
    assert np.allclose(canon_in.affine, canon_out.affine, atol=1e-4)
    assert np.array_equal(np.asarray(canon_in.dataobj), np.asarray(canon_out.dataobj))
