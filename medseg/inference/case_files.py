"""What a prediction input holds: image files and folders of DICOM files, found cheaply by name
and magic bytes (the full check happens when a case is read).

:mod:`medseg.inference.cases` turns what :func:`walk_inputs` finds into cases.
"""

from __future__ import annotations

import os
from pathlib import Path

from medseg.io.itk import is_itk_file
from medseg.io.nifti import is_nifti

_NOT_DICOM = (".txt", ".json", ".csv", ".md", ".raw", ".zraw", ".gz", ".npz", ".npy", ".png")


def is_image_file(path: Path) -> bool:
    """True for the single-file volume formats medseg reads."""
    return is_nifti(path) or is_itk_file(path)


def looks_dicom(path: Path) -> bool:
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


def holds_dicom(folder: Path) -> bool:
    """True when ``folder`` directly holds a file that looks like DICOM (hidden files aside)."""
    try:
        files = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
    except OSError:
        return False
    return any(looks_dicom(p) for p in files if not is_image_file(p))


def walk_inputs(root: Path, exclude: Path | None) -> list[tuple[Path, bool]]:
    """Every image file and every folder directly holding DICOM files under ``root``.

    Returns ``(path, is_dicom_folder)`` pairs in walk order (folders and files sorted by name,
    hidden ones skipped); ``exclude`` (the output folder, say) is not entered.
    """
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
        if any(looks_dicom(p) for p in paths if not is_image_file(p)):
            found.append((here, True))
    return found
