"""``medseg predict --format nifti,dicom-seg,rtstruct``: DICOM outputs on the case's series or
on ``--reference``, read back independently; failures per case, empty masks, resume."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from tiny_run import SHAPE, SPACING, make_tiny_run

from medseg.cli import main
from medseg.data.cohorts import write_volume_as_dicom
from medseg.data.synthetic import CT_LABELS, make_ct_phantom
from medseg.io import Volume, load_volume, write_nifti
from medseg.io.rtstruct import read_rtstruct

FORMATS = ["--format", "nifti,dicom-seg,rtstruct", "--device", "cpu"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return make_tiny_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``caseA``, ``caseB``: CT phantoms as DICOM series (shuffled file names); ``air``: an
    all-air series the model finds nothing in."""
    root = tmp_path_factory.mktemp("series")
    rng = np.random.default_rng(11)
    for name, seed in (("caseA", 3), ("caseB", 4)):
        img, _ = make_ct_phantom(SHAPE, SPACING, seed=seed)
        write_volume_as_dicom(img, root / name, rng=rng)
    air = rng.normal(-1000, 5, SHAPE).astype(np.int16)
    write_volume_as_dicom(Volume(air, img.affine), root / "air", rng=rng)
    return root


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def uids_in_k_order(folder: Path) -> list[str]:
    """SOPInstanceUIDs sorted along the slice normal, from the headers alone."""
    rows = []
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        pos = np.asarray(ds.ImagePositionPatient, float) @ np.cross(iop[:3], iop[3:])
        rows.append((float(pos), str(ds.SOPInstanceUID)))
    return [uid for _, uid in sorted(rows)]


def seg_as_labels(path: Path, folder: Path) -> np.ndarray:
    """highdicom's reading of a SEG as label values on the series grid ``(I, J, K)``."""
    seg = hd.seg.segread(path)
    frames = seg.get_pixels_by_source_instance(
        uids_in_k_order(folder), combine_segments=True, assert_missing_frames_are_empty=True
    )  # (K, rows, columns) of segment numbers
    value = {name: v for v, name in CT_LABELS.items()}
    lut = np.zeros(len(seg.SegmentSequence) + 1, np.uint8)
    for s in seg.SegmentSequence:
        lut[int(s.SegmentNumber)] = value[str(s.SegmentLabel)]
    return lut[frames.transpose(2, 1, 0)]


def roi_names(path: Path) -> list[str]:
    return [str(r.ROIName) for r in pydicom.dcmread(path).StructureSetROISequence]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.sum(a & b)) / max(1, int(a.sum() + b.sum()))


def dciodvfy_errors(path: Path) -> list[str]:
    exe = shutil.which("dciodvfy")
    assert exe is not None
    run = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    return [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("Error")]


def predict(run_dir: Path, source: Path, out: Path, *extra: str) -> int:
    return main(["predict", "--model", str(run_dir), "--input", str(source), "--output", str(out),
                 *FORMATS, *extra])  # fmt: skip


def check_case(out: Path, name: str, folder: Path) -> None:
    """SEG == NIfTI mask, RTSTRUCT ROIs (one per lesion instance) Dice >= 0.97, tables."""
    mask_img = nib.load(out / f"{name}.nii.gz")
    mask = np.asarray(mask_img.dataobj).astype(np.uint8)
    ref = load_volume(folder)
    assert np.allclose(mask_img.affine, ref.affine)
    assert mask.any()
    assert np.array_equal(seg_as_labels(out / f"{name}_seg.dcm", folder), mask)
    inst_img = nib.load(out / f"{name}_instances.nii.gz")
    inst = np.asarray(inst_img.dataobj)
    assert inst_img.get_data_dtype() == np.uint16 and np.allclose(inst_img.affine, ref.affine)
    assert np.array_equal(inst > 0, np.isin(mask, (1, 5)))  # lesion (5) and liver (1) split
    rows = json.loads((out / f"{name}_lesions.json").read_text())["lesions"]
    ids = sorted(int(i) for i in np.unique(inst) if i)
    assert [r["id"] for r in rows] == ids and len(ids) >= 1
    assert [r["voxels"] for r in rows] == [int((inst == i).sum()) for i in ids]
    assert all(np.all(mask[inst == r["id"]] == r["label"]) for r in rows)
    rt = out / f"{name}_rtstruct.dcm"
    expected = {f"{r['label_name']}_{r['id']}": inst == r["id"] for r in rows}
    expected |= {CT_LABELS[v]: mask == v for v in (2, 3, 4) if (mask == v).any()}
    assert sorted(roi_names(rt)) == sorted(expected)
    for roi, want in expected.items():
        got = read_rtstruct(rt, ref, {roi: 1}).array.astype(bool)
        assert dice(got, want) >= 0.97, roi
    side = json.loads((out / f"{name}.json").read_text())
    written = sorted(p.name for p in out.glob(f"{name}*") if p.name != f"{name}.json")
    assert sorted(side["files"]) == written and len(written) == 6
    assert side["dicom_reference"] == str(folder)
    assert side["lesions"]["n_lesions"] == len(ids) and side["lesions"]["connectivity"] == 26
    if shutil.which("dciodvfy"):
        assert dciodvfy_errors(out / f"{name}_seg.dcm") == []
        assert dciodvfy_errors(rt) == []


