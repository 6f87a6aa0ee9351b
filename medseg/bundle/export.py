"""Export a trained run as a MONAI bundle (MONAI Bundle Specification layout).

Layout written::

    OUT/configs/metadata.json     required metadata (versions, task, labels, data format)
    OUT/configs/inference.json    runs with ``python -m monai.bundle run``
    OUT/configs/plans.json        preprocessing + network of the run (read by medseg)
    OUT/configs/postprocessing.json   the run's decided post-processing (if any)
    OUT/models/model.pt           state dict of one fold's network
    OUT/models/model.ts           the same network as TorchScript (scripted, or traced at the
                                  patch size; metadata.json "torchscript" says which)
    OUT/models/model.onnx         the same network as ONNX (batch axis dynamic, patch-size
                                  windows), the plans in its metadata (metadata.json
                                  "onnx" describes it, or says why it is absent)
    OUT/docs/README.md, OUT/LICENSE
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from medseg.bundle.metadata import (
    build_metadata,
    channel_normalization,
    modality_name,
    schema_path,
    verify_metadata,
)
from medseg.bundle.onnx import onnx_docs, write_model_onnx
from medseg.errors import MedsegError
from medseg.io.atomic import atomic_copy, atomic_directory, atomic_path, atomic_write_text
from medseg.io.outputs import check_output_dir
from medseg.networks.loading import load_model
from medseg.planning.plans import Plans, save_plans

logger = logging.getLogger(__name__)


def inference_config(plans: Plans) -> dict[str, Any]:
    """The ``configs/inference.json`` content: MONAI config syntax over medseg's predictor.

    ``network_def`` describes the architecture for MONAI tools (``ckpt_export``); the
    ``run`` entry predicts ``dataset_dir`` into ``output_dir`` with the same code path as
    ``medseg predict`` (see :mod:`medseg.bundle.runtime`).
    """
    return {
        # MONAI binds ``$import a.b`` under the name "a.b": import the package for the name
        # "medseg", and the submodules so that their attributes exist.
        "imports": [
            "$import medseg",
            "$import medseg.bundle.runtime",
            "$import medseg.planning.plans",
        ],
        "bundle_root": "$medseg.bundle.runtime.locate_bundle_root()",
        "dataset_dir": "/workspace/data",
        "output_dir": "$@bundle_root + '/eval'",
        "device": "auto",
        "overlap": 0.5,
        "sw_batch_size": 4,
        "tta": False,
        "postprocess": "auto",
        "overwrite": False,
        "network_def": {
            "_target_": "medseg.networks.build_network",
            "spec": "$medseg.planning.plans.load_plans("
            "@bundle_root + '/configs/plans.json').network",
            "in_channels": plans.in_channels,
            "out_channels": plans.num_classes,
        },
        "predictor": {
            "_target_": "medseg.bundle.runtime.bundle_predictor",
            "bundle_root": "@bundle_root",
            "device": "@device",
            "overlap": "@overlap",
            "sw_batch_size": "@sw_batch_size",
            "tta": "@tta",
            "postprocess": "@postprocess",
            "overwrite": "@overwrite",
        },
        "run": ["$medseg.bundle.runtime.predict_folder(@predictor, @dataset_dir, @output_dir)"],
    }


def _input_docs(plans: Plans) -> str:
    """How a case's scans are laid out in ``dataset_dir``, for the README."""
    if plans.in_channels == 1:
        return (
            f"One 3D {plans.modality} scan per case: a NIfTI/NRRD/MetaImage file or a DICOM "
            "series folder."
        )
    names = ", ".join(f"`CASE_{n:04d}` ({m})" for n, m in enumerate(plans.channel_names))
    return (
        f"{plans.in_channels} scans per case, one per input channel, in nnU-Net's naming: "
        f"{names}, each a NIfTI/NRRD/MetaImage file (`CASE_0000.nii.gz`) or a DICOM series "
        "folder (`CASE_0000/`), side by side in one folder; the mask is `CASE.nii.gz`. "
        "Channels 1.. are resampled onto channel 0's grid (trilinear, through the affines)."
    )


