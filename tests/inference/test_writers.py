"""Inference outputs (probability maps, batch summaries) are written atomically."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from atomic_helpers import (
    DiskFullError,
    break_write,
    folder_state,
    tear_text_writes,
)

from medseg.inference.batch import BatchSummary, CaseResult, write_summary
from medseg.inference.writers import write_probabilities
from medseg.io.volume import Volume


def _probabilities(value: float) -> Volume:
    return Volume(array=np.full((2, 3, 3, 2), value, np.float32), affine=np.eye(4))


@pytest.mark.parametrize("existing", [True, False], ids=["old-file", "no-file"])
@pytest.mark.parametrize("how", ["after-full-write", "half-written"])
def test_failed_probabilities_write_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool, how: str
) -> None:
    path = tmp_path / "case_probabilities.nii.gz"
    if existing:
        write_probabilities(_probabilities(0.25), path)
    before = folder_state(tmp_path)
    break_write(monkeypatch, nib, "save", how, file_arg=1)
    with pytest.raises(DiskFullError):
        write_probabilities(_probabilities(0.75), path)
    assert folder_state(tmp_path) == before
    if existing:
        np.testing.assert_allclose(nib.load(str(path)).get_fdata(), 0.25, atol=1 / 255)


def test_probabilities_mode_follows_umask(tmp_path: Path) -> None:
    original = os.umask(0o022)
    try:
        path = write_probabilities(_probabilities(0.5), tmp_path / "p.nii.gz")
    finally:
        os.umask(original)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def _summary(out: Path, status: str) -> BatchSummary:
    return BatchSummary([CaseResult("case0", "in/case0.nii.gz", status, 1.0)], out, 1.0)


@pytest.mark.parametrize("existing", [True, False], ids=["old-files", "no-files"])
@pytest.mark.parametrize("how", ["torn-write", "serializer-raises"])
def test_failed_summary_write_keeps_old_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool, how: str
) -> None:
    if existing:
        write_summary(_summary(tmp_path, "done"))
    before = folder_state(tmp_path)
    break_write(monkeypatch, json, "dumps", how)
    with pytest.raises(DiskFullError):
        write_summary(_summary(tmp_path, "failed"))
    assert folder_state(tmp_path) == before


def test_failed_summary_csv_write_keeps_old_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_summary(_summary(tmp_path, "done"))
    old_csv = (tmp_path / "summary.csv").read_bytes()
    opened = tear_text_writes(monkeypatch, skip=1)  # summary.json lands, summary.csv tears
    with pytest.raises(DiskFullError):
        write_summary(_summary(tmp_path, "failed"))
    assert opened[-1].name.startswith(".summary.csv.")
    assert (tmp_path / "summary.csv").read_bytes() == old_csv
    assert json.loads((tmp_path / "summary.json").read_text())["counts"]["failed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv", "summary.json"]


def test_volumes_in_mm3_are_voxel_count_times_voxel_volume_exactly() -> None:
    from medseg.inference.writers import mask_volumes_ml, mask_volumes_mm3

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, size=(7, 6, 5)).astype(np.uint8)
    affine = np.array(
        [[0.0, -0.7, 0.1, 5.0], [0.83, 0.0, 0.0, -2.0], [0.0, 0.05, 2.5, 9.0], [0, 0, 0, 1]]
    )
    mask = Volume(labels, affine)
    names = {0: "background", 1: "organ", 2: "core", 3: "absent"}
    mm3, ml = mask_volumes_mm3(mask, names), mask_volumes_ml(mask, names)
    voxel = abs(float(np.linalg.det(affine[:3, :3])))
    for value, name in ((1, "organ"), (2, "core"), (3, "absent")):
        assert mm3[name] == int(np.count_nonzero(labels == value)) * voxel  # exact, unrounded
        assert ml[name] == round(mm3[name] / 1000, 4)
    assert set(mm3) == set(ml) == {"organ", "core", "absent"}
