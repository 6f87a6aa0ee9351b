"""Reading the project's JSON files (plans, post-processing, splits, bundle metadata) with one
set of errors: a missing, unreadable or malformed file is a :class:`MedsegError` naming it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medseg.errors import MedsegError


def read_json(path: str | Path, *, what: str = "a JSON file", missing: str | None = None) -> Any:
    """Parse the JSON file at ``path``.

    Parameters
    ----------
    what
        What the file should be, for the messages (``"a medseg plans.json"``).
    missing
        Message when the file does not exist (default: "expected WHAT, found no file").

    Raises
    ------
    MedsegError
        Naming the file: missing, unreadable (a folder, no permission, not UTF-8 text) or
        not valid JSON (with the line and column of the first error).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise MedsegError(missing or f"expected {what}, found no file", p) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise MedsegError(f"expected {what}, found an unreadable file: {exc}", p) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MedsegError(f"expected {what}, found invalid JSON: {exc}", p) from exc
