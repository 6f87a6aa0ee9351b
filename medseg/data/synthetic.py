"""Seeded synthetic phantoms: CT-like (Hounsfield units) and MR-like (arbitrary units) volumes.

Each generator returns ``(image, labels)`` as two :class:`~medseg.io.Volume` objects on the
same grid. The anatomy is drawn on a RAS grid centred on world (0, 0, 0) and then
re-expressed in any axis order (``axcodes``, e.g. ``"LPS"`` or ``"PSR"``) with nibabel's
orientation tools, so every orientation of one seed is the same object in world space;
``oblique_deg`` rotates the grid in the world (the voxels stay the same). Organ sizes and
positions are drawn from the seed, so a cohort is diverse. Shapes are ellipsoids evaluated
with vectorised numpy on an open (sparse) mm grid: a 64x64x48 CT phantom takes ~30 ms.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from medseg.errors import MedsegError
from medseg.io import Volume

logger = logging.getLogger(__name__)

CT_LABELS: dict[int, str] = {
    0: "background",
    1: "liver",
    2: "kidney",
    3: "spleen",
    4: "bone",
    5: "lesion",
}
MR_LABELS: dict[int, str] = {0: "background", 1: "oedema", 2: "core"}

Seed = int | np.random.Generator | np.random.SeedSequence
Triple = tuple[float, float, float]
Phantom = tuple[Volume, Volume]


def _check_grid(shape: Sequence[int], spacing: Sequence[float]) -> tuple[tuple[int, ...], Triple]:
    if len(shape) != 3 or any(int(n) != n or n < 4 for n in shape):
        raise MedsegError(f"expected a shape of three integers >= 4, found {tuple(shape)}")
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise MedsegError(f"expected three positive spacings in mm, found {tuple(spacing)}")
    return tuple(int(n) for n in shape), tuple(float(s) for s in spacing)  # type: ignore[return-value]


def _grid(shape: tuple[int, ...], spacing: Triple) -> list[np.ndarray]:
    """Open grid of voxel-centre coordinates (mm, RAS, centred on 0): broadcastable arrays."""
    axes = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing, strict=True)]
    return list(np.meshgrid(*axes, indexing="ij", sparse=True))


def _ellipsoid(xyz: list[np.ndarray], centre: Triple, radii: Triple, yaw_deg: float = 0.0) -> Any:
    """Boolean mask of an ellipsoid (mm), rotated by ``yaw_deg`` about the S axis."""
    x, y, z = (c - c0 for c, c0 in zip(xyz, centre, strict=True))
    t = np.deg2rad(yaw_deg)
    xr, yr = x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)
    return (xr / radii[0]) ** 2 + (yr / radii[1]) ** 2 + (z / radii[2]) ** 2 <= 1.0


def _ras_affine(shape: tuple[int, ...], spacing: Triple, oblique_deg: Triple) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = np.diag(spacing)
    aff[:3, 3] = -(np.asarray(shape) - 1) / 2.0 * np.asarray(spacing)
    if any(oblique_deg):
        rot = np.eye(4)
        rot[:3, :3] = Rotation.from_euler("xyz", oblique_deg, degrees=True).as_matrix()
        aff = rot @ aff
    return aff


def reorient(array: np.ndarray, affine: np.ndarray, axcodes: str | Sequence[str]) -> Volume:
    """Re-express a RAS-ordered array in ``axcodes`` voxel order (same world geometry).

    Parameters
    ----------
    array
        Shape ``(I, J, K)`` whose axes point (nearest) to R, A, S.
    affine
        Its voxel-to-RAS affine (mm).
    axcodes
        Target directions of the voxel axes, e.g. ``"LPS"`` or ``("P", "S", "R")``.

    Returns
    -------
    Volume
        Flipped/transposed array and the affine that keeps every voxel at its world position.
    """
    codes = tuple(str(c).upper() for c in axcodes)
    pairs = ("LR", "PA", "IS")
    axes = sorted(next((n for n, p in enumerate(pairs) if c in p), -1) for c in codes)
    if len(codes) != 3 or axes != [0, 1, 2]:
        raise MedsegError(
            f"expected axis codes with one of L/R, one of A/P, one of S/I, found {axcodes!r}"
        )
    ornt = nib.orientations
    xform = ornt.ornt_transform(ornt.axcodes2ornt(("R", "A", "S")), ornt.axcodes2ornt(codes))
    out = np.ascontiguousarray(ornt.apply_orientation(array, xform))
    return Volume(array=out, affine=affine @ ornt.inv_ornt_aff(xform, array.shape))


def _finish(
    image: np.ndarray,
    labels: np.ndarray,
    spacing: Triple,
    *,
    axcodes: str | Sequence[str],
    oblique_deg: Triple,
    meta: dict[str, Any],
    label_names: dict[int, str],
) -> Phantom:
    affine = _ras_affine(image.shape, spacing, oblique_deg)
    img = reorient(image, affine, axcodes)
    lab = reorient(labels, affine, axcodes)
    return (
        Volume(img.array, img.affine, meta={**meta, "is_image": True}),
        Volume(lab.array, lab.affine, meta={**meta, "is_image": False, "labels": label_names}),
    )


def make_ct_phantom(
    shape: Sequence[int] = (64, 64, 48),
    spacing: Sequence[float] = (1.5, 1.5, 3.0),
    *,
    seed: Seed,
    axcodes: str | Sequence[str] = "RAS",
    n_lesions: int = 2,
    oblique_deg: Triple = (0.0, 0.0, 0.0),
) -> Phantom:
    """An abdominal CT-like phantom in Hounsfield units with organ and lesion labels.

    Air (-1000 HU) around an elliptical body (fat -100, soft tissue 40), a liver (~60),
    spleen (~50), two contrast-enhanced kidneys (~150), a segmented spine (~700) and
    ``n_lesions`` hypodense liver lesions (10-20 HU, radius 2-6 mm). Partial-volume blur
    and Gaussian noise (8-15 HU) are added.

    Parameters
    ----------
    shape, spacing
        Grid size and voxel size (mm) along the patient's R, A and S axes; with other
        ``axcodes`` the returned axes are these, permuted and flipped.
    seed
        Seed (or generator): the same seed gives identical volumes.
    axcodes
        Voxel axis directions of the returned arrays (``"RAS"``, ``"LPS"``, ``"PSR"``, ...).
    n_lesions
        Number of liver lesions (each gets at least one labelled voxel).
    oblique_deg
        Rotation of the grid in the world about the R, A, S axes (degrees).

    Returns
    -------
    image, labels
        ``image.array`` int16 HU, ``labels.array`` uint8 with values of :data:`CT_LABELS`
        (lesions override liver); same affine (voxel to RAS, mm).
    """
    shape_, spacing_ = _check_grid(shape, spacing)
    rng = np.random.default_rng(seed)
    labels, body, fat = _ct_anatomy(shape_, spacing_, rng, n_lesions)
    hu = {1: 60.0, 2: 150.0, 3: 50.0, 4: 700.0}
    image = np.full(shape_, -1000.0, dtype=np.float32)
    image[body] = -100.0
    image[body & ~fat] = 40.0 + rng.uniform(-5, 5)
    for value, mean in hu.items():
        image[labels == value] = mean + rng.uniform(-6, 6)
    lesion_ids, n_ids = ndimage.label(labels == 5)
    for n in range(1, n_ids + 1):
        image[lesion_ids == n] = rng.uniform(10, 20)
    image = ndimage.gaussian_filter(image, sigma=0.6, mode="nearest")
    image += rng.normal(0.0, rng.uniform(8, 15), size=shape_).astype(np.float32)
    image = np.clip(np.rint(image), -1024, 3071).astype(np.int16)
    meta = {"modality": "CT", "synthetic": "ct_phantom"}
    return _finish(
        image,
        labels,
        spacing_,
        axcodes=axcodes,
        oblique_deg=tuple(oblique_deg),  # type: ignore[arg-type]
        meta=meta,
        label_names=CT_LABELS,
    )


def _ct_anatomy(
    shape: tuple[int, ...], spacing: Triple, rng: np.random.Generator, n_lesions: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label map (RAS grid), body mask and fat-layer mask; sizes relative to the field of view."""
    xyz = _grid(shape, spacing)
    x, y, z = xyz
    hz = shape[2] * spacing[2] / 2
    bx, by = (
        shape[0] * spacing[0] / 2 * rng.uniform(0.8, 0.92),
        shape[1] * spacing[1] / 2 * (rng.uniform(0.62, 0.78)),
    )
    ellipse = (x / bx) ** 2 + (y / by) ** 2
    body = np.broadcast_to(ellipse <= 1.0, shape)
    fat = np.broadcast_to(ellipse > (1.0 - rng.uniform(0.08, 0.16)), shape)
    scale = np.array([bx, by, hz])

    def organ(centre: Triple, radii: Triple) -> np.ndarray:
        c = (np.asarray(centre) + rng.uniform(-0.05, 0.05, 3)) * scale
        r = np.asarray(radii) * rng.uniform(0.85, 1.15, 3) * scale
        return _ellipsoid(xyz, tuple(c), tuple(r), rng.uniform(-15, 15)) & body

    labels = np.zeros(shape, dtype=np.uint8)
    labels[organ((0.35, 0.05, 0.25), (0.5, 0.62, 0.55))] = 1  # liver, patient's right (+R)
    labels[organ((-0.55, -0.25, 0.3), (0.22, 0.32, 0.32))] = 3  # spleen, left
    for side in (1.0, -1.0):
        labels[organ((0.4 * side, -0.42, -0.1), (0.15, 0.22, 0.4))] = 2  # kidneys
    period = rng.uniform(24, 32)  # vertebra + disc height, mm
    vertebrae = ((z - rng.uniform(0, period)) % period) > 0.22 * period
    cy, r = -0.62 * by, 0.13 * by
    spine = (x**2 + (y - cy) ** 2 <= r**2) & vertebrae
    labels[np.broadcast_to(spine, shape) & body] = 4
    _add_lesions(labels, xyz, spacing, rng, n_lesions)
    return labels, body, fat