def test_dicom_cases_get_seg_rtstruct_and_lesions_nifti_case_fails_alone(
    run_dir: Path, series: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src = tmp_path / "in"
    for name in ("caseA", "caseB"):
        shutil.copytree(series / name, src / name)
    img, _ = make_ct_phantom(SHAPE, SPACING, seed=5)
    write_nifti(img.array, img.affine, src / "caseN.nii.gz")
    before = tree_hashes(src)
    out = tmp_path / "out"
    assert predict(run_dir, src, out, "--instances", "5,liver") == 1  # caseN fails
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 1}
    error = summary["failures"][0]["error"]
    assert summary["failures"][0]["case"] == "caseN" and "caseN" in error
    assert "--reference" in error and "caseN" in capsys.readouterr().err
    assert not list(out.glob("caseN*"))  # refused before anything was written
    for name in ("caseA", "caseB"):
        check_case(out, name, src / name)
    folder = json.loads((out / "lesions.json").read_text())
    assert folder["cases"] == {
        n: len(json.loads((out / f"{n}_lesions.json").read_text())["lesions"])
        for n in ("caseA", "caseB")
    }
    csv_cases = [ln.split(",")[0] for ln in (out / "lesions.csv").read_text().splitlines()[1:]]
    assert csv_cases.count("caseA") == folder["cases"]["caseA"] and set(csv_cases) == {
        "caseA",
        "caseB",
    }
    assert tree_hashes(src) == before  # inputs untouched
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files

    stamp = (out / "caseA_seg.dcm").stat().st_mtime_ns
    assert predict(run_dir, src, out, "--instances", "5,liver") == 1
    again = json.loads((out / "summary.json").read_text())
    assert again["counts"] == {"done": 0, "skipped": 2, "failed": 1}
    assert (out / "caseA_seg.dcm").stat().st_mtime_ns == stamp
    assert json.loads((out / "lesions.json").read_text())["cases"] == folder["cases"]

    (out / "caseB_rtstruct.dcm").unlink()  # a missing requested output: that case is redone
    assert predict(run_dir, src, out, "--instances", "5,liver") == 1
    redo = json.loads((out / "summary.json").read_text())
    assert [c["status"] for c in redo["cases"]] == ["skipped", "done", "failed"]
    assert (out / "caseB_rtstruct.dcm").is_file()
    assert predict(run_dir, src, out, "--instances", "liver") == 1  # other labels: redone
    assert json.loads((out / "summary.json").read_text())["counts"]["done"] == 2


