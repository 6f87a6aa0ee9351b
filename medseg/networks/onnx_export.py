"""ONNX export of a trained network, with the preprocessing contract in the file's metadata.

An exported file takes ``image`` ``(B, C, X, Y, Z)`` float32 (C input channels in the plans'
order, axes R, A, S, preprocessed as the plans say) and returns ``logits``
``(B, classes, X, Y, Z)`` float32 (softmax over axis 1 gives the class probabilities). The
batch axis is dynamic; the spatial axes are fixed to the plans' patch size (the sliding
window always feeds patch-size windows; MONAI pads smaller volumes) unless exported with
``dynamic_spatial=True``.

The ONNX ``metadata_props`` carry what a user needs to feed the network without medseg
(nnU-Net issues #2407, #2984 ask for this), every value a JSON string::

    medseg.plans          the full plans (Plans as JSON, labels keyed by strings)
    medseg.version        medseg version that exported the file
    medseg.weights_sha256 first 16 hex digits of the SHA-256 of the weights file exported
    medseg.onnx_format    version of this layout (a cached file of another version is redone)
    target_spacing        voxel size in mm along R, A, S
    orientation           "RAS" (the axes X, Y, Z of the input)
    channel_names         modality of each input channel, channel 0 first
    normalization         per channel: scheme, clip window, mean, std
    labels                {"0": "background", ...}
    patch_size            window size in voxels (X, Y, Z)
    mirror_axes           RAS axes the model may be mirrored along (test-time augmentation)
    crop_foreground       whether cases are cropped to their non-zero bounding box first
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

import medseg
from medseg.config import to_dict
from medseg.errors import MedsegError
from medseg.io.atomic import atomic_write_bytes
from medseg.planning.plans import Plans, plans_from_dict

logger = logging.getLogger(__name__)

OPSET = 17
ONNX_FORMAT = 1
INPUT_NAME, OUTPUT_NAME = "image", "logits"
_INSTALL = "pip install 'medseg[onnx]'"


def require(module: str, flag: str = "ONNX export") -> Any:
    """Import an optional package (``onnx``, ``onnxruntime``, ``openvino``) or say how to get it.

    Raises
    ------
    MedsegError
        When the package is not installed.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MedsegError(
            f"{flag}: expected the Python package '{module}' ({_INSTALL}), found it missing"
        ) from exc


class MainOutput(nn.Module):
    """``net`` returning only its full-resolution output (deep-supervision heads dropped).

    MONAI's ``DynUNet`` already returns one tensor in ``eval`` mode; this keeps the exported
    graph to one output for any network that returns a list or tuple (full resolution first).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, X, Y, Z)`` -> logits ``(B, classes, X, Y, Z)``."""
        out = self.net(x)
        return out[0] if isinstance(out, list | tuple) else out


def plans_json(plans: Plans) -> dict[str, Any]:
    """The plans as the JSON object ``plans.json`` holds (labels keyed by strings)."""
    data = to_dict(plans)
    data["labels"] = {str(k): v for k, v in plans.labels.items()}
    return dict(data)


def onnx_metadata(plans: Plans, *, weights_sha256: str = "") -> dict[str, str]:
    """The ``metadata_props`` of an exported model (see the module docstring); JSON values."""
    norms = [
        {
            "channel": n,
            "modality": c.modality,
            "scheme": c.normalization,
            "clip": list(c.intensity_clip) if c.intensity_clip is not None else None,
            "mean": c.intensity_mean,
            "std": c.intensity_std,
        }
        for n, c in enumerate(plans.channel_plans)
    ]
    values: dict[str, Any] = {
        "medseg.plans": plans_json(plans),
        "medseg.version": medseg.__version__,
        "medseg.weights_sha256": weights_sha256,
        "medseg.onnx_format": ONNX_FORMAT,
        "target_spacing": list(plans.target_spacing),
        "orientation": "RAS",
        "channel_names": list(plans.channel_names),
        "normalization": norms,
        "labels": {str(k): v for k, v in sorted(plans.labels.items())},
        "patch_size": list(plans.patch_size),
        "mirror_axes": list(plans.mirror_axes),
        "crop_foreground": plans.crop_foreground,
    }
    return {k: json.dumps(v) for k, v in values.items()}


