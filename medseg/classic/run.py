"""Classic segmentation of a batch of cases, written like ``medseg predict`` writes its output.

For each case ``<name>``: ``OUTPUT/<name>.nii.gz`` (the label map on the scan's own grid,
:func:`medseg.io.save_mask`) and ``OUTPUT/<name>.json`` (method, parameters, seeds in voxels,
labels, volume), the sidecar last, both atomically; then ``OUTPUT/summary.json`` (every case,
failures included) and ``OUTPUT/classic_config.yaml`` (the parameters, reusable as
``--config``). One failing case does not stop the others. ``medseg evaluate --pred OUTPUT``
scores the folder.

The cases come from the caller (``medseg segment-classic`` lists them with
``medseg.inference.cases.discover_cases``, which this layer may not import): any objects with
``name``, ``path`` and ``is_dicom``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from medseg.classic.config import ClassicConfig
from medseg.classic.methods import segment_array
from medseg.classic.seeds import resolve_seeds
from medseg.config import dump_yaml, to_dict
from medseg.errors import MedsegError
from medseg.io import Volume, load_volume, save_mask
from medseg.io.atomic import atomic_write_text
from medseg.io.run_summary import CaseOutcome, RunSummary

logger = logging.getLogger(__name__)

RESOLVED_NAME = "classic_config.yaml"


class CaseLike(Protocol):
    """One input case: its output name, the file or DICOM folder, and which of the two."""

    @property
    def name(self) -> str: ...

    @property
    def path(self) -> Path: ...

    @property
    def is_dicom(self) -> bool: ...


@dataclass
class ClassicCaseResult(CaseOutcome):
    """Outcome of one case (:class:`~medseg.io.run_summary.CaseOutcome`) and its own fields."""

    volume_mm3: float = 0.0
    seeds_voxel: list[list[int]] = field(default_factory=list)


@dataclass
class ClassicSummary(RunSummary[ClassicCaseResult]):
    """Every case's result, the output folder, the wall time and the configuration."""

    config: ClassicConfig


#: ``progress(result, done, total)``, called after each case.
Progress = Callable[[ClassicCaseResult, int, int], None]


def output_paths(output: Path, name: str) -> tuple[Path, Path]:
    """``(OUTPUT/<name>.nii.gz, OUTPUT/<name>.json)``."""
    return output / f"{name}.nii.gz", output / f"{name}.json"


def _previous(output: Path, name: str) -> dict[str, Any] | None:
    """The sidecar of a complete earlier output of ``name`` (mask and sidecar), else None."""
    mask, sidecar = output_paths(output, name)
    if not (mask.is_file() and sidecar.is_file()):
        return None
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def check_previous(
    cases: Sequence[CaseLike], output: Path, config: ClassicConfig, overwrite: bool
) -> list[str]:
    """Names of the cases already done with this configuration (skipped unless ``overwrite``).

    Raises
    ------
    MedsegError
        Before any work, when ``output`` holds a case made with another method or other
        parameters and ``overwrite`` is false (it would be skipped or overwritten silently).
    """
    if overwrite:
        return []
    wanted = to_dict(config)
    done = []
    for case in cases:
        info = _previous(output, case.name)
        if info is None:
            continue
        if info.get("parameters") != wanted:
            raise MedsegError(
                f"expected no earlier output of case {case.name} or one made with the same "
                f"parameters, found {case.name}.json from method {info.get('method')!r} with "
                "other parameters; use --overwrite, or another --output folder",
                output,
            )
        done.append(case.name)
    return done


def _sidecar(
    case: CaseLike, volume: Volume, labels: np.ndarray, config: ClassicConfig, seeds: np.ndarray
) -> dict[str, Any]:
    from medseg import __version__

    # voxel volume |det(A)| mm^3: the same definition as medseg predict's volumes
    voxel_mm3 = abs(float(np.linalg.det(volume.affine[:3, :3])))
    count = int(np.count_nonzero(labels))
    return {
        "case": case.name,
        "input": str(case.path),
        "mask": f"{case.name}.nii.gz",
        "method": config.method,
        "parameters": to_dict(config),
        "labels": {"0": "background", str(config.label_value): config.method},
        "voxels": count,
        "volume_mm3": count * voxel_mm3,
        "volume_ml": round(count * voxel_mm3 / 1000.0, 4),
        "seeds_voxel": seeds.tolist(),
        "shape": list(volume.spatial_shape),
        "spacing_mm": [round(s, 6) for s in volume.spacing],
        "axcodes": "".join(volume.axcodes),
        "series_uid": str(volume.meta.get("series_uid", "")),
        "medseg_version": __version__,
    }


