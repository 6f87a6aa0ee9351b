"""Batch prediction over a folder of cases (or a manifest's test list): resumable, atomic, one
failure does not stop the rest.

For each case ``<name>``, ``OUTPUT/<name>.nii.gz`` (the mask on the scan's grid), the other
requested files (DICOM-SEG, RTSTRUCT, lesion instances and tables:
:mod:`medseg.inference.case_outputs`) and ``OUTPUT/<name>.json`` (label names, volume per label
in ml and mm^3, timings, model identity, every file written) are written atomically, the
sidecar last (an old one is removed first): a case whose sidecar and requested files all exist
is complete and is skipped unless ``overwrite``. ``OUTPUT/summary.json`` and ``summary.csv``
list every case, failures included; with lesion instances, ``OUTPUT/lesions.csv`` / ``.json``
every case's lesions. The next case is read and preprocessed in a background thread while the
current one computes. Under ``torchrun`` rank ``r`` of ``w`` takes cases ``r::w``; rank 0 writes the
summary after gathering every rank's results.

A case is read with :func:`medseg.io.channels.load_channels`: one file or DICOM folder per
input channel of the model, channels 1.. resampled onto channel 0's grid, so the mask is on
channel 0's grid. ``InferConfig.series`` picks channel 0's DICOM series where the case itself
(a manifest's ``"series"``) names none.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from medseg.errors import MedsegError
from medseg.inference.batch_summary import BatchSummary, CaseResult, write_summary
from medseg.inference.case_outputs import CaseOutputs, write_case_outputs, write_folder_lesions
from medseg.inference.cases import CaseInput, check_outputs_apart, discover_cases
from medseg.inference.output_request import OutputRequest, case_complete, dicom_reference
from medseg.inference.predictor import Prediction, Predictor, Preprocessed
from medseg.inference.writers import mask_volumes_ml, mask_volumes_mm3
from medseg.io.atomic import atomic_write_text
from medseg.io.channels import load_channels
from medseg.io.volume import Volume

logger = logging.getLogger(__name__)

__all__ = [
    "BatchSummary",
    "CaseResult",
    "is_complete",
    "output_paths",
    "predict_batch",
    "predict_cases",
    "write_summary",
]


def output_paths(output: Path, name: str) -> tuple[Path, Path]:
    """``(OUTPUT/<name>.nii.gz, OUTPUT/<name>.json)``."""
    return output / f"{name}.nii.gz", output / f"{name}.json"


def is_complete(output: Path, name: str, request: OutputRequest | None = None) -> bool:
    """True when the sidecar (written last) and every requested output of the case exist.

    ``request`` ``None``: the mask and the sidecar (the default outputs).
    """
    if request is not None:
        return case_complete(output, name, request)
    mask, sidecar = output_paths(output, name)
    return mask.is_file() and sidecar.is_file()


Loaded = tuple[Volume, Preprocessed]


def channel_series(case: CaseInput, series: str | None) -> list[str | None]:
    """Per channel, the DICOM series to read: the case's own, else ``series`` for channel 0."""
    picks: list[str | None] = [None] * len(case.paths)
    for n, s in enumerate(case.series[: len(picks)]):
        picks[n] = s
    if picks[0] is None and case.is_dicom:
        picks[0] = series
    return picks


def _load(predictor: Predictor, case: CaseInput, series: str | None) -> Loaded:
    if case.problem:  # found by discovery (a missing or extra channel): this case fails
        raise MedsegError(case.problem, case.path)
    volume = load_channels(
        case.paths, series=channel_series(case, series), n_channels=predictor.plans.in_channels
    )
    # Preprocessing never changes ``volume`` (tests/preprocessing/test_pipeline_channels.py):
    # the lesion tables measure its own intensities.
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
    case: CaseInput,
    volume: Volume,
    prediction: Prediction,
    predictor: Predictor,
    load_s: float,
    written: CaseOutputs,
) -> dict[str, Any]:
    from medseg import __version__

    cfg = predictor.config
    # "wait_for_input": time blocked on reading + preprocessing (near 0 when prefetched);
    # "preprocess" ran in the background thread when prefetched.
    timings = {"wait_for_input": round(load_s, 4)}
    timings |= {k: round(v, 4) for k, v in prediction.timings.items()}
    timings |= written.timings
    mask = f"{case.name}.nii.gz"
    return {
        "case": case.name,
        # absolute: export-dicom finds the reference series from here, from any folder
        "input": str(Path(case.path).resolve()),
        "inputs": [str(Path(p).resolve()) for p in case.paths],
        "channels": list(predictor.plans.channel_names),
        "mask": mask if mask in written.files else "",
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
        **written.sidecar(),
    }