def test_nifti_cases_with_reference_series_or_per_case_folders(
    run_dir: Path, series: Path, tmp_path: Path
) -> None:
    scan = load_volume(series / "caseA")
    src = tmp_path / "in"
    write_nifti(scan.array, scan.affine, src / "caseA.nii.gz")
    out = tmp_path / "one"
    assert predict(run_dir, src, out, "--reference", str(series / "caseA")) == 0
    mask = np.asarray(nib.load(out / "caseA.nii.gz").dataobj)
    assert np.array_equal(seg_as_labels(out / "caseA_seg.dcm", series / "caseA"), mask)
    seg = pydicom.dcmread(out / "caseA_seg.dcm")
    source = pydicom.dcmread(next((series / "caseA").iterdir()), stop_before_pixels=True)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.PatientID == source.PatientID
    # a folder of per-case series: caseA finds refs/caseA/, caseZ has no folder there
    refs = tmp_path / "refs"
    shutil.copytree(series / "caseA", refs / "caseA")
    write_nifti(scan.array, scan.affine, src / "caseZ.nii.gz")
    out = tmp_path / "per_case"
    assert predict(run_dir, src, out, "--reference", str(refs)) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert [(c["name"], c["status"]) for c in summary["cases"]] == [
        ("caseA", "done"),
        ("caseZ", "failed"),
    ]
    assert "caseZ" in summary["failures"][0]["error"]
    assert "--reference" in summary["failures"][0]["error"]
    assert json.loads((out / "caseA.json").read_text())["dicom_reference"] == str(refs / "caseA")


def test_empty_mask_writes_no_dicom_and_is_complete(
    run_dir: Path, series: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert predict(run_dir, series / "air", out, "--instances", "liver") == 0
    side = json.loads((out / "air.json").read_text())
    assert not np.asarray(nib.load(out / "air.nii.gz").dataobj).any()
    assert set(side["omitted"]) == {"dicom-seg", "rtstruct"}
    assert "empty" in side["omitted"]["dicom-seg"] and len(side["warnings"]) == 2
    assert not list(out.glob("*.dcm"))
    assert side["files"] == [
        "air.nii.gz",
        "air_instances.nii.gz",
        "air_lesions.csv",
        "air_lesions.json",
    ]
    assert not np.asarray(nib.load(out / "air_instances.nii.gz").dataobj).any()
    assert len((out / "air_lesions.csv").read_text().splitlines()) == 1  # the header only
    assert json.loads((out / "lesions.json").read_text())["cases"] == {"air": 0}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"][0]["status"] == "done" and summary["cases"][0]["warnings"]
    assert predict(run_dir, series / "air", out, "--instances", "liver") == 0  # complete
    assert json.loads((out / "summary.json").read_text())["counts"]["skipped"] == 1


def test_dicom_only_and_added_formats(run_dir: Path, series: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    base = ["predict", "--model", str(run_dir), "--input", str(series / "caseA"), "--output",
            str(out), "--device", "cpu"]  # fmt: skip
    assert main(base) == 0
    assert sorted(p.name for p in out.glob("caseA*")) == ["caseA.json", "caseA.nii.gz"]
    assert main([*base, "--format", "nifti,dicom-seg"]) == 0  # a new format: the case is redone
    assert json.loads((out / "summary.json").read_text())["counts"]["done"] == 1
    assert (out / "caseA_seg.dcm").is_file()
    only = tmp_path / "only"
    assert main([*base[:-3], str(only), "--device", "cpu", "--format", "dicom-seg"]) == 0
    assert sorted(p.name for p in only.glob("caseA*")) == ["caseA.json", "caseA_seg.dcm"]
    assert json.loads((only / "caseA.json").read_text())["mask"] == ""


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--format", "nifti,png"], ["--format", "png"]),
        (["--format", "nifti,nifti"], ["--format", "distinct"]),
        (["--reference", "somewhere"], ["--reference", "dicom-seg"]),
        (["--instances", "0"], ["--instances", "0"]),
    ],
)
def test_bad_output_flags_are_refused_before_any_work(
    flags: list[str], words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    args = ["predict", "--model", str(tmp_path / "no_run"), "--input", str(tmp_path), "--output"]
    assert main([*args, str(out), *flags]) == 1
    err = capsys.readouterr().err
    assert all(w in err for w in words), err
    assert not out.exists()


def test_reference_that_is_no_folder_is_refused(
    run_dir: Path, series: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    missing = tmp_path / "missing"
    assert predict(run_dir, series / "caseA", out, "--reference", str(missing)) == 1
    err = capsys.readouterr().err
    assert "--reference" in err and "missing" in err
    assert not out.exists() or not list(out.iterdir())
