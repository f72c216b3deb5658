"""``python -m benchmarks.idle`` (scenario S7): what 1 000 idle keep-alive
connections cost, in memory, threads and file descriptors.

The built-in server (:mod:`benchmarks.builtin_server`) runs in a process
of its own. Each client runs in a fresh child process: it measures itself
(RSS and anonymous RSS from ``/proc/self/status``, live threads, open file
descriptors), opens ``--connections`` connections at once by holding that
many responses unread, with ``--path /1m`` has each of them carry a 1 MiB
body too (one at a time, as a long-lived client's connections would have
done), then reads them all to the end so that every connection goes back
to the pool idle, measures again, closes, and measures a third time. The server's count of accepted
connections checks that the client really held that many.

Clients: ``poolwatch`` (the sync transport: two worker threads per
connection), ``poolwatch-256k`` (the same with ``threading.stack_size``
set to 256 KiB before the transport starts its workers: an experiment, not
a library setting), ``urllib3`` (``PoolManager``) and ``httpx``
(``httpx.Client``), when installed. Exit 1 when a client could not hold
the connections, or when poolwatch's RSS with them exceeds
``--max-rss-mib`` (200).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cell import status_kib
from .servers import start_server
from .spec import HOST, ONE_MIB, TINY_BODY

__all__ = ["CLIENTS", "main", "measure", "parse_args", "raise_fd_limit"]

ROOT = Path(__file__).resolve().parent.parent
SMALL_STACK = 256 * 1024  # poolwatch-256k: ample for a worker's few frames


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options; see ``python -m benchmarks.idle --help``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.idle", description=__doc__)
    p.add_argument("--connections", type=int, default=1000, help="idle connections (1 000)")
    p.add_argument("--clients", default="poolwatch,poolwatch-256k,urllib3,httpx")
    p.add_argument("--path", choices=("/tiny", "/1m"), default="/tiny", help="body carried")
    p.add_argument("--max-rss-mib", type=float, default=200.0, help="poolwatch's RSS target")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "idle.json")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def raise_fd_limit(needed: int) -> int:
    """Raise this process's soft limit on open files to at least ``needed``
    (up to the hard limit); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def measure() -> dict[str, int]:
    """RSS, anonymous RSS (KiB), live threads and open fds, after a full
    garbage collection."""
    gc.collect()
    return {
        "rss_kib": status_kib("VmRSS"),
        "rss_anon_kib": status_kib("RssAnon"),
        "threads": threading.active_count(),
        "os_threads": status_kib("Threads"),
        "fds": len(os.listdir("/proc/self/fd")),
    }


# A client: (base URL, connections) -> (check, close). It holds that many
# idle connections when it returns; check() says how many it holds.
Holder = Callable[[str, int], tuple[Callable[[], int], Callable[[], None]]]
BODIES = {"/tiny": TINY_BODY, "/1m": b"x" * ONE_MIB}
PATH = "/tiny"  # the child's --path


def _fill(send: Callable[[str], Any], finish: Callable[[Any], bytes], n: int) -> None:
    """Open ``n`` connections, have each carry a ``PATH`` body, and leave
    them idle. ``send(path)`` returns a response with its body unread;
    ``finish(response)`` reads the body to the end and lets the connection
    go back to the pool."""

    def expect(body: bytes, path: str) -> None:
        if body != BODIES[path]:
            raise RuntimeError(f"wrong body for {path}: {len(body)} bytes")

    held = [send("/tiny") for _ in range(n)]  # one connection each
    if PATH != "/tiny":
        # One large body at a time: free one connection, which is then the
        # only idle one, so the large GET reuses it; then hold it again.
        for i in range(n):
            expect(finish(held[i]), "/tiny")
            expect(finish(send(PATH)), PATH)
            held[i] = send("/tiny")
    for resp in held:
        expect(finish(resp), "/tiny")


def _poolwatch(base: str, n: int) -> tuple[Callable[[], int], Callable[[], None]]:
    import poolwatch

    t = poolwatch.Transport(max_idle=n, max_idle_per_host=n, idle_timeout=600.0)
    _fill(lambda path: t.request("GET", base + path), lambda resp: resp.read(), n)

    def check() -> int:
        stats = t.stats()
        if stats.workers_alive != 2 * stats.idle_connections:
            raise RuntimeError(f"poolwatch: {stats.workers_alive} workers")
        return stats.idle_connections

    return check, t.close


def _poolwatch_small_stack(base: str, n: int) -> tuple[Callable[[], int], Callable[[], None]]:
    threading.stack_size(SMALL_STACK)  # for every thread started from now on
    return _poolwatch(base, n)


def _urllib3(base: str, n: int) -> tuple[Callable[[], int], Callable[[], None]]:
    import urllib3

    manager = urllib3.PoolManager(maxsize=n, retries=False)

    def finish(resp: urllib3.BaseHTTPResponse) -> bytes:
        body = resp.read()
        resp.release_conn()
        return body

    _fill(lambda path: manager.request("GET", base + path, preload_content=False), finish, n)
    pool = manager.connection_from_url(base)

    def check() -> int:
        assert pool.pool is not None
        return sum(1 for conn in list(pool.pool.queue) if conn is not None)

    return check, manager.clear


