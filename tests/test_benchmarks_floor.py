"""``python -m benchmarks.floor`` runs end to end on the built-in server and
reports, for every library and scenario, a CPU sample per round for the
stock transport, poolwatch's adapter, the do-nothing floor (alone and after
an exchange made by each reference client), and the reference clients alone:
the raw socket loop, the same split across two threads, and poolwatch's own
transport. The canned responses have the server's shape. Numbers are checked
for presence, never for speed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from benchmarks.floor import TARGETS, canned_response, report
from benchmarks.spec import ONE_MIB, TINY_BODY

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"requests S1", "requests S2", "requests S5", "httpx S1", "httpx S2", "httpx-async S4"}


def test_canned_responses_match_the_server_paths() -> None:
    headers, body = canned_response("/tiny")
    assert body == TINY_BODY
    assert ("Content-Length", "13") in headers
    headers, body = canned_response("/1m")
    assert len(body) == ONE_MIB
    assert ("Content-Length", str(ONE_MIB)) in headers


def test_floor_benchmark_reports_every_transport_and_target() -> None:
    command = [sys.executable, "-m", "benchmarks.floor", "--server", "builtin"]
    command += ["--rounds", "2", "--scale", "0.02", "--json"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(done.stdout)
    assert set(results) == KEYS
    for key, samples in results.items():
        expected = {"stock", "poolwatch", "floor", "raw", "native"}
        if key == "httpx-async S4":
            if importlib.util.find_spec("aiohttp") is not None:
                expected.add("aiohttp")
        else:
            expected |= {"raw-threads", "over-raw", "over-raw-threads", "over-native"}
        assert set(samples) == expected, key
        assert all(len(values) == 2 and min(values) > 0 for values in samples.values()), key
    table = report(results)
    for target in TARGETS:
        if target.baseline not in results[f"{target.client} {target.scenario}"]:
            continue  # aiohttp not installed
        assert f"{target.client} {target.scenario} >= {target.ratio:g}x {target.baseline}" in table
