"""``measure_lesions`` on phantoms of known lesions, and the lesion tables it fills."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.postprocessing.diameters import axial_axis, axial_diameters
from medseg.postprocessing.instances import InstanceInfo, instance_map
from medseg.postprocessing.lesion_table import (
    BASE_COLUMNS,
    measure_lesions,
    write_folder_lesion_table,
    write_lesion_tables,
)

# L-P-I-like grid: R and S flipped, 0.7 x 0.9 x 2.5 mm
SHAPE = (80, 70, 24)
AFFINE = np.array(
    [[-0.7, 0, 0, 40.0], [0, 0.9, 0, -20.0], [0, 0, -2.5, 60.0], [0, 0, 0, 1]], np.float64
)
SPACING = (0.7, 0.9, 2.5)
ELLIPSOID = {"centre": np.array([20.0, 5.0, 30.0]), "semi": np.array([12.0, 9.0, 15.0])}
CYLINDER = {"centre": np.array([-2.0, 30.0]), "semi": np.array([8.0, 5.0]), "slices": (8, 14)}
BOX = (slice(60, 75), slice(2, 10), slice(2, 6))


def world(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """RAS mm of every voxel centre, shape ``(*shape, 3)``."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def phantom() -> tuple[np.ndarray, np.ndarray]:
    """Label map (1: ellipsoid and box, 2: elliptic cylinder) and a CT-like channel."""
    xyz = world(SHAPE, AFFINE)
    labels = np.zeros(SHAPE, np.uint8)
    rel = (xyz - ELLIPSOID["centre"]) / ELLIPSOID["semi"]
    labels[np.sum(rel**2, axis=-1) <= 1] = 1
    rel2 = (xyz[..., :2] - CYLINDER["centre"]) / CYLINDER["semi"]
    cyl = np.sum(rel2**2, axis=-1) <= 1
    k0, k1 = CYLINDER["slices"]
    cyl[:, :, :k0] = cyl[:, :, k1:] = False
    labels[cyl] = 2
    labels[BOX] = 1
    i, j, _ = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    return labels, (10.0 * i + j).astype(np.float32)


