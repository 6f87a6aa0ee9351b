"""Manifest fields for multi-channel cases, DICOM label objects and nnU-Net v2 spellings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medseg.data.manifest import load_manifest
from medseg.errors import MedsegError


def _write(root: Path, doc: dict) -> Path:
    path = root / "dataset.json"
    path.write_text(json.dumps(doc))
    return path


def test_channel_lists_ids_series_and_label_map(tmp_path: Path) -> None:
    doc = {
        "channel_names": {"0": "CT", "1": "PET"},  # nnU-Net v2 spelling
        "labels": {"background": 0, "tumour": 1},  # nnU-Net v2: name -> value
        "label_map": {"GTV*": 1},
        "training": [
            {
                "id": "p1",
                "image": ["p1/ct", "p1/pet.nii.gz"],
                "label": "p1/rs.dcm",
                "series": ["1.2.3", None],
            },
            {
                "image": ["A/CT.nii.gz", "A/PET.nii.gz"],
                "label": "A/l.nii.gz",
                "label_map": {"re:^gtv_.*$": 1},
            },
            {"image": ["B/CT.nii.gz", "B/PET.nii.gz"], "label": "B/l.nii.gz"},
        ],
        "test": [["C/CT.nii.gz", "C/PET.nii.gz"]],
    }
    m = load_manifest(_write(tmp_path, doc), tmp_path)
    assert m.modality == {0: "CT", 1: "PET"} and m.n_channels == 2
    assert m.labels == {0: "background", 1: "tumour"}
    p1, a, b = m.training
    assert p1.case_id == "p1" and p1.images == (tmp_path / "p1/ct", tmp_path / "p1/pet.nii.gz")
    assert p1.series == ("1.2.3", None) and p1.label_map == (("GTV*", 1),)
    assert a.label_map == (("re:^gtv_.*$", 1),)  # the case's own map wins
    # ids that collide ("CT") fall back to the folder name
    assert (a.case_id, b.case_id, m.test[0].case_id) == ("A", "B", "C")
    assert m.test[0].extra_images == (tmp_path / "C/PET.nii.gz",)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d.__setitem__("label_map", {"GTV": 0}),
            "label_map['GTV']: expected a label value >= 1",
        ),
        (
            lambda d: d["training"][0].__setitem__("image", []),
            "training[0].image: expected one path per channel",
        ),
        (
            lambda d: d["training"][0].__setitem__("image", ["a.nii.gz", 3]),
            "training[0].image[1]: expected a string path",
        ),
        (
            lambda d: d["training"][0].__setitem__("series", ["1", "2", "3"]),
            "training[0].series: expected a series UID",
        ),
        (lambda d: d.pop("modality"), "missing required key(s) ['modality']"),
    ],
)
def test_bad_channel_fields_name_the_key(tmp_path: Path, mutate, expected: str) -> None:
    doc = {
        "modality": {"0": "CT", "1": "PET"},
        "labels": {"0": "background", "1": "tumour"},
        "training": [{"image": ["a.nii.gz", "b.nii.gz"], "label": "l.nii.gz"}],
    }
    mutate(doc)
    with pytest.raises(MedsegError) as err:
        load_manifest(_write(tmp_path, doc), tmp_path)
    assert expected in str(err.value) and "dataset.json" in str(err.value)


def test_channel_paths_outside_the_root_are_refused(tmp_path: Path) -> None:
    doc = {
        "modality": {"0": "CT", "1": "PET"},
        "labels": {"0": "background", "1": "tumour"},
        "training": [{"image": ["a.nii.gz", "../elsewhere/pet.nii.gz"], "label": "l.nii.gz"}],
    }
    with pytest.raises(MedsegError, match=r"training\[0\]\.image: \.\./elsewhere/pet\.nii\.gz"):
        load_manifest(_write(tmp_path, doc), tmp_path)


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"id": "../../evil"}, "training[0].id"),  # predict would write ../../evil.nii.gz
        ({"id": "a/b"}, "training[0].id"),
        ({"id": "..\\x"}, "training[0].id"),
        ({"id": ".."}, "training[0].id"),
        ({"id": " "}, "training[0].id"),
        ({"image": "imgs/.nii.gz"}, "training[0].image (its file name)"),  # derives ""
    ],
)
def test_case_ids_must_be_plain_file_names(tmp_path: Path, fields: dict, key: str) -> None:
    """A case id names the output and cache files: a path in it would write outside them."""
    doc = {
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "tumour"},
        "training": [{"image": "a.nii.gz", "label": "l.nii.gz", **fields}],
    }
    with pytest.raises(MedsegError, match="expected a case id usable as a file name") as err:
        load_manifest(_write(tmp_path, doc), tmp_path)
    assert str(err.value).split(": ", 2)[1] == key and "dataset.json" in str(err.value)
