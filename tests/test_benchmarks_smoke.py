"""The benchmark harness runs end to end: ``python -m benchmarks --quick`` on
the built-in server, in a subprocess, writes a JSON report with rows for
poolwatch and urllib3, and stops every process it started.

The breakdown by layer (``benchmarks.breakdown``) runs too, without its
profiler. The stress, soak and idle-connection runs (``benchmarks.stress``,
``benchmarks.soak``, ``benchmarks.idle``) run too, small: a few hundred
requests, 20 idle connections; the stress and the soak also with
``--async``, on the asyncio transport.

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

import pytest

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
    # A row in the full table, then one against urllib3 and one against the
    # raw loop in the pair-by-pair table, per scenario.
    assert table.count("| poolwatch native |") == 3 * len(SYNC_SCENARIOS)
    assert table.count("| poolwatch native | urllib3.PoolManager |") == len(SYNC_SCENARIOS)
    pairs = {(p["scenario"], p["client"], p["against"]): p for p in report["pairs"]}
    for scenario in SYNC_SCENARIOS:
        pair = pairs[(scenario, "poolwatch", "urllib3")]
        assert pair["throughput"] > 0 and pair["cpu"] > 0
        assert pair["throughput_range"][0] <= pair["throughput"] <= pair["throughput_range"][1]
    assert report["machine"]["server"].startswith("built-in")
    assert not _alive(report["config"]["server_pid"])


def _run_module(
    module: str, out: Path, *options: str, timeout: float = 50
) -> tuple[dict[str, Any], str]:
    command = [sys.executable, "-m", module, "--out", str(out), *options]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.read_text())
    return report, done.stdout


def test_stress_harness_runs_clean(tmp_path: Path) -> None:
    """A small stress run against the fault server: every call accounted
    for, each operation kind ending as it may, and no violation."""
    report, stdout = _run_module(
        "benchmarks.stress",
        tmp_path / "stress.json",
        *("--threads", "8", "--requests", "300", "--read-timeout", "0.2", "--seed", "5"),
    )
    assert report["violations"] == []
    ops = report["operations"]
    assert sum(row["calls"] for row in ops.values()) == 300
    assert set(ops["get_drained"]["results"]) <= {"ok", "RemoteDisconnected", "ReadError"}
    assert ops["get_drained"]["results"]["ok"] > 0
    for name in ("hang_up", "reset", "cut_body", "stall_head", "stall_body"):
        assert "ok" not in ops.get(name, {"results": {}})["results"], name
    stats = report["stats"]
    assert stats["requests"] > 0 and stats["connections_opened"] > 1
    assert "| get_drained |" in stdout


def test_async_stress_harness_runs_clean_with_cancellations(tmp_path: Path) -> None:
    """The small stress run on an AsyncTransport from 16 tasks, a tenth of
    the calls cancelled within their first 3 ms (most calls take longer, so
    most of the cancellations land): every call accounted for, some ended
    cancelled, none broke the contract, R18 held and nothing was left after
    aclose."""
    report, stdout = _run_module(
        "benchmarks.stress",
        tmp_path / "stress-async.json",
        *("--async", "--threads", "16", "--requests", "300", "--cancel", "0.1"),
        *("--cancel-window", "0.003", "--read-timeout", "0.2", "--seed", "5"),
    )
    assert report["violations"] == []
    assert report["transport"] == "AsyncTransport"
    ops = report["operations"]
    assert sum(row["calls"] for row in ops.values()) == 300
    results = [r for row in ops.values() for r in row["results"]]
    assert "cancelled" in results
    assert ops["get_drained"]["results"]["ok"] > 0
    for name in ("hang_up", "reset", "cut_body", "stall_head", "stall_body"):
        assert "ok" not in ops.get(name, {"results": {}})["results"], name
    assert report["stats"]["connections_opened"] > 1
    assert "AsyncTransport: 300 calls" in stdout


def test_stress_harness_runs_clean_on_uvloop(tmp_path: Path) -> None:
    """The small asyncio stress run on uvloop's event loop, over TLS, a
    tenth of the calls cancelled early: no violation (uvloop's own pipe, open
    from its first run on, is not counted as a leaked descriptor)."""
    pytest.importorskip("uvloop")
    report, _ = _run_module(
        "benchmarks.stress",
        tmp_path / "stress-uvloop.json",
        *("--async", "--loop", "uvloop", "--tls", "--cancel", "0.1", "--threads", "16"),
        *("--cancel-window", "0.003", "--requests", "400", "--read-timeout", "0.2"),
        *("--seed", "17"),
    )
    assert report["violations"] == []
    assert report["config"]["loop"] == "uvloop"
    assert report["operations"]["get_drained"]["results"]["ok"] > 0


@pytest.mark.parametrize(
    "mode",
    [(), ("--async", "--cancel", "0.1", "--cancel-window", "0.003")],
    ids=["sync", "async"],
)
def test_stress_harness_runs_clean_over_tls(tmp_path: Path, mode: tuple[str, ...]) -> None:
    """The small stress run with the fault server speaking https: every
    fault inside a TLS session, no violation, every call over https."""
    report, _ = _run_module(
        "benchmarks.stress",
        tmp_path / "stress-tls.json",
        *("--tls", *mode, "--threads", "16", "--requests", "400"),
        *("--read-timeout", "0.2", "--seed", "7"),
    )
    assert report["violations"] == []
    assert report["scheme"] == "https"
    ops = report["operations"]
    assert sum(row["calls"] for row in ops.values()) == 400
    assert ops["get_drained"]["results"]["ok"] > 0
    assert report["stats"]["connections_opened"] > 1


@pytest.mark.parametrize(
    "mode",
    [
        ("--proxy",),
        ("--proxy", "http", "--tls", "--async"),
        ("--proxy", "socks5", "--tls"),
        ("--proxy", "socks4a", "--async"),
        ("--proxy", "http", "--client", "httpx"),
    ],
    ids=["http", "https-async", "socks5-https", "socks4a-async", "httpx"],
)
def test_stress_harness_runs_clean_through_a_proxy(tmp_path: Path, mode: tuple[str, ...]) -> None:
    """The small stress run through the relaying proxy (absolute-form
    requests; a CONNECT tunnel for https; a SOCKS tunnel), every call
    through it (the run checks the stats' origins, which name the proxy):
    no violation."""
    report, _ = _run_module(
        "benchmarks.stress",
        tmp_path / "stress-proxy.json",
        *(*mode, "--threads", "16", "--requests", "400", "--read-timeout", "0.2", "--seed", "9"),
    )
    assert report["violations"] == []
    kind = mode[1] if len(mode) > 1 and not mode[1].startswith("--") else "http"
    assert report["proxy"] == kind
    (origin,) = report["stats"]["per_origin"]
    assert f" via {kind}://127.0.0.1:" in origin
    assert report["operations"]["get_drained"]["results"]["ok"] > 0


def test_stress_finds_calls_that_went_past_the_proxy() -> None:
    """The check that catches a client ignoring the proxy: an origin in the
    stats without the proxy is a violation."""
    from benchmarks.faultclients import unproxied
    from benchmarks.faultserver import FaultServer
    from poolwatch._core.stats import OriginStats, PoolStats

    server = FaultServer(1, 1, proxy="socks5://127.0.0.1:2")
    through = PoolStats.build({"http://127.0.0.1:1 via socks5://127.0.0.1:2": OriginStats()})
    assert unproxied(through, server) == []
    resolving = PoolStats.build({"http://127.0.0.1:1 via socks5h://127.0.0.1:2": OriginStats()})
    assert unproxied(resolving, server) == []
    other = PoolStats.build({"http://127.0.0.1:1 via socks5://127.0.0.1:3": OriginStats()})
    assert unproxied(other, server) != []
    past = PoolStats.build({"http://127.0.0.1:1": OriginStats()})
    assert unproxied(past, server) == ["calls went past the proxy: ['http://127.0.0.1:1']"]
    assert unproxied(past, FaultServer(1, 1)) == []


@pytest.mark.parametrize(
    "mode",
    [(), ("--async", "--cancel", "0.1", "--cancel-window", "0.003")],
    ids=["sync", "async"],
)
def test_stress_harness_runs_clean_over_several_origins(
    tmp_path: Path, mode: tuple[str, ...]
) -> None:
    """The small stress run spread over three origins (ports of the fault
    server) under a global limit below the per-host ones, one idle
    connection kept in all and a 10 ms idle timeout: callers wait for each
    other's slots across origins, and no violation."""
    report, _ = _run_module(
        "benchmarks.stress",
        tmp_path / "stress-origins.json",
        *(*mode, "--threads", "12", "--requests", "400", "--read-timeout", "0.2"),
        *("--origins", "3", "--max-total", "4", "--max-connections", "3", "--max-idle", "1"),
        *("--idle-timeout", "0.01", "--seed", "11"),
    )
    assert report["violations"] == []
    per_origin = report["stats"]["per_origin"]
    assert len(per_origin) == 3
    assert all(per["requests"] > 0 for per in per_origin.values()), per_origin
    assert report["stats"]["pool_waits"] > 0
    assert report["operations"]["get_drained"]["results"]["ok"] > 0


@pytest.mark.parametrize(
    "mode",
    [(), ("--async", "--cancel", "0.1", "--cancel-window", "0.003")],
    ids=["sync", "async"],
)
def test_stress_harness_runs_clean_with_idle_expiry_and_close_idle(
    tmp_path: Path, mode: tuple[str, ...]
) -> None:
    """The small stress run with pauses between calls longer than a 3 ms
    idle timeout, and a tenth of the calls closing the idle connections
    first: connections expire and are closed while others are taken, and
    no violation."""
    report, _ = _run_module(
        "benchmarks.stress",
        tmp_path / "stress-idle.json",
        *(*mode, "--threads", "6", "--requests", "300", "--read-timeout", "0.2"),
        *("--idle-timeout", "0.003", "--pause", "0.01", "--close-idle", "0.1", "--seed", "13"),
    )
    assert report["violations"] == []
    assert report["stats"]["idle_expired"] > 0
    assert report["operations"]["get_drained"]["results"]["ok"] > 0


def test_stress_checks_catch_a_post_sent_twice() -> None:
    """The stress run's POST check: a POST without a key seen twice by the
    server is a violation; a keyed one retried once may be seen twice."""
    from benchmarks.faultload import Call
    from benchmarks.stress import check_calls, time_limits

    calls = [Call("post", "r1", "ok", 0.01, 0), Call("post_keyed", "r2", "ok", 0.01, 1)]
    limits = time_limits(0.5)
    assert check_calls(calls, {"r1": 1, "r2": 2}, limits, 1.0) == []
    found = check_calls(calls, {"r1": 2, "r2": 2}, limits, 1.0)
    assert found == ["post r1: server saw it 2 times, 1 sent"]
    slow = [Call("get_drained", "r3", "ok", 60.0, 0)]
    assert "took 60.00s" in check_calls(slow, {}, limits, 1.0)[0]
    # A run that never reaches the server (say, every handshake refused)
    # proves nothing: it is a violation too.
    refused = [Call("get_drained", f"r{n}", "SSLError", 0.01, 0) for n in range(20)]
    assert "never reached the server" in check_calls(refused, {}, limits, 1.0)[0]


@pytest.mark.parametrize(
    "mode",
    [
        ("--client", "requests", "--tls"),
        ("--client", "httpx"),
        ("--client", "httpx", "--async", "--cancel", "0.1"),
    ],
    ids=["requests", "httpx", "httpx-async"],
)
def test_stress_harness_runs_clean_through_the_adapters(
    tmp_path: Path, mode: tuple[str, ...]
) -> None:
    """The small stress run made through requests (over https), httpx and
    httpx.AsyncClient (a tenth of the calls cancelled) with poolwatch's
    adapters: every error one of the library's own, every body right, no
    violation."""
    report, _ = _run_module(
        "benchmarks.stress",
        tmp_path / "stress-client.json",
        *(*mode, "--threads", "16", "--requests", "400", "--read-timeout", "0.2", "--seed", "11"),
    )
    assert report["violations"] == []
    assert report["client"] == mode[1]
    ops = report["operations"]
    assert ops["get_drained"]["results"]["ok"] > 0
    for name in ("hang_up", "reset", "cut_body", "stall_head", "stall_body"):
        assert "ok" not in ops.get(name, {"results": {}})["results"], name


def test_soak_harness_samples_and_passes(tmp_path: Path) -> None:
    """A short soak: a sample every 100 requests with the counters filled
    in, every outcome met, and no violation."""
    report, _ = _run_module(
        "benchmarks.soak",
        tmp_path / "soak.json",
        *("--requests", "400", "--every", "100", "--threads", "2", "--seed", "3"),
    )
    assert report["violations"] == []
    samples = report["samples"]
    assert [s["requests"] for s in samples] == [0, 100, 200, 300, 400]
    last = samples[-1]
    assert last["rss_kib"] > 0 and last["gc_objects"] > 0 and last["fds"] > 0
    assert last["drained"] > 0 and last["closed_early"] > 0
    assert all(s["r18"] == [] for s in samples)


def test_soak_memory_stays_flat(tmp_path: Path) -> None:
    """30 000 requests of the soak's mix from 4 threads: RSS may not grow
    by more than 4 MiB after warm-up. Reading each response head with
    ``os.read(fd, 16384)`` grew it by 9.7 MiB here (the allocator kept a
    hole per read in the long-lived workers' heaps); see ReadBuffers."""
    report, _ = _run_module(
        "benchmarks.soak",
        tmp_path / "soak.json",
        *("--requests", "30000", "--every", "3000", "--threads", "4", "--seed", "3"),
        timeout=240,
    )
    assert report["violations"] == []
    rss = [s["rss_kib"] for s in report["samples"]]
    assert len(rss) == 11


@pytest.mark.parametrize("mode", [(), ("--async",)], ids=["sync", "async"])
def test_tls_soak_harness_passes(tmp_path: Path, mode: tuple[str, ...]) -> None:
    """A short soak over https: every call keeps the contract, no thread,
    descriptor or body is left over (each TLS connection's writer has a
    duplicate socket). Memory is judged on the long runs in
    docs/reliability.md: TLS takes some 15 000 requests to reach its working
    set, and ``test_read_buffers.py`` checks the reads themselves."""
    report, _ = _run_module(
        "benchmarks.soak",
        tmp_path / "soak-tls.json",
        *("--tls", *mode, "--requests", "2000", "--every", "500", "--threads", "4"),
        *("--rss-tolerance", "64", "--seed", "3"),
    )
    assert report["violations"] == []
    assert report["scheme"] == "https"
    assert [s["requests"] for s in report["samples"]] == [0, 500, 1000, 1500, 2000]


def test_async_soak_harness_samples_tasks_and_passes(tmp_path: Path) -> None:
    """The short soak on an AsyncTransport: at every sample the only task
    besides the connections' workers is the main one, and no violation."""
    report, stdout = _run_module(
        "benchmarks.soak",
        tmp_path / "soak-async.json",
        *("--async", "--requests", "400", "--every", "100", "--threads", "2", "--seed", "3"),
    )
    assert report["violations"] == []
    samples = report["samples"]
    assert [s["requests"] for s in samples] == [0, 100, 200, 300, 400]
    assert all(s["other_tasks"] == 1 for s in samples)
    assert all(s["tasks"] == 1 + s["workers_alive"] for s in samples)
    last = samples[-1]
    assert last["drained"] > 0 and last["closed_early"] > 0 and last["gc_objects"] > 0
    assert all(s["r18"] == [] for s in samples)
    assert "| tasks |" in stdout


def test_soak_growth_check_flags_growth() -> None:
    """The soak's tolerance: flat samples pass; RSS rising 1 MiB per 10 000
    requests after warm-up, or extra threads, fail."""
    from benchmarks.soak import check_growth, parse_args

    args = parse_args(["--requests", "100000"])

    def samples(rss_step: int, threads_after: int) -> list[dict[str, Any]]:
        return [
            {
                "requests": r,
                "rss_kib": 30_000 + rss_step * r / 10_000,
                "gc_objects": 20_000,
                "other_threads": 1 if r <= 25_000 else threads_after,
                "other_fds": 5,
                "open_connections": 1,
            }
            for r in range(0, 100_001, 5_000)
        ]

    assert check_growth(samples(0, 1), args) == []
    grown = check_growth(samples(1024, 1), args)
    assert len(grown) == 1 and grown[0].startswith("RSS grew 7.5 MiB")
    assert check_growth(samples(0, 3), args) == [
        "other_threads reached 3 after warm-up, 1 during it"
    ]


def test_breakdown_reports_each_client(tmp_path: Path) -> None:
    """The per-layer breakdown runs each client and reports its CPU time,
    in total and by thread (without py-spy here: its sampling is not what
    is being tested). The
    kernel may charge a short run's CPU time all to user or all to system
    time, so only their sum must be positive."""
    report, stdout = _run_module(
        "benchmarks.breakdown",
        tmp_path / "breakdown.json",
        *("--requests", "200", "--server", "builtin", "--no-profile"),
    )
    assert set(report) == {"poolwatch", "urllib3", "httpcore"}
    for row in report.values():
        assert row["user_us"] + row["system_us"] > 0 and row["wall_us"] > 0
    assert "| poolwatch |" in stdout
    # Each thread's own clock: poolwatch's caller, reader and writer all
    # work on every request; the other clients have only the caller.
    threads = report["poolwatch"]["threads_us"]
    assert {"caller", "reader", "writer"} <= set(threads)
    assert min(threads["caller"], threads["reader"], threads["writer"]) > 0
    assert set(report["urllib3"]["threads_us"]) == {"caller"}
    assert "| client | caller | reader | writer |" in stdout


def test_idle_harness_holds_the_connections(tmp_path: Path) -> None:
    """S7 with 20 connections: poolwatch and urllib3 each hold 20 idle
    connections, as the server counts them; poolwatch with two workers each,
    all gone after close."""
    report, stdout = _run_module(
        "benchmarks.idle",
        tmp_path / "idle.json",
        *("--connections", "20", "--clients", "poolwatch,urllib3"),
    )
    rows = {r["client"]: r for r in report["rows"]}
    assert report["failed"] == [] and report["over"] == []
    for client in ("poolwatch", "urllib3"):
        assert rows[client]["held"] == rows[client]["server_accepted"] == 20
        assert rows[client]["rss_idle_mib"] > 0
    assert rows["poolwatch"]["threads"] == "1 -> 41 -> 1"
    assert rows["urllib3"]["threads"] == "1 -> 1 -> 1"
    assert "| poolwatch | 20 (20) |" in stdout


def test_soak_growth_check_flags_tasks_left_behind() -> None:
    """On the asyncio transport the soak also watches tasks: one more task
    than during warm-up, other than a connection's worker, fails the run."""
    from benchmarks.soak import check_growth, parse_args

    args = parse_args(["--async", "--requests", "100000"])
    samples = [
        {
            "requests": r,
            "rss_kib": 30_000,
            "gc_objects": 20_000,
            "other_threads": 1,
            "other_fds": 5,
            "other_tasks": 1 if r < 90_000 else 2,
            "open_connections": 1,
        }
        for r in range(0, 100_001, 5_000)
    ]
    assert check_growth(samples, args) == ["other_tasks reached 2 after warm-up, 1 during it"]
    assert args.out.name == "soak-async.json"
