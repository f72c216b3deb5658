"""``python -m benchmarks.stress``: many threads share one
:class:`poolwatch.Transport` against the fault server
(:mod:`benchmarks.faultserver`), which hangs up at random, answers uploads
early, stalls past the time limits, resets, cuts bodies short, and
otherwise serves keep-alive responses (:mod:`benchmarks.faultload` lists
the mix).

By default 32 threads make 20 000 requests in all. The run checks, and
exits 1 if any fails:

* every call returned a response or raised a documented
  :class:`poolwatch.PoolwatchError`, with the right body for its request id;
* every call ended within its time bound: its limits (pool wait, connect,
  write and response head, once per attempt, plus one read wait) plus
  ``--slack`` seconds;
* no POST reached the server more often than the client attempted it, and
  one that may not be replayed was never retried (R13);
* after ``settle()`` the R18 invariants hold, in total and per origin, and
  no body leaked;
* after ``close()`` no worker is alive and no ``poolwatch-`` thread is left,
  and the process has no more file descriptors open than before.

With ``--tls`` the fault server speaks https with a certificate made for
the run (trustme), so every fault happens inside a TLS session, whose
record layer the connection's reader and writer share. With ``--origins``
the server listens on that many ports, each call goes to one at random,
and ``--max-total``, ``--max-idle`` and ``--idle-timeout`` set the pool's
global limits, so that callers for one origin wait on, and evict,
another's connections; R18 is checked per origin too. ``--pause`` leaves
idle time between a caller's calls, for a short idle timeout to end
connections while others are taken, and ``--close-idle`` has a share of
the calls close the pool's idle connections first (R14).

With ``--async`` the same mix and checks run on one
:class:`poolwatch.AsyncTransport` driven by as many tasks on one event
loop, and a share of the calls (``--cancel``, 3%) is cancelled
(:meth:`asyncio.Task.cancel`) at a random point of its first 60 ms: a
cancelled call ends as ``cancelled`` and must leave the pool consistent
(R18 after ``settle()``). A call that absorbs its cancellation and runs on
is counted as ``<result> despite cancel``. After ``aclose()`` no worker is
alive and no task but the main one is left.

The results are printed as a table and written as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import poolwatch

from .faultclients import (
    LibraryClient,
    acall_once_with,
    add_run_arguments,
    call_once_with,
    check_run_arguments,
    report_name,
    run_async,
    unproxied,
    warm_loop,
)
from .faultload import OPERATIONS, Call, Context, acall_once, call_once, pick
from .faultserver import FaultServer, start_fault_server

__all__ = [
    "between_calls",
    "check_calls",
    "main",
    "open_fds",
    "parse_args",
    "poolwatch_threads",
    "run",
    "time_bound",
    "time_limits",
    "transport_options",
]

ROOT = Path(__file__).resolve().parent.parent
JOIN_LIMIT = 900.0  # seconds: a run still going after this has hung
# Cancellations land within this many seconds of a call's start by default:
# most calls take 5 to 50 ms, so pool waits, connects, writes, head waits and
# body reads are all hit; the stalls and early 413s run longer and are hit
# early. A smaller window makes more of them land on fast calls.
CANCEL_WINDOW = 0.06


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options; see ``python -m benchmarks.stress --help``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.stress", description=__doc__)
    p.add_argument("--threads", type=int, default=32, help="caller threads (default 32)")
    p.add_argument("--requests", type=int, default=20_000, help="requests in all (20 000)")
    p.add_argument("--max-connections", type=int, default=24, help="per host (default 24)")
    p.add_argument(
        "--origins", type=int, default=1, help="origins (server ports) the calls spread over (1)"
    )
    p.add_argument("--max-total", type=int, default=None, help="connections in all (no limit)")
    p.add_argument("--max-idle", type=int, default=100, help="idle connections in all (100)")
    p.add_argument(
        "--idle-timeout", type=float, default=90.0, help="idle connections close after, s (90)"
    )
    p.add_argument(
        "--pause", type=float, default=0.0, help="pause up to this long between calls, s"
    )
    p.add_argument(
        "--close-idle",
        type=float,
        default=0.0,
        help="share of calls before which the caller closes the pool's idle connections",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed (client and server)")
    p.add_argument("--hangup", type=float, default=0.05, help="server hang-up probability")
    p.add_argument("--read-timeout", type=float, default=0.5, help="read and head limit, s")
    p.add_argument("--slack", type=float, default=1.0, help="seconds allowed past a bound")
    p.add_argument(
        "--async",
        dest="use_async",
        action="store_true",
        help="drive a poolwatch.AsyncTransport from tasks instead of a Transport from threads",
    )
    p.add_argument(
        "--cancel", type=float, default=0.03, help="with --async: share of calls cancelled (0.03)"
    )
    p.add_argument(
        "--cancel-window",
        type=float,
        default=CANCEL_WINDOW,
        help=f"with --async: seconds after its start within which a call is cancelled"
        f" ({CANCEL_WINDOW})",
    )
    add_run_arguments(p)
    p.add_argument("--out", type=Path, default=None, help="JSON report (benchmarks/results/)")
    args = p.parse_args(argv)
    check_run_arguments(p, args)
    if args.origins < 1:
        p.error("--origins must be at least 1")
    if args.out is None:
        args.out = ROOT / "benchmarks" / "results" / report_name("stress", args)
    return args


def time_limits(read_timeout: float) -> poolwatch.Timeout:
    """The limits every call runs under."""
    return poolwatch.Timeout(
        connect=2.0, write=2.0, response_header=read_timeout, read=read_timeout, pool=4.0
    )


def time_bound(limits: poolwatch.Timeout, retries: int, slack: float) -> float:
    """The longest a call may take: pool wait, connect, write and response
    head once per attempt, one read wait, and the slack."""
    parts = (limits.pool, limits.connect, limits.write, limits.response_header)
    per_attempt = sum(p or 0.0 for p in parts)
    return (1 + retries) * per_attempt + (limits.read or 0.0) + slack


def transport_options(server: FaultServer, args: argparse.Namespace) -> dict[str, Any]:
    """The pool's limits from the options, and the context trusting the
    server's certificate."""
    return {
        "max_connections": args.max_total,
        "max_connections_per_host": args.max_connections,
        "max_idle": args.max_idle,
        "max_idle_per_host": args.max_connections,
        "idle_timeout": args.idle_timeout,
        "ssl_context": server.client_context(),
    }