def segment_case(
    case: CaseLike, output: Path, config: ClassicConfig, *, series: str | None = None
) -> ClassicCaseResult:
    """Segment one case into ``output``; never raises for the case's own failure."""
    start = time.perf_counter()
    try:
        problem = getattr(case, "problem", "")  # found by discovery (e.g. a missing channel)
        if problem:
            raise MedsegError(problem, case.path)
        volume = load_volume(case.path, series=series if case.is_dicom else None)
        seeds = resolve_seeds(volume, config, case.name)
        labels = segment_array(volume.array, volume.spacing, config, seeds)
        mask_path, sidecar_path = output_paths(output, case.name)
        save_mask(labels, volume, mask_path)
        info = _sidecar(case, volume, labels, config, seeds.points)
        info["seconds"] = round(time.perf_counter() - start, 4)
        atomic_write_text(sidecar_path, json.dumps(info, indent=2))
    except MedsegError as exc:
        if exc.path is None:  # the methods' errors name no file: this case's scan it is
            exc = MedsegError(exc.message, case.path)
        logger.error("case %s failed: %s", case.name, exc)
        return ClassicCaseResult(
            case.name, str(case.path), "failed", time.perf_counter() - start, error=str(exc)
        )
    except Exception as exc:  # any other crash of one case must not stop the batch
        logger.error("case %s failed: %s: %s", case.name, type(exc).__name__, exc)
        logger.debug("traceback of case %s", case.name, exc_info=True)
        error = f"{type(exc).__name__}: {exc}"
        return ClassicCaseResult(
            case.name, str(case.path), "failed", time.perf_counter() - start, error=error
        )
    return ClassicCaseResult(
        case.name,
        str(case.path),
        "done",
        time.perf_counter() - start,
        mask_path.name,
        volume_mm3=float(info["volume_mm3"]),
        seeds_voxel=info["seeds_voxel"],
    )


def segment_cases(
    cases: Sequence[CaseLike],
    output: str | Path,
    config: ClassicConfig,
    *,
    overwrite: bool = False,
    series: str | None = None,
    progress: Progress | None = None,
) -> ClassicSummary:
    """Segment every case into ``output`` and write ``summary.json`` and the resolved config.

    Parameters
    ----------
    cases
        The cases (``name``, ``path``, ``is_dicom``), e.g. from
        ``medseg.inference.cases.discover_cases``.
    output
        Output folder (created); the caller checks it first
        (:func:`medseg.io.outputs.check_output_dir`).
    config
        Method and parameters, the same for every case.
    overwrite
        Redo cases whose outputs exist; without it they are skipped when made with the
        same parameters and refused (before any work) when not.
    series
        DICOM SeriesInstanceUID (or number) for folders holding several series.
    progress
        Called as ``progress(result, done, total)`` after each case.

    Returns
    -------
    ClassicSummary
        Every case's result, failures included (``summary.failed``).

    Raises
    ------
    MedsegError
        For a missing seed mask, earlier outputs made with other parameters (see
        :func:`check_previous`) or an output folder that cannot be written; never for one
        case's failure.
    """
    start = time.perf_counter()
    out = Path(output)
    if config.seed_mask is not None and not Path(config.seed_mask).exists():
        raise MedsegError(
            "--seed-mask: expected a seed mask file or a folder of <case>.nii.gz, found nothing",
            config.seed_mask,
        )
    skipped = set(check_previous(cases, out, config, overwrite))
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for n, case in enumerate(cases):
        if case.name in skipped:
            logger.info("%s: outputs exist with these parameters, skipped", case.name)
            result = ClassicCaseResult(
                case.name, str(case.path), "skipped", mask=f"{case.name}.nii.gz"
            )
        else:
            result = segment_case(case, out, config, series=series)
        results.append(result)
        logger.info(
            "[%d/%d] %s: %s in %.2f s", n + 1, len(cases), case.name, result.status, result.seconds
        )
        if progress is not None:
            progress(result, n + 1, len(cases))
    summary = ClassicSummary(results, out, time.perf_counter() - start, config)
    try:
        write_summary(summary)
    except OSError as exc:
        raise MedsegError(
            f"cannot write summary.json: expected a writable output folder, found "
            f"{exc.strerror or exc}",
            out,
        ) from exc
    return summary


def write_summary(summary: ClassicSummary) -> None:
    """Write ``summary.json`` and ``classic_config.yaml`` into the output folder (atomically)."""
    payload = {
        "output": str(summary.output),
        "method": summary.config.method,
        "parameters": to_dict(summary.config),
        "seconds": round(summary.seconds, 3),
        "counts": summary.counts(),
        "failures": [{"case": r.name, "input": r.input, "error": r.error} for r in summary.failed],
        "cases": [asdict(r) for r in summary.results],
    }
    atomic_write_text(summary.output / "summary.json", json.dumps(payload, indent=2))
    dump_yaml(summary.config, summary.output / RESOLVED_NAME)
