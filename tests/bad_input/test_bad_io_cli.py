"""``medseg convert`` and ``medseg info`` refuse what a hospital data dump holds, cleanly.

One parametrized case per kind of bad input, each through :func:`refusal.assert_clean_refusal`:
exit code 1, the offending file (or folder) named with what was expected and what was found,
no traceback, inputs byte-identical, no output file left. Kinds an earlier version accepted or
crashed on (zero/negative/NaN pixdim, a header larger than its file, RGB24 voxels, a cut DICOM
slice, a slice without pixel data, a .dcm that is a JPEG, converting a file onto itself, an
output below a file or onto a folder) are fixed in ``medseg.io``; the others document refusals
that already were clean. A path with spaces and non-ASCII characters is not bad input: it is a
positive test in ``tests/io/test_io_cli.py``.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from nifti_helpers import patched_nifti
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from refusal import assert_clean_refusal

from medseg.io import Volume, write_dicom_series

RNG_SEED = 2111
SHAPE = (6, 5, 7)

# A builder makes the bad input below tmp_path and returns (input, strings the message names).
Builder = Callable[[Path], tuple[Path, list[str]]]


# --- NIfTI ------------------------------------------------------------------------------------


def _nifti(path: Path, array: np.ndarray, **fields: dict) -> Path:
    """Save ``array`` with 2 mm voxels, then patch raw header fields as a broken tool would."""
    return patched_nifti(path, array, **fields)


def _bytes(name: str, content: bytes) -> Builder:
    def build(tmp: Path) -> tuple[Path, list[str]]:
        path = tmp / name
        path.write_bytes(content)
        return path, [str(path), "cannot read as NIfTI"]

    return build


def _truncated_gz(tmp: Path) -> tuple[Path, list[str]]:
    good = _nifti(tmp / "good.nii.gz", np.arange(4096, dtype=np.float32).reshape(16, 16, 16))
    bad = tmp / "truncated.nii.gz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    good.unlink()
    return bad, [str(bad), "cannot read as NIfTI"]


def _patched(name: str, array: np.ndarray, found: str, **fields: dict) -> Builder:
    def build(tmp: Path) -> tuple[Path, list[str]]:
        path = _nifti(tmp / name, array, **fields)
        return path, [str(path), found]

    return build


ZEROS = np.zeros((4, 4, 4), np.float32)
RGB = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
NAN = np.ones((5, 5, 5), np.float32)
NAN[1, 2, 3] = np.nan

NIFTI_KINDS: dict[str, Builder] = {
    "zero-byte .nii.gz": _bytes("empty.nii.gz", b""),
    "gzip of garbage named .nii.gz": _bytes(
        "garbage.nii.gz", gzip.compress(np.random.default_rng(RNG_SEED).bytes(4000))
    ),
    "not gzip at all, named .nii.gz": _bytes("plain.nii.gz", b"PACS export log\n" * 50),
    "truncated .nii.gz": _truncated_gz,
    "zero pixdim": _patched("zero_pixdim.nii", ZEROS, "found (2, 0, 2)", pixdim={2: 0.0}),
    "negative pixdim": _patched("neg.nii.gz", ZEROS, "found (-2, 2, 2)", pixdim={1: -2.0}),
    "NaN pixdim": _patched("nan_pixdim.nii.gz", ZEROS, "found (2, 2, nan)", pixdim={3: np.nan}),
    "header dims larger than the .nii": _patched(
        "huge.nii", ZEROS, "file too small for its header", dim={1: 30000, 2: 30000, 3: 30000}
    ),
    "header dims larger than the .nii.gz": _patched(
        "huge.nii.gz", ZEROS, "1032:1", dim={1: 30000, 2: 30000, 3: 30000}
    ),
    "RGB24 voxels": _patched("photo.nii.gz", np.zeros((4, 4, 4), RGB), "found RGB24"),
    "4D time series": _patched("bold.nii.gz", np.zeros((4, 4, 4, 5), np.float32), "found 4D"),
    "2D image": _patched("slice2d.nii.gz", np.zeros((8, 8), np.int16), "found 2D"),
    "NaN voxels": _patched("nan_voxels.nii.gz", NAN, "found 1 NaN"),
}


# --- DICOM ------------------------------------------------------------------------------------


def _series(folder: Path, seed: int = RNG_SEED, prefix: str = "s", **tags: str) -> list[Path]:
    """Seven axial CT slices ``s0.dcm``..``s6.dcm`` (1 x 1 x 2 mm) in slice order."""
    rng = np.random.default_rng(seed)
    vol = Volume(rng.integers(0, 500, SHAPE).astype(np.int16), np.diag([-1.0, -1.0, 2.0, 1.0]))
    names = [f"{prefix}{k}.dcm" for k in range(SHAPE[2])]
    return write_dicom_series(vol, folder, file_names=names, **tags)


def _rewrite(path: Path, **changes: object) -> None:
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path)


def _missing_slice(tmp: Path) -> tuple[Path, list[str]]:
    files = _series(tmp / "series")
    files[3].unlink()
    return tmp / "series", [str(tmp / "series"), "missing slice(s)", "s2.dcm", "s4.dcm"]


def _two_series(tmp: Path) -> tuple[Path, list[str]]:
    folder = tmp / "mixed"
    _series(folder, series_uid=generate_uid(), series_description="arterial")
    _series(folder, seed=5, prefix="v", series_uid=generate_uid(), series_description="venous")
    return folder, [str(folder), "arterial", "venous", "--series"]


def _mixed_orientation(tmp: Path) -> tuple[Path, list[str]]:
    files = _series(tmp / "series")
    _rewrite(files[4], ImageOrientationPatient=[1, 0, 0, 0, 0.8, 0.6])
    return tmp / "series", [str(tmp / "series"), "mixed slice orientations", "s4.dcm"]


def _mixed_size(tmp: Path) -> tuple[Path, list[str]]:
    files = _series(tmp / "series")
    _rewrite(files[2], Rows=4, Columns=7, PixelData=bytes(4 * 7 * 2))
    return tmp / "series", [str(tmp / "series"), "mixed slice sizes", "s2.dcm"]


def _dicomdir_only(tmp: Path) -> tuple[Path, list[str]]:
    disc = FileSet()
    for path in _series(tmp / "export"):
        ds = pydicom.dcmread(path)
        ds.StudyID = "1"
        disc.add(ds)
    disc.write(tmp / "disc")
    for sub in (tmp / "disc").iterdir():
        if sub.is_dir():
            for f in sorted(sub.rglob("*"), reverse=True):
                f.unlink() if f.is_file() else f.rmdir()
            sub.rmdir()
    return tmp / "disc", [str(tmp / "disc"), "found only the DICOMDIR"]


def _structure_set_only(tmp: Path) -> tuple[Path, list[str]]:
    folder = tmp / "rtstruct"
    folder.mkdir()
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"  # RT Structure Set Storage
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "RTSTRUCT"
    ds.SeriesDescription = "contours"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(folder / "RS.dcm", enforce_file_format=True)
    return folder, [str(folder), "RTSTRUCT", "not an image series"]


def _jpeg_only(tmp: Path) -> tuple[Path, list[str]]:
    folder = tmp / "photos"
    folder.mkdir()
    (folder / "IMG_0001.dcm").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(400))
    return folder, [str(folder), "IMG_0001.dcm", "a JPEG image"]


def _jpeg_in_series(tmp: Path) -> tuple[Path, list[str]]:
    _series(tmp / "series")
    fake = tmp / "series" / "s7.dcm"
    fake.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(400))
    return tmp / "series", [str(fake), "a JPEG image"]


def _cut_last_slice(tmp: Path) -> tuple[Path, list[str]]:
    files = _series(tmp / "series")
    files[-1].write_bytes(files[-1].read_bytes()[:400])  # header cut before its series UID
    return tmp / "series", [str(files[-1]), "without a SeriesInstanceUID"]


def _no_pixel_data(tmp: Path) -> tuple[Path, list[str]]:
    files = _series(tmp / "series")
    ds = pydicom.dcmread(files[3])
    del ds.PixelData
    ds.save_as(files[3])
    return tmp / "series", [str(files[3]), "cannot decode the pixel data of s3.dcm"]


def _empty_folder(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "empty").mkdir()
    return tmp / "empty", [str(tmp / "empty"), "no DICOM files found"]


DICOM_KINDS: dict[str, Builder] = {
    "DICOM series with a missing slice": _missing_slice,
    "DICOM series with mixed orientations": _mixed_orientation,
    "DICOM series with mixed rows x columns": _mixed_size,
    "DICOMDIR without its images": _dicomdir_only,
    "a JPEG named .dcm alone": _jpeg_only,
    "a JPEG named .dcm in a series": _jpeg_in_series,
    "DICOM slice cut short (the last one)": _cut_last_slice,
    "DICOM slice without pixel data": _no_pixel_data,
    "empty folder": _empty_folder,
}
# `info` lists these (exit 0: nothing to refuse); `convert` has no image to write.
CONVERT_ONLY_KINDS: dict[str, Builder] = {
    "two series in one folder": _two_series,
    "RTSTRUCT alone": _structure_set_only,
}
INPUT_KINDS = {**NIFTI_KINDS, **DICOM_KINDS}
CASES = [(k, c) for k in sorted(INPUT_KINDS) for c in ("convert", "info")]
CASES += [(k, "convert") for k in sorted(CONVERT_ONLY_KINDS)]


@pytest.mark.parametrize(("kind", "command"), CASES)
def test_bad_input_is_refused_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, command: str
) -> None:
    src, names = {**INPUT_KINDS, **CONVERT_ONLY_KINDS}[kind](tmp_path)
    out = tmp_path / "converted" / "scan.nii.gz"
    args = ["convert", str(src), str(out)] if command == "convert" else ["info", str(src)]
    assert_clean_refusal(args, capsys, names=names, inputs=[src], absent=[out, out.parent])


# --- outputs ----------------------------------------------------------------------------------


def _scan(tmp: Path) -> Path:
    return _nifti(tmp / "scan.nii.gz", np.arange(64, dtype=np.int16).reshape(4, 4, 4))


def _onto_itself(tmp: Path) -> tuple[list[str], list[str], list[Path], list[Path]]:
    src = _scan(tmp)
    return [str(src), str(src), "--force"], [str(src), "other than the input"], [src], []


def _onto_a_link(
    kind: str,
) -> Callable[[Path], tuple[list[str], list[str], list[Path], list[Path]]]:
    def build(tmp: Path) -> tuple[list[str], list[str], list[Path], list[Path]]:
        src = _scan(tmp)
        link = tmp / "link.nii.gz"
        link.symlink_to(src) if kind == "symlink" else link.hardlink_to(src)
        return [str(src), str(link), "--force"], [str(link), "other than the input"], [src], []

    return build


def _below_a_file(tmp: Path) -> tuple[list[str], list[str], list[Path], list[Path]]:
    src, note = _scan(tmp), tmp / "results"
    note.write_text("a file where a folder is expected")
    out = note / "scan.nii.gz"
    return [str(src), str(out)], [str(note), "found an existing file"], [src, note], [out]


def _onto_a_folder(tmp: Path) -> tuple[list[str], list[str], list[Path], list[Path]]:
    src, folder = _scan(tmp), tmp / "out.nii.gz"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    return [str(src), str(folder), "--force"], [str(folder), "found a folder"], [src, folder], []


def _existing_output(tmp: Path) -> tuple[list[str], list[str], list[Path], list[Path]]:
    src, out = _scan(tmp), tmp / "old.nii.gz"
    out.write_bytes(b"a previous result")
    return [str(src), str(out)], [str(out), "--force"], [src, out], []


def _not_nifti_output(tmp: Path) -> tuple[list[str], list[str], list[Path], list[Path]]:
    src, out = _scan(tmp), tmp / "scan.nrrd"
    return [str(src), str(out)], [str(out), ".nii.gz"], [src], [out]


def _read_only_folder(tmp: Path) -> tuple[list[str], list[str], list[Path], list[Path]]:
    src, folder = _scan(tmp), tmp / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    out = folder / "scan.nii.gz"
    return [str(src), str(out)], [str(folder), "not writable"], [src], [out]


def _into_the_dicom_input(tmp: Path) -> tuple[list[str], list[str], list[Path], list[Path]]:
    folder = tmp / "series"
    _series(folder)
    out = folder / "ct.nii.gz"
    return [str(folder), str(out)], [str(folder), "separate from INPUT"], [folder], [out]


OUTPUT_KINDS = {
    "output is the input (--force)": _onto_itself,
    "output is a symlink to the input": _onto_a_link("symlink"),
    "output is a hard link to the input": _onto_a_link("hard link"),
    "output below a file": _below_a_file,
    "output is a folder (--force)": _onto_a_folder,
    "output exists without --force": _existing_output,
    "output not .nii/.nii.gz": _not_nifti_output,
    "read-only output folder": _read_only_folder,
    "output inside the DICOM input folder": _into_the_dicom_input,
}


@pytest.mark.parametrize("kind", sorted(OUTPUT_KINDS))
def test_bad_output_is_refused_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    if kind == "read-only output folder" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    args, names, inputs, absent = OUTPUT_KINDS[kind](tmp_path)
    assert_clean_refusal(["convert", *args], capsys, names=names, inputs=inputs, absent=absent)
    assert not [p for p in tmp_path.rglob(".*.part*")]  # no temporary file left either
