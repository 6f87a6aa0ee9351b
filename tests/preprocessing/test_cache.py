"""The preprocessed-case cache: reused across runs, invalidated by plans and file changes."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import stat
import time
from pathlib import Path

import numpy as np
import pytest
from atomic_helpers import DiskFullError, folder_state, raise_after

from medseg.data.manifest import Case, load_manifest
from medseg.errors import MedsegError
from medseg.planning.plans import Plans
from medseg.preprocessing.cache import (
    PreprocessedCache,
    _preprocess_one,
    cache_entries,
    plans_key,
)


def _plans(spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Plans:
    return Plans(
        modality="MRI",
        labels={0: "background", 1: "oedema", 2: "core"},
        target_spacing=spacing,
        normalization="zscore_nonzero",
        patch_size=(16, 16, 16),
        batch_size=2,
    )


def test_cache_reuse_and_invalidation(tiny_cohort: Path, tmp_path: Path) -> None:
    cases = load_manifest(tiny_cohort, tiny_cohort.parent).training[:2]
    cache = PreprocessedCache(tmp_path, _plans())
    paths = cache.ensure(cases)
    arrays = PreprocessedCache.read(paths[0])
    assert arrays["image"].shape[0] == 1 and arrays["image"].dtype == np.float32
    assert arrays["label"].shape == arrays["image"].shape and arrays["label"].dtype == np.uint8
    assert abs(float(arrays["image"][arrays["image"] != 0].mean())) < 0.1  # z-scored
    stamp = paths[0].stat().st_mtime_ns
    assert PreprocessedCache(tmp_path, _plans()).ensure(cases) == paths  # reused, not redone
    assert paths[0].stat().st_mtime_ns == stamp
    # new plans (spacing) -> another folder, with resampled data
    coarse = PreprocessedCache(tmp_path, _plans((2.0, 2.0, 2.0)))
    assert coarse.dir != cache.dir
    other = coarse.ensure(cases)
    assert PreprocessedCache.read(other[0])["image"].shape[1] < arrays["image"].shape[1]
    # fields that do not change preprocessing keep the key
    assert plans_key(dataclasses.replace(_plans(), batch_size=7)) == plans_key(_plans())
    # touching a source file -> a new entry for that case only; the superseded one is deleted
    os.utime(cases[0].image, ns=(stamp, stamp + 10**9))
    again = cache.ensure(cases)
    assert again[0] != paths[0] and again[1] == paths[1]
    assert not paths[0].exists() and again[0].is_file()
    assert sorted(cache.dir.glob("*.npz")) == sorted(again)


def test_same_case_id_elsewhere_keeps_its_entry(tiny_cohort: Path, tmp_path: Path) -> None:
    case = load_manifest(tiny_cohort, tiny_cohort.parent).training[0]
    copy_dir = tmp_path / "copy"
    copy_dir.mkdir()
    assert case.label is not None
    twin = Case(case.case_id, copy_dir / case.image.name, copy_dir / "label.nii.gz")
    shutil.copy2(case.image, twin.image)
    shutil.copy2(case.label, twin.label)  # type: ignore[arg-type]
    cache = PreprocessedCache(tmp_path / "cache", _plans())
    first, second = cache.ensure([case, twin])
    assert first != second and first.is_file() and second.is_file()


@pytest.mark.parametrize("existing", [True, False], ids=["old-entry", "no-entry"])
def test_failed_cache_write_keeps_old_entry(
    tiny_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    case = load_manifest(tiny_cohort, tiny_cohort.parent).training[0]
    cache = PreprocessedCache(tmp_path, _plans())
    target = cache.path(case)
    if existing:
        np.savez(target, image=np.zeros(3, np.float32))  # an older copy of this entry
    before = folder_state(tmp_path)
    monkeypatch.setattr(np, "savez", raise_after(np.savez))
    with pytest.raises(DiskFullError):
        if existing:
            _preprocess_one(case, cache.plans, target)  # rewrite over the existing entry
        else:
            cache.ensure([case], workers=1)
    assert folder_state(tmp_path) == before  # old entry byte-identical (or absent), no temp


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o077, 0o600)])
def test_cache_entry_mode_follows_umask(
    tiny_cohort: Path, tmp_path: Path, umask: int, expected: int
) -> None:
    # entries used to be created 0o600 (the tempfile.mkstemp default) whatever the umask
    case = load_manifest(tiny_cohort, tiny_cohort.parent).training[0]
    original = os.umask(umask)
    try:
        (path,) = PreprocessedCache(tmp_path, _plans()).ensure([case], workers=1)
    finally:
        os.umask(original)
    assert stat.S_IMODE(path.stat().st_mode) == expected
    assert sorted(PreprocessedCache.read(path)) == ["affine", "image", "label"]


def _age(path: Path, days: float) -> None:
    """Make ``path``'s last use (access time) ``days`` ago, keeping its modification time."""
    st = path.stat()
    os.utime(path, ns=(time.time_ns() - int(days * 86400e9), st.st_mtime_ns))


