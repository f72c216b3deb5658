"""``python -m benchmarks.soak``: a long run of one
:class:`poolwatch.Transport` against the fault server, watching memory,
threads and file descriptors for growth.

By default 200 000 requests (``--requests``) from 4 threads, in rounds of
5 000 (``--every``). The mix: bodies drained (Content-Length and chunked),
closed early, without a body, POSTs, bodies cut short by the server
(errored), responses dropped unread (leaked, R6: their ``LeakWarning`` is
counted, not shown), and a server that hangs up after 1% of responses (so
stale connections are met and retried). After each round the callers stop,
the transport settles, and one sample is taken with cheap counters only
(no tracemalloc): RSS and anonymous RSS (``/proc/self/status``), live
threads, open file descriptors, objects tracked by the garbage collector,
and the transport's own stats.

The first ``--warmup`` share of the requests (a quarter) is warm-up. After
it, the run fails (exit 1) when

* RSS grows by more than ``--rss-tolerance`` MiB (4) from the end of
  warm-up to the end of the run, judged on the least-squares line through
  the samples so that one noisy sample does not decide;
* live threads other than connection workers (open or parked), or open file descriptors
  other than connection sockets, ever exceed their warm-up maximum (the
  connections themselves come and go with the server's hang-ups; at rest
  there are at most ``--threads`` of them, as many as may be idle);
* objects tracked by the garbage collector grow by more than
  ``--objects-tolerance`` (5 000) on the same line;
* any call breaks the contract (a wrong body, or an exception that is not a
  :class:`poolwatch.PoolwatchError`), R18 fails at a sample, or after
  ``close()`` a worker or a ``poolwatch-`` thread is left.

With ``--tls`` the fault server speaks https (a certificate made for the
run), so the TLS record layer's memory is soaked too.

The samples are printed as a table and written as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import select
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import poolwatch
from poolwatch._sync.wakeup import HAVE_EVENTFD

from .cell import status_kib
from .faultclients import (
    LibraryClient,
    acall_once_with,
    add_run_arguments,
    call_once_with,
    check_run_arguments,
    report_name,
    run_async,
    unproxied,
)
from .faultload import (
    Context,
    Operation,
    acall_once,
    call_once,
    cut_body,
    get_chunked,
    get_closed_early,
    get_drained,
    head_or_empty,
    leak,
    pick,
    post_bytes,
    post_keyed,
)
from .faultserver import FaultServer, start_fault_server
from .stress import open_fds, poolwatch_threads

__all__ = ["MIX", "asample", "leak", "main", "parse_args", "run", "sample", "slope"]

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
# The socket (with a duplicate for the writer where there is no poll()),
# and on Linux the writer's eventfd.
FDS_PER_CONNECTION = (1 if hasattr(select, "poll") else 2) + (1 if HAVE_EVENTFD else 0)
ASYNC_FDS_PER_CONNECTION = 1  # the asyncio transport's tasks share one socket
LIMITS = poolwatch.Timeout(connect=5.0, write=5.0, response_header=5.0, read=5.0, pool=10.0)


MIX: tuple[Operation, ...] = (
    Operation("get_drained", 55, get_drained),
    Operation("get_chunked", 15, get_chunked),
    Operation("get_closed_early", 8, get_closed_early),
    Operation("head_or_204", 6, head_or_empty),
    Operation("post", 8, post_bytes, replayable=False, is_post=True),
    Operation("post_keyed", 4, post_keyed, is_post=True),
    Operation("cut_body", 3, cut_body),
    Operation("leak", 1, leak),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options; see ``python -m benchmarks.soak --help``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    p.add_argument("--requests", type=int, default=200_000, help="requests in all (200 000)")
    p.add_argument("--threads", type=int, default=4, help="caller threads (default 4)")
    p.add_argument("--every", type=int, default=5_000, help="requests per sample (5 000)")
    p.add_argument("--warmup", type=float, default=0.25, help="share of requests to warm up")
    p.add_argument("--rss-tolerance", type=float, default=4.0, help="MiB of RSS growth allowed")
    p.add_argument("--objects-tolerance", type=int, default=5_000, help="gc objects allowed")
    p.add_argument("--seed", type=int, default=2, help="random seed (client and server)")
    p.add_argument(
        "--async",
        dest="use_async",
        action="store_true",
        help="soak a poolwatch.AsyncTransport driven by tasks instead of a Transport",
    )
    add_run_arguments(p)
    p.add_argument("--out", type=Path, default=None, help="JSON report (benchmarks/results/)")
    args = p.parse_args(argv)
    check_run_arguments(p, args)
    if args.out is None:
        args.out = ROOT / "benchmarks" / "results" / report_name("soak", args)
    return args


def spare_workers() -> int:
    """Worker threads parked between connections (bounded per transport)."""
    return sum(1 for t in threading.enumerate() if t.name == "poolwatch-spare")


def sample(
    transport: poolwatch.Transport, requests: int, elapsed: float, tls: bool = False
) -> dict[str, Any]:
    """One row of cheap counters, taken with the transport at rest. Over
    TLS each connection's writer sends on a duplicate of the socket."""
    transport.settle()
    per_connection = FDS_PER_CONNECTION + (1 if tls else 0)
    row = _counters(transport.stats(), requests, elapsed, per_connection)
    if HAVE_EVENTFD:
        # The transport's spare events, and the one each parked worker
        # waits on: bounded, not leaks.
        row["other_fds"] -= transport._events.spare + spare_workers()
    return row


