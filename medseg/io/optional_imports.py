"""Optional dependencies, imported where first needed with an error that says how to install
them (``highdicom``: the ``dicomseg`` extra)."""

from __future__ import annotations

from typing import Any

from medseg.errors import MedsegError


def import_highdicom(task: str) -> Any:
    """The ``highdicom`` module, or a MedsegError naming ``task`` (``"reading DICOM-SEG"``)
    and the extra to install."""
    try:
        import highdicom
    except ImportError as exc:  # an optional dependency (the dicomseg extra)
        raise MedsegError(
            f"{task} needs highdicom (expected it installed, found none): "
            "pip install 'medseg[dicomseg]'"
        ) from exc
    return highdicom
