"""On-disk cache of preprocessed cases, shared by folds and runs.

Layout: ``CACHE_DIR/<plans key>/<case id>_<source key>_<state key>.npz`` where ``plans
key`` hashes the preprocessing fields of the plans (modality, spacing, normalisation and its
statistics, cropping, version), ``source key`` the resolved image/label paths and ``state
key`` their sizes and modification times. Changing the plans makes a new folder; touching a
file makes a new entry and deletes the superseded entries of the same source files (other
datasets that share a case id and a plans folder keep theirs). Each entry holds ``image``
float32 ``(1, X, Y, Z)`` and ``label`` uint8 ``(1, X, Y, Z)`` in RAS at the target spacing,
plus the RAS affine. ``CACHE_DIR/<plans key>/info.json`` says what a folder holds (modality,
labels, spacing, the folders its images came from) for ``medseg cache list``.

Size cap: after each :meth:`PreprocessedCache.ensure` the whole cache (every plans folder)
is trimmed to ``max_gb`` (default :data:`DEFAULT_MAX_GB`, 20 GB = 20e9 bytes; 0: no cap) by
deleting the least recently used entries first. An entry's last use is its access time,
set explicitly whenever a run uses it (its modification time stays its creation time).
Entries used since the cache object was made (the run in progress, and any run working
alongside it) are never evicted. An entry that fails to load (e.g. a truncated ``.npz``)
is rebuilt with a warning naming it.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import re
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.loading import load_case
from medseg.data.manifest import Case
from medseg.errors import MedsegError
from medseg.io.atomic import atomic_path, atomic_write_text
from medseg.io.channels import DEFAULT_MIN_OVERLAP
from medseg.planning.plans import Plans
from medseg.preprocessing.pipeline import preprocessing_transforms

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path.home() / ".cache" / "medseg" / "preprocessed"
#: Default size cap of the whole cache, in GB (10^9 bytes).
DEFAULT_MAX_GB = 20.0
INFO_FILE = "info.json"
_PLANS_DIR = re.compile(r"[0-9a-f]{16}")
_UNREADABLE = (OSError, ValueError, EOFError, zipfile.BadZipFile)


def plans_key(plans: Plans) -> str:
    """Hash of the fields of ``plans`` that change preprocessed data."""
    fields: dict[str, Any] = {
        "modality": plans.modality,
        "spacing": [round(s, 6) for s in plans.target_spacing],
        "norm": plans.normalization,
        "clip": plans.intensity_clip,
        "mean": plans.intensity_mean,
        "std": plans.intensity_std,
        "crop": plans.crop_foreground,
        "version": plans.version,
        "cache_format": 2,
    }
    if plans.in_channels > 1:  # single-channel keys unchanged: existing caches stay valid
        fields["channels"] = [
            [c.modality, c.normalization, c.intensity_clip, c.intensity_mean, c.intensity_std]
            for c in plans.channel_plans
        ]
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _sources(case: Case) -> list[Path]:
    return [Path(p) for p in (*case.images, case.label) if p is not None]


def source_key(case: Case) -> str:
    """Hash of a case's resolved file paths (and its series and label-map choices)."""
    parts = [str(p.resolve()) for p in _sources(case)]
    if case.series or case.label_map:
        parts.append(json.dumps([list(case.series), [list(m) for m in case.label_map]]))
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:10]


def file_key(case: Case) -> str:
    """``<source key>_<state key>``: the paths, then their sizes and modification times."""
    parts = []
    for p in _sources(case):
        st = p.stat()
        parts.append(f"{st.st_size}|{st.st_mtime_ns}")
    state = hashlib.sha1("\n".join(parts).encode()).hexdigest()[:10]
    return f"{source_key(case)}_{state}"


def _preprocess_one(
    case: Case, plans: Plans, target: Path, min_overlap: float = DEFAULT_MIN_OVERLAP
) -> None:
    keys = ("image", "label") if case.label is not None else ("image",)
    pipeline = preprocessing_transforms(plans, keys=keys, load=False)
    image, label = load_case(case, plans.in_channels, min_overlap=min_overlap)
    data = {"image": image.to_metatensor()}
    if label is not None:
        data["label"] = label.to_metatensor()
    out = pipeline(data)
    image = out["image"]
    arrays: dict[str, Any] = {
        "image": np.asarray(image.detach().cpu().numpy(), dtype=np.float32),
        "affine": np.asarray(image.affine.cpu().numpy(), dtype=np.float64),
    }
    if case.label is not None:
        arrays["label"] = np.rint(out["label"].detach().cpu().numpy()).astype(np.uint8)
    with atomic_path(target) as tmp:  # ends with .npz, so np.savez keeps the name
        np.savez(tmp, **arrays)  # type: ignore[arg-type]


