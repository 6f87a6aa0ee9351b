"""Batch prediction over a folder of cases: resumable, atomic, one failure does not stop the rest.

For each case ``<name>``, ``OUTPUT/<name>.nii.gz`` (the mask on the scan's grid) and
``OUTPUT/<name>.json`` (label names, volume per label in ml and mm^3, timings, model identity) are
written atomically, the sidecar last: a case whose two files exist is complete and is skipped
unless ``overwrite``. ``OUTPUT/summary.json`` and ``summary.csv`` list every case, failures
included. The next case is read and preprocessed in a background thread while the current one
computes. Under ``torchrun`` rank ``r`` of ``w`` takes cases ``r::w``; rank 0 writes the
summary after gathering every rank's results.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import MedsegError
from medseg.inference.cases import CaseInput, discover_cases
from medseg.inference.predictor import Prediction, Predictor, Preprocessed
from medseg.inference.writers import mask_volumes_ml, mask_volumes_mm3, write_probabilities
from medseg.io import load_volume, save_mask
from medseg.io.atomic import atomic_write_text
from medseg.io.volume import Volume

logger = logging.getLogger(__name__)


@dataclass
class CaseResult:
    """Outcome of one case (``status``: ``done``, ``skipped`` or ``failed``)."""

    name: str
    input: str
    status: str
    seconds: float = 0.0
    mask: str = ""
    error: str = ""
    volumes_ml: dict[str, float] = field(default_factory=dict)
    volumes_mm3: dict[str, float] = field(default_factory=dict)


@dataclass
class BatchSummary:
    """Every case's result plus totals; ``failed`` lists the failures."""

    results: list[CaseResult]
    output: Path
    seconds: float

    @property
    def failed(self) -> list[CaseResult]:
        """Cases that raised an error."""
        return [r for r in self.results if r.status == "failed"]

    def counts(self) -> dict[str, int]:
        """Number of cases per status."""
        out = {"done": 0, "skipped": 0, "failed": 0}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out


def output_paths(output: Path, name: str) -> tuple[Path, Path]:
    """``(OUTPUT/<name>.nii.gz, OUTPUT/<name>.json)``."""
    return output / f"{name}.nii.gz", output / f"{name}.json"


def is_complete(output: Path, name: str) -> bool:
    """True when both the mask and its sidecar exist (the sidecar is written last)."""
    mask, sidecar = output_paths(output, name)
    return mask.is_file() and sidecar.is_file()


Loaded = tuple[Volume, Preprocessed]


def _load(predictor: Predictor, case: CaseInput, series: str | None) -> Loaded:
    volume = load_volume(case.path, series=series if case.is_dicom else None)
    return volume, predictor.preprocess(volume)


def _prefetched(
    predictor: Predictor, cases: list[CaseInput], series: str | None, enabled: bool
) -> Iterator[tuple[CaseInput, Future[Loaded]]]:
    """Yield each case with a future of its loaded volume; the next one loads meanwhile."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        upcoming: Future[Loaded] | None = None
        for n, case in enumerate(cases):
            current = upcoming or pool.submit(_load, predictor, case, series)
            upcoming = None
            if enabled and n + 1 < len(cases):
                upcoming = pool.submit(_load, predictor, cases[n + 1], series)
            yield case, current


def _sidecar(
    case: CaseInput, volume: Volume, prediction: Prediction, predictor: Predictor, load_s: float
) -> dict[str, Any]:
    from medseg import __version__

    cfg = predictor.config
    # "wait_for_input": time blocked on reading + preprocessing (near 0 when prefetched);
    # "preprocess" ran in the background thread when prefetched.
    timings = {"wait_for_input": round(load_s, 4)}
    timings |= {k: round(v, 4) for k, v in prediction.timings.items()}
    return {
        "case": case.name,
        "input": str(case.path),
        "mask": f"{case.name}.nii.gz",
        "labels": {str(k): v for k, v in sorted(predictor.label_names.items())},
        "volumes_ml": mask_volumes_ml(prediction.mask, predictor.label_names),
        "volumes_mm3": mask_volumes_mm3(prediction.mask, predictor.label_names),
        "shape": list(volume.spatial_shape),
        "spacing_mm": [round(s, 6) for s in volume.spacing],
        "axcodes": "".join(volume.axcodes),
        "series_uid": str(volume.meta.get("series_uid", volume.meta.get("SeriesInstanceUID", ""))),
        "timings_s": timings,
        "model": predictor.identity,
        "inference": {
            "tta": cfg.tta,
            "overlap": cfg.overlap,
            "sw_batch_size": cfg.sw_batch_size,
            "device": str(predictor.device),
            "postprocessing": prediction.postprocessing,
        },
        "medseg_version": __version__,
    }


def _run_case(
    predictor: Predictor, case: CaseInput, future: Future[Loaded], output: Path
) -> CaseResult:
    start = time.perf_counter()
    try:
        volume, pre = future.result()
        load_s = time.perf_counter() - start
        pred = predictor.predict(
            volume, preprocessed=pre, with_probabilities=predictor.config.save_probabilities
        )
        mask_path, sidecar_path = output_paths(output, case.name)
        save_mask(pred.mask, volume, mask_path)
        if pred.probabilities is not None:
            write_probabilities(pred.probabilities, output / f"{case.name}_probabilities.nii.gz")
        info = _sidecar(case, volume, pred, predictor, load_s)
        info["timings_s"]["total"] = round(time.perf_counter() - start, 4)
        atomic_write_text(sidecar_path, json.dumps(info, indent=2))
    except MedsegError as exc:
        logger.error("case %s failed: %s", case.name, exc)
        return CaseResult(
            case.name, str(case.path), "failed", time.perf_counter() - start, error=str(exc)
        )
    except Exception as exc:  # any other crash of one case must not stop the batch
        logger.error("case %s failed: %s: %s", case.name, type(exc).__name__, exc)
        logger.debug("traceback of case %s", case.name, exc_info=True)
        return CaseResult(
            case.name,
            str(case.path),
            "failed",
            time.perf_counter() - start,
            error=f"{type(exc).__name__}: {exc}",
        )
    seconds = time.perf_counter() - start
    return CaseResult(
        case.name,
        str(case.path),
        "done",
        seconds,
        mask_path.name,
        volumes_ml=info["volumes_ml"],
        volumes_mm3=info["volumes_mm3"],
    )


def _skipped(case: CaseInput, output: Path) -> CaseResult:
    mask, sidecar = output_paths(output, case.name)
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        info = {}
    info = info if isinstance(info, dict) else {}
    return CaseResult(
        case.name,
        str(case.path),
        "skipped",
        mask=mask.name,
        volumes_ml=info.get("volumes_ml", {}),
        volumes_mm3=info.get("volumes_mm3", {}),  # absent in sidecars of older versions
    )


class _Progress:
    """A rich progress bar counting cases, with the last case's time; silent when disabled."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._bar: Any = None
        if enabled and total:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                transient=False,
            )
            self._task = self._bar.add_task("predicting", total=total)
            self._bar.start()

    def advance(self, result: CaseResult) -> None:
        if self._bar is not None:
            desc = f"{result.name}: {result.status} in {result.seconds:.1f} s"
            self._bar.update(self._task, advance=1, description=desc)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def predict_cases(
    predictor: Predictor,
    cases: list[CaseInput],
    output: Path,
    *,
    progress: bool = True,
) -> list[CaseResult]:
    """Predict ``cases`` into ``output``; never raises for a single case's failure."""
    cfg = predictor.config
    todo = [c for c in cases if cfg.overwrite or not is_complete(output, c.name)]
    results = {c.name: _skipped(c, output) for c in cases if c not in todo}
    for name in results:
        logger.info("%s: outputs exist, skipped (use --overwrite to redo)", name)
    bar = _Progress(len(todo), progress)
    try:
        for n, (case, future) in enumerate(_prefetched(predictor, todo, cfg.series, cfg.prefetch)):
            result = _run_case(predictor, case, future, output)
            results[case.name] = result
            bar.advance(result)
            logger.info(
                "[%d/%d] %s: %s in %.1f s",
                n + 1,
                len(todo),
                case.name,
                result.status,
                result.seconds,
            )
    finally:
        bar.close()
    return [results[c.name] for c in cases]


