"""Manifest validation: open every file of a manifest and report every problem at once.

Kept apart from :mod:`medseg.data.manifest` (which only parses the JSON) because it reads
the images and labels.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.loading import load_case_image, load_case_label
from medseg.data.manifest import Case, Manifest
from medseg.errors import MedsegError
from medseg.io import affines_match, load_volume
from medseg.io.channels import DEFAULT_MIN_OVERLAP
from medseg.io.geometry import world_coordinates
from medseg.io.labels import is_dicom_label_object
from medseg.io.nifti import is_nifti
from medseg.io.volume import Volume

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """One problem found by validation: which case, which file, what is wrong."""

    case_id: str | None
    path: Path
    message: str

    def __str__(self) -> str:
        case = f"[{self.case_id}] " if self.case_id else ""
        return f"{self.path}: {case}{self.message}"


@dataclass
class ValidationReport:
    """Every problem found in a manifest, plus what was seen (for the summary)."""

    manifest: Manifest
    problems: list[Problem] = field(default_factory=list)
    label_values_found: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def raise_if_failed(self) -> None:
        """Raise one :class:`MedsegError` listing every problem (no-op when clean)."""
        if self.problems:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            raise MedsegError(
                f"{len(self.problems)} problem(s) in the manifest "
                f"(data root {self.manifest.data_root}):\n{lines}",
                self.manifest.path,
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``validate-manifest --json`` writes)."""
        m = self.manifest
        return {
            "manifest": str(m.path),
            "data_root": str(m.data_root),
            "name": m.name,
            "n_training": len(m.training),
            "n_test": len(m.test),
            "labels": {str(k): v for k, v in m.labels.items()},
            "label_values_found": {str(k): n for k, n in sorted(self.label_values_found.items())},
            "ok": self.ok,
            "problems": [
                {"case_id": p.case_id, "path": str(p.path), "message": p.message}
                for p in self.problems
            ],
            "seconds": round(self.seconds, 3),
        }


def validate_manifest(
    manifest: Manifest,
    *,
    tolerance_mm: float = 1e-3,
    check_values: bool = True,
    max_workers: int | None = None,
    on_case: Callable[[Case], None] | None = None,
    min_overlap: float = DEFAULT_MIN_OVERLAP,
) -> ValidationReport:
    """Open every file of a manifest and report every problem at once.

    Checks: duplicate case ids and duplicate paths; missing and unreadable files; image and
    label of a case on the same grid (shape, and affine within ``tolerance_mm`` at the voxel
    corners, RAS mm); label values that are integers named in ``manifest.labels``; every
    input channel readable and covering at least ``min_overlap`` of channel 0's field of
    view (:mod:`medseg.io.channels`); RTSTRUCT and DICOM-SEG labels rasterised onto channel
    0's grid with the case's ``label_map``. Files are only read.

    Parameters
    ----------
    manifest
        From :func:`load_manifest`.
    tolerance_mm
        Largest allowed world-position difference (mm) between image and label grids.
    check_values
        Also read label voxel values (integers, declared in ``labels``).
    max_workers
        Reader threads (zlib and numpy release the GIL); default ``min(8, 2 * cpus)``.
    on_case
        Called after each case is checked (progress bars).
    min_overlap
        Smallest share of channel 0's field of view each other channel must cover.

    Returns
    -------
    ValidationReport
        ``problems`` in manifest order; ``label_values_found`` maps each label value to the
        number of cases containing it.
    """
    start = time.perf_counter()
    report = ValidationReport(manifest=manifest)
    report.problems.extend(_structure_problems(manifest))
    workers = max_workers or min(8, 2 * (os.cpu_count() or 1))

    def work(case: Case) -> tuple[list[Problem], set[int]]:
        result = _check_case(case, manifest, tolerance_mm, check_values, min_overlap)
        if on_case is not None:
            on_case(case)
        return result

    found: Counter[int] = Counter()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for problems, values in pool.map(work, manifest.cases):
            report.problems.extend(problems)
            found.update(values)
    report.label_values_found = dict(sorted(found.items()))
    report.seconds = time.perf_counter() - start
    logger.debug("validated %s in %.2f s", manifest.path, report.seconds)
    return report


def _structure_problems(manifest: Manifest) -> list[Problem]:
    problems = []
    if not manifest.training:
        problems.append(
            Problem(None, manifest.path, "expected labelled training cases, found none")
        )
    for case in manifest.cases:
        n = len(case.images)
        if n != manifest.n_channels and not (n == 1 and is_nifti(case.image)):
            problems.append(
                Problem(
                    case.case_id,
                    case.image,
                    f"expected {manifest.n_channels} image channel(s) "
                    f"{list(manifest.modality.values())} (the manifest's modality), found {n}",
                )
            )
    for what, counts in _duplicates(manifest).items():
        for value, n in counts.items():
            problems.append(
                Problem(
                    None,
                    manifest.path,
                    f"duplicate {what} {value} ({n} times); expected each {what} once",
                )
            )
    return problems


