"""Configuration as data: frozen dataclasses <-> YAML, validated on load.

Each pipeline stage owns its section (``TrainConfig`` in ``medseg.training.config``,
``InferConfig`` in ``medseg.inference.config``, ...); this module holds the generic
machinery: building a dataclass tree from a mapping with type checks, "did you mean"
hints for unknown keys, dotted overrides (``train.epochs=5``) and YAML round trips.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from medseg.errors import MedsegError

T = TypeVar("T")


def _check_scalar(tp: Any, value: Any, where: str) -> Any:
    if tp is Any:
        return value
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    if tp is type(None) and value is None:
        return None
    if tp not in (float, int, bool, str, type(None)):
        raise TypeError(f"unsupported config type {tp!r}")
    raise MedsegError(f"{where}: expected {tp.__name__}, found {value!r}")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise MedsegError(f"{where}: expected a mapping, found {value!r}")
        return from_dict(tp, value, where)  # type: ignore[arg-type]
    if origin is typing.Literal:
        if value not in args:
            raise MedsegError(f"{where}: expected one of {list(args)}, found {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in args:
            try:
                return _coerce(arg, value, where)
            except MedsegError as exc:
                errors.append(str(exc))
        raise MedsegError(f"{where}: {value!r} matches none of {[_name(a) for a in args]}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise MedsegError(f"{where}: expected a list, found {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise MedsegError(f"{where}: expected {len(args)} values, found {len(value)}")
        return tuple(
            _coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise MedsegError(f"{where}: expected a mapping, found {value!r}")
        kt, vt = args if args else (Any, Any)
        return {
            _coerce(kt, _json_key(kt, k), f"{where} key"): _coerce(vt, v, f"{where}.{k}")
            for k, v in value.items()
        }
    return _check_scalar(tp, value, where)


def _json_key(key_type: Any, key: Any) -> Any:
    """JSON object keys are strings: read ``"1"`` as ``1`` where the key type is ``int``."""
    if key_type is int and isinstance(key, str) and key.lstrip("-").isdigit():
        return int(key)
    return key


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, validating types and rejecting unknown keys.

    Raises
    ------
    MedsegError
        Naming the dotted key, what was expected and what was found, with a "did you mean"
        hint for misspelt keys.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise MedsegError(
                f"{where}: unknown key '{key}'{hint}; expected one of {sorted(fields)}"
            )
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}")
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise MedsegError(f"{where}: {exc}") from exc
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(obj: Any) -> Any:
    """Turn a dataclass tree into plain YAML/JSON-friendly data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``{"train.epochs": 5}``) in a nested dict; ``None`` values are skipped."""
    out = dict(data)
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[parts[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or invalid YAML is a :class:`MedsegError`."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise MedsegError("config file not found", p) from exc
    except yaml.YAMLError as exc:
        raise MedsegError(f"invalid YAML: {exc}", p) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MedsegError(
            f"expected a YAML mapping at the top level, found {type(data).__name__}", p
        )
    return data


def dump_yaml(obj: Any, path: str | Path) -> Path:
    """Write a dataclass tree (or plain data) as YAML, atomically."""
    from medseg.io.atomic import atomic_write_text

    return atomic_write_text(Path(path), yaml.safe_dump(to_dict(obj), sort_keys=False))


def load_config(
    cls: type[T],
    path: str | Path | None,
    overrides: Mapping[str, Any] | None,
    where: str,
    flags: Mapping[str, str] | None = None,
) -> T:
    """Build config ``cls`` from a YAML file (or defaults) with dotted overrides applied.

    This is what ``medseg train --config`` and ``medseg predict --config`` both run.

    Parameters
    ----------
    cls
        The frozen dataclass tree (``RunConfig``, ``InferConfig``, ...).
    path
        YAML file; ``None``: defaults only.
    overrides
        ``{"train.epochs": 5, ...}`` from command-line flags; ``None`` values are ignored
        (flag not given).
    where
        Prefix of the keys in error messages (``"config"``, ``"infer"``).
    flags
        Dotted override key -> the command-line flag that set it (``{"train.time_limit_minutes":
        "--time-limit"}``): a bad value from an override is then reported under the flag's
        name (``--time-limit: expected >= 0, found -1.0``) instead of the config key.

    Raises
    ------
    MedsegError
        For unknown keys (with a "did you mean" hint), wrong types or out-of-range values,
        naming the key (or the flag that set it); the file is named too unless the bad value
        came from an override.
    """
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    from_file = load_yaml(path) if path is not None else {}
    try:
        return from_dict(cls, apply_overrides(from_file, given), where)
    except MedsegError as exc:
        if exc.path is not None:
            raise
        culprits = _override_culprits(exc.message, where, given, from_file)
        named = [flags[k] for k in culprits if flags and k in flags]
        if named:
            raise MedsegError(f"{', '.join(named)}: {_detail(exc.message)}") from exc
        if path is None or culprits:
            raise  # the value came from an override, not from the file
        raise MedsegError(exc.message, path) from exc


def _override_culprits(
    message: str, where: str, given: Mapping[str, Any], from_file: Mapping[str, Any]
) -> list[str]:
    """The overridden keys an error is about, in ``given`` order.

    The key the message starts with when it was overridden (``"train.epochs: ..."``); for a
    message about a whole section (``"train: expected epochs >= 1 and ..."``) the overridden
    keys of that section whose field name the message mentions, unless the file sets one of
    the fields mentioned too (then the file may be at fault: none).
    """
    key = _blamed_key(message, where)
    if key is None:
        return []
    if key in given:
        return [key]
    node: Any = from_file
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    in_file = set(node) if isinstance(node, Mapping) else set()
    section, found = f"{key}.", []
    for k in given:
        field = k[len(section) :] if k.startswith(section) else ""
        if field and "." not in field and re.search(rf"\b{re.escape(field)}\b", message):
            found.append(k)
    mentioned = {f for f in in_file if re.search(rf"\b{re.escape(str(f))}\b", message)}
    return [] if mentioned else found


def _detail(message: str) -> str:
    """A message without its leading key: ``"train.epochs: expected ..."`` -> ``"expected ..."``."""
    head, sep, rest = message.partition(": ")
    return rest if sep and re.fullmatch(r"[\w.\[\]]+", head) else message


def _blamed_key(message: str, where: str) -> str | None:
    """The dotted key an error is about: ``"infer.folds[1]: ..."`` -> ``folds``;
    ``"config.train: unknown key 'x' ..."`` -> ``train.x``; ``"train.epochs: ..."`` (raised
    by a section's ``validate``, without the ``where`` prefix) -> ``train.epochs``."""
    found = re.match(r"\w+(?:\.\w+)*", message)
    dotted = found.group(0) if found else ""
    if dotted == where or dotted.startswith(f"{where}."):
        dotted = dotted[len(where) :]
    prefix = dotted.lstrip(".")
    unknown = re.search(r"unknown key '([^']*)'", message)
    if unknown:
        return f"{prefix}.{unknown.group(1)}" if prefix else unknown.group(1)
    return prefix or None