def poolwatch_threads() -> list[str]:
    """Names of the live threads that belong to poolwatch."""
    return [t.name for t in threading.enumerate() if t.name.startswith("poolwatch-")]


def open_fds() -> int:
    """File descriptors open in this process."""
    return len(os.listdir("/proc/self/fd"))


def _drive(
    transport: poolwatch.Transport,
    server: FaultServer,
    args: argparse.Namespace,
    client: LibraryClient | None = None,
) -> tuple[list[Call], list[str]]:
    """Run the callers (through ``client`` if given); their calls, and
    violations about hanging threads."""
    limits = time_limits(args.read_timeout)
    numbers = itertools.count()  # next() is atomic under the GIL
    calls: list[Call] = []
    lock = threading.Lock()

    def caller(index: int) -> None:
        ctx = Context(transport, server, random.Random(args.seed * 1000 + index), limits)
        mine = []
        while (n := next(numbers)) < args.requests:
            ctx.next_call(f"r{n}")
            pause, close_idle = between_calls(ctx.rng, args)
            if pause:
                time.sleep(pause)
            if close_idle:
                transport.close_idle_connections()
            if client is None:
                mine.append(call_once_op(ctx))
            else:
                mine.append(call_once_with(client, ctx, pick(ctx.rng, OPERATIONS)))
        with lock:
            calls.extend(mine)

    threads = [
        threading.Thread(target=caller, args=(i,), name=f"stress-{i}", daemon=True)
        for i in range(args.threads)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + JOIN_LIMIT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    hung = [t.name for t in threads if t.is_alive()]
    return calls, [f"caller threads still running after {JOIN_LIMIT:g}s: {hung}"] if hung else []


def between_calls(rng: random.Random, args: argparse.Namespace) -> tuple[float, bool]:
    """Before a call: how long its caller pauses (``--pause``: idle time,
    for the idle timeout to end connections as others are taken), and
    whether it first closes the pool's idle connections (``--close-idle``)."""
    pause = rng.uniform(0.0, args.pause) if args.pause else 0.0
    return pause, bool(args.close_idle) and rng.random() < args.close_idle


def call_once_op(ctx: Context) -> Call:
    """One call of an operation picked at random."""
    return call_once(ctx, pick(ctx.rng, OPERATIONS))


async def _drive_async(
    transport: poolwatch.AsyncTransport,
    server: FaultServer,
    args: argparse.Namespace,
    client: LibraryClient | None = None,
) -> tuple[list[Call], list[str]]:
    """Run the caller tasks; their calls, and violations about hanging or
    failed tasks. A share (``--cancel``) of the calls is cancelled at a
    random point within ``--cancel-window`` seconds of its start."""
    limits = time_limits(args.read_timeout)
    numbers = itertools.count()
    calls: list[Call] = []

    async def caller(index: int) -> None:
        ctx = Context(transport, server, random.Random(args.seed * 1000 + index), limits)
        while (n := next(numbers)) < args.requests:
            ctx.next_call(f"r{n}")
            pause, close_idle = between_calls(ctx.rng, args)
            if pause:
                await asyncio.sleep(pause)
            if close_idle:
                await transport.close_idle_connections()
            op = pick(ctx.rng, OPERATIONS)
            cancel = None
            if ctx.rng.random() < args.cancel:
                cancel = ctx.rng.uniform(0, args.cancel_window)
            if client is None:
                calls.append(await acall_once(ctx, op, cancel))
            else:
                calls.append(await acall_once_with(client, ctx, op, cancel))

    tasks = [asyncio.create_task(caller(i), name=f"stress-{i}") for i in range(args.threads)]
    _, pending = await asyncio.wait(tasks, timeout=JOIN_LIMIT)
    for task in pending:
        task.cancel()
    await asyncio.wait(tasks)
    found = (
        [f"caller tasks still running after {JOIN_LIMIT:g}s: {len(pending)}"] if pending else []
    )
    found += [
        f"caller {t.get_name()} failed: {t.exception()!r}"
        for t in tasks
        if not t.cancelled() and t.exception()
    ]
    return calls, found


def check_calls(
    calls: list[Call], posts: dict[str, int], limits: poolwatch.Timeout, slack: float
) -> list[str]:
    """Violations in the calls: contract breaks, overlong calls, and POSTs
    sent more often than attempted (R13)."""
    ops = {op.name: op for op in OPERATIONS}
    found = []
    for c in calls:
        if c.violation:
            found.append(f"{c.op} {c.request_id}: {c.violation}")
        bound = time_bound(limits, c.retries, slack)
        if c.wall > bound:
            found.append(f"{c.op} {c.request_id}: took {c.wall:.2f}s, bound {bound:.2f}s")
        op = ops[c.op]
        if not op.is_post:
            continue
        seen = posts.get(c.request_id, 0)
        if seen > 1 + c.retries:
            sent = 1 + c.retries
            found.append(f"{c.op} {c.request_id}: server saw it {seen} times, {sent} sent")
        if not op.replayable and c.retries:
            found.append(f"{c.op} {c.request_id}: not replayable, retried {c.retries} times")
        if c.result in ("ok", "413") and seen == 0:
            found.append(f"{c.op} {c.request_id}: answered, but the server never saw it")
    drained = [c for c in calls if c.op == "get_drained"]
    if len(drained) >= 20 and not any(c.result == "ok" for c in drained):
        errors = Counter(c.result for c in drained).most_common(2)
        found.append(f"no plain GET succeeded ({errors}): the run never reached the server")
    return found


def _rest_violations(stats: poolwatch.PoolStats) -> tuple[dict[str, Any], list[str]]:
    """The stats at rest (with ``per_origin``), and R18 violations (in
    total and per origin) and leaked bodies in them."""
    found = [f"R18: {v}" for v in stats.invariant_violations()]
    for origin, per in stats.per_origin.items():
        found += [f"R18 {origin}: {v}" for v in per.invariant_violations()]
    if stats.bodies_leaked:
        found.append(f"{stats.bodies_leaked} bodies leaked")
    per_origin = {origin: per.as_dict() for origin, per in stats.per_origin.items()}
    return {**stats.as_dict(), "per_origin": per_origin}, found


@dataclasses.dataclass
class Session:
    """What a run of the callers left: the calls, the violations, how long
    the callers ran, the stats at rest, the server's stats and POST counts."""

    calls: list[Call]
    violations: list[str]
    elapsed: float
    stats: dict[str, Any]
    server: dict[str, Any]
    posts: dict[str, int]


def _session(server: FaultServer, args: argparse.Namespace) -> Session:
    """Drive a :class:`poolwatch.Transport`, settle and close it: calls,
    violations, stats at rest, server stats, POST counts."""
    transport = poolwatch.Transport(**transport_options(server, args))
    client = None
    if args.client != "native":
        client = LibraryClient(args.client, transport, server)
    start = time.monotonic()
    try:
        calls, violations = _drive(transport, server, args, client)
        elapsed = time.monotonic() - start
        transport.settle()
        stats, found = _rest_violations(transport.stats())
        violations += found + unproxied(transport.stats(), server)
        server_stats, posts = server.stats(), server.post_counts()
    finally:
        if client is not None:
            client.close()
        transport.close()
    if transport.stats().workers_alive:
        violations.append(f"after close: {transport.stats().workers_alive} workers alive")
    return Session(calls, violations, elapsed, stats, server_stats, posts)


async def _session_async(server: FaultServer, args: argparse.Namespace) -> Session:
    """As :func:`_session` for a :class:`poolwatch.AsyncTransport`; after
    ``aclose()`` no task but this one may be left."""
    transport = poolwatch.AsyncTransport(**transport_options(server, args))
    client = None
    if args.client != "native":
        client = LibraryClient(args.client, transport, server)
    start = time.monotonic()
    try:
        calls, violations = await _drive_async(transport, server, args, client)
        elapsed = time.monotonic() - start
        await transport.settle()
        stats, found = _rest_violations(transport.stats())
        violations += found + unproxied(transport.stats(), server)
        server_stats, posts = server.stats(), server.post_counts()  # brief blocking: runs alone
    finally:
        if client is not None:
            await client.aclose()
        await transport.aclose()
    if transport.stats().workers_alive:
        violations.append(f"after aclose: {transport.stats().workers_alive} workers alive")
    others = [t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    if others:
        violations.append(f"after aclose: tasks left: {others[:10]}")
    return Session(calls, violations, elapsed, stats, server_stats, posts)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the stress and return the report (``violations`` empty when
    every check passed)."""
    warm_loop(args.loop)  # before counting descriptors
    fds_before = open_fds()
    limits = time_limits(args.read_timeout)
    stall = 2 * args.read_timeout
    with start_fault_server(
        args.seed, args.hangup, stall, tls=args.tls, proxy=args.proxy, origins=args.origins
    ) as server:
        if args.use_async:
            session = run_async(_session_async(server, args), args.loop)
        else:
            session = _session(server, args)
    calls, violations, elapsed = session.calls, session.violations, session.elapsed
    left = poolwatch_threads()
    if left:
        violations.append(f"after close: poolwatch threads left: {left[:10]}")
    if open_fds() > fds_before:
        violations.append(f"after close: {open_fds()} fds open, {fds_before} before")
    if len(calls) != args.requests and not violations:
        violations.append(f"{len(calls)} calls recorded, {args.requests} made")
    violations += check_calls(calls, session.posts, limits, args.slack)
    return {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "transport": "AsyncTransport" if args.use_async else "Transport",
        "client": args.client,
        "scheme": "https" if args.tls else "http",
        "proxy": args.proxy,
        "limits": dataclasses.asdict(limits),
        "elapsed_s": round(elapsed, 2),
        "requests_per_s": round(len(calls) / elapsed, 1) if elapsed else 0.0,
        "operations": summarize(calls),
        "stats": session.stats,
        "server": {k: session.server[k] for k in ("accepted", "requests")},
        "violations": violations,
    }


def summarize(calls: list[Call]) -> dict[str, dict[str, Any]]:
    """Per operation: calls, results, retries, mean and longest wall time."""
    table: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        mine = [c for c in calls if c.op == op.name]
        if not mine:
            continue
        walls = [c.wall for c in mine]
        table[op.name] = {
            "calls": len(mine),
            "results": dict(Counter(c.result for c in mine).most_common()),
            "retried": sum(1 for c in mine if c.retries),
            "mean_ms": round(1000 * sum(walls) / len(walls), 1),
            "max_ms": round(1000 * max(walls), 1),
        }
    return table


def text_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table, with a summary line."""
    lines = [
        "| operation | calls | results | retried | mean ms | max ms |",
        "| --- | --: | --- | --: | --: | --: |",
    ]
    for name, row in report["operations"].items():
        results = ", ".join(f"{k} {v}" for k, v in row["results"].items())
        lines.append(
            f"| {name} | {row['calls']} | {results} | {row['retried']} "
            f"| {row['mean_ms']} | {row['max_ms']} |"
        )
    stats = report["stats"]
    lines.append("")
    lines.append(
        f"{report['transport']}: "
        f"{sum(r['calls'] for r in report['operations'].values())} calls in "
        f"{report['elapsed_s']} s ({report['requests_per_s']} req/s); "
        f"connections opened {stats['connections_opened']}, server accepted "
        f"{report['server']['accepted']}; retries {stats['retries']}; "
        f"violations {len(report['violations'])}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run, print, write the JSON; 1 on any violation."""
    args = parse_args(argv)
    report = run(args)
    print(text_table(report))
    for line in report["violations"][:20]:
        print(f"VIOLATION: {line}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if report["violations"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
