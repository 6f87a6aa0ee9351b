"""``medseg cache list`` and ``medseg cache clear``: what the cache holds, and trimming it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from medseg.cli import main
from medseg.data.manifest import load_manifest
from medseg.planning.plans import Plans
from medseg.preprocessing.cache import PreprocessedCache


def _plans() -> Plans:
    return Plans(
        modality="MRI",
        labels={0: "background", 1: "oedema", 2: "core"},
        target_spacing=(1.0, 1.0, 1.0),
        normalization="zscore_nonzero",
        patch_size=(16, 16, 16),
        batch_size=2,
    )


@pytest.fixture
def filled(tiny_cohort: Path, tmp_path: Path) -> tuple[Path, list[Path]]:
    """A cache folder with three entries last used 1, 5 and 10 days ago, and a stranger file."""
    root = tmp_path / "cache"
    cases = load_manifest(tiny_cohort, tiny_cohort.parent).training[:3]
    paths = PreprocessedCache(root, _plans(), max_gb=0).ensure(cases, workers=1)
    for path, days in zip(paths, (1, 5, 10), strict=True):
        st = path.stat()
        os.utime(path, ns=(time.time_ns() - days * 86400 * 10**9, st.st_mtime_ns))
    (root / "notes.txt").write_text("not the cache's")
    return root, paths


def test_list_shows_folders_entries_and_size(
    filled: tuple[Path, list[Path]], tiny_cohort: Path, capsys: pytest.CaptureFixture
) -> None:
    root, paths = filled
    assert main(["cache", "list", "--cache-dir", str(root), "--entries"]) == 0
    out = capsys.readouterr().out
    assert paths[0].parent.name in out and "MRI at 1x1x1 mm" in out
    assert f"images from {(tiny_cohort.parent / 'imagesTr').resolve()}" in out
    assert "phantom_000" in out and "phantom_002" in out
    assert ": 3 entries, " in out and "kB (cap 20 GB)" in out
    assert main(["cache", "list", "--cache-dir", str(root), "--max-gb", "0.000001"]) == 0
    assert "over the cap" in capsys.readouterr().out


def test_clear_older_than_then_max_gb_then_all(
    filled: tuple[Path, list[Path]], capsys: pytest.CaptureFixture
) -> None:
    root, paths = filled
    base = ["cache", "clear", "--cache-dir", str(root)]
    assert main([*base, "--older-than", "7"]) == 0
    assert [p.exists() for p in paths] == [True, True, False]
    assert "removed 1 entries" in capsys.readouterr().out
    cap = paths[0].stat().st_size * 1.5 / 1e9  # room for one entry: the older one goes
    assert main([*base, "--max-gb", str(cap)]) == 0
    assert [p.exists() for p in paths] == [True, False, False]
    assert main([*base, "--all"]) == 0
    assert not paths[0].parent.exists()  # the emptied plans folder is removed
    assert (root / "notes.txt").read_text() == "not the cache's"  # nothing else touched


@pytest.mark.parametrize(
    "flags", [[], ["--all", "--older-than", "3"]], ids=["no-choice", "two-choices"]
)
def test_clear_needs_exactly_one_choice(
    filled: tuple[Path, list[Path]], capsys: pytest.CaptureFixture, flags: list[str]
) -> None:
    root, paths = filled
    assert main(["cache", "clear", "--cache-dir", str(root), *flags]) == 1
    assert "expected one of --all, --older-than DAYS, --max-gb GB" in capsys.readouterr().err
    assert all(p.exists() for p in paths)
