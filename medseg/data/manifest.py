"""Dataset manifests in the Medical Segmentation Decathlon ``dataset.json`` layout.

A manifest is a JSON file such as::

    {
      "name": "Hippocampus",
      "modality": {"0": "MRI"},
      "labels": {"0": "background", "1": "Anterior", "2": "Posterior"},
      "numTraining": 2,
      "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}, ...],
      "test": ["./imagesTs/c.nii.gz"]
    }

Several input channels per case: ``"modality"`` (or nnU-Net v2's ``"channel_names"``) names
them, ``{"0": "CT", "1": "PET"}``, and a case's ``"image"`` is a list of files or DICOM series
folders, one per channel, or one 4D NIfTI (MSD layout, channels on the last axis). A case may
also give ``"id"`` (default: the channel 0 file name without extension, or its folder name
when those collide), ``"series"`` (per channel, the DICOM series to read from a folder
holding several: UID or 1-based number) and ``"label_map"`` (ROI or segment name, glob
pattern or ``re:`` regex -> label value, for RTSTRUCT or DICOM-SEG labels; a top-level
``"label_map"`` applies to every case without its own). ``"labels"`` may also be written the
nnU-Net v2 way, ``{"background": 0, "tumour": 1}``.

Paths are relative to a data root given separately (``--data-root``), so one manifest
describes the same data wherever it is stored; absolute paths are used as they are. Every
path must lie inside the data root once resolved (``..``, absolute paths elsewhere and
symlinks leading out are refused, all listed at once) unless ``allow_outside_root`` is set.
A UTF-8 byte order mark at the start of the file is accepted.
:func:`load_manifest` checks the structure; :func:`medseg.data.validation.validate_manifest`
opens every file and reports every problem at once.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from medseg.data.manifest_fields import (
    check_case_id,
    describe,
    image_paths,
    int_keyed,
    label_map_value,
    path_value,
    series_value,
    string_value,
)
from medseg.errors import MedsegError
from medseg.io.file_names import file_stem

logger = logging.getLogger(__name__)

_REQUIRED_KEYS = ("labels", "training")


@dataclass(frozen=True)
class Case:
    """One case of a manifest: its image channels and (for training cases) its label.

    ``case_id`` is the manifest's ``"id"``, else channel 0's file name without ``.nii.gz`` or
    its extension. ``image`` is channel 0, ``extra_images`` channels 1.. (:attr:`images`
    lists all); ``series`` picks a DICOM series per channel (``None``: the only one);
    ``label`` is a label map file, an RTSTRUCT or a DICOM-SEG, whose ROI/segment names
    ``label_map`` maps to label values (``(pattern, value)`` pairs, in order).
    """

    case_id: str
    image: Path
    label: Path | None
    extra_images: tuple[Path, ...] = ()
    series: tuple[str | None, ...] = ()
    label_map: tuple[tuple[str, int], ...] = ()

    @property
    def images(self) -> tuple[Path, ...]:
        """Every input channel's file or folder, channel 0 first."""
        return (self.image, *self.extra_images)


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest with paths resolved against ``data_root``.

    ``modality`` maps input channel index to its name (e.g. ``{0: "CT", 1: "PET"}``);
    ``labels`` maps label value to name (``{0: "background", 1: "Anterior", ...}``).
    """

    name: str
    modality: dict[int, str]
    labels: dict[int, str]
    training: tuple[Case, ...]
    test: tuple[Case, ...]
    path: Path
    data_root: Path
    description: str = ""

    @property
    def cases(self) -> tuple[Case, ...]:
        """Training cases followed by test cases."""
        return self.training + self.test

    @property
    def n_channels(self) -> int:
        """Input channels per case (from ``modality``)."""
        return len(self.modality)


def case_id_from_path(path: str | os.PathLike[str]) -> str:
    """A case's default id, :func:`medseg.io.file_names.file_stem` of channel 0:
    ``./a/x_01.nii.gz`` -> ``x_01``, a DICOM folder ``dicom/ct01`` -> ``ct01``."""
    return file_stem(path)


def load_manifest(
    path: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    *,
    allow_outside_root: bool = False,
) -> Manifest:
    """Parse a manifest and check its structure (files are not opened).

    Parameters
    ----------
    path
        The manifest JSON file (MSD ``dataset.json`` layout).
    data_root
        Folder the manifest's relative paths start from.
    allow_outside_root
        Accept image/label paths that resolve outside ``data_root`` (``../x``, absolute
        paths elsewhere, symlinks pointing out); by default they are refused.

    Returns
    -------
    Manifest
        Cases in file order; training cases carry a label, test cases usually do not.

    Raises
    ------
    MedsegError
        Naming the manifest file and the JSON key when the file is missing, is not JSON, or
        an entry has the wrong type (e.g. ``training[3].label: expected a string path,
        found 12``), or, without ``allow_outside_root``, listing every path outside the
        data root (case id, JSON key, path as written).
    """
    path = Path(path)
    root = Path(data_root)
    if not path.is_file():
        raise MedsegError("manifest not found (expected a dataset.json-style file)", path)
    if not root.is_dir():
        raise MedsegError(f"data root is not a folder (needed by manifest {path})", root)
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise MedsegError(
            f"expected UTF-8 JSON text, found undecodable bytes: {exc}", path
        ) from exc
    except json.JSONDecodeError as exc:
        raise MedsegError(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            f"{_trailing_comma_hint(exc)} (expected a JSON object in the MSD dataset.json "
            "layout)",
            path,
        ) from exc
    if not isinstance(doc, dict):
        raise MedsegError(f"expected a JSON object at the top, found {describe(doc)}", path)
    missing = [k for k in _REQUIRED_KEYS if k not in doc]
    if "modality" not in doc and "channel_names" not in doc:
        missing.insert(0, "modality")
    if missing:
        raise MedsegError(f"missing required key(s) {missing} (MSD dataset.json layout)", path)
    default_map = label_map_value(doc.get("label_map"), "label_map", path)
    training = _parse_cases(doc["training"], "training", path, root, True, default_map)
    test = _parse_cases(doc.get("test", []), "test", path, root, False, default_map)
    training, test = _unique_ids(training, test)
    if not allow_outside_root:
        _refuse_outside_root(doc, path, root)
    n_declared = doc.get("numTraining")
    if n_declared is not None and n_declared != len(training):
        logger.warning(
            "%s: numTraining is %s but training lists %d cases", path, n_declared, len(training)
        )
    return Manifest(
        name=string_value(doc.get("name", path.stem), "name", path),
        modality=int_keyed(_channels(doc), "modality", path),
        labels=int_keyed(_labels(doc["labels"]), "labels", path),
        training=training,
        test=test,
        path=path,
        data_root=root,
        description=string_value(doc.get("description", ""), "description", path),
    )


def _trailing_comma_hint(exc: json.JSONDecodeError) -> str:
    before = exc.doc[: exc.pos].rstrip()
    return "; a trailing comma before it?" if before.endswith(",") else ""


def _outside(value: str, root: Path) -> str | None:
    """Why ``value`` (as written in the manifest) resolves outside ``root``, or ``None``."""
    p = Path(value)
    full = p if p.is_absolute() else root / p
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(full))
    if real.is_relative_to(real_root):
        return None
    if Path(os.path.normpath(full)).is_relative_to(os.path.normpath(root)):
        return f"a symlink to {real}"
    return f"resolves to {real}"


def _refuse_outside_root(doc: dict[str, object], path: Path, root: Path) -> None:
    """Raise one error listing every image/label path that leads out of the data root."""
    root = Path(os.path.abspath(root))
    lines = []
    for key in ("training", "test"):
        entries = doc.get(key) or []
        for n, entry in enumerate(entries if isinstance(entries, list) else []):
            fields = {"image": entry} if isinstance(entry, str) else entry
            if not isinstance(fields, dict):
                continue
            images = fields.get("image")
            named = (
                [("image", v) for v in images] if isinstance(images, list) else [("image", images)]
            )
            for name, value in [*named, ("label", fields.get("label"))]:
                why = _outside(value, root) if isinstance(value, str) else None
                if why is not None:
                    first = named[0][1] if isinstance(named[0][1], str) else "?"
                    case = fields.get("id") or case_id_from_path(first)
                    lines.append(f"  - [{case}] {key}[{n}].{name}: {value} ({why})")
    if lines:
        raise MedsegError(
            f"{len(lines)} path(s) outside the data root {root} (expected every image and "
            "label inside it; pass --allow-outside-root, or set data.allow_outside_root: true "
            "in the run config, to accept them):\n" + "\n".join(lines),
            path,
        )


def _channels(doc: dict[str, object]) -> object:
    """``modality`` (MSD) or ``channel_names`` (nnU-Net v2)."""
    return doc["modality"] if "modality" in doc else doc["channel_names"]


def _labels(value: object) -> object:
    """MSD ``{"0": "background"}`` as is; nnU-Net v2 ``{"background": 0}`` inverted."""
    if (
        isinstance(value, dict)
        and value
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value.values())
    ):
        return {str(v): k for k, v in value.items()}
    return value


def _parse_cases(
    entries: object,
    key: str,
    path: Path,
    root: Path,
    need_label: bool,
    default_map: tuple[tuple[str, int], ...] = (),
) -> tuple[Case, ...]:
    if not isinstance(entries, list):
        raise MedsegError(f"{key}: expected a list, found {describe(entries)}", path)
    cases = []
    for n, entry in enumerate(entries):
        where = f"{key}[{n}]"
        if isinstance(entry, str | list) and not need_label:  # MSD test lists: bare paths
            entry = {"image": entry}
        if not isinstance(entry, dict):
            raise MedsegError(
                f"{where}: expected an object with 'image', found {describe(entry)}", path
            )
        if "image" not in entry or (need_label and "label" not in entry):
            need = "'image' and 'label'" if need_label else "'image'"
            raise MedsegError(f"{where}: expected keys {need}, found {sorted(entry)}", path)
        images = image_paths(entry["image"], where, path, root)
        label = None
        if entry.get("label") is not None or need_label:
            label = path_value(entry.get("label"), f"{where}.label", path, root)
        id_key = f"{where}.id" if "id" in entry else f"{where}.image (its file name)"
        case_id = check_case_id(entry.get("id", case_id_from_path(images[0])), id_key, path)
        cases.append(
            Case(
                case_id=case_id,
                image=images[0],
                label=label,
                extra_images=tuple(images[1:]),
                series=series_value(entry.get("series"), len(images), where, path),
                label_map=label_map_value(entry.get("label_map"), f"{where}.label_map", path)
                or default_map,
            )
        )
    return tuple(cases)


def _unique_ids(
    training: tuple[Case, ...], test: tuple[Case, ...]
) -> tuple[tuple[Case, ...], tuple[Case, ...]]:
    """Cases whose file-name ids collide (``A/CT.nii.gz``, ``B/CT.nii.gz``) take the folder name.

    Only when the folder names are unique themselves; explicit ``"id"`` values stay.
    """
    every = training + test
    counts = Counter(c.case_id for c in every)
    parents = Counter(c.image.parent.name for c in every)

    def fix(c: Case) -> Case:
        derived = c.case_id == case_id_from_path(c.image)
        folder = c.image.parent.name
        if counts[c.case_id] > 1 and derived and parents[folder] == 1 and folder not in ("", ".."):
            return replace(c, case_id=folder)
        return c

    return tuple(fix(c) for c in training), tuple(fix(c) for c in test)
