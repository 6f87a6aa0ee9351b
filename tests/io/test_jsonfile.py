"""The project's JSON files: missing, unreadable or malformed ones are errors naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.errors import MedsegError
from medseg.io.jsonfile import read_json
from medseg.planning.plans import load_plans
from medseg.postprocessing import load_postprocessing


def test_valid_json_is_parsed(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"x": [1, 2]}', encoding="utf-8")
    assert read_json(tmp_path / "a.json") == {"x": [1, 2]}


@pytest.mark.parametrize(
    ("make", "found"),
    [
        (lambda p: None, "found no file"),
        (lambda p: p.mkdir(), "found an unreadable file"),
        (lambda p: p.write_bytes(b"\xff\xfe\x00garbage\x9c"), "found an unreadable file"),
        (lambda p: p.write_text('{"a": 1,}'), "found invalid JSON"),
    ],
    ids=["missing", "a-folder", "binary", "trailing-comma"],
)
def test_bad_files_name_the_file_and_what_was_expected(tmp_path: Path, make, found: str) -> None:
    path = tmp_path / "x.json"
    make(path)
    with pytest.raises(MedsegError, match=f"expected a thing, {found}") as info:
        read_json(path, what="a thing")
    assert info.value.path == str(path)


@pytest.mark.parametrize("loader", [load_plans, load_postprocessing], ids=["plans", "post"])
def test_binary_run_files_are_clean_errors(tmp_path: Path, loader) -> None:
    # a binary plans.json / postprocessing.json used to end in a UnicodeDecodeError traceback
    path = tmp_path / "file.json"
    path.write_bytes(b"\x80\x81\x82 not text")
    with pytest.raises(MedsegError, match="unreadable file") as info:
        loader(path)
    assert info.value.path == str(path)