@dataclass(frozen=True)
class CacheEntry:
    """One cached case: its file, plans folder, case id, size (bytes) and last use (epoch s)."""

    path: Path
    plans_key: str
    case_id: str
    size: int
    last_used: float


def cache_entries(root: str | Path) -> list[CacheEntry]:
    """Every entry under cache folder ``root``, oldest use first (files being written skipped)."""
    out = []
    for folder in plans_folders(root):
        for f in folder.glob("*.npz"):
            if f.name.startswith("."):  # a temporary file of a write in progress
                continue
            try:
                st = f.stat()
            except FileNotFoundError:  # removed meanwhile
                continue
            case_id = f.stem.rsplit("_", 2)[0]
            out.append(CacheEntry(f, folder.name, case_id, st.st_size, st.st_atime))
    return sorted(out, key=lambda e: (e.last_used, str(e.path)))


def plans_folders(root: str | Path) -> list[Path]:
    """The ``<plans key>`` folders of cache folder ``root`` (nothing else in it is touched)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _PLANS_DIR.fullmatch(p.name))


def folder_info(folder: Path) -> dict[str, Any]:
    """What a plans folder holds (``info.json``); ``{}`` when absent or unreadable."""
    try:
        info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def evict(
    root: str | Path, max_bytes: float, *, keep: Callable[[CacheEntry], bool] = lambda e: False
) -> list[CacheEntry]:
    """Delete least recently used entries until the cache fits ``max_bytes``; return them.

    Entries for which ``keep`` is true are never deleted (the cache may stay above the cap).
    """
    entries = cache_entries(root)
    total = sum(e.size for e in entries)
    removed = []
    for entry in entries:
        if total <= max_bytes:
            break
        if keep(entry):
            continue
        logger.debug("evicting cache entry %s (last used %s)", entry.path, _when(entry.last_used))
        entry.path.unlink(missing_ok=True)
        total -= entry.size
        removed.append(entry)
    if total > max_bytes:
        logger.warning(
            "preprocessing cache %s holds %.2f GB, above its cap of %.2f GB, in entries "
            "in use by the run in progress (kept)", root, total / 1e9, max_bytes / 1e9,
        )  # fmt: skip
    return removed


def clear_cache(root: str | Path, *, older_than_days: float | None = None) -> list[CacheEntry]:
    """Delete every entry (or those last used more than ``older_than_days`` ago).

    Only the cache's own files are touched (``<plans key>/*.npz`` and ``info.json``); plans
    folders left empty are removed.
    """
    cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
    removed = []
    for entry in cache_entries(root):
        if cutoff is None or entry.last_used < cutoff:
            entry.path.unlink(missing_ok=True)
            removed.append(entry)
    for folder in plans_folders(root):
        if not any(p.name != INFO_FILE for p in folder.iterdir()):
            (folder / INFO_FILE).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # something appeared meanwhile
                folder.rmdir()
    return removed


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _mark_used(path: Path) -> None:
    """Set the access time (the entry's last use) to now, keeping the modification time."""
    try:
        os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))
    except OSError as exc:  # e.g. a shared cache entry owned by another user
        logger.debug("cannot mark %s as used: %s", path, exc)


def _unloadable(path: Path, labelled: bool) -> str | None:
    """Why cache file ``path`` cannot be loaded (cheap: the zip directory), or ``None``."""
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as zf:  # a truncated file has no end-of-directory record
            infos = zf.infolist()
    except _UNREADABLE as exc:
        return str(exc) or type(exc).__name__
    names = {i.filename for i in infos}
    need = {"image.npy", "affine.npy"} | ({"label.npy"} if labelled else set())
    if not need <= names:
        return f"expected arrays {sorted(need)}, found {sorted(names)}"
    if any(i.header_offset + i.compress_size > size for i in infos):
        return "truncated"
    return None


