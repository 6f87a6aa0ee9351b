"""Finding the cases of a prediction input: a file, a DICOM series folder, or a folder of cases.

Every image file (NIfTI, NRRD, MetaImage) is one case named by its stem; every folder that
directly holds DICOM files is one case named by the folder. Names that collide (``a/CT`` and
``b/CT``) get their relative path joined with ``_`` instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medseg.errors import MedsegError
from medseg.io.itk import is_itk_file
from medseg.io.nifti import is_nifti

_NOT_DICOM = (".txt", ".json", ".csv", ".md", ".raw", ".zraw", ".gz", ".npz", ".npy", ".png")


@dataclass(frozen=True)
class CaseInput:
    """One case to predict: its output name and the file or DICOM folder to read."""

    name: str
    path: Path
    is_dicom: bool


def is_image_file(path: Path) -> bool:
    """True for the single-file volume formats medseg reads."""
    return is_nifti(path) or is_itk_file(path)


def _looks_dicom(path: Path) -> bool:
    """Cheap test: ``.dcm`` suffix or the ``DICM`` magic at byte 128 (full check at read time)."""
    name = path.name.lower()
    if name.endswith((".dcm", ".ima")):
        return True
    if name.startswith(".") or name.endswith(_NOT_DICOM) or name == "dicomdir":
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def _stem(path: Path) -> str:
    name = path.name
    if name.lower().endswith(".nii.gz"):
        return name[: -len(".nii.gz")]
    return path.stem


def discover_cases(path: str | os.PathLike[str], *, exclude: Path | None = None) -> list[CaseInput]:
    """List the cases under ``path``, sorted by name.

    Parameters
    ----------
    path
        An image file, a DICOM series folder, or a folder of such (searched recursively).
    exclude
        A folder to skip (the output folder, when it lies inside the input).

    Raises
    ------
    MedsegError
        When ``path`` does not exist or holds no case.
    """
    root = Path(path)
    if not root.exists():
        raise MedsegError("input not found (expected an image file or a folder)", root)
    if root.is_file():
        if not is_image_file(root) and not _looks_dicom(root):
            raise MedsegError(
                "unsupported input file (expected .nii, .nii.gz, .nrrd, .mha, .mhd or a DICOM "
                "series folder)",
                root,
            )
        if _looks_dicom(root) and not is_image_file(root):
            return [CaseInput(root.parent.name, root.parent, True)]
        return [CaseInput(_stem(root), root, False)]
    found: list[tuple[Path, bool]] = []
    skip = exclude.resolve() if exclude is not None else None
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if skip is not None and here.resolve() == skip:
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        paths = [here / f for f in sorted(files) if not f.startswith(".")]
        found.extend((p, False) for p in paths if is_image_file(p))
        if any(_looks_dicom(p) for p in paths if not is_image_file(p)):
            found.append((here, True))
    if not found:
        raise MedsegError("no cases found (expected image files or folders of DICOM files)", root)
    return _name_cases(root, found)


def _name_cases(root: Path, found: list[tuple[Path, bool]]) -> list[CaseInput]:
    names = [p.name if dicom else _stem(p) for p, dicom in found]
    if len(found) == 1 and found[0][0] == root:
        return [CaseInput(names[0], root, found[0][1])]
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    cases = []
    for (p, dicom), name in zip(found, names, strict=True):
        if counts[name] > 1:
            rel = p.relative_to(root)
            parts = [*rel.parts[:-1], name] if not dicom else list(rel.parts) or [name]
            name = "_".join(parts)
        cases.append(CaseInput(name, p, dicom))
    return sorted(cases, key=lambda c: c.name)
