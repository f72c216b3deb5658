"""``python -m benchmarks.overhead`` runs end to end on the built-in server
and reports a CPU sample per setting and round, and the per-request cost of
each instrumented step. Numbers are checked for presence, never for speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_overhead_benchmark_reports_every_setting_and_step() -> None:
    command = [sys.executable, "-m", "benchmarks.overhead", "--server", "builtin"]
    command += ["--rounds", "2", "--requests", "10", "--json"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    samples = report["cpu_per_request"]
    assert set(samples) == {"defaults", "no call-site capture", "no-op listener"}
    assert all(len(values) == 2 and min(values) > 0 for values in samples.values())
    steps = report["steps"]
    assert "call-site capture" in steps
    (event_step,) = [name for name in steps if name.endswith("event sites, no listener")]
    assert int(event_step.split()[0]) >= 5  # get_conn ... body_done, at least
    assert all(seconds >= 0 for seconds in steps.values())
