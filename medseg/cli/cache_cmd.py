"""``medseg cache list`` and ``medseg cache clear``: the preprocessing cache on disk.

``medseg train`` keeps preprocessed cases in ``~/.cache/medseg/preprocessed`` (or
``data.cache_dir``), capped at 20 GB by default: least recently used entries go first.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from medseg.errors import MedsegError
from medseg.preprocessing.cache import (
    DEFAULT_CACHE,
    DEFAULT_MAX_GB,
    CacheEntry,
    cache_entries,
    clear_cache,
    evict,
    folder_info,
    plans_folders,
)

cache_app = typer.Typer(
    help="The preprocessing cache: list its entries, clear or trim it.", no_args_is_help=True
)


def _dir_option() -> Path:
    return typer.Option(
        DEFAULT_CACHE, "--cache-dir", help="Cache folder (data.cache_dir of a run config)."
    )


def _check_dir(cache_dir: Path) -> None:
    if cache_dir.exists() and not cache_dir.is_dir():
        raise MedsegError("expected a cache folder, found a file", cache_dir)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def _folder_lines(cache_dir: Path, entries: list[CacheEntry]) -> list[str]:
    """One block per plans folder: what it holds, entries, size, last use, source folders."""
    lines = []
    for folder in plans_folders(cache_dir):
        mine = [e for e in entries if e.plans_key == folder.name]
        info = folder_info(folder)
        spacing = "x".join(f"{s:g}" for s in info.get("target_spacing", [])) or "?"
        last = _when(max(e.last_used for e in mine)) if mine else "-"
        lines.append(
            f"{folder.name}  {info.get('modality', '?')} at {spacing} mm  {len(mine)} entries  "
            f"{_size(sum(e.size for e in mine))}  last use {last}"
        )
        lines.extend(f"    images from {source}" for source in info.get("folders", []))
    return lines


def list_cmd(
    cache_dir: Path = _dir_option(),
    max_gb: float = typer.Option(
        DEFAULT_MAX_GB, "--max-gb", min=0, help="Cap to compare the size with (GB; 0: none)."
    ),
    entries: bool = typer.Option(False, "--entries", help="Also list every cached case."),
) -> None:
    """List what the cache holds: per plans folder (dataset) its entries, size and last use."""
    _check_dir(cache_dir)
    found = cache_entries(cache_dir)
    total = sum(e.size for e in found)
    cap = f"cap {max_gb:g} GB" if max_gb > 0 else "no cap"
    typer.echo(f"preprocessing cache {cache_dir}: {len(found)} entries, {_size(total)} ({cap})")
    for line in _folder_lines(cache_dir, found):
        typer.echo(line)
    if entries:
        typer.echo("entries, least recently used first:")
        for e in found:
            typer.echo(
                f"  {e.case_id}  {e.plans_key}  {_size(e.size)}  last use {_when(e.last_used)}  "
                f"{e.path.name}"
            )
    if 0 < max_gb * 1e9 < total:
        typer.echo(
            f"over the cap: the next training run, or `medseg cache clear --max-gb {max_gb:g}`, "
            "evicts the least recently used entries"
        )


def clear_cmd(
    cache_dir: Path = _dir_option(),
    older_than: float | None = typer.Option(
        None, "--older-than", min=0, metavar="DAYS", help="Delete entries unused for DAYS."
    ),
    all_entries: bool = typer.Option(False, "--all", help="Delete every entry."),
    max_gb: float | None = typer.Option(
        None, "--max-gb", min=0, help="Trim to GB, least recently used entries first."
    ),
) -> None:
    """Delete cache entries: all of them, those unused for DAYS, or the oldest beyond a cap."""
    choices = (("--all", all_entries), ("--older-than", older_than), ("--max-gb", max_gb))
    given = [flag for flag, value in choices if value not in (None, False)]
    if len(given) != 1:
        found = " and ".join(given) if given else "none"
        raise MedsegError(f"expected one of --all, --older-than DAYS, --max-gb GB; found {found}")
    _check_dir(cache_dir)
    before = cache_entries(cache_dir)
    if max_gb is not None:
        removed = evict(cache_dir, max_gb * 1e9)
    else:
        removed = clear_cache(cache_dir, older_than_days=older_than)
    kept = len(before) - len(removed)
    typer.echo(
        f"removed {len(removed)} entries ({_size(sum(e.size for e in removed))}) from {cache_dir}; "
        f"{kept} kept"
    )


def register(app: typer.Typer) -> None:
    """Add ``cache list`` and ``cache clear`` to the CLI."""
    cache_app.command("list")(list_cmd)
    cache_app.command("clear")(clear_cmd)
    app.add_typer(cache_app, name="cache")