def _docs(meta: dict[str, Any], plans: Plans, fold: int, metrics: dict[str, Any]) -> str:
    labels = "\n".join(f"| {k} | {v} |" for k, v in sorted(plans.labels.items()))
    norms = channel_normalization(plans)
    channels = "\n".join(
        f"| {n} | {m} | {norms[str(n)]} |" for n, m in enumerate(plans.channel_names)
    )
    perf = json.dumps(metrics, indent=2) if metrics else "(no validation metrics recorded)"
    return f"""# {meta["name"]} (version {meta["version"]})

{meta["description"]}

Exported by medseg from fold {fold} of a training run. Research use only.

## Labels
| value | name |
|---|---|
{labels}

## Input data
{_input_docs(plans)}
Preprocessing (inside the bundle): reorientation to RAS, crop to non-zero voxels,
normalisation per channel (below), resampling to {list(plans.target_spacing)} mm.
Sliding-window patches of {list(plans.patch_size)} voxels. Masks are written as
`<case>.nii.gz` on the input scan's own grid (channel 0's; same affine), with a
`<case>.json` sidecar.

| channel | modality | normalisation |
|---|---|---|
{channels}

## Measured accuracy (validation of the training fold)
```json
{perf}
```

## How to run
```bash
python -m monai.bundle run --config_file BUNDLE/configs/inference.json \\
    --dataset_dir /path/to/scans --output_dir /path/to/masks
# or, without parsing the config:
medseg predict --model BUNDLE --input /path/to/scans --output /path/to/masks
```
`medseg` must be installed. MONAI config `$` expressions are evaluated as Python and
`_target_` entries are imported: run only bundles you trust. `medseg predict --model BUNDLE`
does not evaluate `inference.json`; it reads `configs/plans.json` and loads
`models/model.pt` with `torch.load(weights_only=True)`.
{onnx_docs(meta)}"""


LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""

LICENSE_TEXT = """Apache License 2.0 applies to the code that produced this bundle (medseg).
The weights were trained by the user of medseg; their licence follows the training data's
licence. Research use only; not a medical device.
"""


def _torchscript(
    model: torch.nn.Module, plans: Plans, path: Path, meta: dict[str, Any]
) -> dict[str, Any]:
    """Write ``model`` as TorchScript to ``path``; return how, for ``metadata.json``.

    Networks that the registry marks ``"script"`` (``torchscript_mode(plans.network)``) are
    scripted and take any input size. The others (``swinunetr``, ``dynunet`` with deep
    supervision: their Python control flow does not script) are traced on one zero patch
    ``(1, in_channels, *patch_size)``, so that ``model.ts`` takes that input shape only
    (the sliding-window ROI is the patch, so bundle inference always uses it). If tracing
    fails as well, no ``model.ts`` is written and the reason is logged and recorded: the
    bundle still runs, because ``inference.json`` and ``medseg predict`` load
    ``models/model.pt`` through the registry and never read ``model.ts``.

    Returns
    -------
    dict
        ``{"method": "script"}``, ``{"method": "trace", "input_shape": [...]}`` or
        ``{"method": "none", "reason": "..."}``.
    """
    from monai.networks.utils import convert_to_torchscript

    from medseg.networks.registry import torchscript_mode

    name = plans.network.name
    model = model.cpu().eval()
    extra = {"metadata.json": json.dumps(meta).encode()}
    if torchscript_mode(plans.network) == "script":
        try:
            with atomic_path(path) as tmp:
                convert_to_torchscript(
                    model, filename_or_obj=str(tmp), extra_files=extra, verify=False
                )
            return {"method": "script"}
        except Exception as exc:  # scripting support varies by torch version; trace instead
            logger.warning("%s: scripting failed (%s); tracing at the patch size", name, exc)
    shape = [1, plans.in_channels, *plans.patch_size]
    try:
        with torch.no_grad():
            # check_trace re-traces and compares: ~10x the cost of one SwinUNETR forward
            traced = torch.jit.trace(model, torch.zeros(shape), check_trace=False)
        with atomic_path(path) as tmp:
            torch.jit.save(traced, str(tmp), _extra_files=extra)
    except Exception as exc:  # tracing runs arbitrary network code; model.ts is optional
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        logger.warning("%s: no models/model.ts written, tracing failed (%s)", name, reason)
        return {"method": "none", "reason": reason}
    return {"method": "trace", "input_shape": shape}


def _fold_metrics(run_dir: Path, fold: int) -> dict[str, Any]:
    path = run_dir / f"fold_{fold}" / "metrics.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _performance(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The validation Dice of the exported checkpoint, as recorded by training."""
    if not isinstance(metrics.get("best_dice"), dict):
        return None
    return {
        "metric": "validation Dice per label (sliding window, preprocessed grid)",
        "fold": metrics.get("fold"),
        "epoch": metrics.get("best_epoch"),
        "dice": metrics["best_dice"],
    }