class PreprocessedCache:
    """Preprocess cases once per plans and read them back.

    Parameters
    ----------
    root
        Cache folder (created), shared by every plans folder below it.
    plans
        The run's plans; their preprocessing fields select the sub-folder.
    max_gb
        Size cap of the whole cache folder in GB (10^9 bytes); ``0``: no cap. Least recently
        used entries are evicted first, never those used since this object was made.
    """

    def __init__(
        self,
        root: str | Path,
        plans: Plans,
        *,
        max_gb: float = DEFAULT_MAX_GB,
        min_overlap: float = DEFAULT_MIN_OVERLAP,
    ) -> None:
        if not max_gb >= 0:
            raise MedsegError(f"cache max_gb: expected >= 0 (0: no cap), found {max_gb}")
        self.plans = plans
        self.root = Path(root)
        self.max_gb = max_gb
        self.min_overlap = min_overlap
        self.dir = self.root / plans_key(plans)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._since = time.time() - 1.0  # file times may be coarser than time.time()
        self._in_use: set[Path] = set()

    def path(self, case: Case) -> Path:
        """Cache file of ``case``."""
        return self.dir / f"{case.case_id}_{file_key(case)}.npz"

    def ensure(
        self,
        cases: Sequence[Case],
        *,
        workers: int = 2,
        on_case: Callable[[Case], None] | None = None,
    ) -> list[Path]:
        """Preprocess the cases missing from the cache; return every case's cache file.

        An entry that fails to load is rebuilt (with a warning naming it); afterwards the
        cache is trimmed to ``max_gb``, least recently used entries first.
        """
        paths = [self.path(c) for c in cases]
        todo = []
        for case, path in zip(cases, paths, strict=True):
            if path.is_file():
                why = None if path in self._in_use else _unloadable(path, case.label is not None)
                if why is None:
                    continue
                logger.warning("cache entry %s fails to load (%s); rebuilding it", path, why)
            todo.append((case, path))
        self._in_use.update(paths)
        if todo:
            logger.info("preprocessing %d of %d cases into %s", len(todo), len(cases), self.dir)
            self.dir.mkdir(parents=True, exist_ok=True)

            def work(item: tuple[Case, Path]) -> None:
                _preprocess_one(item[0], self.plans, item[1], self.min_overlap)
                self._prune(item[0], item[1])
                if on_case is not None:
                    on_case(item[0])

            with ThreadPoolExecutor(max(1, workers)) as pool:
                list(pool.map(work, todo))
            self._describe(c for c, _ in todo)
        for path in paths:
            _mark_used(path)
        if self.max_gb > 0:
            evict(self.root, self.max_gb * 1e9, keep=self._keeps)
        return paths

    def _keeps(self, entry: CacheEntry) -> bool:
        return entry.path in self._in_use or entry.last_used >= self._since

    def _describe(self, cases: Iterable[Case]) -> None:
        """Record in ``info.json`` what this plans folder holds (for ``medseg cache list``)."""
        info = folder_info(self.dir)
        folders = set(info.get("folders", [])) | {str(c.image.parent.resolve()) for c in cases}
        new = {
            "modality": self.plans.modality,
            "labels": {str(k): v for k, v in self.plans.labels.items()},
            "target_spacing": list(self.plans.target_spacing),
            "normalization": self.plans.normalization,
            "folders": sorted(folders),
        }
        if new != info:
            atomic_write_text(self.dir / INFO_FILE, json.dumps(new, indent=1) + "\n")

    def _prune(self, case: Case, current: Path) -> None:
        """Delete entries of ``case``'s source files made before they last changed."""
        pattern = glob.escape(f"{case.case_id}_{source_key(case)}_") + "*.npz"
        for old in self.dir.glob(pattern):
            if old != current:
                logger.debug("removing superseded cache entry %s", old)
                old.unlink(missing_ok=True)

    @staticmethod
    def read(path: Path) -> dict[str, np.ndarray]:
        """Arrays of one cache file: ``image``, ``affine`` and (if labelled) ``label``.

        Raises
        ------
        MedsegError
            Naming the file when it cannot be read (damaged since :meth:`ensure` checked it).
        """
        try:
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        except _UNREADABLE as exc:
            raise MedsegError(
                f"unreadable preprocessing cache entry ({exc}); expected a medseg .npz: "
                "delete it (or run `medseg cache clear --all`) and run again",
                path,
            ) from exc