def _add_lesions(
    labels: np.ndarray, xyz: list[np.ndarray], spacing: Triple, rng: np.random.Generator, n: int
) -> None:
    liver = np.flatnonzero(labels == 1)
    if n > 0 and liver.size == 0:
        logger.warning("phantom grid too small for a liver: no lesions drawn")
        return
    for _ in range(n):
        centre_idx = np.unravel_index(rng.choice(liver), labels.shape)
        centre = tuple(float(xyz[a].ravel()[centre_idx[a]]) for a in range(3))
        radius = rng.uniform(2.0, 6.0)
        sphere = _ellipsoid(xyz, centre, (radius, radius, radius)) & (labels == 1)  # type: ignore[arg-type]
        labels[sphere] = 5
        labels[centre_idx] = 5  # a lesion thinner than a voxel still gets one labelled voxel


def make_mr_phantom(
    shape: Sequence[int] = (64, 64, 48),
    spacing: Sequence[float] = (1.0, 1.0, 1.5),
    *,
    seed: Seed,
    axcodes: str | Sequence[str] = "RAS",
    oblique_deg: Triple = (0.0, 0.0, 0.0),
) -> Phantom:
    """A brain MR-like phantom (arbitrary units) with a lesion core and surrounding oedema.

    Scalp, dark skull, grey and white matter, two ventricles (CSF), a lesion whose core has
    an enhancing rim and a necrotic centre, oedema around it; a smooth multiplicative bias
    field, a random global intensity scale and Rician noise.

    Parameters
    ----------
    shape, spacing, seed, axcodes, oblique_deg
        As for :func:`make_ct_phantom`.

    Returns
    -------
    image, labels
        ``image.array`` float32 (>= 0), ``labels.array`` uint8 with values of
        :data:`MR_LABELS` (1 oedema, 2 core); same affine (voxel to RAS, mm).
    """
    shape_, spacing_ = _check_grid(shape, spacing)
    rng = np.random.default_rng(seed)
    xyz = _grid(shape_, spacing_)
    half = np.asarray(shape_) * np.asarray(spacing_) / 2
    radii = half * np.array([0.72, 0.78, 0.72]) * rng.uniform(0.9, 1.05, 3)
    centre = (0.0, 0.04 * half[1], 0.0)
    yaw = rng.uniform(-8, 8)
    image = np.zeros(shape_, dtype=np.float32)
    for factor, value in ((1.14, 0.55), (1.07, 0.05), (1.0, 0.75), (0.72, 1.0)):
        image[_ellipsoid(xyz, centre, tuple(radii * factor), yaw)] = value  # scalp..white matter
    brain = _ellipsoid(xyz, centre, tuple(radii), yaw)
    for side in (1.0, -1.0):
        vc = (side * 0.13 * radii[0], centre[1], 0.1 * radii[2])
        image[_ellipsoid(xyz, vc, tuple(radii * [0.08, 0.3, 0.2]), yaw)] = 0.25
    labels = _mr_lesion(image, xyz, radii, brain, rng)
    image = ndimage.gaussian_filter(image, sigma=0.5, mode="nearest")
    x, y, z = (c / h for c, h in zip(xyz, half, strict=True))
    terms = (x, y, z, x * y, x * z, y * z, x**2, y**2, z**2)
    bias = np.exp(sum(rng.normal(0, 0.12) * t for t in terms))
    image = image * bias * rng.uniform(200, 2000)
    sigma = 0.03 * float(np.percentile(image[brain], 50))
    noise = rng.normal(0, sigma, (2, *shape_))
    image = np.sqrt((image + noise[0]) ** 2 + noise[1] ** 2).astype(np.float32)
    meta = {"modality": "MR", "synthetic": "mr_phantom"}
    return _finish(
        image,
        labels,
        spacing_,
        axcodes=axcodes,
        oblique_deg=tuple(oblique_deg),  # type: ignore[arg-type]
        meta=meta,
        label_names=MR_LABELS,
    )


def _mr_lesion(
    image: np.ndarray,
    xyz: list[np.ndarray],
    radii: np.ndarray,
    brain: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw an irregular lesion into ``image``; return its label map (1 oedema, 2 core)."""
    offset = rng.uniform(-0.35, 0.35, 3) * radii
    offset[0] = np.sign(offset[0] or 1.0) * max(abs(offset[0]), 0.3 * radii[0])  # off the midline
    r_core = rng.uniform(0.15, 0.24) * float(radii.min())
    r_oedema = r_core * rng.uniform(1.5, 2.0)
    dist = np.sqrt(sum((c - o) ** 2 for c, o in zip(xyz, offset, strict=True)))
    wobble = ndimage.gaussian_filter(rng.normal(size=image.shape), sigma=3.0)
    wobble *= r_core * 0.4 / max(float(np.abs(wobble).max()), 1e-6)
    core = (dist <= r_core + wobble) & brain
    oedema = (dist <= r_oedema + 2 * wobble) & brain & ~core
    image[oedema] = 0.55
    image[core] = 1.6
    image[core & (dist <= 0.5 * r_core)] = 0.35  # necrotic centre
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[oedema] = 1
    labels[core] = 2
    return labels
