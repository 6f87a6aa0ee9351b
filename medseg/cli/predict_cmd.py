"""``medseg predict``: segment a scan, a DICOM series, a folder of cases or a manifest's test list.

Multi-channel models read one file (or DICOM series folder) per channel: in a folder, nnU-Net's
``CASE_0000.nii.gz``, ``CASE_0001.nii.gz``, ... (see :mod:`medseg.inference.cases`); with
``--manifest M --data-root R``, the channels each test case lists.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from medseg.errors import MedsegError
from medseg.inference.batch import BatchSummary, predict_batch
from medseg.inference.config import InferConfig, load_infer_config, parse_folds, save_infer_config
from medseg.inference.output_request import OutputRequest, parse_instance_labels, parse_list
from medseg.io.outputs import check_output_dir
from medseg.runtime import distributed as ddp

logger = logging.getLogger(__name__)
_D = InferConfig()  # the defaults quoted in --help
#: ``InferConfig`` field -> the flag that sets it, so that a bad flag value names the flag.
FLAGS = {
    name: f"--{name.replace('_', '-')}"
    for name in (
        "folds",
        "checkpoint",
        "tta",
        "overlap",
        "sw_batch_size",
        "postprocess",
        "crf",
        "save_probabilities",
        "device",
        "overwrite",
        "series",
        "manifest",
        "data_root",
        "allow_outside_root",
        "backend",
        "instances",
        "reference",
    )
} | {"formats": "--format"}


def print_summary(summary: BatchSummary, console: Console) -> None:
    """A table of every case (status, seconds, volumes) and the failures, if any."""
    table = Table(title=f"medseg predict: {summary.output}")
    for col in ("case", "status", "seconds", "volumes (ml)"):
        table.add_column(col, justify="right" if col == "seconds" else "left")
    for r in summary.results:
        vols = ", ".join(f"{k} {v:.2f}" for k, v in r.volumes_ml.items())
        secs = f"{r.seconds:.1f}" if r.status == "done" else ""
        table.add_row(r.name, r.status, secs, vols if r.status != "failed" else r.error)
    console.print(table)
    counts = summary.counts()
    console.print(
        f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed "
        f"in {summary.seconds:.1f} s; summary in {summary.output / 'summary.json'}"
    )


def predict(
    model: Path = typer.Option(
        ..., "--model", help="Run directory (plans.json, fold_<k>/) or MONAI bundle directory."
    ),
    input_path: Path | None = typer.Option(
        None,
        "--input",
        help="A NIfTI/NRRD/MHA file, a DICOM series folder, or a folder of cases (every image "
        "file and every folder of DICOM files is one case; for a model of several channels, "
        "CASE_0000.*, CASE_0001.*, ... are the channels of case CASE). Or use --manifest.",
    ),
    output: Path = typer.Option(
        ...,
        "--output",
        help="Folder for <case>.nii.gz, <case>.json, summary.json/.csv and predict_config.yaml "
        "(checked first: a writable folder, neither --input nor inside it).",
    ),
    manifest: Path | None = typer.Option(
        None,
        "--manifest",
        help='Predict this manifest\'s "test" list (cases with all their channels and series, '
        "named by their ids) instead of --input; needs --data-root.",
    ),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Folder the --manifest paths start from."
    ),
    allow_outside_root: bool | None = typer.Option(
        None,
        "--allow-outside-root/--no-allow-outside-root",
        help="Accept --manifest paths that leave --data-root (refused by default).",
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="YAML prediction config: top-level keys are InferConfig fields; flags override it.",
    ),
    folds: str | None = typer.Option(
        None, "--folds", help="Folds to ensemble: 'all' or e.g. '0,1' (default all)."
    ),
    checkpoint: str | None = typer.Option(
        None,
        "--checkpoint",
        help=f"best or last checkpoint of each fold (default {_D.checkpoint}).",
    ),
    tta: bool | None = typer.Option(
        None, "--tta/--no-tta", help="Mirror test-time augmentation, 8x compute (default off)."
    ),
    overlap: float | None = typer.Option(
        None, "--overlap", help=f"Window overlap fraction, 0 <= F < 1 (default {_D.overlap})."
    ),
    sw_batch_size: int | None = typer.Option(
        None, "--sw-batch-size", help=f"Windows per forward pass (default {_D.sw_batch_size})."
    ),
    postprocess: str | None = typer.Option(
        None,
        "--postprocess",
        help="auto: apply the post-processing decided on validation data; none: raw argmax "
        f"(default {_D.postprocess}).",
    ),
    crf: bool | None = typer.Option(
        None, "--crf/--no-crf", help="Force the dense CRF on or off (default: as decided)."
    ),
    save_probabilities: bool | None = typer.Option(
        None,
        "--save-probabilities/--no-save-probabilities",
        help="Also write <case>_probabilities.nii.gz, 4D (default off).",
    ),
    device: str | None = typer.Option(
        None, "--device", help=f"auto, cpu or cuda (default {_D.device})."
    ),
    backend: str | None = typer.Option(
        None,
        "--backend",
        help="torch, onnxruntime or openvino: the ONNX runtimes run each fold's ONNX export "
        "(made once, cached as RUN/fold_<k>/model.onnx) on the CPU; needs "
        f"pip install 'medseg[onnx]' (default {_D.backend}).",
    ),
    overwrite: bool | None = typer.Option(
        None,
        "--overwrite/--no-overwrite",
        help="Redo cases whose outputs exist (default: skip them).",
    ),
    series: str | None = typer.Option(
        None,
        "--series",
        help="DICOM SeriesInstanceUID (or number) for multi-series folders (channel 0; a "
        "manifest's per-channel series take precedence).",
    ),
    output_format: str | None = typer.Option(
        None,
        "--format",
        help="Outputs per case, comma-separated: nifti (CASE.nii.gz), dicom-seg (CASE_seg.dcm), "
        "rtstruct (CASE_rtstruct.dcm), e.g. nifti,dicom-seg,rtstruct (default nifti). The DICOM "
        "ones reference the case's DICOM series (a NIfTI input needs --reference).",
    ),
    instances: str | None = typer.Option(
        None,
        "--instances",
        help="Label values or names to split into 26-connected lesion instances, e.g. 5 or "
        "tumour,5: CASE_instances.nii.gz, CASE_lesions.csv/.json, OUTPUT/lesions.csv/.json; "
        "with rtstruct one ROI per lesion.",
    ),
    reference: Path | None = typer.Option(
        None,
        "--reference",
        help="For NIfTI/NRRD inputs with a DICOM --format: the DICOM series the scan came from, "
        "or a folder of one series folder per case, named by case id.",
    ),
) -> None:
    """Segment scans; masks are written in each scan's own geometry. Exit 1 if a case failed.

    Options: --config YAML, then the flags given; resolved into OUTPUT/predict_config.yaml.
    """
    overrides: dict[str, Any] = {
        "folds": parse_folds(folds) if folds is not None else None,
        "checkpoint": checkpoint,
        "tta": tta,
        "overlap": overlap,
        "sw_batch_size": sw_batch_size,
        "postprocess": postprocess,
        "crf": crf,
        "save_probabilities": save_probabilities,
        "device": device,
        "backend": backend,
        "overwrite": overwrite,
        "series": series,
        "manifest": str(manifest) if manifest is not None else None,
        "data_root": str(data_root) if data_root is not None else None,
        "allow_outside_root": allow_outside_root,
        "formats": parse_list(output_format) if output_format is not None else None,
        "instances": parse_instance_labels(instances) if instances is not None else None,
        "reference": str(reference) if reference is not None else None,
    }
    # validated here, once; a bad flag value is reported under the flag (--overlap: ...)
    cfg = load_infer_config(config, overrides, flags=FLAGS)
    _check_source(input_path, cfg)
    inputs = [("--input", input_path), ("--model", model), ("--manifest", cfg.manifest)]
    inputs.append(("--reference", cfg.reference))
    check_output_dir(output, flag="--output", inputs=inputs)
    info = ddp.init(cfg.device, backend="gloo")  # predict gathers per-case results only
    try:
        summary = _run(cfg, model, input_path, output, info)
    finally:
        ddp.cleanup(info)
    raise typer.Exit(report(summary, info))


def report(summary: BatchSummary, info: ddp.DistInfo) -> int:
    """Print the summary table and the failures on rank 0 only; return the exit code.

    Every rank holds every case's result (gathered), so every rank returns the same code,
    but only rank 0 prints: under ``torchrun`` the summary appears once.
    """
    code = 1 if summary.failed else 0
    if not info.is_main:
        return code
    print_summary(summary, Console(stderr=False))
    if summary.failed:
        names = ", ".join(r.name for r in summary.failed)
        typer.secho(
            f"{len(summary.failed)} case(s) failed: {names} (details in "
            f"{summary.output / 'summary.json'})",
            err=True,
            fg="red",
        )
    return code


def _check_source(input_path: Path | None, cfg: InferConfig) -> None:
    """Exactly one of ``--input`` and ``--manifest`` (flag or ``--config`` file)."""
    if input_path is not None and cfg.manifest is not None:
        raise MedsegError(
            "--input and --manifest are mutually exclusive: expected a scan or folder of cases "
            f"(--input) or a manifest's test list (--manifest), found both ({input_path}, "
            f"{cfg.manifest})"
        )
    if input_path is None and cfg.manifest is None:
        raise MedsegError(
            "expected --input (a scan or a folder of cases) or --manifest with --data-root, "
            "found neither"
        )


def _run(
    cfg: InferConfig, model: Path, input_path: Path | None, output: Path, info: ddp.DistInfo
) -> BatchSummary:
    """Load the model on this rank's device, record the resolved config, predict the batch."""
    from medseg.data.manifest import load_manifest
    from medseg.inference.cases import check_outputs_apart, discover_cases, manifest_cases
    from medseg.inference.predictor import Predictor

    # a bad --input or --manifest is refused before any output
    listed = None
    if input_path is not None:
        discover_cases(input_path, exclude=output)
    else:
        root = str(cfg.data_root)
        listed = load_manifest(str(cfg.manifest), root, allow_outside_root=cfg.allow_outside_root)
    device = ddp.rank_device(cfg.device, info)
    rank_cfg = cfg if device == cfg.device else dataclasses.replace(cfg, device=device)
    predictor = Predictor.from_path(model, config=rank_cfg)
    OutputRequest.from_predictor(predictor)  # unknown --instances: before predict_config.yaml
    source: Any = input_path
    if listed is not None:
        plans = predictor.plans
        source = manifest_cases(
            listed, n_channels=plans.in_channels, channel_names=plans.channel_names
        )
        check_outputs_apart(source, output)
    if info.is_main:  # the config as resolved from --config and flags (device not per rank)
        logger.info("resolved config: %s", save_infer_config(cfg, output))
    return predict_batch(predictor, source, output, rank=info.rank, world_size=info.world_size)


def register(app: typer.Typer) -> None:
    """Add ``medseg predict`` to the CLI."""
    app.command("predict")(predict)
