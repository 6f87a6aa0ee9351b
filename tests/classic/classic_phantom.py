"""Seeded bright-sphere phantoms for the classic-method tests: an anisotropic, non-RAS grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.data.synthetic import reorient
from medseg.io import Volume, write_nifti

SHAPE = (40, 32, 16)  # along R, A, S before reorienting
SPACING = (0.8, 1.0, 2.5)  # mm
AXCODES = "PSR"  # the arrays come back as (A, S, R) axes, P/S/R increasing
CENTRES = ((-8.0, -5.0, -6.0), (8.0, 6.0, 6.0))  # RAS mm; label 1 dim, label 2 bright
RADII = (7.0, 6.0)
LEVELS = (100.0, 200.0)


def sphere_phantom(
    seed: int, *, noise: float = 20.0, axcodes: str = AXCODES
) -> tuple[Volume, Volume]:
    """``(image, labels)``: a dim (label 1, 100) and a bright (label 2, 200) sphere in noise.

    Background 0 with Gaussian noise of ``noise`` (so contrast/noise 5 and 10); the spheres
    cover 5.8 % of the 20480 voxels (bright one 2.2 %).
    """
    rng = np.random.default_rng(seed)
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(SHAPE, SPACING, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    labels = np.zeros(SHAPE, np.uint8)
    image = np.zeros(SHAPE, np.float32)
    for value, (c, r, level) in enumerate(zip(CENTRES, RADII, LEVELS, strict=True), start=1):
        inside = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= r * r
        labels[inside] = value
        image[inside] = level
    image += rng.normal(0.0, noise, SHAPE).astype(np.float32)
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = [-(n - 1) / 2 * s for n, s in zip(SHAPE, SPACING, strict=True)]
    img, lab = reorient(image, affine, axcodes), reorient(labels, affine, axcodes)
    return Volume(img.array, img.affine), Volume(lab.array, lab.affine)


def write_phantoms(root: Path, seeds: tuple[int, ...] = (0, 1)) -> tuple[Path, Path]:
    """``root/images/case<seed>.nii.gz`` and ``root/labels/case<seed>.nii.gz`` (both spheres
    as label 1, what ``otsu`` finds); returns both folders."""
    for seed in seeds:
        img, lab = sphere_phantom(seed)
        write_nifti(img.array, img.affine, root / "images" / f"case{seed}.nii.gz")
        both = (lab.array > 0).astype(np.uint8)
        write_nifti(both, lab.affine, root / "labels" / f"case{seed}.nii.gz")
    return root / "images", root / "labels"