def _duplicates(manifest: Manifest) -> dict[str, dict[str, int]]:
    ids = Counter(c.case_id for c in manifest.cases)
    paths = Counter(
        os.path.normpath(p) for c in manifest.cases for p in (*c.images, c.label) if p is not None
    )
    return {
        "case id": {k: n for k, n in ids.items() if n > 1},
        "path": {k: n for k, n in paths.items() if n > 1},
    }


def _check_case(
    case: Case,
    manifest: Manifest,
    tolerance_mm: float,
    check_values: bool,
    min_overlap: float = DEFAULT_MIN_OVERLAP,
) -> tuple[list[Problem], set[int]]:
    problems: list[Problem] = []
    image = _read_image(case, manifest.n_channels, min_overlap, problems)
    label = None
    if case.label is not None and _exists(case, case.label, problems):
        label = _read_label(case, image, problems)
    if label is None or case.label is None:
        return problems, set()
    if image is not None:
        _check_grid(case, image, label, tolerance_mm, problems)
    if not check_values:
        return problems, set()
    return problems, _check_values(case, label, manifest.labels, problems)


def _check_grid(
    case: Case, image: Volume, label: Volume, tolerance_mm: float, problems: list[Problem]
) -> None:
    assert case.label is not None
    if image.spatial_shape != label.spatial_shape:
        problems.append(
            Problem(
                case.case_id,
                case.label,
                f"label shape {label.spatial_shape} differs from image shape "
                f"{image.spatial_shape} ({case.image}); expected the image's grid",
            )
        )
    elif not affines_match(image.affine, label.affine, tolerance_mm):
        shift = _corner_shift(image.affine, label.affine)
        problems.append(
            Problem(
                case.case_id,
                case.label,
                f"label affine differs from the image affine ({case.image}) by up to "
                f"{shift:.4g} mm (expected within the tolerance, {tolerance_mm} mm: "
                "same spacing, origin and direction)",
            )
        )


def _check_values(
    case: Case, label: Volume, labels: Mapping[int, str], problems: list[Problem]
) -> set[int]:
    """Label values: integers, each named in the manifest's ``labels``."""
    assert case.label is not None
    values = np.unique(label.array)
    if np.issubdtype(values.dtype, np.floating) and np.any(values != np.round(values)):
        bad = values[values != np.round(values)]
        problems.append(
            Problem(
                case.case_id,
                case.label,
                f"expected integer label values, found {bad.size} non-integer value(s) "
                f"such as {_list(bad)}",
            )
        )
        values = values[values == np.round(values)]
    ints = {int(v) for v in values}
    undeclared = sorted(ints - set(labels))
    if undeclared:
        problems.append(
            Problem(
                case.case_id,
                case.label,
                f"label value(s) {undeclared} not named in the manifest's labels "
                f"(expected values in {sorted(labels)})",
            )
        )
    return ints


def _exists(case: Case, path: Path, problems: list[Problem]) -> bool:
    if path.exists():
        return True
    if path == case.label:
        kind = "label file"
    elif len(case.images) > 1:
        kind = f"image file of channel {case.images.index(path)}"
    else:
        kind = "image file"
    problems.append(Problem(case.case_id, path, f"file not found (expected the {kind})"))
    return False


def _read_image(
    case: Case, n_channels: int, min_overlap: float, problems: list[Problem]
) -> Volume | None:
    if not all([_exists(case, p, problems) for p in case.images]):
        return None
    try:
        return load_case_image(case, n_channels, min_overlap=min_overlap)
    except MedsegError as exc:
        problems.append(
            Problem(case.case_id, Path(exc.path or case.image), f"unreadable: {exc.message}")
        )
        return None


def _read_label(case: Case, image: Volume | None, problems: list[Problem]) -> Volume | None:
    assert case.label is not None
    try:
        if image is None:  # still report an unreadable label map; contours need the image
            if is_dicom_label_object(case.label):
                return None
            return load_volume(case.label, allow_empty=True)
        return load_case_label(case, image)
    except MedsegError as exc:
        problems.append(Problem(case.case_id, case.label, f"unreadable: {exc.message}"))
        return None


def _corner_shift(a: np.ndarray, b: np.ndarray) -> float:
    """Largest world distance (mm) between the two mappings of the unit-cube voxel corners."""
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=float)
    diff = world_coordinates(a, corners) - world_coordinates(b, corners)
    return float(np.linalg.norm(diff, axis=1).max())


def _list(values: np.ndarray, n: int = 5) -> str:
    shown = ", ".join(f"{float(v):g}" for v in values[:n])
    return f"[{shown}{', ...' if values.size > n else ''}]"
