"""Manifest loading and validation: every problem reported at once, each with its file."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.data.manifest import case_id_from_path, load_manifest
from medseg.data.validation import validate_manifest
from medseg.errors import MedsegError


def _doc(root: Path) -> dict:
    return json.loads((root / "dataset.json").read_text())


def _write(root: Path, doc: dict, name: str = "manifest.json") -> Path:
    path = root / name
    path.write_text(json.dumps(doc))
    return path


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def test_clean_cohort_has_no_problems(cohort: Path) -> None:
    manifest = load_manifest(cohort / "dataset.json", cohort)
    assert [c.case_id for c in manifest.training] == [f"phantom_{i:03d}" for i in range(4)]
    assert manifest.modality == {0: "CT"} and manifest.labels[5] == "lesion"
    assert manifest.training[0].image == cohort / "imagesTr" / "phantom_000.nii.gz"
    report = validate_manifest(manifest)
    assert report.ok, report.problems
    assert report.label_values_found == {v: 4 for v in range(6)}
    report.raise_if_failed()


def _break_cohort(cohort: Path) -> dict:
    """Damage a copy of the cohort in five ways; return the manifest document."""
    lab = cohort / "labelsTr"
    img1 = nib.load(lab / "phantom_001.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((24, 24, 11), np.uint8), img1.affine), lab / "shape.nii.gz")
    img2 = nib.load(lab / "phantom_002.nii.gz")
    shifted = img2.affine.copy()
    shifted[0, 3] += 2.0
    nib.save(nib.Nifti1Image(np.asarray(img2.dataobj), shifted), lab / "shifted.nii.gz")
    img3 = nib.load(lab / "phantom_003.nii.gz")
    seven = np.asarray(img3.dataobj).copy()
    seven[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(seven, img3.affine), lab / "seven.nii.gz")
    (lab / "text.nii.gz").write_text("not a nifti")
    doc = _doc(cohort)
    t = doc["training"]
    t[0]["image"] = "./imagesTr/missing.nii.gz"
    t[1]["label"] = "./labelsTr/shape.nii.gz"
    t[2]["label"] = "./labelsTr/shifted.nii.gz"
    t[3]["label"] = "./labelsTr/seven.nii.gz"
    t.append(dict(t[3]))  # duplicate case
    t.append({"image": "./imagesTr/phantom_000.nii.gz", "label": "./labelsTr/text.nii.gz"})
    return doc


def test_every_problem_reported_at_once_with_its_file(cohort: Path) -> None:
    path = _write(cohort, _break_cohort(cohort))
    before = _digests(cohort)
    report = validate_manifest(load_manifest(path, cohort))
    assert _digests(cohort) == before  # inputs untouched
    by_message = {str(p) for p in report.problems}
    lab = cohort / "labelsTr"

    def has(file: Path, *words: str) -> bool:
        return any(s.startswith(f"{file}:") and all(w in s for w in words) for s in by_message)

    assert has(cohort / "imagesTr" / "missing.nii.gz", "[missing]", "not found")
    assert has(lab / "shape.nii.gz", "shape (24, 24, 11)", "(24, 24, 12)")
    assert has(lab / "shifted.nii.gz", "affine", "2 mm")
    assert has(lab / "seven.nii.gz", "[7]", "not named")
    assert has(lab / "text.nii.gz", "unreadable")
    assert has(path, "duplicate case id phantom_003 (2 times)")
    assert has(path, "duplicate path", "seven.nii.gz")
    with pytest.raises(MedsegError) as err:
        report.raise_if_failed()
    assert err.value.path == str(path)
    for file in ("missing.nii.gz", "shape.nii.gz", "shifted.nii.gz", "seven.nii.gz"):
        assert file in str(err.value)


def test_affine_tolerance_and_value_check_switch(cohort: Path) -> None:
    path = _write(cohort, _break_cohort(cohort))
    manifest = load_manifest(path, cohort)
    loose = validate_manifest(manifest, tolerance_mm=2.5, check_values=False, max_workers=1)
    text = "\n".join(map(str, loose.problems))
    assert "shifted.nii.gz" not in text
    assert "seven.nii.gz: [phantom_003] label value" not in text


def test_non_integer_labels_and_multichannel_are_reported(cohort: Path) -> None:
    img = nib.load(cohort / "labelsTr" / "phantom_000.nii.gz")
    frac = np.asarray(img.dataobj).astype(np.float32)
    frac[1, 1, 1] = 0.5
    nib.save(nib.Nifti1Image(frac, img.affine), cohort / "labelsTr" / "frac.nii.gz")
    doc = _doc(cohort)
    doc["training"] = doc["training"][:1]
    doc["training"][0]["label"] = "./labelsTr/frac.nii.gz"
    doc["modality"] = {"0": "T1", "1": "FLAIR"}
    report = validate_manifest(load_manifest(_write(cohort, doc), cohort))
    text = "\n".join(map(str, report.problems))
    assert "non-integer" in text and "0.5" in text
    # two declared channels, one 3D file: read as an MSD 4D NIfTI, which it is not
    assert "expected a 4D NIfTI with 2 channels on its last axis" in text


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.pop("training"), "missing required key(s) ['training']"),
        (
            lambda d: d["training"][3].__setitem__("label", 12),
            "training[3].label: expected a string path, found int 12",
        ),
        (lambda d: d["training"].__setitem__(1, "x.nii.gz"), "training[1]: expected an object"),
        (lambda d: d["training"][0].pop("label"), "training[0]: expected keys 'image' and 'label'"),
        (lambda d: d.__setitem__("labels", {"1": "liver"}), 'labels: expected key "0"'),
        (
            lambda d: d.__setitem__("labels", {"0": "bg", "one": "x"}),
            "labels: expected non-negative integer keys",
        ),
        (lambda d: d.__setitem__("test", [3]), "test[0]: expected an object"),
        (lambda d: d.__setitem__("modality", {"1": "CT"}), "modality: expected channels 0..0"),
    ],
)
def test_malformed_manifest_names_file_and_key(cohort: Path, mutate, expected: str) -> None:
    doc = _doc(cohort)
    mutate(doc)
    path = _write(cohort, doc)
    with pytest.raises(MedsegError) as err:
        load_manifest(path, cohort)
    assert err.value.path == str(path)
    assert expected in err.value.message


def test_invalid_json_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x",\n "training": [}')
    with pytest.raises(MedsegError, match=r"bad.json: not valid JSON.*line 2"):
        load_manifest(bad, tmp_path)
    with pytest.raises(MedsegError, match="manifest not found"):
        load_manifest(tmp_path / "nope.json", tmp_path)
    bad.write_text("[]")
    with pytest.raises(MedsegError, match="expected a JSON object"):
        load_manifest(bad, tmp_path)
    with pytest.raises(MedsegError, match="not a folder"):
        load_manifest(bad, tmp_path / "absent")


def test_msd_test_list_and_absolute_paths(cohort: Path) -> None:
    doc = _doc(cohort)
    doc["test"] = [
        "./imagesTr/phantom_000.nii.gz",
        {"image": str(cohort / "imagesTr" / "phantom_001.nii.gz")},
    ]
    doc["training"] = doc["training"][2:]
    manifest = load_manifest(_write(cohort, doc), cohort)
    assert [(c.case_id, c.label) for c in manifest.test] == [
        ("phantom_000", None),
        ("phantom_001", None),
    ]
    assert manifest.test[1].image == cohort / "imagesTr" / "phantom_001.nii.gz"
    assert validate_manifest(manifest).ok


@pytest.mark.parametrize(
    ("name", "case_id"),
    [
        ("./imagesTr/hippocampus_001.nii.gz", "hippocampus_001"),
        ("a/b.v2.mha", "b.v2"),
        ("dicom/ct01", "ct01"),
    ],
)
def test_case_id_from_path(name: str, case_id: str) -> None:
    assert case_id_from_path(name) == case_id


@pytest.mark.realdata
def test_real_hippocampus_manifest_validates(shared_data: Path) -> None:
    root = shared_data / "msd_hippocampus"
    manifest_path = Path(__file__).resolve().parents[2] / "data_manifests" / "msd_hippocampus.json"
    manifest = load_manifest(manifest_path, root)
    assert len(manifest.training) == 208 and not manifest.test
    assert manifest.labels == {0: "background", 1: "Anterior", 2: "Posterior"}
    start = time.perf_counter()
    report = validate_manifest(manifest)
    elapsed = time.perf_counter() - start
    assert report.ok, report.problems[:5]
    assert report.label_values_found == {0: 208, 1: 208, 2: 208}
    assert elapsed < 20.0, f"validating 208 cases took {elapsed:.1f} s"


def _outside_root_cohort(cohort: Path) -> tuple[Path, Path]:
    """A manifest whose paths escape the data root three ways; returns (manifest, outside)."""
    outside = cohort.parent / "elsewhere"
    outside.mkdir()
    (outside / "secret.nii.gz").write_bytes(
        (cohort / "imagesTr" / "phantom_000.nii.gz").read_bytes()
    )
    (cohort / "imagesTr" / "link.nii.gz").symlink_to(outside / "secret.nii.gz")
    doc = _doc(cohort)
    t = doc["training"]
    t[0]["image"] = "../elsewhere/secret.nii.gz"
    t[1]["label"] = str(outside / "secret.nii.gz")
    t[2]["image"] = "./imagesTr/link.nii.gz"
    doc["test"] = ["./imagesTr/../../elsewhere/secret.nii.gz"]
    return _write(cohort, doc), outside


def test_paths_outside_the_data_root_are_refused_all_at_once(cohort: Path) -> None:
    # they used to be accepted (and read) by validate-manifest and training
    path, outside = _outside_root_cohort(cohort)
    with pytest.raises(MedsegError) as err:
        load_manifest(path, cohort)
    assert err.value.path == str(path)
    message = err.value.message
    assert "4 path(s) outside the data root" in message and "--allow-outside-root" in message
    assert "[secret] training[0].image: ../elsewhere/secret.nii.gz" in message
    assert f"[phantom_001] training[1].label: {outside / 'secret.nii.gz'}" in message
    assert "[link] training[2].image: ./imagesTr/link.nii.gz (a symlink to" in message
    assert "[secret] test[0].image: ./imagesTr/../../elsewhere/secret.nii.gz" in message
    manifest = load_manifest(path, cohort, allow_outside_root=True)
    assert manifest.training[0].image == cohort / "../elsewhere/secret.nii.gz"


def test_inside_paths_are_accepted_however_spelt(cohort: Path) -> None:
    doc = _doc(cohort)
    doc["training"][0]["image"] = "./imagesTr/../imagesTr/phantom_000.nii.gz"
    doc["training"][1]["label"] = str(cohort / "labelsTr" / "phantom_001.nii.gz")
    link = cohort.parent / "link_to_cohort"
    link.symlink_to(cohort)  # a data root reached through a symlink
    manifest = load_manifest(_write(cohort, doc), link)
    assert validate_manifest(manifest).ok


def test_byte_order_mark_is_accepted_and_trailing_comma_explained(cohort: Path) -> None:
    text = (cohort / "dataset.json").read_text(encoding="utf-8")
    bom = cohort / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert len(load_manifest(bom, cohort).training) == 4
    comma = cohort / "comma.json"
    comma.write_text(text.replace('"test": []', '"test": [],'))
    with pytest.raises(MedsegError, match=r"not valid JSON.*a trailing comma before it"):
        load_manifest(comma, cohort)


def test_zero_training_cases_is_a_problem(cohort: Path) -> None:
    doc = _doc(cohort)
    doc["test"] = [doc["training"][0]["image"]]
    doc["training"] = []
    report = validate_manifest(load_manifest(_write(cohort, doc), cohort))
    assert [p.message for p in report.problems] == ["expected labelled training cases, found none"]