def test_eviction_drops_least_recently_used_first(tiny_cohort: Path, tmp_path: Path) -> None:
    cases = load_manifest(tiny_cohort, tiny_cohort.parent).training[:4]
    old = PreprocessedCache(tmp_path, _plans(), max_gb=0).ensure(cases[:3])  # an earlier run
    for path, days in zip(old, (1, 3, 2), strict=True):  # used 1, 3 and 2 days ago
        _age(path, days)
    sizes = [p.stat().st_size for p in old]
    cap = sizes[0] + sizes[2] + 0.5 * min(sizes)  # room for two entries
    cache = PreprocessedCache(tmp_path, _plans(), max_gb=cap / 1e9)
    (new,) = cache.ensure(cases[3:])
    assert new.is_file() and old[0].is_file()
    assert not old[1].exists() and not old[2].exists()  # 3 days, then 2 days unused: gone
    assert sum(e.size for e in cache_entries(tmp_path)) <= cap


def test_eviction_never_removes_the_run_in_progress(
    tiny_cohort: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cases = load_manifest(tiny_cohort, tiny_cohort.parent).training[:3]
    (stale,) = PreprocessedCache(tmp_path, _plans((2.0, 2.0, 2.0)), max_gb=0).ensure(cases[:1])
    _age(stale, 30)
    cache = PreprocessedCache(tmp_path, _plans(), max_gb=1e-9)  # a 1-byte cap
    first = cache.ensure(cases[:2])
    _age(first[0], 40)  # older than the stale entry, but this run uses it
    with caplog.at_level(logging.WARNING):
        again = cache.ensure(cases)
    assert all(p.is_file() for p in again) and again[:2] == first
    assert not stale.exists()
    assert "above its cap" in caplog.text


def test_truncated_entry_is_rebuilt_with_a_warning(
    tiny_cohort: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a truncated .npz used to be returned as it was, and training then crashed reading it
    case = load_manifest(tiny_cohort, tiny_cohort.parent).training[0]
    (path,) = PreprocessedCache(tmp_path, _plans()).ensure([case], workers=1)
    good = PreprocessedCache.read(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(MedsegError, match="unreadable preprocessing cache entry") as err:
        PreprocessedCache.read(path)
    assert err.value.path == str(path)
    with caplog.at_level(logging.WARNING):
        assert PreprocessedCache(tmp_path, _plans()).ensure([case], workers=1) == [path]
    assert f"cache entry {path} fails to load" in caplog.text and "rebuilding" in caplog.text
    rebuilt = PreprocessedCache.read(path)
    assert all(np.array_equal(rebuilt[k], good[k]) for k in good)


def test_negative_cap_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MedsegError, match="max_gb: expected >= 0"):
        PreprocessedCache(tmp_path, _plans(), max_gb=-1)
