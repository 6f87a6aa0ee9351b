"""The JSON values of a manifest, checked one by one: each helper returns the value in its
Python form or raises a MedsegError naming the manifest file and the JSON key
(``training[3].label: expected a string path, found 12``).

:func:`medseg.data.manifest.load_manifest` applies them; :func:`check_case_id` is also the rule
for case ids elsewhere (lesion tables).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from medseg.errors import MedsegError


def describe(value: object) -> str:
    """A JSON value in words, for "found ..." messages: ``a list [1, 2]`` (60 characters)."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return f"{names.get(type(value), type(value).__name__)} {json.dumps(value)[:60]}"


def string_value(value: object, key: str, path: Path) -> str:
    """``value`` when it is a string; else a MedsegError naming ``key`` in the manifest ``path``."""
    if not isinstance(value, str):
        raise MedsegError(f"{key}: expected a string, found {describe(value)}", path)
    return value


def check_case_id(
    value: object, key: str = "case id", path: str | os.PathLike[str] | None = None
) -> str:
    """``value`` as a case id: it names output and cache files, so one plain file name.

    Raises
    ------
    MedsegError
        Naming ``key`` (and ``path``) for a non-string, empty, ``.``/``..`` or a name holding
        ``/``, ``\\`` or NUL.
    """
    if not isinstance(value, str):
        raise MedsegError(f"{key}: expected a string, found {describe(value)}", path)
    cid = value
    if cid.strip() in ("", ".", "..") or any(c in cid for c in "/\\\0"):
        raise MedsegError(
            f"{key}: expected a case id usable as a file name (not empty, '.' or '..', no "
            f"'/' or '\\'), found {cid!r}",
            path,
        )
    return cid


def int_keyed(value: object, key: str, path: Path) -> dict[int, str]:
    """A non-empty ``{"0": name, ...}`` object as ``{0: name, ...}``, sorted by key.

    ``key`` ``"labels"`` must hold 0 (background); ``"modality"`` channels ``0..N-1``.

    Raises
    ------
    MedsegError
        Naming ``key`` and the manifest ``path``.
    """
    if not isinstance(value, dict) or not value:
        raise MedsegError(
            f"{key}: expected a non-empty object {{'0': name}}, found {describe(value)}", path
        )
    out: dict[int, str] = {}
    for k, name in value.items():
        if not (isinstance(k, str) and k.strip().isdigit()):
            raise MedsegError(f"{key}: expected non-negative integer keys, found {k!r}", path)
        out[int(k)] = string_value(name, f"{key}[{k!r}]", path)
    if key == "labels" and 0 not in out:
        raise MedsegError('labels: expected key "0" (background)', path)
    if key == "modality" and sorted(out) != list(range(len(out))):
        raise MedsegError(
            f"modality: expected channels 0..{len(out) - 1}, found {sorted(out)}", path
        )
    return dict(sorted(out.items()))


def path_value(value: object, key: str, path: Path, root: Path) -> Path:
    """A non-empty string path, relative ones joined to the data ``root``; else a MedsegError."""
    if not isinstance(value, str) or not value.strip():
        raise MedsegError(f"{key}: expected a string path, found {describe(value)}", path)
    p = Path(value)
    return p if p.is_absolute() else root / p


def label_map_value(value: object, key: str, path: Path) -> tuple[tuple[str, int], ...]:
    """A ``label_map`` object ``{ROI name or pattern: value >= 1}`` as ``(name, value)`` pairs in
    file order; ``None`` gives ``()``.

    Raises
    ------
    MedsegError
        For an empty or non-object map, or a value that is not an integer >= 1.
    """
    if value is None:
        return ()
    if not isinstance(value, dict) or not value:
        raise MedsegError(
            f"{key}: expected an object {{ROI name or pattern: label value}}, found "
            f"{describe(value)}",
            path,
        )
    out = []
    for name, v in value.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise MedsegError(
                f"{key}[{name!r}]: expected a label value >= 1, found {describe(v)}", path
            )
        out.append((str(name), int(v)))
    return tuple(out)


def image_paths(value: object, where: str, path: Path, root: Path) -> list[Path]:
    """A case's ``"image"``: one path, or a non-empty list of one path per channel."""
    if isinstance(value, list):
        if not value:
            raise MedsegError(f"{where}.image: expected one path per channel, found []", path)
        return [path_value(v, f"{where}.image[{n}]", path, root) for n, v in enumerate(value)]
    return [path_value(value, f"{where}.image", path, root)]


def series_value(value: object, n: int, where: str, path: Path) -> tuple[str | None, ...]:
    """A case's ``"series"``: a UID or 1-based number (or ``None``) for at most ``n`` channels."""
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    if len(items) > n or not all(v is None or isinstance(v, str | int) for v in items):
        raise MedsegError(
            f"{where}.series: expected a series UID or number per channel ({n}), found "
            f"{describe(value)}",
            path,
        )
    return tuple(None if v is None else str(v) for v in items)