def _data_source(run: Path) -> str:
    """The training dataset's name and description from ``RUN_DIR/dataset.json`` (no paths)."""
    try:
        data = json.loads((run / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return "unknown"
    if not isinstance(data, dict):
        return "unknown"
    return " - ".join(str(data[k]) for k in ("name", "description") if data.get(k)) or "unknown"


def _choose_fold(run_dir: Path, fold: int | None) -> int:
    from medseg.networks.loading import available_folds

    folds = available_folds(run_dir, "best")
    if not folds:
        raise MedsegError(
            "expected a trained fold (fold_<k>/checkpoint_best.pt), found none", run_dir
        )
    if fold is None:
        return folds[0]
    if fold not in folds:
        ckpt = run_dir / f"fold_{fold}" / "checkpoint_best.pt"
        found = "no such folder" if not ckpt.parent.is_dir() else "no checkpoint_best.pt in it"
        raise MedsegError(
            f"--fold {fold}: expected one of the trained folds {folds} "
            f"(fold_<k>/checkpoint_best.pt), found {found} for fold_{fold}",
            run_dir,
        )
    return fold


def _check_out_dir(out: Path, run: Path, force: bool) -> None:
    """Refuse a bundle folder that cannot be written, holds the run, or is in use (no --force)."""
    check_output_dir(out, flag="OUT_DIR", inputs=[("RUN_DIR", run)], replace=True)
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if entries and not force:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise MedsegError(
            f"OUT_DIR: expected a new or empty bundle folder, found one holding {shown} "
            "(use --force to replace it)",
            out,
        )


def export_bundle(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    name: str | None = None,
    version: str = "0.1.0",
    fold: int | None = None,
    description: str | None = None,
    force: bool = False,
) -> Path:
    """Write a MONAI bundle for one fold of a training run.

    Parameters
    ----------
    run_dir
        A medseg run directory (``plans.json``, ``fold_<k>/checkpoint_best.pt``).
    out_dir
        Bundle folder to create; an existing non-empty folder needs ``force``.
    name, version, description
        Bundle identity (``version`` as ``X.Y.Z``).
    fold
        Which fold's best checkpoint to export (default: the lowest trained fold). A
        bundle holds one network; fold ensembles stay with ``medseg predict --model RUN``.
    force
        Replace an existing bundle folder.

    Returns
    -------
    pathlib.Path
        The bundle folder. It is assembled in a temporary folder and moved into place,
        so a failed export leaves nothing behind.
    """
    run, out = Path(run_dir), Path(out_dir)
    _check_out_dir(out, run, force)
    k = _choose_fold(run, fold)
    model, plans = load_model(run, fold=k, which="best", device="cpu")
    metrics = _fold_metrics(run, k)
    title = name or run.resolve().name
    n_labels = len(plans.labels) - 1
    meta = build_metadata(
        plans,
        name=title,
        version=version,
        description=description
        or f"{plans.network.name} segmentation of {modality_name(plans)} scans ({n_labels} labels)",
        task=f"3D {modality_name(plans)} segmentation: "
        + ", ".join(v for k_, v in sorted(plans.labels.items()) if k_),
        performance=_performance(metrics),
        data_source=_data_source(run),
    )
    with atomic_directory(out) as tmp:
        _write_bundle(tmp, run, model, plans, meta, k, metrics)
        verify_metadata(tmp / "configs" / "metadata.json")
    logger.info("exported fold %d of %s as bundle %s", k, run, out)
    return out


def _write_bundle(
    root: Path,
    run: Path,
    model: torch.nn.Module,
    plans: Plans,
    meta: dict[str, Any],
    fold: int,
    metrics: dict[str, Any],
) -> None:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "docs").mkdir()
    # TorchScript first: metadata.json records how model.ts was made (or why it is absent)
    meta = {**meta, "torchscript": _torchscript(model, plans, root / "models" / "model.ts", meta)}
    with atomic_path(root / "models" / "model.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    meta = {**meta, "onnx": write_model_onnx(model, plans, root / "models")}  # after model.pt
    atomic_write_text(root / "configs" / "metadata.json", json.dumps(meta, indent=2))
    atomic_write_text(
        root / "configs" / "inference.json", json.dumps(inference_config(plans), indent=2)
    )
    atomic_write_text(root / "configs" / "logging.conf", LOGGING_CONF)
    save_plans(plans, root / "configs" / "plans.json")
    if (run / "postprocessing.json").is_file():
        atomic_copy(run / "postprocessing.json", root / "configs" / "postprocessing.json")
    atomic_copy(schema_path(), root / "configs" / "meta_schema.json")
    atomic_write_text(root / "docs" / "README.md", _docs(meta, plans, fold, metrics))
    atomic_write_text(root / "LICENSE", LICENSE_TEXT)
