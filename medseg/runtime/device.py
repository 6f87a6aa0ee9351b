"""Device choice: the one place that turns ``auto``/``cpu``/``cuda[:N]`` into a torch device."""

from __future__ import annotations

import torch

from medseg.errors import MedsegError


def resolve_device(name: str) -> torch.device:
    """Turn a device setting into a :class:`torch.device`.

    Parameters
    ----------
    name
        ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises
    ------
    MedsegError
        When CUDA is requested but no CUDA device is available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MedsegError(f"device {name!r}: expected a CUDA GPU, found none (use cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise MedsegError(f"device: expected auto, cpu or cuda[:N], found {name!r}") from exc
