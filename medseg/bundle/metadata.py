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


def _network_data_format(plans: Plans) -> dict[str, Any]:
    """The bundle's input (one RAS patch, normalised as planned) and output description."""
    labels = {str(k): v for k, v in sorted(plans.labels.items())}
    input_format = "hounsfield" if plans.normalization == "ct" else "magnitude"
    return {
        "inputs": {
            "image": {
                "type": "image",
                "format": input_format,
                "modality": plans.modality,
                "num_channels": 1,
                "spatial_shape": list(plans.patch_size),
                "dtype": "float32",
                "value_range": [],
                "is_patch_data": True,
                "channel_def": {"0": plans.modality},
                "spacing_mm": list(plans.target_spacing),
                "orientation": "RAS",
                "normalization": plans.normalization,
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
