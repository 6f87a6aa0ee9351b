"""A file of a DICOM series that cannot be used is named, never dropped; junk is skipped aloud."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from io_test_helpers import axcodes_affine, random_volume, tree_digest
from pydicom.fileset import FileSet

from medseg.errors import MedsegError
from medseg.io import list_series, load_volume, write_dicom_series

SHAPE = (6, 5, 7)


def _series(folder: Path, rng: np.random.Generator) -> list[Path]:
    """Seven axial slices ``s0.dcm``..``s6.dcm``, in slice (k) order."""
    vol = random_volume(axcodes_affine("LPS", (1.0, 1.0, 2.0), (0, 0, 0)), SHAPE, rng, 0, 99)
    return write_dicom_series(vol, folder, file_names=[f"s{k}.dcm" for k in range(SHAPE[2])])


def _pixel_data_offset(path: Path) -> int:
    return path.read_bytes().index(b"\xe0\x7f\x10\x00")  # (7FE0,0010) Pixel Data


# Cuts of the *last* slice: a cut first or last slice leaves no gap, so before the fix the
# series came out one slice short (6 slices, exit code 0). "header" cuts keep the preamble.
CUTS = {
    "zero bytes": (lambda p: 0, "an empty file"),
    "10 bytes": (lambda p: 10, "no DICOM preamble"),
    "preamble only": (lambda p: 132, "without a SeriesInstanceUID"),
    "header cut before the series UID": (lambda p: 400, "without a SeriesInstanceUID"),
    "cut inside an element header": (lambda p: _pixel_data_offset(p) + 8, "DICM preamble"),
}


@pytest.mark.parametrize("cut", sorted(CUTS))
def test_truncated_end_slice_is_named_not_dropped(tmp_path: Path, rng, cut: str) -> None:
    files = _series(tmp_path, rng)
    where, why = CUTS[cut]
    data = files[-1].read_bytes()
    files[-1].write_bytes(data[: where(files[-1])])
    before = tree_digest(tmp_path)
    with pytest.raises(MedsegError, match=why) as err:
        load_volume(tmp_path)
    assert err.value.path == str(files[-1])
    assert "never dropped silently" in str(err.value)
    assert tree_digest(tmp_path) == before


def test_file_carrying_the_series_uid_without_preamble_is_named(tmp_path: Path, rng) -> None:
    files = _series(tmp_path, rng)
    uid = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
    renamed = tmp_path / "IM0007"  # no .dcm suffix: only its bytes say it belongs
    renamed.write_bytes(files[-1].read_bytes()[132:])  # the dataset without preamble/meta
    files[-1].unlink()
    with pytest.raises(MedsegError, match=f"carries SeriesInstanceUID {uid}") as err:
        load_volume(tmp_path)
    assert err.value.path == str(renamed)


def test_jpeg_named_dcm_in_a_series_is_named(tmp_path: Path, rng) -> None:
    _series(tmp_path, rng)
    fake = tmp_path / "s7.dcm"
    fake.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(300))
    with pytest.raises(MedsegError, match="named as a DICOM file but is not DICOM: a JPEG") as err:
        load_volume(tmp_path)
    assert err.value.path == str(fake)


@pytest.mark.parametrize("damage", ["no pixel data", "short pixel data"])
def test_undecodable_middle_slice_names_its_file(tmp_path: Path, rng, damage: str) -> None:
    files = _series(tmp_path, rng)
    if damage == "no pixel data":
        ds = pydicom.dcmread(files[3])
        del ds.PixelData
        ds.save_as(files[3])
    else:
        files[3].write_bytes(files[3].read_bytes()[:-10])
    with pytest.raises(MedsegError, match=r"cannot decode the pixel data of s3\.dcm") as err:
        load_volume(tmp_path)
    assert err.value.path == str(files[3])


def test_junk_is_skipped_with_a_warning_naming_it(tmp_path: Path, rng, caplog) -> None:
    _series(tmp_path, rng)
    (tmp_path / "README.txt").write_text("exported by PACS")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    (tmp_path / "Thumbs.db").write_bytes(bytes(512))
    with caplog.at_level(logging.WARNING, logger="medseg"):
        vol = load_volume(tmp_path)
    assert vol.array.shape == SHAPE
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(all(n in m for n in ("README.txt", ".DS_Store", "Thumbs.db")) for m in warned)


def test_dicomdir_only_folder_says_the_images_are_missing(tmp_path: Path, rng) -> None:
    files = _series(tmp_path / "export", rng)
    disc = FileSet()
    for f in files:
        ds = pydicom.dcmread(f)
        ds.StudyID = "1"  # the STUDY record needs it
        disc.add(ds)
    disc.write(tmp_path / "disc")
    assert len(list_series(tmp_path / "disc", recursive=True)) == 1  # the disc as written
    for sub in (tmp_path / "disc").iterdir():
        if sub.is_dir():
            shutil.rmtree(sub)  # only DICOMDIR copied
    with pytest.raises(MedsegError, match="expected the image files its DICOMDIR indexes") as err:
        load_volume(tmp_path / "disc")
    assert err.value.path == str(tmp_path / "disc")


def test_listing_warns_about_a_broken_file(tmp_path: Path, rng, caplog) -> None:
    files = _series(tmp_path, rng)
    files[0].write_bytes(files[0].read_bytes()[:400])
    with caplog.at_level(logging.WARNING, logger="medseg"):
        infos = list_series(tmp_path)
    assert [s.n_files for s in infos] == [SHAPE[2] - 1]
    assert any(str(files[0]) in r.getMessage() for r in caplog.records)