async def asample(
    transport: poolwatch.AsyncTransport, requests: int, elapsed: float
) -> dict[str, Any]:
    """As :func:`sample` for the asyncio transport, whose workers are tasks:
    ``tasks`` counts every task of the loop, ``other_tasks`` those that are
    no connection's worker; ``other_threads`` is every thread."""
    await transport.settle()
    stats = transport.stats()
    row = _counters(stats, requests, elapsed, ASYNC_FDS_PER_CONNECTION)
    row["tasks"] = len(asyncio.all_tasks())
    row["other_tasks"] = row["tasks"] - stats.workers_alive
    row["other_threads"] = row["threads"]
    return row


def _counters(
    stats: poolwatch.PoolStats, requests: int, elapsed: float, fds_per_connection: int
) -> dict[str, Any]:
    return {
        "requests": requests,
        "elapsed_s": round(elapsed, 1),
        "rss_kib": status_kib("VmRSS"),
        "rss_anon_kib": status_kib("RssAnon"),
        "threads": threading.active_count(),
        "fds": open_fds(),
        # Parked workers (kept for the next connection) are not leaks either.
        "other_threads": threading.active_count() - stats.workers_alive - spare_workers(),
        "other_fds": open_fds() - fds_per_connection * stats.open_connections,
        "gc_objects": len(gc.get_objects()),
        "open_connections": stats.open_connections,
        "workers_alive": stats.workers_alive,
        "connections_opened": stats.connections_opened,
        "drained": stats.bodies_drained,
        "closed_early": stats.bodies_closed_early,
        "errored": stats.bodies_errored,
        "leaked": stats.bodies_leaked,
        "retries": stats.retries,
        "r18": stats.invariant_violations(),
    }


def slope(points: list[tuple[float, float]]) -> float:
    """The least-squares slope of ``y`` over ``x``."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def _round(
    transport: poolwatch.Transport,
    server: FaultServer,
    args: argparse.Namespace,
    first: int,
    count: int,
    client: LibraryClient | None = None,
) -> list[str]:
    """``count`` requests from ``args.threads`` threads (through ``client``
    if given); the violations."""
    found: list[str] = []

    def caller(index: int) -> None:
        rng = random.Random(args.seed * 1_000_003 + first + index)
        ctx = Context(transport, server, rng, LIMITS)
        for n in range(first + index, first + count, args.threads):
            ctx.next_call(f"s{n}")
            op = pick(rng, MIX)
            call = call_once(ctx, op) if client is None else call_once_with(client, ctx, op)
            if call.violation:
                found.append(f"{call.op} {call.request_id}: {call.violation}")

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return found


async def _around(
    transport: poolwatch.AsyncTransport,
    server: FaultServer,
    args: argparse.Namespace,
    first: int,
    count: int,
    client: LibraryClient | None = None,
) -> list[str]:
    """As :func:`_round`, from ``args.threads`` tasks."""
    found: list[str] = []

    async def caller(index: int) -> None:
        rng = random.Random(args.seed * 1_000_003 + first + index)
        ctx = Context(transport, server, rng, LIMITS)
        for n in range(first + index, first + count, args.threads):
            ctx.next_call(f"s{n}")
            op = pick(rng, MIX)
            if client is None:
                call = await acall_once(ctx, op)
            else:
                call = await acall_once_with(client, ctx, op)
            if call.violation:
                found.append(f"{call.op} {call.request_id}: {call.violation}")

    await asyncio.gather(*(caller(i) for i in range(args.threads)))
    return found


def check_growth(samples: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """Violations of the growth tolerances after warm-up."""
    cut = args.warmup * args.requests
    warm = [s for s in samples if s["requests"] <= cut]
    after = [s for s in samples if s["requests"] >= cut]
    if not warm or len(after) < 2:
        return []
    span = after[-1]["requests"] - after[0]["requests"]
    found = []
    rss = slope([(s["requests"], s["rss_kib"]) for s in after]) * span / 1024
    if rss > args.rss_tolerance:
        found.append(f"RSS grew {rss:.1f} MiB after warm-up (tolerance {args.rss_tolerance})")
    objects = slope([(s["requests"], s["gc_objects"]) for s in after]) * span
    if objects > args.objects_tolerance:
        found.append(f"gc objects grew by {objects:.0f} after warm-up")
    for key in ("other_threads", "other_fds", "other_tasks"):
        if key not in samples[0]:
            continue
        limit = max(s[key] for s in warm)
        worst = max(s[key] for s in after)
        if worst > limit:
            found.append(f"{key} reached {worst} after warm-up, {limit} during it")
    most = max(s["open_connections"] for s in samples)
    if most > args.threads:
        found.append(f"{most} connections open at rest, at most {args.threads} may be idle")
    return found


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the soak; the report (``violations`` empty when it passed)."""
    warnings.simplefilter("ignore", poolwatch.LeakWarning)  # counted in the stats
    samples: list[dict[str, Any]] = []
    start = time.monotonic()
    with start_fault_server(
        args.seed, hangup=0.01, stall=1.0, tls=args.tls, proxy=args.proxy
    ) as server:
        if args.use_async:
            violations = run_async(_soak_async(server, args, samples, start), args.loop)
        else:
            violations = _soak(server, args, samples, start)
    if poolwatch_threads():
        violations.append(f"after close: poolwatch threads left: {poolwatch_threads()[:10]}")
    violations += check_growth(samples, args)
    return {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "transport": "AsyncTransport" if args.use_async else "Transport",
        "client": args.client,
        "scheme": "https" if args.tls else "http",
        "proxy": args.proxy,
        "python": sys.version.split()[0],
        "elapsed_s": round(time.monotonic() - start, 1),
        "samples": samples,
        "violations": violations,
    }


