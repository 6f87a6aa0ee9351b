"""``medseg convert`` and ``medseg info`` through the real entry point ``medseg.cli.main``."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from io_test_helpers import oblique_affine, random_volume, sitk_reference

from medseg.cli import main
from medseg.io import load_volume, write_dicom_series

MR_T1POST = "dicom/mr_brain_multiseries/11-T1post-18670"


def test_convert_dicom_series_keeps_geometry_and_values(tmp_path, rng):
    vol = random_volume(
        oblique_affine((5.0, 10.0, -20.0), (0.7, 1.3, 3.0), (1, 2, 3)), (5, 6, 4), rng, -1000, 1000
    )
    write_dicom_series(vol, tmp_path / "series", rng=rng)
    out = tmp_path / "out.nii.gz"
    assert main(["convert", str(tmp_path / "series"), str(out)]) == 0
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.int16
    np.testing.assert_allclose(img.get_sform(), vol.affine, atol=1e-5)
    np.testing.assert_allclose(img.get_qform(), vol.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(img.dataobj), vol.array)


def test_convert_refuses_overwrite_without_force(tmp_path, rng, capsys):
    vol = random_volume(np.diag([1.0, 1.0, 2.0, 1.0]), (4, 4, 3), rng, 0, 10)
    write_dicom_series(vol, tmp_path / "s")
    out = tmp_path / "o.nii"
    out.write_bytes(b"precious")
    assert main(["convert", str(tmp_path / "s"), str(out)]) == 1
    err = capsys.readouterr().err
    assert "--force" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b"precious"
    assert main(["convert", str(tmp_path / "s"), str(out), "--force"]) == 0
    assert load_volume(out).array.shape == (4, 4, 3)


def test_errors_exit_1_with_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["info", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no DICOM files found" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert main(["convert", str(tmp_path / "empty"), str(tmp_path / "x.nrrd")]) == 1
    assert ".nii" in capsys.readouterr().err


def test_info_json_on_nifti(tmp_path, capsys):
    from medseg.io import write_nifti

    path = write_nifti(
        np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        np.diag([-0.5, 0.5, 2.0, 1.0]),
        tmp_path / "v.nii.gz",
    )
    assert main(["info", str(path), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    vol = payload["volume"]
    assert vol["shape"] == [2, 3, 4] and vol["axcodes"] == "LAS"
    assert vol["spacing_mm"] == [0.5, 0.5, 2.0]
    assert vol["intensity"] == {"min": 0.0, "max": 23.0, "mean": 11.5}


@pytest.mark.realdata
def test_convert_real_ct_matches_simpleitk(shared_data, tmp_path):
    folder = shared_data / "dicom/ct_abdomen_siemens_20slices"
    out = tmp_path / "ct.nii.gz"
    assert main(["convert", str(folder), str(out)]) == 0
    ref = sitk_reference(folder)
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-4)
    np.testing.assert_allclose(img.get_qform(), ref.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(img.dataobj), ref.array)


@pytest.mark.realdata
def test_info_real_mr_series(shared_data, capsys):
    assert main(["info", str(shared_data / MR_T1POST)]) == 0
    out = capsys.readouterr().out
    assert "280 x 320 x 22" in out and "0.6875 x 0.6875 x 6.5 mm" in out
    assert "MR" in out and "T1post" in out and "LPS" in out
    assert main(["info", str(shared_data / MR_T1POST), "--json"]) == 0
    vol = json.loads(capsys.readouterr().out)["volume"]
    assert vol["shape"] == [280, 320, 22] and vol["modality"] == "MR"
    assert vol["dtype"] == "uint16"


@pytest.mark.realdata
def test_info_study_lists_series_and_selects_by_number(shared_data, capsys):
    root = shared_data / "dicom/mr_brain_multiseries"
    assert main(["info", str(root), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["volume"] is None and len(payload["series"]) == 5
    t2 = next(s for s in payload["series"] if s["description"] == "T2_reg")
    assert main(["info", str(root), "--series", str(t2["number"]), "--json"]) == 0
    vol = json.loads(capsys.readouterr().out)["volume"]
    assert vol["description"] == "T2_reg" and vol["shape"] == [280, 320, 22]


def test_paths_with_spaces_and_unicode_work(tmp_path, rng, capsys):
    vol = random_volume(np.diag([0.8, 0.8, 2.0, 1.0]), (4, 5, 3), rng, 0, 100)
    series = tmp_path / "Patient Ünïcødé 患者" / "CT Abdomen (1)"
    write_dicom_series(vol, series)
    out = tmp_path / "out folder" / "résultat 1.nii.gz"
    assert main(["convert", str(series), str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    np.testing.assert_array_equal(load_volume(out).array, vol.array)
    assert main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["volume"]["shape"] == [4, 5, 3]


def test_info_on_a_study_folder_with_one_series_below_describes_it(tmp_path, rng, capsys):
    vol = random_volume(np.diag([1.0, 1.0, 2.0, 1.0]), (4, 4, 3), rng, 0, 10)
    write_dicom_series(vol, tmp_path / "export" / "DICOM" / "S0001", series_description="T1w")
    (tmp_path / "export" / "autorun.inf").write_text("[autorun]")
    assert main(["info", str(tmp_path / "export")]) == 0
    out = capsys.readouterr().out
    assert "S0001" in out and "T1w" in out and "4 x 4 x 3" in out
