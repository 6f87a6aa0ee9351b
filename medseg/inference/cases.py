"""Finding the cases of a prediction input: a file, a DICOM series folder, a folder of cases,
or a manifest's ``"test"`` list.

One input channel (``n_channels=1``, every model before multi-channel input): every image file
(NIfTI, NRRD, MetaImage) is one case named by its stem; every folder that directly holds DICOM
files is one case named by the folder. Names that collide (``a/CT`` and ``b/CT``) get their
relative path joined with ``_`` instead. A channel suffix is kept: ``CASE_0000.nii.gz`` is the
case ``CASE_0000`` and its mask ``CASE_0000.nii.gz``. nnU-Net v2 names that case ``CASE`` (it
requires the ``_0000`` suffix on every input, one channel or several); medseg keeps the stem
so that output names, resumed batches and stem-paired evaluations stay as they were.

Several input channels (``n_channels=N > 1``), nnU-Net v2's convention: ``CASE_0000.nii.gz``,
``CASE_0001.nii.gz``, ... in one folder (any supported extension; a channel may be a DICOM
series folder ``CASE_0000/``) are the channels of the case ``CASE``, channel number = the four
digits. A case missing a channel, with a channel beyond ``N - 1`` or with two inputs for one
channel is still listed, with a :attr:`CaseInput.problem` that batch prediction reports as
that case's failure (the others go on). A file without the suffix is one case whose image is
a 4D NIfTI (MSD layout, channels on the last axis). A single file or DICOM folder given as
the input with a suffix is the case it belongs to (its sibling channels are gathered).
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from medseg.data.manifest import Manifest
from medseg.errors import MedsegError
from medseg.inference.case_files import (
    holds_dicom,
    is_image_file,
    looks_dicom,
    walk_inputs,
)
from medseg.io.file_names import file_stem
from medseg.io.nifti import is_nifti

logger = logging.getLogger(__name__)

#: ``CASE_0001``: nnU-Net's channel suffix, exactly four digits.
_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class CaseInput:
    """One case to predict.

    Attributes
    ----------
    name
        Output name (``OUTPUT/<name>.nii.gz``).
    path
        Channel 0's file or DICOM folder (the lowest channel found when channel 0 is missing).
    is_dicom
        ``path`` is a DICOM series folder.
    paths
        Every channel's file or DICOM folder, channel 0 first (default: ``(path,)``).
    series
        Per channel, the DICOM series to read from a folder holding several (UID or 1-based
        number, from a manifest); ``()`` or ``None`` entries: the only one, or ``--series``
        for channel 0.
    problem
        Why the case cannot be predicted (a missing or extra channel), found by discovery;
        ``""`` when none. Batch prediction reports it as the case's failure.
    """

    name: str
    path: Path
    is_dicom: bool
    paths: tuple[Path, ...] = ()
    series: tuple[str | None, ...] = ()
    problem: str = ""

    def __post_init__(self) -> None:
        if not self.paths:
            object.__setattr__(self, "paths", (self.path,))


def discover_cases(
    path: str | os.PathLike[str],
    *,
    exclude: Path | None = None,
    n_channels: int = 1,
    channel_names: Sequence[str] = (),
) -> list[CaseInput]:
    """List the cases under ``path``, sorted by name (see the module docstring for naming).

    Parameters
    ----------
    path
        An image file, a DICOM series folder, or a folder of such (searched recursively).
    exclude
        A folder to skip (the output folder, when it lies inside the input).
    n_channels
        Input channels of the model; above 1, files group into cases by their ``_NNNN``
        channel suffix.
    channel_names
        The model's name of each channel (``("CT", "PET")``), quoted in problems.

    Raises
    ------
    MedsegError
        When ``path`` does not exist or holds no case. A case with missing or extra channels
        is not an error here: it is listed with its :attr:`CaseInput.problem`.
    """
    root = Path(path)
    if not root.exists():
        raise MedsegError("input not found (expected an image file or a folder)", root)
    if root.is_file():
        if not is_image_file(root) and not looks_dicom(root):
            raise MedsegError(
                "unsupported input file (expected .nii, .nii.gz, .nrrd, .mha, .mhd or a DICOM "
                "series folder)",
                root,
            )
        dicom = looks_dicom(root) and not is_image_file(root)
        found = [(root.parent, True)] if dicom else [(root, False)]
    else:
        found = walk_inputs(root, exclude)
        if not found:
            raise MedsegError(
                "no cases found (expected image files or folders of DICOM files)", root
            )
    if n_channels > 1:
        return _channel_cases(root, found, n_channels, tuple(channel_names))
    if root.is_file():
        p, dicom = found[0]
        return [CaseInput(p.name if dicom else file_stem(p), p, dicom)]
    return _name_cases(root, found)


def _name_cases(root: Path, found: list[tuple[Path, bool]]) -> list[CaseInput]:
    names = [p.name if dicom else file_stem(p) for p, dicom in found]
    if len(found) == 1 and found[0][0] == root:
        return [CaseInput(names[0], root, found[0][1])]
    counts = Counter(names)
    cases = []
    for (p, dicom), name in zip(found, names, strict=True):
        if counts[name] > 1:
            rel = p.relative_to(root)
            parts = [*rel.parts[:-1], name] if not dicom else list(rel.parts) or [name]
            name = "_".join(parts)
        cases.append(CaseInput(name, p, dicom))
    return sorted(cases, key=lambda c: c.name)


# ----------------------------------------------------------------- several channels
def _channel_of(path: Path, dicom: bool) -> tuple[str, int] | None:
    """``("CASE", 1)`` for ``CASE_0001.nii.gz`` or a DICOM folder ``CASE_0001``; else None."""
    m = _CHANNEL_RE.match(path.name if dicom else file_stem(path))
    return (m["case"], int(m["channel"])) if m else None


def _siblings(path: Path, dicom: bool) -> list[tuple[Path, bool]]:
    """The channels of the case ``path`` belongs to, from its folder (``path`` alone if none)."""
    own = _channel_of(path, dicom)
    if own is None:
        return [(path, dicom)]
    out: list[tuple[Path, bool]] = []
    for p in sorted(path.parent.iterdir()):
        is_dicom = p.is_dir() and holds_dicom(p)
        if not is_dicom and not (p.is_file() and is_image_file(p)):
            continue
        ch = _channel_of(p, is_dicom)
        if ch is not None and ch[0] == own[0]:
            out.append((p, is_dicom))
    return out


def _channel_cases(
    root: Path, found: list[tuple[Path, bool]], n: int, names: tuple[str, ...]
) -> list[CaseInput]:
    """Group ``CASE_NNNN`` inputs by folder and case; see the module docstring."""
    if len(found) == 1 and (root.is_file() or found[0][0] == root):
        found = _siblings(*found[0])
        root = found[0][0].parent
    groups: dict[tuple[Path, str], dict[int, list[tuple[Path, bool]]]] = {}
    named: list[tuple[CaseInput, tuple[str, ...]]] = []
    for p, dicom in found:
        ch = _channel_of(p, dicom)
        if ch is None:
            case = CaseInput(p.name if dicom else file_stem(p), p, dicom)
            case = _unsuffixed(case, n, names)
            named.append((case, _rel_parts(root, p.parent, case.name)))
            continue
        groups.setdefault((p.parent, ch[0]), {}).setdefault(ch[1], []).append((p, dicom))
    for (folder, name), channels in groups.items():
        ordered = [channels[c][0] for c in sorted(channels)]
        case = CaseInput(
            name,
            ordered[0][0],
            ordered[0][1],
            paths=tuple(p for p, _ in ordered),
            problem=_channel_problem(name, channels, n, names),
        )
        named.append((case, _rel_parts(root, folder, name)))
    return _unique_names(named)


def _rel_parts(root: Path, folder: Path, name: str) -> tuple[str, ...]:
    try:
        return (*folder.relative_to(root).parts, name)
    except ValueError:
        return (name,)


def _unique_names(named: list[tuple[CaseInput, tuple[str, ...]]]) -> list[CaseInput]:
    """Colliding names take their relative folder; names still shared are a problem of each."""
    counts = Counter(case.name for case, _ in named)
    renamed = [
        (replace(case, name="_".join(parts)) if counts[case.name] > 1 else case)
        for case, parts in named
    ]
    again = Counter(c.name for c in renamed)
    out = []
    for c in renamed:
        if again[c.name] > 1 and not c.problem:
            others = ", ".join(str(o.path) for o in renamed if o.name == c.name)
            c = replace(c, problem=f"case {c.name}: expected one input per name, found {others}")
        out.append(c)
    return sorted(out, key=lambda c: c.name)


def _expected(name: str, n: int, names: tuple[str, ...]) -> str:
    return ", ".join(_label(name, c, names) for c in range(n))


def _label(name: str, channel: int, names: tuple[str, ...]) -> str:
    return f"{name}_{channel:04d}" + (f" ({names[channel]})" if channel < len(names) else "")


def _channel_problem(
    name: str, channels: dict[int, list[tuple[Path, bool]]], n: int, names: tuple[str, ...]
) -> str:
    """What is wrong with the channels of one case (``""``: nothing)."""
    missing = [c for c in range(n) if c not in channels]
    extra = sorted(c for c in channels if c >= n)
    doubled = sorted(c for c in channels if len(channels[c]) > 1)
    parts = []
    if missing:
        parts.append("missing channel " + ", ".join(_label(name, c, names) for c in missing))
    if extra:
        found = ", ".join(str(channels[c][0][0]) for c in extra)
        parts.append(f"found extra channel(s) beyond the model's {n}: {found}")
    for c in doubled:
        parts.append(f"found channel {c} twice: " + ", ".join(str(p) for p, _ in channels[c]))
    if not parts:
        return ""
    return f"case {name}: expected the model's {n} channels {_expected(name, n, names)}; " + (
        "; ".join(parts)
    )


def _unsuffixed(case: CaseInput, n: int, names: tuple[str, ...]) -> CaseInput:
    """A multi-channel model's input without a channel suffix: a 4D NIfTI, or a problem."""
    if not case.is_dicom and is_nifti(case.path):
        return case  # read as a 4D NIfTI with the channels on its last axis (checked on load)
    what = "a DICOM series folder" if case.is_dicom else "a single-channel image file"
    return replace(
        case,
        problem=f"case {case.name}: expected the model's {n} channels as "
        f"{_expected(case.name, n, names)} (files or DICOM series folders) or one 4D NIfTI, "
        f"found {what} without a channel suffix",
    )