def _soak(
    server: FaultServer, args: argparse.Namespace, samples: list[dict[str, Any]], start: float
) -> list[str]:
    """The rounds on a :class:`poolwatch.Transport`, sampled; violations."""
    violations: list[str] = []
    transport = poolwatch.Transport(
        max_idle_per_host=args.threads, ssl_context=server.client_context()
    )
    client = _client(args, server, transport)
    try:
        samples.append(sample(transport, 0, 0.0, args.tls))
        done = 0
        while done < args.requests:
            count = min(args.every, args.requests - done)
            violations += _round(transport, server, args, done, count, client)
            done += count
            row = sample(transport, done, time.monotonic() - start, args.tls)
            violations += _record(samples, row)
        if transport.open_bodies():
            violations.append(f"{len(transport.open_bodies())} bodies still open")
        violations += unproxied(transport.stats(), server)
    finally:
        if client is not None:
            client.close()
        transport.close()
    if transport.stats().workers_alive:
        violations.append(f"after close: {transport.stats().workers_alive} workers alive")
    return violations


async def _soak_async(
    server: FaultServer, args: argparse.Namespace, samples: list[dict[str, Any]], start: float
) -> list[str]:
    """The rounds on a :class:`poolwatch.AsyncTransport`, sampled; violations."""
    violations: list[str] = []
    transport = poolwatch.AsyncTransport(
        max_idle_per_host=args.threads, ssl_context=server.client_context()
    )
    client = _client(args, server, transport)
    try:
        samples.append(await asample(transport, 0, 0.0))
        done = 0
        while done < args.requests:
            count = min(args.every, args.requests - done)
            violations += await _around(transport, server, args, done, count, client)
            done += count
            row = await asample(transport, done, time.monotonic() - start)
            violations += _record(samples, row)
        if transport.open_bodies():
            violations.append(f"{len(transport.open_bodies())} bodies still open")
        violations += unproxied(transport.stats(), server)
    finally:
        if client is not None:
            await client.aclose()
        await transport.aclose()
    if transport.stats().workers_alive:
        violations.append(f"after aclose: {transport.stats().workers_alive} workers alive")
    others = [t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    if others:
        violations.append(f"after aclose: tasks left: {others[:10]}")
    return violations


def _client(
    args: argparse.Namespace,
    server: FaultServer,
    transport: poolwatch.Transport | poolwatch.AsyncTransport,
) -> LibraryClient | None:
    """The library the calls go through, if not the transport itself."""
    if args.client == "native":
        return None
    return LibraryClient(args.client, transport, server)


def _record(samples: list[dict[str, Any]], row: dict[str, Any]) -> list[str]:
    """Keep and print a sample; its R18 violations."""
    samples.append(row)
    print(_row_text(row), flush=True)
    return [f"R18 at {row['requests']}: {v}" for v in row["r18"]]


HEADER = (
    "| requests | s | RSS MiB | anon MiB | threads | fds | gc objects | conns open "
    "| opened | drained | closed early | errored | leaked | retries |\n"
    "| --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |"
)


def _row_text(s: dict[str, Any]) -> str:
    return (
        f"| {s['requests']} | {s['elapsed_s']} | {s['rss_kib'] / 1024:.1f} "
        f"| {s['rss_anon_kib'] / 1024:.1f} | {s.get('tasks', s['threads'])} | {s['fds']} "
        f"| {s['gc_objects']} "
        f"| {s['open_connections']} | {s['connections_opened']} | {s['drained']} "
        f"| {s['closed_early']} | {s['errored']} | {s['leaked']} | {s['retries']} |"
    )


def main(argv: list[str] | None = None) -> int:
    """Run, print the table, write the JSON; 1 on any violation."""
    args = parse_args(argv)
    print(HEADER.replace("| threads |", "| tasks |") if args.use_async else HEADER, flush=True)
    report = run(args)
    for line in report["violations"][:20]:
        print(f"VIOLATION: {line}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{args.requests} requests in {report['elapsed_s']} s; "
        f"violations {len(report['violations'])}; wrote {args.out}"
    )
    return 1 if report["violations"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
