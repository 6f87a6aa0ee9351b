"""What batch prediction writes for one case, and the folder's lesion table.

Files of case ``CASE``, each written atomically and named after the case id:

=============================  ===============================================================
``CASE.nii.gz``                the label map on the scan's grid (format ``nifti``, the default)
``CASE_probabilities.nii.gz``  class probabilities (``save_probabilities``)
``CASE_instances.nii.gz``      lesion instances, ``uint16``, same grid and affine as the mask
``CASE_lesions.csv`` / .json   one row per instance (:mod:`medseg.postprocessing.lesion_table`)
``CASE_seg.dcm``               BINARY DICOM-SEG (format ``dicom-seg``), as ``medseg export-dicom``
``CASE_rtstruct.dcm``          RT Structure Set (format ``rtstruct``), as ``medseg export-dicom``
=============================  ===============================================================

The sidecar ``CASE.json`` (written by :mod:`medseg.inference.batch`, last) lists them under
``"files"``; ``OUTPUT/lesions.csv`` / ``lesions.json`` hold every case's lesions.

DICOM reference
---------------
A DICOM case (channel 0 read from a DICOM series folder) references its own channel-0 series,
the one ``series`` (``--series``) or the manifest picked. A NIfTI/NRRD case needs
``reference`` (``--reference DIR``): a folder that directly holds files is *the* series, used
for every NIfTI case (a case whose grid differs fails, both grids named); a folder holding
only folders holds one series folder per case, ``DIR/CASE/``. ``series`` also picks the series
of a reference folder holding several. A NIfTI case without a reference (or without its
folder) fails with a message naming the case and ``--reference``, before it is predicted; the
batch goes on.

Empty masks
-----------
A DICOM-SEG or RTSTRUCT without a segment is invalid, so a mask without any labelled voxel
gets neither: the sidecar's ``"omitted"`` says why (and ``"warnings"`` repeats it). The case
is ``done`` and complete, so a resumed batch does not redo it. Labels without voxels are left
out of the DICOM objects (the writers log them; the sidecar's ``"warnings"`` lists them).

Lesion instances
----------------
:func:`medseg.postprocessing.instances.instance_map`: 26-connected components (the full 3x3x3
neighbourhood, as medseg's lesion-wise metrics) of the requested labels, ids ``1..N`` label by
label in the requested order, largest first. Intensities per input channel come from the loaded
volume (``(I, J, K)``, or ``(C, I, J, K)`` for several channels), named by the plans' channel
names; a channel whose name contains ``PET`` gets SUV columns, one containing ``CT`` is HU.
With ``rtstruct``, the structure set has one ROI ``<label>_<id>`` per instance (labels not
split keep one ROI each).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import MedsegError
from medseg.inference.cases import CaseInput
from medseg.inference.output_request import (
    CONNECTIVITY,
    SUFFIXES,
    OutputRequest,
    dicom_reference,
)
from medseg.inference.predictor import Prediction, Predictor
from medseg.inference.writers import write_probabilities
from medseg.io import save_mask, write_nifti
from medseg.io.dicom_seg_write import write_dicom_seg
from medseg.io.jsonfile import read_json
from medseg.io.rtstruct_write import write_rtstruct
from medseg.io.seg_codes import AlgorithmInfo
from medseg.io.volume import Volume
from medseg.postprocessing.instances import instance_map
from medseg.postprocessing.lesion_table import (
    measure_lesions,
    write_folder_lesion_table,
    write_lesion_tables,
)

logger = logging.getLogger(__name__)


@dataclass
class CaseOutputs:
    """What :func:`write_case_outputs` wrote, for the sidecar."""

    files: list[str] = field(default_factory=list)
    omitted: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    lesions: dict[str, Any] | None = None
    reference: str | None = None

    def sidecar(self) -> dict[str, Any]:
        """The sidecar keys: ``files``, ``omitted``, ``warnings``, ``dicom_reference``,
        ``lesions``."""
        out: dict[str, Any] = {"files": self.files, "omitted": self.omitted}
        out["warnings"] = self.warnings
        if self.reference is not None:
            out["dicom_reference"] = self.reference
        if self.lesions is not None:
            out["lesions"] = self.lesions
        return out


def channel_images(
    volume: Volume, names: Sequence[str]
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``({name: (I, J, K) image}, {name: kind})`` of the loaded volume's channels.

    Names are the plans' channel names (``channel<n>`` where missing, ``<name>_<n>`` for a
    repeated one); kinds are ``PET`` / ``CT`` for names containing those words.
    """
    arr = np.asarray(volume.array)
    planes = [arr] if arr.ndim == 3 else list(arr)
    images: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    for n, image in enumerate(planes):
        name = str(names[n]) if n < len(names) and str(names[n]) else f"channel{n}"
        name = f"{name}_{n}" if name in images else name
        images[name] = image
        upper = name.upper()
        kind = "PET" if "PET" in upper else "CT" if "CT" in upper else None
        if kind is not None:
            kinds[name] = kind
    return images, kinds