def _export_bytes(
    model: nn.Module, dummy: torch.Tensor, dynamic_spatial: bool, opset: int
) -> bytes:
    """The TorchScript-based exporter (``dynamo=False``): it traces MONAI's networks as they
    are, with no ``onnxscript`` dependency; ``torch.export`` needs the graph free of the
    data-dependent Python branches some MONAI blocks have."""
    axes = {0: "batch"} if not dynamic_spatial else {0: "batch", 2: "x", 3: "y", 4: "z"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # "legacy exporter" (DeprecationWarning) and "instance_norm ... train=True": MONAI's
        # InstanceNorm3d keeps no running statistics, so it normalises with the input's own
        # statistics in eval mode too, which is what the exported graph does.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*instance_norm.*", category=UserWarning)
        # shape checks traced as constants: right for the fixed patch, and for dynamic axes
        # they are MONAI's input-size assertions (InstanceNorm needs more than one voxel)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        with torch.no_grad():
            torch.onnx.export(
                model,
                (dummy,),
                buffer,  # type: ignore[arg-type]  # the TorchScript exporter takes a file object
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
            )
    return buffer.getvalue()


def export_onnx(
    model: nn.Module,
    plans: Plans,
    path: str | Path,
    *,
    opset: int = OPSET,
    weights_sha256: str = "",
    dynamic_spatial: bool = False,
) -> Path:
    """Write ``model`` as an ONNX file with the preprocessing contract in its metadata.

    Parameters
    ----------
    model
        The network (on any device; traced in ``eval`` mode, its mode restored after), mapping
        ``(B, plans.in_channels, X, Y, Z)`` to logits ``(B, plans.num_classes, X, Y, Z)``.
    plans
        The plans it was trained with (written into the metadata).
    path
        The ``.onnx`` file to write (atomically: a failed export leaves no file).
    opset
        ONNX opset (17 or newer: ``InstanceNormalization`` and ``ConvTranspose`` as torch has
        them).
    weights_sha256
        Identity of the weights file (:func:`medseg.networks.loading.file_digest`); cached
        exports are reused only while it matches.
    dynamic_spatial
        Dynamic X, Y, Z axes instead of the fixed patch size (the batch axis is always dynamic).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    MedsegError
        When ``onnx`` is not installed or the network does not export (naming the network).
    """
    onnx = require("onnx")
    shape = [1, plans.in_channels, *plans.patch_size]
    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model.eval()
        data = _export_bytes(
            MainOutput(model), torch.zeros(shape, device=device), dynamic_spatial, opset
        )
    except Exception as exc:  # the exporter runs arbitrary network code; report which failed
        first = str(exc).splitlines()[0][:240] if str(exc) else ""
        raise MedsegError(
            f"ONNX export: expected {plans.network.name} to export at input {shape}, found "
            f"{type(exc).__name__}: {first}",
            path,
        ) from exc
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(data)
    proto.producer_name, proto.producer_version = "medseg", medseg.__version__
    proto.doc_string = (
        f"{plans.network.name}: {INPUT_NAME} (B, C, X, Y, Z) float32, RAS, preprocessed as "
        f"metadata 'medseg.plans' says -> {OUTPUT_NAME} (B, classes, X, Y, Z)"
    )
    for key, value in onnx_metadata(plans, weights_sha256=weights_sha256).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    # One protobuf (< 2 GB, the protobuf limit): medseg's networks are tens of MB at most.
    out = atomic_write_bytes(Path(path), proto.SerializeToString())
    logger.info("exported %s to %s (opset %d)", plans.network.name, out, opset)
    return out


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of an ONNX file, JSON values parsed (non-JSON values kept as text).

    Raises
    ------
    MedsegError
        Naming ``path`` when it is missing or not an ONNX model.
    """
    onnx = require("onnx")
    p = Path(path)
    if not p.is_file():
        raise MedsegError("expected an ONNX model file, found no file", p)
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends: not an ONNX file
        raise MedsegError(
            f"expected an ONNX model file, found data onnx cannot parse ({type(exc).__name__})",
            p,
        ) from exc
    meta: dict[str, Any] = {}
    for entry in proto.metadata_props:
        try:
            meta[entry.key] = json.loads(entry.value)
        except json.JSONDecodeError:
            meta[entry.key] = entry.value
    return meta


def onnx_plans(path: str | Path) -> Plans:
    """The :class:`Plans` stored in an ONNX file medseg exported (``medseg.plans``).

    Raises
    ------
    MedsegError
        When the file carries no (valid) ``medseg.plans``.
    """
    meta = read_onnx_metadata(path)
    if not isinstance(meta.get("medseg.plans"), dict):
        raise MedsegError(
            "expected an ONNX model exported by medseg (metadata 'medseg.plans'), found "
            f"metadata keys {sorted(meta)[:8]}",
            path,
        )
    try:
        return plans_from_dict(meta["medseg.plans"], "medseg.plans")
    except MedsegError as exc:
        raise MedsegError(exc.message, path) from exc


def is_current(path: Path, weights_sha256: str) -> bool:
    """True when ``path`` is a medseg export of the weights ``weights_sha256`` in this format."""
    if not path.is_file():
        return False
    try:
        meta = read_onnx_metadata(path)
    except MedsegError as exc:
        logger.warning("%s: exporting again (%s)", path, exc.message)
        return False
    return (
        meta.get("medseg.weights_sha256") == weights_sha256
        and meta.get("medseg.onnx_format") == ONNX_FORMAT
    )
