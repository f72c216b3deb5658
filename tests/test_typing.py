"""The public API as a strictly typed application sees it: mypy checks
``tests/typing/user_code.py``, code written as the docs show, with the
mistakes a type checker should catch marked in it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api", reason="mypy is in the dev extra")

USER_CODE = Path(__file__).parent / "typing" / "user_code.py"


def test_documented_usage_type_checks_and_mistakes_are_caught(tmp_path: Path) -> None:
    stdout, stderr, status = api.run(
        [
            "--strict",
            "--warn-unused-ignores",
            "--no-incremental",
            "--cache-dir",
            os.devnull,
            "--config-file",
            str(Path(__file__).parent.parent / "pyproject.toml"),
            str(USER_CODE),
        ]
    )
    assert status == 0, stdout + stderr