def _write_instances(
    predictor: Predictor,
    request: OutputRequest,
    case: CaseInput,
    volume: Volume,
    mask: np.ndarray,
    output: Path,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The instance map and the case's lesion tables; returns the map and the sidecar record."""
    inst, info = instance_map(
        mask,
        request.instance_labels,
        connectivity=CONNECTIVITY,
        known_labels=list(predictor.label_names),
        path=case.path,
    )
    codes = {k: int(volume.meta.get(k, 1) or 1) for k in ("qform_code", "sform_code")}
    write_nifti(inst, volume.affine, output / f"{case.name}{SUFFIXES['instances']}", **codes)
    channels, kinds = channel_images(volume, predictor.plans.channel_names)
    rows = measure_lesions(
        inst,
        info,
        volume.affine,
        channels=channels,
        channel_kinds=kinds,
        label_names=predictor.label_names,
        path=case.path,
    )
    write_lesion_tables(rows, output, case.name)
    record = {
        "labels": {str(v): predictor.label_names.get(v, "") for v in request.instance_labels},
        "connectivity": CONNECTIVITY,
        "n_lesions": len(rows),
        "channels": {c: kinds.get(c, "") for c in channels},
    }
    return inst, record


def _write_dicom(
    predictor: Predictor,
    request: OutputRequest,
    name: str,
    mask: Volume,
    instances: np.ndarray | None,
    reference: tuple[Path, str | None],
    out: CaseOutputs,
    output: Path,
) -> None:
    labels = {int(v): n for v, n in predictor.label_names.items() if int(v) != 0}
    counts = np.bincount(np.asarray(mask.array).ravel())  # one pass, no sort as np.unique
    present = {int(v) for v in np.flatnonzero(counts)} - {0}
    if not present:
        for fmt in request.dicom:
            why = "not written: the mask is empty (a DICOM object needs at least one segment)"
            out.omitted[fmt] = why
            out.warnings.append(f"{fmt} {why}")
            logger.warning("case %s: %s %s", name, fmt, why)
        return
    empty = [f"{n}={v}" for v, n in sorted(labels.items()) if v not in present]
    if empty:
        left_out = ", ".join(request.dicom)
        out.warnings.append(f"labels without voxels, left out of {left_out}: {', '.join(empty)}")
    folder, series = reference
    common: dict[str, Any] = {
        "labels": labels,
        "algorithm": AlgorithmInfo.from_identity(predictor.identity),
        "series": series,
        "case": name,
        "overwrite": True,  # a case being (re)done replaces its own earlier outputs
    }
    for fmt in request.dicom:
        t = time.perf_counter()
        target = output / f"{name}{SUFFIXES[fmt]}"
        if fmt == "dicom-seg":
            write_dicom_seg(mask, folder, target, **common)
        else:
            inst = None if instances is None else Volume(instances, mask.affine, path=mask.path)
            write_rtstruct(mask, folder, target, instances=inst, **common)
        out.files.append(target.name)
        out.timings[fmt.replace("-", "_")] = round(time.perf_counter() - t, 4)


def write_case_outputs(
    predictor: Predictor,
    request: OutputRequest,
    case: CaseInput,
    volume: Volume,
    prediction: Prediction,
    output: Path,
    reference: tuple[Path, str | None] | None = None,
) -> CaseOutputs:
    """Write every requested file of one case (see the module docstring), the sidecar aside.

    Parameters
    ----------
    predictor, request
        The model and the resolved outputs.
    case, volume
        The case and its loaded scan, ``(I, J, K)`` or ``(C, I, J, K)`` with a voxel-to-RAS
        affine (mm); the mask and instance map are on its grid.
    prediction
        :meth:`Predictor.predict`'s result for ``volume``.
    output
        The output folder.
    reference
        :func:`dicom_reference` of the case when a DICOM format is asked for.

    Raises
    ------
    MedsegError
        What the writers refuse (a mask off the reference series' grid, a broken series, ...).
    """
    out = CaseOutputs()
    mask = Volume(prediction.mask.array, prediction.mask.affine, path=case.path)
    t = time.perf_counter()
    if "nifti" in request.formats:
        out.files.append(save_mask(mask, volume, output / f"{case.name}.nii.gz").name)
    if prediction.probabilities is not None and request.probabilities:
        target = output / f"{case.name}{SUFFIXES['probabilities']}"
        out.files.append(write_probabilities(prediction.probabilities, target).name)
    out.timings["write_nifti"] = round(time.perf_counter() - t, 4)
    instances = None
    if request.instance_labels:
        t = time.perf_counter()
        instances, out.lesions = _write_instances(
            predictor, request, case, volume, np.asarray(mask.array), output
        )
        kinds = ("instances", "lesions_csv", "lesions_json")
        out.files += [f"{case.name}{SUFFIXES[k]}" for k in kinds]
        out.timings["lesions"] = round(time.perf_counter() - t, 4)
    if request.dicom:
        if reference is None:
            reference = dicom_reference(case, request)
        out.reference = str(reference[0])
        _write_dicom(predictor, request, case.name, mask, instances, reference, out, output)
    return out


def write_folder_lesions(names: Sequence[str], output: Path) -> tuple[Path, Path]:
    """``OUTPUT/lesions.csv`` and ``lesions.json`` from the ``CASE_lesions.json`` of ``names``
    (the cases done or skipped, in this order); a table that cannot be read is left out with a
    WARNING."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        path = output / f"{name}{SUFFIXES['lesions_json']}"
        try:
            data = read_json(path, what="a case lesion table")
            rows[name] = list(data["lesions"])
        except (MedsegError, KeyError, TypeError) as exc:
            logger.warning("case %s left out of lesions.csv: %s", name, exc)
    return write_folder_lesion_table(rows, output)
