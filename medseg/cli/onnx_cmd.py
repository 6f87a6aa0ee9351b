"""``medseg export-onnx``: one fold's network as ONNX, preprocessing contract in its metadata."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

logger = logging.getLogger(__name__)


def export_onnx_cmd(
    model_dir: Path = typer.Argument(
        ..., help="Training run directory (plans.json, fold_<k>/) or MONAI bundle directory."
    ),
    out: Path = typer.Argument(..., help="The .onnx file to write."),
    fold: int = typer.Option(-1, "--fold", help="Fold to export (-1: the lowest trained fold)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing OUT file."),
) -> None:
    """Export a fold's best checkpoint as ONNX (input image (B, C, X, Y, Z), output logits).

    The export is made once and cached in the run folder (RUN/fold_<k>/model.onnx, redone when
    the checkpoint changes); its metadata holds the plans (target spacing in mm, RAS
    orientation, per-channel normalisation, labels, patch size, mirror axes).
    """
    from medseg.networks.onnx_cache import export_model_onnx
    from medseg.networks.onnx_export import read_onnx_metadata

    path = export_model_onnx(model_dir, out, fold=None if fold < 0 else fold, force=force)
    meta = read_onnx_metadata(path)
    typer.echo(
        f"ONNX model written to {path}: patch {meta.get('patch_size')}, spacing "
        f"{meta.get('target_spacing')} mm ({meta.get('orientation')}), channels "
        f"{meta.get('channel_names')}, labels {meta.get('labels')}"
    )


def register(app: typer.Typer) -> None:
    """Add ``medseg export-onnx`` to the CLI."""
    app.command("export-onnx")(export_onnx_cmd)