def check_outputs_apart(cases: Sequence[CaseInput], output: str | os.PathLike[str]) -> None:
    """Refuse an output folder whose writes would touch an input (before anything is written).

    A folder of cases is kept apart from ``--output`` by
    :func:`medseg.io.outputs.check_output_dir`; a manifest's cases may lie anywhere under
    its data root, so here: no input is a file the batch writes (``<case>.nii.gz``,
    ``<case>.json``, ``<case>_probabilities.nii.gz``, the summaries, ``predict_config.yaml``),
    and the output is not inside a DICOM channel folder.

    Raises
    ------
    MedsegError
        Naming the output folder and the input.
    """
    out = Path(output).resolve()
    written = {"summary.json", "summary.csv", "predict_config.yaml"} | {
        f"{c.name}{end}" for c in cases for end in (".nii.gz", ".json", "_probabilities.nii.gz")
    }
    for case in cases:
        for p in case.paths:
            src = p.resolve()
            clash = src.parent == out and src.name in written
            if clash or (src.is_dir() and (src == out or src in out.parents)):
                raise MedsegError(
                    f"--output: expected a folder apart from the inputs, found that predicting "
                    f"would write over or into case {case.name}'s input {p}",
                    output,
                )


# ----------------------------------------------------------------- manifests
def manifest_cases(
    manifest: Manifest, *, n_channels: int = 1, channel_names: Sequence[str] = ()
) -> list[CaseInput]:
    """The manifest's ``"test"`` cases, in file order, with all their channels and series.

    Parameters
    ----------
    manifest
        From :func:`medseg.data.manifest.load_manifest` (paths resolved against its data root).
    n_channels, channel_names
        The model's input channels; the manifest's ``"modality"`` must list as many.

    Raises
    ------
    MedsegError
        Naming the manifest: no test case, a channel count other than the model's, channel
        names that are the model's in another order, or two test cases with one id (they
        would write the same output). Files are not opened here: a missing one is that
        case's failure at prediction time.
    """
    if not manifest.test:
        raise MedsegError(
            "expected a 'test' list with at least one case to predict, found none",
            manifest.path,
        )
    _check_channels(manifest, n_channels, tuple(channel_names))
    dup = sorted(k for k, v in Counter(c.case_id for c in manifest.test).items() if v > 1)
    if dup:
        raise MedsegError(
            f"expected unique test case ids (each names an output file), found {dup} more than "
            'once (give those cases an "id")',
            manifest.path,
        )
    return [
        CaseInput(c.case_id, c.image, c.image.is_dir(), c.images, c.series) for c in manifest.test
    ]


def _check_channels(manifest: Manifest, n: int, names: tuple[str, ...]) -> None:
    declared = tuple(v for _, v in sorted(manifest.modality.items()))
    model = f"{n} input channel(s) ({', '.join(names)})" if names else f"{n} input channel(s)"
    if len(declared) != n:
        raise MedsegError(
            f'the model takes {model}, expected the manifest\'s "modality" to list as many, '
            f"found {len(declared)} ({', '.join(declared)})",
            manifest.path,
        )
    if not names or [d.lower() for d in declared] == [m.lower() for m in names]:
        return
    if sorted(d.lower() for d in declared) == sorted(m.lower() for m in names):
        raise MedsegError(
            f"expected the channels in the model's order ({', '.join(names)}), found "
            f'{", ".join(declared)} in "modality" (reorder the manifest\'s channels)',
            manifest.path,
        )
    logger.warning(
        "%s: channel names %s differ from the model's %s; predicting in the manifest's order",
        manifest.path,
        list(declared),
        list(names),
    )
