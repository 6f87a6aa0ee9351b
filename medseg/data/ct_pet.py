"""Seeded CT + PET tumour phantoms: two input channels on two grids, like a PET/CT visit.

The CT (Hounsfield units) holds a soft-tissue tumour of low contrast against muscle (as
sarcomas are on CT); the PET (SUV) holds the same tumour as a bright, blurred uptake on a
coarser grid whose origin is shifted against the CT's (a real PET/CT pair shares the
patient frame, not the voxel grid). The PET is sampled from the world positions of its own
voxel centres, so a correct world-coordinate resampling puts it back on the tumour.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from medseg.data.synthetic import Seed, _ellipsoid, _finish, _grid, _ras_affine
from medseg.errors import MedsegError
from medseg.io import Volume, save_mask, write_nifti
from medseg.io.atomic import atomic_write_text
from medseg.io.channels import resample_to_grid

TUMOUR_LABELS: dict[int, str] = {0: "background", 1: "tumour"}


def make_ct_pet_phantom(
    shape: Sequence[int] = (48, 48, 24),
    spacing: Sequence[float] = (1.0, 1.0, 3.0),
    *,
    seed: Seed,
    pet_spacing: Sequence[float] = (4.0, 4.0, 3.0),
    pet_shift_mm: Sequence[float] = (1.3, -2.1, 0.9),
    axcodes: str = "RAS",
) -> tuple[Volume, Volume, Volume]:
    """A CT, its PET on another grid, and the tumour label on the CT grid.

    Parameters
    ----------
    shape, spacing
        CT grid (voxels, mm) along R, A, S before ``axcodes`` reorients it.
    seed
        Seed of the anatomy, intensities and noise.
    pet_spacing, pet_shift_mm
        PET voxel size (mm, RAS) and the offset (mm) of its grid origin from the CT's;
        the PET grid covers the CT's field of view.
    axcodes
        Voxel axis directions of the CT and label arrays (the PET stays RAS).

    Returns
    -------
    ct, pet, label
        ``ct.array`` int16 HU; ``pet.array`` float32 SUV (``(I', J', K')`` on its own grid);
        ``label.array`` uint8 (1 = tumour) on the CT grid. Affines voxel-to-RAS (mm).
    """
    if len(pet_spacing) != 3 or min(pet_spacing) <= 0:
        raise MedsegError(f"expected three positive PET spacings (mm), found {pet_spacing}")
    rng = np.random.default_rng(seed)
    shape_ = tuple(int(n) for n in shape)
    sp = tuple(float(s) for s in spacing)
    xyz = _grid(shape_, sp)  # type: ignore[arg-type]
    half = np.asarray(shape_) * np.asarray(sp) / 2.0
    body = _ellipsoid(xyz, (0.0, 0.0, 0.0), (half[0] * 0.9, half[1] * 0.8, half[2] * 2))
    bone = _ellipsoid(xyz, (half[0] * 0.3, 0.0, 0.0), (3.0, 3.0, half[2] * 2))
    centre = tuple(float(c) for c in rng.uniform(-0.3, 0.3, 3) * half * np.array([1, 1, 0.5]))
    radii = tuple(float(r) for r in rng.uniform(5.0, 9.0, 3) * np.array([1, 1, 1.2]))
    tumour = _ellipsoid(xyz, centre, radii, yaw_deg=float(rng.uniform(0, 180))) & body & ~bone  # type: ignore[arg-type]
    ct = np.full(shape_, -1000.0, np.float32)
    ct[body] = 50.0
    ct[bone] = 700.0
    ct[tumour] = rng.uniform(30.0, 40.0)
    ct = ndimage.gaussian_filter(ct, 0.6) + rng.normal(0, 12.0, shape_).astype(np.float32)
    suv = np.where(body, rng.uniform(0.8, 1.2), 0.0).astype(np.float32)
    suv[tumour] = rng.uniform(5.0, 9.0)
    sigma = [4.0 / s for s in sp]  # ~9 mm FWHM point-spread
    suv = ndimage.gaussian_filter(suv, sigma)
    ct_img, label = _finish(
        np.clip(np.rint(ct), -1024, 3071).astype(np.int16),
        tumour.astype(np.uint8),
        sp,  # type: ignore[arg-type]
        axcodes=axcodes,
        oblique_deg=(0.0, 0.0, 0.0),
        meta={"modality": "CT", "synthetic": "ct_pet_phantom"},
        label_names=TUMOUR_LABELS,
    )
    ras = Volume(suv, _ras_affine(shape_, sp, (0.0, 0.0, 0.0)))  # type: ignore[arg-type]
    pet = _pet_grid(ras, pet_spacing, pet_shift_mm)
    pet.meta["modality"] = "PT"
    return ct_img, pet, label


def _pet_grid(suv: Volume, pet_spacing: Sequence[float], shift: Sequence[float]) -> Volume:
    """Sample ``suv`` (on the fine RAS grid) on a coarse grid covering its field of view."""
    spacing = np.asarray(pet_spacing, dtype=np.float64)
    lo = suv.affine[:3, 3] - 0.5 * np.asarray(suv.spacing)
    extent = np.asarray(suv.spatial_shape) * np.asarray(suv.spacing)
    if np.any(np.abs(np.asarray(shift)) >= spacing):
        raise MedsegError(f"expected a PET grid shift under one PET voxel, found {shift} mm")
    n = np.ceil(extent / spacing).astype(int) + 2
    aff = np.eye(4)
    aff[:3, :3] = np.diag(spacing)
    aff[:3, 3] = lo + np.asarray(shift, dtype=np.float64) - 0.5 * spacing  # box starts below lo
    # Average the fine SUV over each PET voxel (what a coarser detector measures), then
    # sample at the PET voxel centres.
    smooth = ndimage.uniform_filter(
        np.asarray(suv.array),
        size=[max(1, round(p / s)) for p, s in zip(spacing, suv.spacing, strict=True)],
    )
    values = resample_to_grid(Volume(smooth, suv.affine), aff, tuple(int(v) for v in n))
    return Volume(np.maximum(values, 0.0).astype(np.float32), aff, meta={"is_image": True})


def write_ct_pet_cohort(
    root: str | os.PathLike[str],
    n_cases: int,
    *,
    seed: int,
    shape: Sequence[int] = (48, 48, 24),
    spacing: Sequence[float] = (1.0, 1.0, 3.0),
    pet_spacing: Sequence[float] = (4.0, 4.0, 3.0),
    axcodes: str = "RAS",
) -> Path:
    """Write ``n_cases`` CT + PET phantoms, one folder per case, and a two-channel manifest.

    Layout: ``CASE/CT.nii.gz``, ``CASE/PET.nii.gz``, ``CASE/label.nii.gz``; ``dataset.json``
    with ``"modality": {"0": "CT", "1": "PET"}`` and each case's ``"image"`` a list of the
    two files (``"id"`` the folder name). Returns the manifest path.
    """
    if n_cases < 1:
        raise MedsegError(f"expected at least 1 case, found n_cases={n_cases}")
    root = Path(root)
    training = []
    for i in range(n_cases):
        case = f"ctpet_{i:03d}"
        ct, pet, label = make_ct_pet_phantom(
            shape,
            spacing,
            seed=np.random.SeedSequence(seed, spawn_key=(i,)),
            pet_spacing=pet_spacing,
            axcodes=axcodes,
        )
        write_nifti(ct.array, ct.affine, root / case / "CT.nii.gz")
        write_nifti(pet.array, pet.affine, root / case / "PET.nii.gz")
        save_mask(label.array, ct, root / case / "label.nii.gz", label_names=TUMOUR_LABELS)
        training.append(
            {
                "id": case,
                "image": [f"./{case}/CT.nii.gz", f"./{case}/PET.nii.gz"],
                "label": f"./{case}/label.nii.gz",
            }
        )
    doc = {
        "name": "SyntheticCTPET",
        "description": "Synthetic CT + PET tumour phantoms written by medseg.data.ct_pet",
        "licence": "CC0-1.0",
        "modality": {"0": "CT", "1": "PET"},
        "labels": {str(k): v for k, v in TUMOUR_LABELS.items()},
        "numTraining": n_cases,
        "training": training,
        "test": [],
    }
    path = root / "dataset.json"
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return path
