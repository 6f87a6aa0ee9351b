"""Case discovery for multi-channel models: nnU-Net's ``CASE_0000``/``CASE_0001`` naming,
problems per case (missing, extra, doubled channels), one-channel discovery unchanged, manifest
test lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medseg.data.manifest import load_manifest
from medseg.errors import MedsegError
from medseg.inference.batch import channel_series
from medseg.inference.cases import (
    CaseInput,
    check_outputs_apart,
    discover_cases,
    manifest_cases,
)

NAMES = ("CT", "PET")


def touch(path: Path) -> Path:
    """An empty file: discovery goes by names (``.dcm`` marks DICOM), it opens no image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    for rel in (
        "a_0000.nii.gz",
        "a_0001.nii.gz",
        "b_0000.mha",
        "b_0001/slice_1.dcm",  # channel 1 of b is a DICOM series folder
        "b_0001/slice_2.dcm",
        "c_0000.nii.gz",  # channel 1 missing
        "d_0000.nii.gz",
        "d_0001.nii.gz",
        "d_0002.nii.gz",  # one channel too many
        "e.nii.gz",  # no suffix: a 4D NIfTI (checked when read)
        "f.nrrd",  # no suffix and not NIfTI: cannot hold two channels
        "g_0001.nii.gz",  # channel 0 missing
        "h_0000.nii.gz",
        "h_0000.mha",  # channel 0 twice
        "h_0001.nii.gz",
        "notes.txt",
    ):
        touch(root / rel)
    return root


def by_name(cases: list[CaseInput]) -> dict[str, CaseInput]:
    return {c.name: c for c in cases}


def test_channel_files_group_into_cases(folder: Path) -> None:
    cases = discover_cases(folder, n_channels=2, channel_names=NAMES)
    assert [c.name for c in cases] == ["a", "b", "c", "d", "e", "f", "g", "h"]
    got = by_name(cases)
    assert got["a"].paths == (folder / "a_0000.nii.gz", folder / "a_0001.nii.gz")
    assert got["a"].path == folder / "a_0000.nii.gz" and not got["a"].problem
    assert got["b"].paths == (folder / "b_0000.mha", folder / "b_0001") and not got["b"].problem
    assert not got["b"].is_dicom  # channel 0 is a file
    assert got["e"].paths == (folder / "e.nii.gz",) and not got["e"].problem


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("c", ["case c", "c_0000 (CT), c_0001 (PET)", "missing channel c_0001 (PET)"]),
        ("d", ["case d", "extra channel", "d_0002.nii.gz", "model's 2"]),
        ("f", ["case f", "f_0000 (CT), f_0001 (PET)", "4D NIfTI", "without a channel suffix"]),
        ("g", ["case g", "missing channel g_0000 (CT)"]),
        ("h", ["case h", "channel 0 twice", "h_0000.mha", "h_0000.nii.gz"]),
    ],
)
def test_a_bad_case_carries_its_problem(folder: Path, name: str, says: list[str]) -> None:
    problem = by_name(discover_cases(folder, n_channels=2, channel_names=NAMES))[name].problem
    for text in says:
        assert text in problem, problem


def test_one_channel_discovery_is_unchanged(folder: Path) -> None:
    """A one-channel model keeps every stem, ``_0000`` included (nnU-Net would strip it)."""
    cases = discover_cases(folder)
    stems = {"a_0000", "a_0001", "b_0000", "b_0001", "c_0000", "d_0000", "d_0001", "d_0002"}
    assert {c.name for c in cases} == stems | {"e", "f", "g_0001", "h_0000", "h_0001"}
    assert all(len(c.paths) == 1 and c.paths[0] == c.path and not c.problem for c in cases)
    assert by_name(cases)["b_0001"].is_dicom


def test_a_single_channel_input_brings_its_siblings(folder: Path) -> None:
    (case,) = discover_cases(folder / "a_0001.nii.gz", n_channels=2, channel_names=NAMES)
    assert case.name == "a" and case.paths == (folder / "a_0000.nii.gz", folder / "a_0001.nii.gz")
    (dicom,) = discover_cases(folder / "b_0001", n_channels=2)
    assert dicom.name == "b" and dicom.paths == (folder / "b_0000.mha", folder / "b_0001")
    (lone,) = discover_cases(folder / "c_0000.nii.gz", n_channels=2, channel_names=NAMES)
    assert "missing channel c_0001 (PET)" in lone.problem
    (four_d,) = discover_cases(folder / "e.nii.gz", n_channels=2)
    assert four_d.name == "e" and not four_d.problem


