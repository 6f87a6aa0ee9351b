"""The refusal assertion: it passes on a clean refusal and fails on an unclean one."""

from __future__ import annotations

from pathlib import Path

import pytest
from refusal import assert_clean_refusal


def test_a_missing_file_is_a_clean_refusal(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nope.nii.gz"
    other = tmp_path / "untouched.txt"
    other.write_text("x")
    assert_clean_refusal(
        ["info", str(missing)], capsys, names=[missing], inputs=[other], expected=False
    )


def test_it_fails_when_a_name_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(AssertionError, match="not named"):
        assert_clean_refusal(
            ["info", str(tmp_path / "nope.nii.gz")], capsys, names=["--flag"], expected=False
        )


def test_it_fails_on_success(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(AssertionError, match="exit code 0"):
        assert_clean_refusal(["--help"], capsys, names=[])
