"""What batch prediction is asked to write, resolved against the model, and when a case has it.

:class:`OutputRequest` comes from :class:`~medseg.inference.config.InferConfig` (``formats``,
``instances``, ``reference``, ``save_probabilities``, ``series``) and the model's labels;
:func:`dicom_reference` finds the DICOM series a case's DICOM outputs reference (the rules are
in :mod:`medseg.inference.case_outputs`); :func:`case_complete` is the resume test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.errors import MedsegError
from medseg.inference.cases import CaseInput
from medseg.io.jsonfile import read_json

if TYPE_CHECKING:  # only for the annotation: importing the predictor pulls in torch
    from medseg.inference.predictor import Predictor

DICOM_FORMATS = ("dicom-seg", "rtstruct")
#: Connectivity of the lesion instances (26: the full 3x3x3 neighbourhood).
CONNECTIVITY = 26
#: File name of each output kind, after the case id.
SUFFIXES = {
    "nifti": ".nii.gz",
    "probabilities": "_probabilities.nii.gz",
    "instances": "_instances.nii.gz",
    "lesions_csv": "_lesions.csv",
    "lesions_json": "_lesions.json",
    "dicom-seg": "_seg.dcm",
    "rtstruct": "_rtstruct.dcm",
}


def parse_list(text: str) -> tuple[str, ...]:
    """``"nifti, dicom-seg"`` -> ``("nifti", "dicom-seg")`` (empty items dropped)."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


def parse_instance_labels(text: str) -> tuple[int | str, ...]:
    """``"5,lesion"`` -> ``(5, "lesion")``: digits become label values, the rest names."""
    return tuple(int(t) if t.isdigit() else t for t in parse_list(text))


def resolve_instance_labels(
    requested: Sequence[int | str], label_names: Mapping[int, str]
) -> tuple[int, ...]:
    """Label values of the requested instance labels (values or names of the model's labels).

    Raises
    ------
    MedsegError
        For a value or name that is not a foreground label of the model (the labels listed),
        or a label asked twice.
    """
    by_name = {str(n).lower(): int(v) for v, n in label_names.items() if int(v) != 0}
    known = {int(v) for v in label_names if int(v) != 0}
    out: list[int] = []
    for item in requested:
        text = str(item).strip()
        value = int(text) if text.isdigit() else by_name.get(text.lower())
        if value is None or value not in known:
            listed = ", ".join(f"{v}={label_names[v]}" for v in sorted(known))
            raise MedsegError(
                f"--instances: expected labels of the model ({listed}), found '{text}'"
            )
        if value in out:
            raise MedsegError(f"--instances: label {value} is asked twice, found {list(requested)}")
        out.append(value)
    return tuple(out)


@dataclass(frozen=True)
class OutputRequest:
    """The outputs asked for, resolved against the model (see the module docstring).

    Attributes
    ----------
    formats
        Among ``nifti``, ``dicom-seg``, ``rtstruct``.
    instance_labels
        Label values split into lesion instances (``()``: none).
    probabilities
        Write ``CASE_probabilities.nii.gz``.
    reference
        ``--reference`` folder for NIfTI cases, or ``None``.
    series
        ``--series``: channel 0's series, and that of a reference folder holding several.
    """

    formats: tuple[str, ...] = ("nifti",)
    instance_labels: tuple[int, ...] = ()
    probabilities: bool = False
    reference: Path | None = None
    series: str | None = None

    @classmethod
    def from_predictor(cls, predictor: Predictor) -> OutputRequest:
        """From ``predictor.config``; unknown instance labels and a missing ``--reference``
        folder raise :class:`MedsegError` here, before any case is predicted."""
        cfg = predictor.config
        labels = resolve_instance_labels(cfg.instances, predictor.label_names)
        ref = None if cfg.reference is None else Path(cfg.reference)
        if ref is not None and not ref.is_dir():
            raise MedsegError(
                "--reference: expected a DICOM series folder (or a folder of one series "
                "folder per case), found no folder",
                ref,
            )
        return cls(tuple(cfg.formats), labels, cfg.save_probabilities, ref, cfg.series)

    @property
    def dicom(self) -> tuple[str, ...]:
        """The DICOM formats asked for."""
        return tuple(f for f in self.formats if f in DICOM_FORMATS)

    def files(self, name: str) -> dict[str, str]:
        """``{output kind: file name}`` of every file case ``name`` should have."""
        kinds = [f for f in self.formats if f == "nifti"]
        kinds += ["probabilities"] * self.probabilities
        if self.instance_labels:
            kinds += ["instances", "lesions_csv", "lesions_json"]
        return {k: f"{name}{SUFFIXES[k]}" for k in [*kinds, *self.dicom]}


def dicom_reference(case: CaseInput, request: OutputRequest) -> tuple[Path, str | None]:
    """The DICOM series folder (and series pick) the case's DICOM outputs reference.

    Raises
    ------
    MedsegError
        A NIfTI/NRRD case without ``--reference``, or without its ``REFERENCE/CASE/`` folder.
    """
    if case.is_dicom:
        return case.path, (case.series[0] if case.series else None) or request.series
    ref = request.reference
    formats = " and ".join(request.dicom)
    if ref is None:
        raise MedsegError(
            f"case {case.name}: {formats} reference the DICOM series the scan came from: "
            "expected a DICOM series input or --reference SERIES_DIR (or a folder of series "
            "folders named by case id), found a non-DICOM input and no --reference",
            case.path,
        )
    if any(p.is_file() and not p.name.startswith(".") for p in ref.iterdir()):
        return ref, request.series  # the folder is the series itself
    own = ref / case.name
    if not own.is_dir():
        raise MedsegError(
            f"case {case.name}: expected --reference {ref} (a folder of per-case series "
            f"folders) to hold {case.name}/, the series of this case; found none",
            ref,
        )
    return own, request.series


def case_complete(output: Path, name: str, request: OutputRequest) -> bool:
    """True when the sidecar and every requested file of case ``name`` exist.

    A DICOM format the sidecar records as omitted (an empty mask) counts as present; a case
    whose sidecar was written for other instance labels is not complete.
    """
    sidecar = output / f"{name}.json"
    if not sidecar.is_file():
        return False
    try:
        info = read_json(sidecar, what="a prediction sidecar")
    except MedsegError:
        return False
    info = info if isinstance(info, dict) else {}
    omitted = info.get("omitted") or {}
    if request.instance_labels:
        lesions = info.get("lesions") or {}
        if [int(v) for v in lesions.get("labels", {})] != list(request.instance_labels):
            return False
    return all(
        kind in omitted or (output / file).is_file() for kind, file in request.files(name).items()
    )
