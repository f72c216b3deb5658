"""The examples run as written (each starts its own loopback server)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("stats_tour.py", "opened=1 reused=2 drained=3 workers=2"),
        ("drop_in.py", "1 open body from"),
        ("export_metrics.py", "http.client.request.duration"),
        ("async_tour.py", "opened=4 closed=1 requests=21 workers=6"),
        ("command_line.py", ": 3 requests on 1 connection"),
    ],
)
def test_example_runs(script: str, expected: str) -> None:
    """Each example exits 0 and prints what its docstring promises."""
    result = _run_example(script)
    assert expected in result.stdout


def _run_example(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` from the examples directory, every warning shown;
    check that it exited 0."""
    result = subprocess.run(
        [sys.executable, "-W", "always", script],
        cwd=EXAMPLES,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_find_leaks_prints_the_settled_snapshot() -> None:
    """find_leaks.py prints, every run alike, the dropped response as leaked
    (not as an open body) with the line that made it, then the two bodies
    still held, and stats agreeing with that listing."""
    result = _run_example("find_leaks.py")
    url = r"http://127\.0\.0\.1:\d+/"
    site = r"find_leaks\.py:21 in (main|<listcomp>)"  # a comprehension's own frame before 3.12
    held = rf"open body: GET {url}, \d+\.\d{{3}}s old, from .*{site}"
    expected = [
        r"status: 200",
        rf"leaked: GET {url}, from .*find_leaks\.py:14 in fetch_status",
        held,
        held,
        r"open bodies=2 leaked=1 active connections=2",
    ]
    lines = result.stdout.splitlines()
    assert len(lines) == len(expected), result.stdout
    for pattern, line in zip(expected, lines, strict=True):
        assert re.fullmatch(pattern, line), (pattern, line)
    assert result.stderr.count("LeakWarning") == 1, result.stderr
    assert "find_leaks.py:14 in fetch_status" in result.stderr


@pytest.mark.parametrize("client", ["native", "requests", "httpx", "httpx-async"])
def test_demo_prints_expected_counts(client: str) -> None:
    """The seed experiment's main job, through each client: 11, 1, 3, 3 and
    five leak reports naming the demo's call site."""
    result = subprocess.run(
        [sys.executable, "-W", "error", "-m", "poolwatch", "demo", "--client", client],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line[:4].strip().isdigit()]
    assert [(row[0], row[3], row[4], row[5]) for row in rows] == [
        ("1", "11", "11", "11"),
        ("2", "1", "1", "1"),
        ("3", "3", "3", "3"),
        ("4", "3", "3", "3"),
    ]
    assert result.stdout.count("garbage-collected") == 5
    assert "_demo.py" in result.stdout
