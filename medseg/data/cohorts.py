"""Synthetic cohorts on disk: phantoms written as an MSD-layout dataset (NIfTI, optional DICOM).

The phantoms themselves come from :mod:`medseg.data.synthetic`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.synthetic import CT_LABELS, MR_LABELS, Phantom, make_ct_phantom, make_mr_phantom
from medseg.errors import MedsegError
from medseg.io import Volume, save_mask, write_nifti
from medseg.io.atomic import atomic_write_text

logger = logging.getLogger(__name__)


def write_volume_as_dicom(
    volume: Volume,
    folder: str | os.PathLike[str],
    *,
    modality: str = "CT",
    series_description: str = "medseg synthetic phantom",
    rng: np.random.Generator | None = None,
    **options: Any,
) -> list[Path]:
    """Write a phantom as a DICOM series (one file per slice) with its exact geometry.

    A thin wrapper over :func:`medseg.io.dicom_write.write_dicom_series`; ``options`` are
    passed on (``series_uid``, ``study_uid``, ``file_names``, ``rescale_slope``,
    ``rescale_intercept``). Returns the written file paths.
    """
    from medseg.io.dicom_write import write_dicom_series

    if modality == "CT":  # scanners store HU as unsigned values with intercept -1024
        options.setdefault("rescale_intercept", -1024.0)
    elif np.issubdtype(volume.array.dtype, np.floating):  # keep ~15 bits of MR precision
        top = float(np.abs(volume.array).max())
        options.setdefault("rescale_slope", top / 30000.0 if top > 0 else 1.0)
    return write_dicom_series(
        volume,
        Path(folder),
        modality=modality,
        series_description=series_description,
        rng=rng,
        **options,
    )


def write_ct_cohort(
    root: str | os.PathLike[str],
    n_cases: int,
    *,
    seed: int,
    shape: Sequence[int] = (64, 64, 48),
    spacing: Sequence[float] = (1.5, 1.5, 3.0),
    axcodes: str | Sequence[str] = "RAS",
    n_lesions: int = 2,
    write_dicom: int = 0,
) -> Path:
    """Write ``n_cases`` CT phantoms as an MSD-layout dataset; return its ``dataset.json``.

    Writes ``imagesTr/phantom_NNN.nii.gz`` (int16 HU), ``labelsTr/phantom_NNN.nii.gz``
    (uint8, names of :data:`CT_LABELS` in a ``.json`` sidecar), ``dataset.json``, and for
    the first ``write_dicom`` cases a DICOM series in ``dicom/phantom_NNN/``. Case ``i`` is
    drawn from ``SeedSequence(seed, spawn_key=(i,))``: it does not depend on ``n_cases``.
    ``axcodes`` may be a list, used in turn (a cohort with mixed orientations).
    """

    def make(i: int, case_seed: np.random.SeedSequence, codes: str) -> Phantom:
        return make_ct_phantom(shape, spacing, seed=case_seed, axcodes=codes, n_lesions=n_lesions)

    return _write_cohort(
        Path(root),
        n_cases,
        seed,
        make,
        axcodes,
        write_dicom,
        name="SyntheticCT",
        modality="CT",
        labels=CT_LABELS,
    )


def write_mr_cohort(
    root: str | os.PathLike[str],
    n_cases: int,
    *,
    seed: int,
    shape: Sequence[int] = (64, 64, 48),
    spacing: Sequence[float] = (1.0, 1.0, 1.5),
    axcodes: str | Sequence[str] = "RAS",
) -> Path:
    """Write ``n_cases`` MR phantoms as an MSD-layout dataset; see :func:`write_ct_cohort`."""

    def make(i: int, case_seed: np.random.SeedSequence, codes: str) -> Phantom:
        return make_mr_phantom(shape, spacing, seed=case_seed, axcodes=codes)

    return _write_cohort(
        Path(root),
        n_cases,
        seed,
        make,
        axcodes,
        0,
        name="SyntheticMR",
        modality="MRI",
        labels=MR_LABELS,
    )


def _write_cohort(
    root: Path,
    n_cases: int,
    seed: int,
    make: Callable[[int, np.random.SeedSequence, str], Phantom],
    axcodes: str | Sequence[str],
    write_dicom: int,
    *,
    name: str,
    modality: str,
    labels: dict[int, str],
) -> Path:
    if n_cases < 1:
        raise MedsegError(f"expected at least 1 case, found n_cases={n_cases}")
    codes = [axcodes] if isinstance(axcodes, str) else list(axcodes)
    training = []
    for i in range(n_cases):
        case_id = f"phantom_{i:03d}"
        image, label = make(i, np.random.SeedSequence(seed, spawn_key=(i,)), codes[i % len(codes)])
        image_rel, label_rel = f"./imagesTr/{case_id}.nii.gz", f"./labelsTr/{case_id}.nii.gz"
        write_nifti(image.array, image.affine, root / image_rel)
        save_mask(label.array, image, root / label_rel, label_names=labels)
        training.append({"image": image_rel, "label": label_rel})
        if i < write_dicom:
            series = write_volume_as_dicom(
                image,
                root / "dicom" / case_id,
                modality=modality[:2],
                series_description=f"medseg {name} {case_id}",
                rng=np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i, 1))),
            )
            logger.debug("wrote %d DICOM slices for %s", len(series), case_id)
    manifest = cohort_manifest(name, modality, labels, training)
    path = root / "dataset.json"
    atomic_write_text(path, json.dumps(manifest, indent=1) + "\n")
    logger.info("wrote %d synthetic %s cases to %s", n_cases, modality, root)
    return path


def cohort_manifest(
    name: str, modality: str, labels: dict[int, str], training: list[dict[str, str]]
) -> dict[str, Any]:
    """The MSD ``dataset.json`` content for a synthetic cohort."""
    return {
        "name": name,
        "description": f"Synthetic {modality} phantoms written by medseg.data.synthetic",
        "reference": "medseg (generated, no patient data)",
        "licence": "CC0-1.0",
        "tensorImageSize": "3D",
        "modality": {"0": modality},
        "labels": {str(k): v for k, v in labels.items()},
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
    }
