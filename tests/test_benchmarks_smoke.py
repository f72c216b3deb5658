"""The benchmark harness runs end to end: ``python -m benchmarks --quick`` on
the built-in server, in a subprocess, writes a JSON report with rows for
poolwatch and urllib3, and stops every process it started.

Timings are never asserted, only that the numbers exist and are positive,
and what the server saw (connections accepted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 12  # per run: enough to exercise every path, few enough to be quick
SYNC_SCENARIOS = ("S1", "S2", "S3", "S5", "S6")


def _run_quick(out: Path) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "--quick",
        "--requests",
        str(REQUESTS),
        "--server",
        "builtin",
        "--clients",
        "poolwatch,urllib3,raw,httpx-async",
        "--no-chart",
        "--out",
        str(out),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report: dict[str, Any] = json.loads((out / "latest.json").read_text())
    return report


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_quick_benchmark_reports_poolwatch_and_urllib3(tmp_path: Path) -> None:
    report = _run_quick(tmp_path)
    rows = {(r["scenario"], r["client"]): r for r in report["rows"]}
    for scenario in SYNC_SCENARIOS:
        for client in ("poolwatch", "urllib3", "raw"):
            row = rows[(scenario, client)]
            assert row["status"] == "ok", row
            for key in ("median", "min", "max", "cpu_us", "peak_rss_mib"):
                assert row[key] > 0, (scenario, client, key, row[key])
            assert row["requests"] >= REQUESTS
        assert rows[(scenario, "poolwatch")]["vs_urllib3"] > 0
        assert rows[(scenario, "poolwatch")]["vs_raw"] > 0
    # What the server saw: keep-alive reuses one connection, S3 at most one
    # per thread (fewer if a thread finds another's idle), S6 one per request
    # (warmup included).
    for client in ("poolwatch", "urllib3"):
        assert rows[("S1", client)]["server_connections"] == 1
        assert 1 <= rows[("S3", client)]["server_connections"] <= 8
        s6 = rows[("S6", client)]
        assert s6["server_connections"] == s6["requests"]
    assert rows[("S4", "httpx-async")]["status"] == "ok"
    assert rows[("S7", "-")]["status"] == "not measured"
    table = (tmp_path / "latest.md").read_text()
    assert table.count("| poolwatch native |") == len(SYNC_SCENARIOS)
    assert report["machine"]["server"].startswith("built-in")
    assert not _alive(report["config"]["server_pid"])
