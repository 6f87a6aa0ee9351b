"""``models/model.onnx`` of an exported bundle: written beside ``model.pt``, described in
``metadata.json`` (``"onnx"``) and in the bundle's ``docs/README.md``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from medseg.errors import MedsegError
from medseg.networks.loading import file_digest
from medseg.networks.onnx_export import INPUT_NAME, OPSET, OUTPUT_NAME, export_onnx
from medseg.planning.plans import Plans

logger = logging.getLogger(__name__)


def write_model_onnx(model: torch.nn.Module, plans: Plans, models: Path) -> dict[str, Any]:
    """Write ``models/model.onnx`` (what ``--backend onnxruntime|openvino`` runs); return how.

    Keyed by ``models/model.pt``'s digest (written first). Without the ``onnx`` package, or
    for a network that does not export, no file is written and the reason is recorded.
    """
    try:
        sha = file_digest(models / "model.pt")
        export_onnx(model, plans, models / "model.onnx", weights_sha256=sha)
    except MedsegError as exc:
        logger.warning("no models/model.onnx written: %s", exc.message)
        return {"method": "none", "reason": exc.message}
    return {
        "file": "models/model.onnx",
        "opset": OPSET,
        "input": f"{INPUT_NAME} (B, {plans.in_channels}, {', '.join(map(str, plans.patch_size))})"
        " float32, RAS, preprocessed as configs/plans.json says",
        "output": f"{OUTPUT_NAME} (B, {plans.num_classes}, X, Y, Z) float32",
        "weights_sha256": sha,
    }


def onnx_docs(meta: dict[str, Any]) -> str:
    """The README paragraph on ``models/model.onnx`` (empty when none was written)."""
    onnx = meta.get("onnx") or {}
    if not onnx.get("file"):
        return ""
    return f"""
## ONNX
`models/model.onnx` (opset {onnx["opset"]}): input {onnx["input"]}; output {onnx["output"]}.
Its metadata (`metadata_props`) holds the preprocessing contract: `medseg.plans` (all of
configs/plans.json), `target_spacing` (mm), `orientation` (RAS), `channel_names`,
`normalization` (per channel), `labels`, `patch_size`, `mirror_axes`. medseg runs it with
`medseg predict --model BUNDLE --backend onnxruntime` (or `openvino`).
"""
