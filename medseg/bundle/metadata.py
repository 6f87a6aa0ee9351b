"""``configs/metadata.json`` of an exported MONAI bundle, and its offline verification."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import MedsegError
from medseg.io.jsonfile import read_json
from medseg.planning.plans import Plans

SCHEMA_NAME = "meta_schema.json"


def schema_path() -> Path:
    """Path of the metadata JSON schema shipped with medseg (no download needed)."""
    return Path(str(resources.files("medseg.bundle") / "schema" / SCHEMA_NAME))


def build_metadata(
    plans: Plans,
    *,
    name: str,
    version: str,
    description: str,
    task: str,
    authors: str = "medseg",
    changelog: dict[str, str] | None = None,
    performance: dict[str, Any] | None = None,
    data_source: str = "",
) -> dict[str, Any]:
    """Build the MONAI bundle metadata for a model described by ``plans``.

    Parameters
    ----------
    plans
        The run's plans: modality, labels, target spacing (mm, RAS) and normalisation.
    name, version, description, task, authors
        Bundle identity; ``version`` is ``X.Y.Z``.
    changelog
        ``{version: text}``; defaults to one entry for ``version``.
    performance
        Measured accuracy to record (e.g. validation Dice per label).
    data_source
        Where the training data came from.

    Returns
    -------
    dict
        JSON-serialisable metadata with the fields the MONAI Bundle Specification requires.
    """
    import monai
    import torch

    import medseg

    meta: dict[str, Any] = {
        "schema": SCHEMA_NAME,
        "version": version,
        "changelog": changelog or {version: f"exported by medseg {medseg.__version__}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {"medseg": medseg.__version__},
        "optional_packages_version": {
            "nibabel": _version("nibabel"),
            "pydicom": _version("pydicom"),
        },
        "name": name,
        "task": task,
        "description": description,
        "authors": authors,
        "copyright": "Copyright (c) the medseg authors",
        "data_source": data_source,
        "data_type": "nifti or dicom",
        "intended_use": "Research only. Not for clinical use.",
        "network_data_format": _network_data_format(plans),
    }
    if performance:
        meta["performance"] = performance
    return meta


def modality_name(plans: Plans) -> str:
    """``"CT"`` for one channel, ``"CT+PET"`` for several (channel order)."""
    return plans.modality if plans.in_channels == 1 else "+".join(plans.channel_names)


def channel_normalization(plans: Plans) -> dict[str, str]:
    """``{"0": "ct: clip to [-100, 200], then (x - 40) / 50", ...}``, one entry per channel."""
    out = {}
    for n, c in enumerate(plans.channel_plans):
        if c.normalization == "ct" and c.intensity_clip is not None:
            lo, hi = c.intensity_clip
            text = f"ct: clip to [{lo:g}, {hi:g}], then (x - {c.intensity_mean:g}) / "
            text += f"{c.intensity_std:g} (dataset foreground statistics)"
        elif c.normalization == "zscore_nonzero":
            text = "zscore_nonzero: per-image z-score over the non-zero voxels"
        else:
            text = f"{c.normalization}: per-image z-score over all voxels"
        out[str(n)] = text
    return out


def _input_format(plans: Plans) -> str:
    """``hounsfield`` (every channel CT-normalised), ``magnitude`` (none) or ``mixed``."""
    kinds = {c.normalization == "ct" for c in plans.channel_plans}
    if kinds == {True}:
        return "hounsfield"
    return "magnitude" if kinds == {False} else "mixed"


def _network_data_format(plans: Plans) -> dict[str, Any]:
    """The bundle's input (one RAS patch, each channel normalised as planned) and output.

    ``channel_def`` names each input channel by its modality; ``channel_normalization``
    (an extra key: the schema's tensor allows them) says how each was normalised;
    ``normalization`` is channel 0's scheme.
    """
    labels = {str(k): v for k, v in sorted(plans.labels.items())}
    return {
        "inputs": {
            "image": {
                "type": "image",
                "format": _input_format(plans),
                "modality": modality_name(plans),
                "num_channels": plans.in_channels,
                "spatial_shape": list(plans.patch_size),
                "dtype": "float32",
                "value_range": [],
                "is_patch_data": True,
                "channel_def": {str(n): m for n, m in enumerate(plans.channel_names)},
                "spacing_mm": list(plans.target_spacing),
                "orientation": "RAS",
                "normalization": plans.normalization,
                "channel_normalization": channel_normalization(plans),
            }
        },
        "outputs": {
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": plans.num_classes,
                "spatial_shape": list(plans.patch_size),
                "dtype": "float32",
                "value_range": [],
                "is_patch_data": True,
                "channel_def": labels,
            }
        },
    }


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def verify_metadata(meta_file: str | Path) -> None:
    """Validate ``metadata.json`` against the shipped schema (offline).

    Raises
    ------
    MedsegError
        Naming the file and the first violated requirement.
    """
    import jsonschema

    path = Path(meta_file)
    meta = read_json(path, what="bundle metadata (configs/metadata.json)")
    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    try:
        jsonschema.validate(instance=meta, schema=schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise MedsegError(
            f"metadata does not follow the bundle schema at {where}: {exc.message}", path
        ) from exc