def reoriented(a: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same world content with axes permuted (axial first) and the first axis flipped."""
    b = np.transpose(a, (2, 0, 1))[::-1]
    aff = affine.copy()
    aff[:3, :3] = affine[:3, [2, 0, 1]]
    aff[:3, 3] = affine[:3, 3] + (a.shape[2] - 1) * affine[:3, 2]
    aff[:3, 0] *= -1
    return np.ascontiguousarray(b), aff


@pytest.fixture(scope="module")
def measured() -> tuple[list[dict], np.ndarray, np.ndarray, np.ndarray]:
    labels, ct = phantom()
    inst, info = instance_map(labels, [1, 2])
    pet = np.random.default_rng(3).random(SHAPE)
    rows = measure_lesions(
        inst,
        info,
        AFFINE,
        channels={"CT": ct, "PET": pet},
        channel_kinds={"CT": "CT", "PET": "PET"},
        label_names={1: "tumour", 2: "node"},
    )
    return rows, inst, ct, pet


def by_label_size(rows: list[dict]) -> dict[str, dict]:
    ell, box = (r for r in rows if r["label"] == 1)  # ids: label 1 by descending size
    (cyl,) = (r for r in rows if r["label"] == 2)
    return {"ellipsoid": ell, "box": box, "cylinder": cyl}


def test_count_labels_and_columns(measured) -> None:
    rows, _, _, _ = measured
    assert [(r["id"], r["label"], r["label_name"]) for r in rows] == [
        (1, 1, "tumour"),
        (2, 1, "tumour"),
        (3, 2, "node"),
    ]
    for r in rows:
        assert list(r)[: len(BASE_COLUMNS)] == list(BASE_COLUMNS)
        assert {"CT_mean", "CT_max", "PET_SUVmean", "PET_SUVmax"} <= set(r)
        assert "PET_mean" not in r


def test_ellipsoid_volume_and_centroid(measured) -> None:
    ell = by_label_size(measured[0])["ellipsoid"]
    true_mm3 = 4 / 3 * np.pi * np.prod(ELLIPSOID["semi"])
    assert ell["volume_mm3"] == pytest.approx(true_mm3, rel=0.02)
    assert ell["volume_ml"] == pytest.approx(ell["volume_mm3"] / 1000)
    assert ell["volume_mm3"] == pytest.approx(ell["voxels"] * np.prod(SPACING))
    centroid = np.array([ell[f"centroid_{a}_mm"] for a in "ras"])
    assert np.all(np.abs(centroid - ELLIPSOID["centre"]) <= np.array(SPACING) / 2)
    lo = np.array([ell[f"bbox_{a}_min_mm"] for a in "ras"])
    hi = np.array([ell[f"bbox_{a}_max_mm"] for a in "ras"])
    semi = ELLIPSOID["semi"]
    assert np.all(np.abs(lo - (ELLIPSOID["centre"] - semi)) <= SPACING)
    assert np.all(np.abs(hi - (ELLIPSOID["centre"] + semi)) <= SPACING)


def test_box_exact_geometry_and_channels(measured) -> None:
    rows, inst, _, pet = measured
    box = by_label_size(rows)["box"]
    n = [s.stop - s.start for s in BOX]
    assert box["voxels"] == np.prod(n)
    assert box["volume_mm3"] == pytest.approx(np.prod(n) * np.prod(SPACING))
    assert [box[f"bbox_{a}_min"] for a in "ijk"] == [s.start for s in BOX]
    assert [box[f"bbox_{a}_max"] for a in "ijk"] == [s.stop - 1 for s in BOX]
    centre_idx = np.array([(s.start + s.stop - 1) / 2 for s in BOX])
    centre_ras = AFFINE[:3, :3] @ centre_idx + AFFINE[:3, 3]
    assert [box[f"centroid_{a}_mm"] for a in "ras"] == pytest.approx(centre_ras)
    # RECIST on a box of a x b mm: long = the diagonal, short = the perpendicular chord, each
    # within one voxel; the contour cuts the corners, so the long axis joins a corner's
    # edge midpoints: exactly the longer of these two
    a, b = n[0] * SPACING[0], n[1] * SPACING[1]
    diag = np.hypot(a, b)
    cut = max(np.hypot(a, b - SPACING[1]), np.hypot(a - SPACING[0], b))
    assert box["axial_axis"] == 2
    assert box["long_axis_mm"] == pytest.approx(cut)
    assert abs(box["long_axis_mm"] - diag) <= max(SPACING[:2])
    assert abs(box["short_axis_mm"] - b * diag / a) <= max(SPACING[:2])
    # channel means and maxima are exact: CT = 10 i + j
    i_mean, j_mean = (BOX[0].start + BOX[0].stop - 1) / 2, (BOX[1].start + BOX[1].stop - 1) / 2
    assert box["CT_mean"] == pytest.approx(10 * i_mean + j_mean, rel=1e-12)
    assert box["CT_max"] == 10 * (BOX[0].stop - 1) + BOX[1].stop - 1
    sel = inst == box["id"]
    assert box["PET_SUVmean"] == pytest.approx(float(pet[sel].mean()), rel=1e-12)
    assert box["PET_SUVmax"] == float(pet[sel].max())


def test_elliptic_cylinder_diameters_within_one_voxel(measured) -> None:
    cyl = by_label_size(measured[0])["cylinder"]
    voxel = max(SPACING[:2])
    assert abs(cyl["long_axis_mm"] - 2 * CYLINDER["semi"][0]) <= voxel
    assert abs(cyl["short_axis_mm"] - 2 * CYLINDER["semi"][1]) <= voxel
    assert cyl["axial_slice"] == CYLINDER["slices"][0]  # all slices tie: the lowest index
    n_slices = CYLINDER["slices"][1] - CYLINDER["slices"][0]
    true_mm3 = np.pi * np.prod(CYLINDER["semi"]) * n_slices * SPACING[2]
    assert cyl["volume_mm3"] == pytest.approx(true_mm3, rel=0.02)


def test_reoriented_grid_gives_the_same_world_measurements(measured) -> None:
    rows, inst, ct, _ = measured
    inst2, aff2 = reoriented(inst, AFFINE)
    ct2, _ = reoriented(ct, AFFINE)
    assert axial_axis(aff2) == 0
    info = [InstanceInfo(r["id"], r["label"], r["voxels"]) for r in rows]
    rows2 = measure_lesions(inst2, info, aff2, channels={"CT": ct2})
    keys = ["voxels", "volume_mm3", "long_axis_mm", "short_axis_mm", "CT_mean", "CT_max"]
    keys += [f"centroid_{a}_mm" for a in "ras"]
    keys += [f"bbox_{a}_{e}_mm" for a in "ras" for e in ("min", "max")]
    for r1, r2 in zip(rows, rows2, strict=True):
        assert r2["axial_axis"] == 0
        for k in keys:
            assert r2[k] == pytest.approx(r1[k], abs=1e-6), k


def test_oblique_grid_diameters_are_rotation_invariant() -> None:
    """A 30-degree in-plane rotation of the voxel axes leaves the diameters in mm unchanged."""
    mask = np.zeros((20, 12, 3), bool)
    mask[2:17, 3:9, 1] = True
    mask[5:9, 9, 1] = True  # not symmetric
    straight = np.diag([0.7, 0.9, 2.5, 1.0])
    theta = np.deg2rad(30)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    expected = axial_diameters(mask, straight)
    assert expected[2] == 1
    assert axial_diameters(mask, rot @ straight) == pytest.approx(expected)


def test_ellipse_diameters_within_one_voxel() -> None:
    """Random ellipses (any orientation, sub-voxel position): both axes within 0.9 mm."""
    rng = np.random.default_rng(11)
    aff = np.diag([0.7, 0.9, 2.5, 1.0])
    x, y = np.meshgrid(np.arange(70) * 0.7, np.arange(60) * 0.9, indexing="ij")
    for _ in range(40):
        a = rng.uniform(3, 15)
        b, theta = rng.uniform(2, a), rng.uniform(0, np.pi)
        dx, dy = x - 24.0 - rng.uniform(0, 0.7), y - 27.0 - rng.uniform(0, 0.9)
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        mask = (u / a) ** 2 + (v / b) ** 2 <= 1
        long_mm, short_mm, _ = axial_diameters(mask[:, :, None], aff)
        assert abs(long_mm - 2 * a) <= 0.9 and abs(short_mm - 2 * b) <= 0.9


def test_tables_written_atomically(measured, tmp_path: Path) -> None:
    rows, _, _, _ = measured
    csv_path, json_path = write_lesion_tables(rows, tmp_path / "out", "case_01")
    assert csv_path.name == "case_01_lesions.csv" and json_path.name == "case_01_lesions.json"
    table = list(csv.DictReader(csv_path.open()))
    assert len(table) == 3 and table[0]["label_name"] == "tumour"
    assert float(table[0]["volume_ml"]) == pytest.approx(rows[0]["volume_ml"], rel=1e-9)
    doc = json.loads(json_path.read_text())
    assert doc["case"] == "case_01" and doc["n_lesions"] == 3
    assert doc["lesions"][2]["PET_SUVmax"] == pytest.approx(rows[2]["PET_SUVmax"])
    folder_csv, folder_json = write_folder_lesion_table(
        {"case_01": rows, "case_02": []}, tmp_path / "out"
    )
    table = list(csv.DictReader(folder_csv.open()))
    assert [r["case"] for r in table] == ["case_01"] * 3
    assert next(csv.reader(folder_csv.open()))[:2] == ["case", "id"]
    doc = json.loads(folder_json.read_text())
    assert doc["n_cases"] == 2 and doc["cases"] == {"case_01": 3, "case_02": 0}
    assert not list(tmp_path.rglob("*.part*"))


def test_no_lesions_writes_header_only(tmp_path: Path) -> None:
    inst, info = instance_map(np.zeros((4, 4, 4), np.uint8), [1])
    rows = measure_lesions(inst, info, np.eye(4))
    csv_path, json_path = write_lesion_tables(rows, tmp_path, "empty")
    assert csv_path.read_text().strip().split(",") == list(BASE_COLUMNS)
    assert json.loads(json_path.read_text())["n_lesions"] == 0


def test_bad_input_is_a_clear_error(measured, tmp_path: Path) -> None:
    rows, inst, ct, _ = measured
    info = [InstanceInfo(r["id"], r["label"], r["voxels"]) for r in rows]
    with pytest.raises(MedsegError, match=r"channel 'CT': expected .*\(80, 70, 24\).*\(80, 70\)"):
        measure_lesions(inst, info, AFFINE, channels={"CT": ct[:, :, 0]}, path="c.nii.gz")
    with pytest.raises(MedsegError, match="channel_kinds names"):
        measure_lesions(inst, info, AFFINE, channel_kinds={"PET": "PET"})
    with pytest.raises(MedsegError, match="in the map but not in info"):
        measure_lesions(inst, info[:2], AFFINE)
    with pytest.raises(MedsegError, match="in info but not in the map"):
        measure_lesions(inst, [*info, InstanceInfo(5, 1, 1)], AFFINE)
    with pytest.raises(MedsegError, match="invertible affine"):
        measure_lesions(inst, info, np.diag([1.0, 1.0, 0.0, 1.0]))
    with pytest.raises(MedsegError, match="finite 4x4 affine, found non-finite values"):
        measure_lesions(inst, info, np.diag([1.0, np.nan, 1.0, 1.0]))
    with pytest.raises(MedsegError, match=r"instance ids >= 1 in info, found 0"):
        measure_lesions(inst, [InstanceInfo(0, 1, 1), *info], AFFINE)  # once measured id 4
    with pytest.raises(MedsegError, match="3D integer instance map"):
        measure_lesions(inst.astype(np.float32), info, AFFINE)
    with pytest.raises(MedsegError, match="case id"):
        write_lesion_tables(rows, tmp_path, "../x")


@pytest.mark.slow
def test_speed_on_a_ct_sized_map(rng: np.random.Generator) -> None:
    """512 x 512 x 300 with 400 lesions: instances and measurements within seconds."""
    labels = np.zeros((512, 512, 300), np.uint8)
    corners = rng.integers(0, (500, 500, 290), size=(400, 3))
    sizes = rng.integers(2, 12, size=(400, 3))
    for c, s in zip(corners, sizes, strict=True):
        labels[c[0] : c[0] + s[0], c[1] : c[1] + s[1], c[2] : c[2] + s[2]] = 1
    ct = rng.normal(size=labels.shape).astype(np.float32)
    start = time.perf_counter()
    inst, info = instance_map(labels, [1])
    rows = measure_lesions(inst, info, np.diag([0.8, 0.8, 1.5, 1.0]), channels={"CT": ct})
    elapsed = time.perf_counter() - start
    assert len(rows) == len(info) > 300
    assert elapsed < 30