def _httpx(base: str, n: int) -> tuple[Callable[[], int], Callable[[], None]]:
    import httpx

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n, keepalive_expiry=600)
    client = httpx.Client(limits=limits)

    def finish(resp: httpx.Response) -> bytes:
        body = resp.read()
        resp.close()
        return body

    _fill(
        lambda path: client.send(client.build_request("GET", base + path), stream=True), finish, n
    )

    def check() -> int:
        return len(client._transport._pool.connections)  # type: ignore[attr-defined]

    return check, client.close


CLIENTS: dict[str, Holder] = {
    "poolwatch": _poolwatch,
    "poolwatch-256k": _poolwatch_small_stack,
    "urllib3": _urllib3,
    "httpx": _httpx,
}


def _child(name: str, port: int, n: int, path: str) -> dict[str, Any]:
    global PATH
    PATH = path
    raise_fd_limit(4 * n + 100)
    base = f"http://{HOST}:{port}"
    hold = CLIENTS[name]
    hold(base, 1)[1]()  # import and warm up the client: the baseline includes it
    before = measure()
    check, close = hold(base, n)
    held = check()
    idle = measure()
    close()
    after = measure()
    return {"client": name, "held": held, "before": before, "idle": idle, "closed": after}


def _run_child(name: str, port: int, n: int, path: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.idle", "--child", name, "--port", str(port)]
    command += ["--connections", str(n), "--path", path]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return {"client": name, "error": done.stderr.strip()[-2000:]}
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _row(result: dict[str, Any], n: int) -> dict[str, Any]:
    before, idle = result["before"], result["idle"]
    grown = idle["rss_kib"] - before["rss_kib"]
    return {
        "client": result["client"],
        "held": result["held"],
        "server_accepted": result.get("server_accepted"),
        "rss_before_mib": round(before["rss_kib"] / 1024, 1),
        "rss_idle_mib": round(idle["rss_kib"] / 1024, 1),
        "anon_idle_mib": round(idle["rss_anon_kib"] / 1024, 1),
        "kib_per_connection": round(grown / n, 1),
        "threads": f"{before['threads']} -> {idle['threads']} -> {result['closed']['threads']}",
        "fds": f"{before['fds']} -> {idle['fds']} -> {result['closed']['fds']}",
        "rss_closed_mib": round(result["closed"]["rss_kib"] / 1024, 1),
    }


def text_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| client | idle held (server saw) | RSS before | RSS idle | anon RSS idle "
        "| per connection | threads before -> idle -> closed | fds | RSS after close |",
        "| --- | --: | --: | --: | --: | --: | --: | --: | --: |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['client']} | failed: {r['error'][-200:]} |")
            continue
        lines.append(
            f"| {r['client']} | {r['held']} ({r['server_accepted']}) | {r['rss_before_mib']} MiB "
            f"| {r['rss_idle_mib']} MiB | {r['anon_idle_mib']} MiB "
            f"| {r['kib_per_connection']} KiB | {r['threads']} | {r['fds']} "
            f"| {r['rss_closed_mib']} MiB |"
        )
    return "\n".join(lines)


def _available(name: str) -> bool:
    module = {"urllib3": "urllib3", "httpx": "httpx"}.get(name)
    if module is None:
        return True
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Run every client, print the table, write the JSON; 1 on a failure or
    a missed target."""
    args = parse_args(argv)
    n = args.connections
    if args.child:
        print(json.dumps(_child(args.child, args.port, n, args.path)))
        return 0
    names = [c for c in args.clients.split(",") if c]
    if any(c not in CLIENTS for c in names):
        print(f"unknown client; known: {', '.join(CLIENTS)}", file=sys.stderr)
        return 2
    limit = raise_fd_limit(2 * n + 200)  # the server inherits it
    rows = []
    with start_server("builtin", None) as server:
        for name in (c for c in names if _available(c)):
            before = server.accepted()
            result = _run_child(name, server.port, n, args.path)
            after = server.accepted()
            if before is not None and after is not None:
                # Less the warm-up connection and this count's own.
                result["server_accepted"] = after - before - 2
            rows.append(result if "error" in result else _row(result, n))
    failures = [r["client"] for r in rows if "error" in r or r["held"] != n]
    over = [
        r["client"]
        for r in rows
        if r["client"] == "poolwatch" and "error" not in r and r["rss_idle_mib"] > args.max_rss_mib
    ]
    report = {
        "connections": n,
        "path": args.path,
        "fd_limit": limit,
        "rows": rows,
        "failed": failures,
        "over": over,
    }
    print(text_table(rows))
    if failures:
        print(f"could not hold {n} idle connections: {failures}", file=sys.stderr)
    if over:
        print(f"over {args.max_rss_mib} MiB with {n} idle connections: {over}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if failures or over else 0


if __name__ == "__main__":
    raise SystemExit(main())
