"""Helpers for the DICOM-SEG / RTSTRUCT export tests: synthetic series, phantom masks, an
independent RTSTRUCT parser, UID look-ups and the dciodvfy validator."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
from io_test_helpers import oblique_affine
from skimage.draw import polygon2mask

from medseg.io import Volume, load_volume, ras_to_lps, write_dicom_series

#: Label names of :func:`phantom`, as the exporters take them.
LABELS = {1: "liver", 2: "liver tumour"}
#: Sarcoma cases of the shared data with a CT series and a CT mask.
STS_CASES = ("STS_019", "STS_033", "STS_036", "STS_038")
SHAPE = (30, 26, 8)
#: Oblique, anisotropic, right-handed (k along row x column): the reader keeps k as written.
AFFINE = oblique_affine((8.0, -5.0, 12.0), (0.8, 0.9, 2.5), (-11.0, 20.0, -33.0))


def synthetic_series(
    folder: Path, rng: np.random.Generator, *, shape: tuple[int, int, int] = SHAPE
) -> Path:
    """A CT series (random HU) of ``shape`` on :data:`AFFINE`, shuffled file names."""
    ct = rng.integers(-1000, 1500, size=shape).astype(np.int16)
    write_dicom_series(Volume(ct, AFFINE), folder, rescale_intercept=-1024.0, rng=rng)
    return folder


def phantom(shape: tuple[int, ...], *, scale: float = 1.0) -> np.ndarray:
    """Label 1: a hollow ellipsoid with an island inside the hole; label 2: a separate ball.

    ``shape`` is ``(I, J, K)``; sizes are fractions of it, so the phantom fits any grid.
    """
    i, j, k = np.ogrid[: shape[0], : shape[1], : shape[2]]
    ni, nj, nk = shape

    def ball(ci: float, cj: float, ck: float, ri: float, rj: float, rk: float) -> np.ndarray:
        return ((i - ci) / ri) ** 2 + ((j - cj) / rj) ** 2 + ((k - ck) / rk) ** 2 < 1

    c = (0.38 * ni, 0.5 * nj, 0.5 * nk)
    out = np.zeros(shape, np.uint8)
    out[ball(*c, 0.3 * ni * scale, 0.35 * nj * scale, 0.45 * nk)] = 1
    out[ball(*c, 0.15 * ni * scale, 0.18 * nj * scale, 0.3 * nk)] = 0  # the hole
    out[ball(*c, 0.05 * ni * scale, 0.06 * nj * scale, 0.2 * nk)] = 1  # island in the hole
    out[ball(0.82 * ni, 0.5 * nj, 0.5 * nk, 0.1 * ni, 0.12 * nj, 0.35 * nk)] = 2
    return out


def mask_on(folder: Path, ref: Volume | None = None) -> Volume:
    """The :func:`phantom` on the grid of the series ``folder`` (``ref``: it, already read)."""
    ref = ref or load_volume(folder)
    return Volume(phantom(ref.spatial_shape), ref.affine, path=folder.parent / "case7.nii.gz")


def assert_only_link_attributes_copied(ds: pydicom.Dataset, series: Path) -> None:
    """An export of a series given :func:`add_private_header_fields` copies only the fields
    that link it to the patient and study, never the private ones."""
    for keyword in ("PatientAge", "PatientWeight", "OtherPatientIDs", "StudyDescription",
                    "InstitutionName"):  # fmt: skip
        assert keyword not in ds, keyword
    src = pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "StudyDate", "StudyTime", "StudyID", "AccessionNumber"):  # fmt: skip
        assert ds.get(keyword) == src.get(keyword), keyword


def source_uids(folder: Path) -> dict[str, Path]:
    """SOPInstanceUID -> file for every DICOM file of ``folder`` (File Meta UID when blank)."""
    out = {}
    for f in sorted(folder.iterdir()):
        if f.suffix == ".txt":
            continue
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        uid = str(ds.get("SOPInstanceUID", "") or "") or str(
            ds.file_meta.MediaStorageSOPInstanceUID
        )
        out[uid] = f
    return out


def uids_in_k_order(folder: Path) -> list[str]:
    """SOPInstanceUID of each slice of ``folder`` sorted along the slice normal (the read
    volume's ``k`` order), from the headers alone."""
    rows = []
    for uid, f in source_uids(folder).items():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        normal = np.cross(iop[:3], iop[3:])
        rows.append((float(np.asarray(ds.ImagePositionPatient, float) @ normal), uid))
    return [uid for _, uid in sorted(rows)]


def parse_rtstruct(path: Path, reference: Volume) -> dict[str, np.ndarray]:
    """ROIName -> boolean ``(I, J, K)`` mask: an independent even-odd parser for the tests.

    Each contour (LPS mm) goes through the inverse voxel-to-LPS affine; voxel centres inside
    the polygon are filled (``polygon2mask``), contours of one slice combined with XOR.
    """
    ds = pydicom.dcmread(path)
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    to_index = np.linalg.inv(ras_to_lps(reference.affine))
    ni, nj, nk = reference.spatial_shape
    out = {}
    for roi in ds.ROIContourSequence:
        mask = np.zeros((ni, nj, nk), bool)
        for c in roi.ContourSequence:
            pts = np.asarray(c.ContourData, dtype=float).reshape(-1, 3)
            ijk = np.column_stack([pts, np.ones(len(pts))]) @ to_index.T
            k = round(float(ijk[0, 2]))
            assert np.abs(ijk[:, 2] - k).max() < 1e-3, "contour off its slice plane"
            lo = np.maximum(np.floor(ijk[:, :2].min(axis=0)).astype(int), 0)
            hi = np.minimum(np.ceil(ijk[:, :2].max(axis=0)).astype(int) + 1, (ni, nj))
            window = polygon2mask(tuple(hi - lo), ijk[:, :2] - lo)  # the polygon's box only
            mask[lo[0] : hi[0], lo[1] : hi[1], k] ^= window
        out[names[int(roi.ReferencedROINumber)]] = mask
    return out


def assert_contours_reference_the_series(rtstruct: Path, folder: Path) -> None:
    """Every ContourImageSequence item of the RTSTRUCT names a slice of the series ``folder``."""
    ds = pydicom.dcmread(rtstruct)
    referenced = {
        str(img.ReferencedSOPInstanceUID)
        for roi in ds.ROIContourSequence
        for c in roi.ContourSequence
        for img in c.ContourImageSequence
    }
    assert referenced <= set(source_uids(folder))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines dciodvfy (dicom3tools) reports for a file."""
    exe = shutil.which("dciodvfy")
    assert exe is not None
    run = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    lines = (run.stdout + run.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


def add_private_header_fields(folder: Path) -> None:
    """Give every slice of a (test-owned) series patient/study fields an export must not copy."""
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.PatientAge = "042Y"
        ds.PatientWeight = "81.5"
        ds.OtherPatientIDs = "SECRET-ID"
        ds.StudyDescription = "confidential study"
        ds.InstitutionName = "Some Hospital"
        ds.PatientBirthDate = "19800101"
        ds.PatientSex = "F"
        ds.AccessionNumber = "ACC123"
        ds.StudyID = "S1"
        ds.save_as(f)
