"""``medseg segment-classic`` end to end: predict's output layout on the source grid, scored by
``medseg evaluate``; bad input refused or reported per case."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from classic_phantom import sphere_phantom, write_phantoms

from medseg.cli import main
from medseg.data.cohorts import write_volume_as_dicom
from medseg.io import load_volume, write_nifti


@pytest.fixture
def phantoms(tmp_path: Path) -> tuple[Path, Path]:
    return write_phantoms(tmp_path / "data")


def run(*args: str) -> int:
    return main(["segment-classic", *[str(a) for a in args]])


def test_otsu_batch_keeps_geometry_and_evaluate_scores_it(phantoms, tmp_path, capsys):
    images, labels = phantoms
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    out = tmp_path / "out"
    assert run("otsu", "--input", images, "--output", out, "--min-size", "20") == 0
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before  # inputs untouched
    for case in ("case0", "case1"):
        src, mask = nib.load(images / f"{case}.nii.gz"), nib.load(out / f"{case}.nii.gz")
        np.testing.assert_allclose(mask.affine, src.affine, atol=1e-6)
        assert mask.shape == src.shape
        assert nib.aff2axcodes(mask.affine) == nib.aff2axcodes(src.affine) == ("P", "S", "R")
        np.testing.assert_allclose(mask.header.get_zooms(), (1.0, 2.5, 0.8))
        sidecar = json.loads((out / f"{case}.json").read_text())
        assert sidecar["method"] == "otsu" and sidecar["mask"] == f"{case}.nii.gz"
        assert sidecar["parameters"]["min_size_mm3"] == 20.0
        assert sidecar["labels"] == {"0": "background", "1": "otsu"}
        assert sidecar["axcodes"] == "PSR" and sidecar["volume_mm3"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 0}
    assert (out / "classic_config.yaml").is_file()
    report = tmp_path / "report"
    assert main(["evaluate", "--pred", str(out), "--ref", str(labels), "--out", str(report)]) == 0
    rows = list(csv.DictReader((report / "metrics.csv").open()))
    assert {r["case"] for r in rows} == {"case0", "case1"}
    assert all(float(r["dice"]) > 0.95 for r in rows if r["label"] == "1")  # 0.98


def test_a_dicom_series_input_gets_a_mask_on_its_grid(tmp_path):
    image, labels = sphere_phantom(2, axcodes="LPS")
    write_volume_as_dicom(image, tmp_path / "scans" / "ct_series", modality="CT")
    out = tmp_path / "out"
    centre = np.argwhere(labels.array == 2).mean(axis=0).round().astype(int)
    seed = ",".join(str(v) for v in centre)
    rc = run(
        "confidence-connected", "--input", tmp_path / "scans", "--output", out, "--seed-voxel", seed
    )
    assert rc == 0
    source = load_volume(tmp_path / "scans" / "ct_series")
    mask = load_volume(out / "ct_series.nii.gz", allow_empty=True)
    np.testing.assert_allclose(mask.affine, source.affine, atol=1e-4)
    assert mask.spatial_shape == source.spatial_shape
    # the DICOM reader's voxel order is (column, row, slice); compare in world space via RAS
    ras = nib.as_closest_canonical(nib.Nifti1Image(mask.array.astype(np.uint8), mask.affine))
    ref = nib.as_closest_canonical(
        nib.Nifti1Image((labels.array == 2).astype(np.uint8), labels.affine)
    )
    got, want = np.asarray(ras.dataobj) > 0, np.asarray(ref.dataobj) > 0
    assert got.shape == want.shape
    assert 2 * (got & want).sum() / (got.sum() + want.sum()) > 0.95


def test_negative_world_seed_and_bad_seed_text(phantoms, tmp_path, capsys):
    images, _ = phantoms
    out = tmp_path / "out"
    # the bright sphere's centre (8, 6, 6) RAS mm; a negative coordinate needs --seed=
    args = ["region-grow", "--input", images / "case0.nii.gz", "--output", out, "--lower", "120"]
    assert run(*args, "--seed=8,6,6") == 0
    assert json.loads((out / "case0.json").read_text())["voxels"] > 100
    assert run(*args, "--seed=-8,-5", "--overwrite") == 1
    assert "--seed: expected x,y,z in RAS mm" in capsys.readouterr().err


def test_unknown_method_and_bad_flag_values_are_refused_before_any_output(
    phantoms, tmp_path, capsys
):
    images, _ = phantoms
    out = tmp_path / "out"
    assert run("otsuu", "--input", images, "--output", out) == 1
    assert "did you mean 'otsu'" in capsys.readouterr().err
    assert run("kmeans", "--input", images, "--output", out, "--classes", "1") == 1
    assert "--classes: expected 2 to 8, found 1" in capsys.readouterr().err
    assert run("otsu", "--input", images, "--output", out, "--seed-voxel", "1,2,3") == 1
    assert "--seed-voxel: expected no seeds_voxel with method 'otsu'" in capsys.readouterr().err
    missing = tmp_path / "no_seeds.nii.gz"
    args = ["region-grow", "--input", images, "--output", out, "--lower", "1"]
    assert run(*args, "--seed-mask", missing) == 1
    assert "no_seeds.nii.gz: --seed-mask: expected a seed mask file" in capsys.readouterr().err
    assert not out.exists()


def test_output_inside_the_input_is_refused(phantoms, capsys):
    images, _ = phantoms
    before = sorted(p.name for p in images.iterdir())
    assert run("otsu", "--input", images, "--output", images / "masks") == 1
    assert "--output: expected a folder separate from --input" in capsys.readouterr().err
    assert sorted(p.name for p in images.iterdir()) == before


def test_a_failing_case_is_listed_and_the_batch_goes_on(phantoms, tmp_path, capsys):
    images, _ = phantoms
    (images / "broken.nii.gz").write_bytes(b"not a nifti file at all")
    out = tmp_path / "out"
    assert run("watershed", "--input", images, "--output", out) == 1
    err = capsys.readouterr().err
    assert "1 case(s) failed: broken" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 1}
    assert [f["case"] for f in summary["failures"]] == ["broken"]
    assert "broken.nii.gz" in summary["failures"][0]["error"]
    assert (out / "case0.nii.gz").is_file() and not (out / "broken.nii.gz").exists()


def test_seed_outside_the_volume_fails_that_case(phantoms, tmp_path, capsys):
    images, _ = phantoms
    out = tmp_path / "out"
    rc = run(
        "region-grow", "--input", images, "--output", out, "--lower", "120", "--seed", "0,0,900"
    )
    assert rc == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["failed"] == 2
    assert (
        "(0.0, 0.0, 900.0): expected a point inside the volume" in summary["failures"][0]["error"]
    )


def test_seed_mask_folder_and_a_mask_on_another_grid(phantoms, tmp_path):
    images, _ = phantoms
    seeds = tmp_path / "seeds"
    for seed in (0, 1):
        img, lab = sphere_phantom(seed)
        affine = img.affine.copy()
        if seed == 1:
            affine[:3, 3] += 3.0  # case1's seed mask sits 3 mm off the image's grid
        write_nifti((lab.array == 2).astype(np.uint8), affine, seeds / f"case{seed}.nii.gz")
    out = tmp_path / "out"
    args = ["region-grow", "--input", images, "--output", out, "--lower", "120"]
    assert run(*args, "--seed-mask", seeds) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 1, "skipped": 0, "failed": 1}
    error = summary["failures"][0]["error"]
    assert "case1.nii.gz: seed mask grid: expected the image's grid" in error


def test_rerun_skips_same_parameters_and_refuses_others(phantoms, tmp_path, capsys):
    images, _ = phantoms
    out = tmp_path / "out"
    assert run("otsu", "--input", images, "--output", out) == 0
    stamp = (out / "case0.nii.gz").stat().st_mtime_ns
    assert run("otsu", "--input", images, "--output", out) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 0, "skipped": 2, "failed": 0}
    capsys.readouterr()
    assert run("otsu", "--input", images, "--output", out, "--fill-holes") == 1
    assert "made with the same parameters" in capsys.readouterr().err
    assert (out / "case0.nii.gz").stat().st_mtime_ns == stamp  # nothing rewritten
    assert run("otsu", "--input", images, "--output", out, "--fill-holes", "--overwrite") == 0
    assert json.loads((out / "case0.json").read_text())["parameters"]["fill_holes"] is True


def test_the_resolved_config_reproduces_the_run(phantoms, tmp_path):
    images, _ = phantoms
    first, second = tmp_path / "first", tmp_path / "second"
    args = ["--input", images / "case1.nii.gz", "--keep", "1,2", "--smooth", "1", "--fill-holes"]
    assert run("kmeans", *args, "--output", first) == 0
    resolved = first / "classic_config.yaml"
    assert (
        run("kmeans", "--input", images / "case1.nii.gz", "--output", second, "--config", resolved)
        == 0
    )
    a, b = (np.asarray(nib.load(d / "case1.nii.gz").dataobj) for d in (first, second))
    np.testing.assert_array_equal(a, b)
    assert a.any()


def test_a_method_failure_names_the_scan(phantoms, tmp_path, capsys):
    """A method's own error (no contrast for Otsu) is reported with the file it happened on."""
    images, _ = phantoms
    write_nifti(np.full((8, 8, 6), 40, np.int16), np.eye(4), images / "flat.nii.gz")
    out = tmp_path / "out"
    assert run("otsu", "--input", images, "--output", out) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert [f["case"] for f in summary["failures"]] == ["flat"]
    error = summary["failures"][0]["error"]
    assert error.startswith(str(images / "flat.nii.gz") + ": otsu: expected at least two")
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 1}
    assert not (out / "flat.nii.gz").exists() and not (out / "flat.json").exists()