def predict_batch(
    predictor: Predictor,
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> BatchSummary:
    """Predict every case under ``input_path`` into ``output`` and write the summary.

    Parameters
    ----------
    predictor
        The loaded model; its ``config`` holds ``overwrite``, ``series``, ``prefetch``,
        ``save_probabilities``.
    input_path
        An image file, a DICOM series folder, or a folder of cases.
    output
        Output folder (created). Cases already complete there are skipped unless
        ``predictor.config.overwrite``.
    rank, world_size
        This process's share of the cases (``rank::world_size``) under ``torchrun``.
    progress
        Show a progress bar.

    Returns
    -------
    BatchSummary
        All cases (every rank's, gathered) with their status.
    """
    start = time.perf_counter()
    out = Path(output)
    cases = discover_cases(input_path, exclude=out)  # a bad --input fails before any output
    out.mkdir(parents=True, exist_ok=True)
    mine = cases[rank::world_size]
    results = predict_cases(predictor, mine, out, progress=progress and rank == 0)
    if world_size > 1:
        import torch.distributed as dist

        gathered: list[Any] = [None] * world_size
        dist.all_gather_object(gathered, [asdict(r) for r in results])
        results = [CaseResult(**r) for part in gathered for r in part]
        results.sort(key=lambda r: r.name)
    summary = BatchSummary(results, out, time.perf_counter() - start)
    if rank == 0:
        try:
            write_summary(summary, predictor)
        except OSError as exc:
            raise MedsegError(
                f"cannot write summary.json/summary.csv: expected a writable output folder, "
                f"found {exc.strerror or exc}",
                out,
            ) from exc
    return summary


def write_summary(summary: BatchSummary, predictor: Predictor | None = None) -> None:
    """Write ``summary.json`` and ``summary.csv`` into the output folder (atomically)."""
    rows = [asdict(r) for r in summary.results]
    payload = {
        "output": str(summary.output),
        "seconds": round(summary.seconds, 3),
        "counts": summary.counts(),
        "failures": [{"case": r.name, "input": r.input, "error": r.error} for r in summary.failed],
        "model": predictor.identity if predictor else {},
        "cases": rows,
    }
    atomic_write_text(summary.output / "summary.json", json.dumps(payload, indent=2))
    names: list[str] = []
    for r in summary.results:
        names.extend(n for n in r.volumes_ml if n not in names)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        [
            "case",
            "status",
            "seconds",
            "input",
            "mask",
            "error",
            *[f"{n}_ml" for n in names],
            *[f"{n}_mm3" for n in names],
        ]
    )
    for r in summary.results:
        vols = [r.volumes_ml.get(n, "") for n in names]
        vols_mm3 = [r.volumes_mm3.get(n, "") for n in names]
        writer.writerow(
            [r.name, r.status, f"{r.seconds:.3f}", r.input, r.mask, r.error, *vols, *vols_mm3]
        )
    atomic_write_text(summary.output / "summary.csv", buf.getvalue())