def test_dicom_channel_0_and_colliding_names(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for patient in ("p1", "p2"):
        touch(root / patient / "x_0000" / "1.dcm")
        touch(root / patient / "x_0001.nii.gz")
    cases = discover_cases(root, n_channels=2)
    assert [c.name for c in cases] == ["p1_x", "p2_x"]
    assert cases[0].is_dicom and cases[0].path == root / "p1" / "x_0000"
    assert cases[0].paths[1] == root / "p1" / "x_0001.nii.gz"
    assert not any(c.problem for c in cases)
    out = root / "p1" / "out"
    touch(out / "x_0000.nii.gz")
    assert len(discover_cases(root, n_channels=2, exclude=out)) == 2  # the output is skipped


def test_series_of_a_case_then_the_flag_for_channel_0() -> None:
    dicom = CaseInput("a", Path("a_0000"), True, (Path("a_0000"), Path("a_0001")))
    assert channel_series(dicom, "2") == ["2", None]
    listed = CaseInput("a", Path("a0"), True, (Path("a0"), Path("a1")), series=(None, "1.2.3"))
    assert channel_series(listed, "2") == ["2", "1.2.3"]
    own = CaseInput("a", Path("a0"), True, (Path("a0"), Path("a1")), series=("5", "1.2.3"))
    assert channel_series(own, "2") == ["5", "1.2.3"]
    nifti = CaseInput("a", Path("a.nii.gz"), False)
    assert nifti.paths == (Path("a.nii.gz"),) and channel_series(nifti, "2") == [None]


def write_manifest(root: Path, modality: dict[str, str], test: list[object]) -> Path:
    path = root / "dataset.json"
    doc = {"name": "x", "modality": modality, "labels": {"0": "background", "1": "organ"}}
    doc |= {"training": [], "test": test}
    path.write_text(json.dumps(doc))
    return path


def test_manifest_test_list_with_channels_and_series(tmp_path: Path) -> None:
    test = [
        {"id": "p1", "image": ["p1/ct", "p1/pet.nii.gz"], "series": ["2", None]},
        ["p2/ct.nii.gz", "p2/pet.nii.gz"],
        "p3/both.nii.gz",  # one 4D NIfTI
    ]
    m = load_manifest(write_manifest(tmp_path, {"0": "CT", "1": "PET"}, test), tmp_path)
    cases = manifest_cases(m, n_channels=2, channel_names=NAMES)
    assert [c.name for c in cases] == ["p1", "ct", "both"]  # manifest order, its ids
    assert cases[0].paths == (tmp_path / "p1/ct", tmp_path / "p1/pet.nii.gz")
    assert cases[0].series == ("2", None)
    assert cases[1].paths[1] == tmp_path / "p2/pet.nii.gz"
    assert cases[2].paths == (tmp_path / "p3/both.nii.gz",)


@pytest.mark.parametrize(
    ("modality", "test", "says"),
    [
        ({"0": "CT"}, ["a.nii.gz"], ["takes 2 input channel(s) (CT, PET)", "found 1 (CT)"]),
        ({"0": "PET", "1": "CT"}, [["a", "b"]], ["model's order (CT, PET)", "PET, CT"]),
        ({"0": "CT", "1": "PET"}, [], ["'test' list"]),
        (
            {"0": "CT", "1": "PET"},
            [{"id": "z", "image": ["a", "b"]}, {"id": "z", "image": ["c", "d"]}],
            ["unique test case ids", "['z']"],
        ),
    ],
)
def test_manifest_refusals_name_the_manifest(
    tmp_path: Path, modality: dict[str, str], test: list[object], says: list[str]
) -> None:
    m = load_manifest(write_manifest(tmp_path, modality, test), tmp_path)
    with pytest.raises(MedsegError) as info:
        manifest_cases(m, n_channels=2, channel_names=NAMES)
    assert info.value.path == str(tmp_path / "dataset.json")
    for text in says:
        assert text in info.value.message, info.value.message


def test_outputs_that_would_overwrite_an_input_are_refused(tmp_path: Path) -> None:
    ct = touch(tmp_path / "imagesTs" / "p1.nii.gz")
    case = CaseInput("p1", ct, False, (ct, tmp_path / "imagesTs" / "p1_pet.nii.gz"))
    check_outputs_apart([case], tmp_path / "preds")  # apart: fine
    check_outputs_apart([CaseInput("other", ct, False)], tmp_path / "imagesTs")  # no clash
    with pytest.raises(MedsegError, match="p1's input") as info:
        check_outputs_apart([case], tmp_path / "imagesTs")  # would write imagesTs/p1.nii.gz
    assert info.value.path == str(tmp_path / "imagesTs")
    dicom = CaseInput("p2", tmp_path / "p2_ct", True, (tmp_path / "p2_ct",))
    (tmp_path / "p2_ct").mkdir()
    with pytest.raises(MedsegError, match="p2's input"):
        check_outputs_apart([dicom], tmp_path / "p2_ct" / "out")