def _run_case(
    predictor: Predictor,
    case: CaseInput,
    future: Future[Loaded],
    output: Path,
    request: OutputRequest,
) -> CaseResult:
    start = time.perf_counter()
    try:
        # a NIfTI case without its DICOM reference fails here, before it is predicted
        reference = dicom_reference(case, request) if request.dicom else None
        volume, pre = future.result()
        load_s = time.perf_counter() - start
        pred = predictor.predict(volume, preprocessed=pre, with_probabilities=request.probabilities)
        _, sidecar_path = output_paths(output, case.name)
        sidecar_path.unlink(missing_ok=True)  # the case is incomplete until its new sidecar
        written = write_case_outputs(predictor, request, case, volume, pred, output, reference)
        info = _sidecar(case, volume, pred, predictor, load_s, written)
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
        info["mask"],
        volumes_ml=info["volumes_ml"],
        volumes_mm3=info["volumes_mm3"],
        files=written.files,
        warnings=written.warnings,
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
        mask=str(info.get("mask", mask.name)),
        volumes_ml=info.get("volumes_ml", {}),
        volumes_mm3=info.get("volumes_mm3", {}),  # absent in sidecars of older versions
        files=list(info.get("files", [mask.name])),
        warnings=list(info.get("warnings", [])),
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
    request: OutputRequest | None = None,
) -> list[CaseResult]:
    """Predict ``cases`` into ``output``; never raises for a single case's failure.

    ``request``: the outputs to write (default: as ``predictor.config`` asks).
    """
    cfg = predictor.config
    request = request or OutputRequest.from_predictor(predictor)
    todo = [c for c in cases if cfg.overwrite or not is_complete(output, c.name, request)]
    results = {c.name: _skipped(c, output) for c in cases if c not in todo}
    for name in results:
        logger.info("%s: outputs exist, skipped (use --overwrite to redo)", name)
    bar = _Progress(len(todo), progress)
    try:
        for n, (case, future) in enumerate(_prefetched(predictor, todo, cfg.series, cfg.prefetch)):
            result = _run_case(predictor, case, future, output, request)
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
    input_path: str | os.PathLike[str] | Sequence[CaseInput],
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
        ``save_probabilities``, ``formats``, ``instances``, ``reference``; its plans the
        input channels a case needs.
    input_path
        An image file, a DICOM series folder, or a folder of cases (discovered with
        :func:`~medseg.inference.cases.discover_cases` for the model's channels); or the
        cases themselves (e.g. :func:`~medseg.inference.cases.manifest_cases`).
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
    request = OutputRequest.from_predictor(predictor)  # unknown --instances: before any work
    if isinstance(input_path, str | os.PathLike):
        plans = predictor.plans  # a bad --input fails before any output
        cases = discover_cases(
            input_path,
            exclude=out,
            n_channels=plans.in_channels,
            channel_names=plans.channel_names,
        )
    else:
        cases = list(input_path)
    check_outputs_apart(cases, out)
    out.mkdir(parents=True, exist_ok=True)
    mine = cases[rank::world_size]
    results = predict_cases(predictor, mine, out, progress=progress and rank == 0, request=request)
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
            if request.instance_labels:  # every case's table, those of skipped cases too
                write_folder_lesions([r.name for r in results if r.status != "failed"], out)
        except OSError as exc:
            raise MedsegError(
                f"cannot write summary.json/summary.csv/lesions.csv: expected a writable "
                f"output folder, found {exc.strerror or exc}",
                out,
            ) from exc
    return summary
