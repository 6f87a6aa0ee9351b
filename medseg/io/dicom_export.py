"""``export_dicom``: a mask file -> DICOM-SEG or RTSTRUCT on its DICOM series (what
``medseg export-dicom`` calls).

Label names come from the caller, else from the medseg prediction sidecar ``CASE.json`` beside
``CASE.nii.gz`` (its ``"labels"``: ``{"1": "liver", ...}``; its ``"model"`` record gives the
algorithm identity), else ``label_<value>``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from medseg.errors import MedsegError
from medseg.io.dicom_seg_write import write_dicom_seg
from medseg.io.file_names import sidecar_path
from medseg.io.jsonfile import read_json
from medseg.io.reader import load_volume
from medseg.io.rtstruct_write import write_rtstruct
from medseg.io.seg_codes import AlgorithmInfo
from medseg.io.volume import Volume

logger = logging.getLogger(__name__)

ExportFormat = Literal["dicom-seg", "rtstruct"]
FORMATS: tuple[str, ...] = ("dicom-seg", "rtstruct")


def parse_labels(pairs: Sequence[str]) -> dict[int, str]:
    """``["liver=1", "tumour=2"]`` (or ``["liver=1,tumour=2"]``) -> ``{1: "liver", 2: "tumour"}``.

    Raises
    ------
    MedsegError
        An entry that is not ``name=value`` with an integer value >= 1, or a value given twice.
    """
    out: dict[int, str] = {}
    for entry in (e.strip() for pair in pairs for e in pair.split(",")):
        if not entry:
            continue
        name, sep, value = entry.rpartition("=")
        if not sep or not name.strip() or not value.strip().isdigit() or int(value) < 1:
            raise MedsegError(
                f"--labels: expected name=value with an integer value >= 1 (e.g. liver=1), "
                f"found '{entry}'"
            )
        if int(value) in out:
            raise MedsegError(
                f"--labels: value {int(value)} given twice ('{out[int(value)]}' and "
                f"'{name.strip()}'); expected one name per value"
            )
        out[int(value)] = name.strip()
    return out


def read_sidecar(mask_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The sidecar of a mask as a dict, ``None`` when there is none.

    Raises
    ------
    MedsegError
        A sidecar that is not valid JSON, not an object, or whose ``"labels"`` is not
        ``{"<int>": "<name>"}``.
    """
    path = sidecar_path(mask_path)
    if not path.is_file():
        return None
    data = read_json(path, what="a medseg prediction sidecar")
    if not isinstance(data, dict):
        raise MedsegError(f"expected a JSON object, found {type(data).__name__}", path)
    labels = data.get("labels", {})
    if not isinstance(labels, dict) or not all(
        str(k).isdigit() and isinstance(v, str) for k, v in labels.items()
    ):
        raise MedsegError(
            f'expected "labels" as {{"<value>": "<name>"}}, found {str(labels)[:80]}', path
        )
    return data


def _reference(reference: Path | None, sidecar: dict[str, Any] | None, mask_path: Path) -> Path:
    if reference is not None:
        return reference
    # Path("") is "." (the working directory): only a non-empty recorded input counts
    recorded = str(sidecar.get("input") or "") if sidecar else ""
    if recorded and Path(recorded).is_dir():
        logger.info("using the series the sidecar records as the input: %s", recorded)
        return Path(recorded)
    raise MedsegError(
        "a NIfTI/NRRD mask carries no link to its DICOM series: expected --reference "
        "SERIES_DIR (the series the mask was predicted on), found none (and no prediction "
        f"sidecar {sidecar_path(mask_path).name} naming a DICOM folder as its input)",
        mask_path,
    )


def _load_labels(path: Path, what: str) -> Volume:
    if path.is_dir():
        raise MedsegError(
            f"expected a {what} file (NIfTI, NRRD or MetaImage), found a folder", path
        )
    return load_volume(path, allow_empty=True)


def export_dicom(
    mask_path: str | os.PathLike[str],
    *,
    format: ExportFormat,
    output: str | os.PathLike[str],
    reference: str | os.PathLike[str] | None = None,
    labels: Mapping[int, str] | None = None,
    instances: str | os.PathLike[str] | None = None,
    series: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Export a label-map file as a DICOM-SEG or an RTSTRUCT on its DICOM source series.

    Parameters
    ----------
    mask_path
        Label map file (NIfTI, NRRD, MetaImage) on the series grid, any axis order.
    format
        ``"dicom-seg"`` (:func:`medseg.io.dicom_seg_write.write_dicom_seg`) or ``"rtstruct"``
        (:func:`medseg.io.rtstruct_write.write_rtstruct`).
    output
        A ``.dcm`` file, or a folder receiving ``CASE_seg.dcm`` / ``CASE_rtstruct.dcm``.
    reference
        The DICOM series folder; default: the sidecar's ``"input"`` when it is a folder.
    labels
        ``{value: name}``; default: the sidecar's labels, else ``label_<value>``.
    instances
        Instance map file (RTSTRUCT only): one ROI ``<label>_<id>`` per instance.
    series
        SeriesInstanceUID or number when the reference folder holds several series.
    overwrite
        Replace an existing output file.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    MedsegError
        No reference, an unknown format, ``instances`` with ``dicom-seg``, and everything the
        writers refuse (mask off the series grid, empty mask, no or several series, ...).
    """
    if format not in FORMATS:
        raise MedsegError(f"--format: expected one of {', '.join(FORMATS)}, found '{format}'")
    if instances is not None and format != "rtstruct":
        raise MedsegError("--instances: expected --format rtstruct (one ROI per instance)")
    mask_file = Path(mask_path)
    sidecar = read_sidecar(mask_file)
    source = _reference(None if reference is None else Path(reference), sidecar, mask_file)
    mask = _load_labels(mask_file, "label map")
    if labels is None and sidecar is not None:
        labels = {int(k): v for k, v in sidecar.get("labels", {}).items() if int(k) != 0}
    model = sidecar.get("model") if sidecar else None
    algorithm = AlgorithmInfo.from_identity(model) if isinstance(model, dict) else AlgorithmInfo()
    common: dict[str, Any] = {"labels": labels or {}, "algorithm": algorithm, "series": series}
    if format == "dicom-seg":
        return write_dicom_seg(mask, source, output, overwrite=overwrite, **common)
    inst = None if instances is None else _load_labels(Path(instances), "instance map")
    return write_rtstruct(mask, source, output, instances=inst, overwrite=overwrite, **common)
