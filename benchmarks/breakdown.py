"""Where the microseconds of a request go, for poolwatch and its peers.

``python -m benchmarks.breakdown`` runs S1 (sequential keep-alive GETs of a
tiny body) with poolwatch's ``Transport``, urllib3's ``PoolManager`` and
httpcore's ``ConnectionPool`` (what httpx runs on), each in a process of its
own pinned to one core, against the loopback server pinned to the other.
For each it reports, per request:

- CPU time, split into user and system time, and the voluntary context
  switches (``getrusage``: every thread of the process);
- CPU time by thread: the caller's, and for poolwatch its connection's
  reader and writer (each thread's own CPU clock, so exact where
  ``getrusage`` splits by sampling);
- with py-spy installed, the user time split by layer (poolwatch's
  protocol, its pool bookkeeping, its connection and response code, h11,
  urllib3, http.client, httpcore, the socket and threading modules...).
  py-spy samples the thread that holds the GIL (``--gil``), so each sample
  is Python code running; a sample is charged to the file of its innermost
  frame, and each layer gets its share of the samples times the user time.

The layers are approximate (a C function is charged to the Python line
that called it, and py-spy misses samples on a busy machine, which is why
only shares are used), but they are measured the same way for every client
in the same run. System time is what the kernel spent: the system calls
(``recv``, ``send``, ``poll``, the futex calls behind thread hand-offs) and
the scheduling of the threads that make them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import cast

from .servers import child_setup, start_server
from .spec import TINY_BODY

CLIENTS = ("poolwatch", "urllib3", "httpcore")
RATE = 1000  # py-spy samples per second

# (path fragment, layer): the first fragment found in a frame's file wins.
LAYERS = (
    ("/poolwatch/_core/wire.py", "poolwatch protocol"),
    ("/poolwatch/_core/exchange.py", "poolwatch protocol"),
    ("/poolwatch/_core/", "poolwatch pool bookkeeping"),
    ("/poolwatch/_models.py", "poolwatch request building"),
    ("/poolwatch/_leaks.py", "poolwatch instrumentation"),
    ("/poolwatch/_events.py", "poolwatch instrumentation"),
    ("/poolwatch/", "poolwatch connection, response"),
    ("/h11/", "h11"),
    ("/urllib3/", "urllib3"),
    ("/http/client.py", "http.client"),
    ("/email/", "http.client"),
    ("/httpcore/", "httpcore"),
    ("/socket.py", "socket, ssl, selectors"),
    ("/ssl.py", "socket, ssl, selectors"),
    ("/selectors.py", "socket, ssl, selectors"),
    ("/threading.py", "threading, queue"),
    ("/queue.py", "threading, queue"),
    ("/benchmarks/breakdown.py", "benchmark loop"),
)


def _client(name: str, url: str) -> Callable[[], None]:
    """One GET of ``url`` with the named client, body read."""
    if name == "poolwatch":
        import poolwatch

        transport = poolwatch.Transport()

        def get_poolwatch() -> None:
            transport.request("GET", url).read()

        return get_poolwatch
    if name == "urllib3":
        import urllib3

        pool = urllib3.PoolManager()

        def get_urllib3() -> None:
            pool.request("GET", url, preload_content=True)

        return get_urllib3
    if name == "httpcore":
        import httpcore

        core = httpcore.ConnectionPool()

        def get_httpcore() -> None:
            core.request("GET", url)

        return get_httpcore
    raise SystemExit(f"unknown client {name!r}")


def _role(thread_name: str) -> str:
    if thread_name == "MainThread":
        return "caller"
    for role in ("reader", "writer"):
        if thread_name.startswith(f"poolwatch-{role}-"):
            return role
    return "other"


def _thread_cpu() -> dict[str, float]:
    """CPU seconds so far of the live threads, summed by role."""
    seconds: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        try:
            clock = time.pthread_getcpuclockid(thread.ident)
            role = _role(thread.name)
            seconds[role] = seconds.get(role, 0.0) + time.clock_gettime(clock)
        except (AttributeError, OSError):  # not on this platform, or gone
            continue
    return seconds


def _child(name: str, url: str, count: int) -> None:
    """Run in the measured process: warm up, say READY, wait for a line on
    standard input, run ``count`` requests, print the usage as JSON."""
    get = _client(name, url)
    for _ in range(min(count, 500)):
        get()
    print("READY", flush=True)
    sys.stdin.readline()
    threads_before = _thread_cpu()
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    for _ in range(count):
        get()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    threads = {role: cpu - threads_before.get(role, 0.0) for role, cpu in _thread_cpu().items()}
    usage = {
        "user_us": (after.ru_utime - before.ru_utime) / count * 1e6,
        "system_us": (after.ru_stime - before.ru_stime) / count * 1e6,
        "switches": (after.ru_nvcsw - before.ru_nvcsw) / count,
        "wall_us": wall / count * 1e6,
        "threads_us": {role: cpu / count * 1e6 for role, cpu in sorted(threads.items())},
    }
    print(json.dumps(usage), flush=True)
    os._exit(0)  # the clients' pools close with the process


def _layer(frame: str) -> str:
    """The layer of a py-spy frame, ``function (path:line)``."""
    path = "/" + frame[frame.rfind("(") + 1 : frame.rfind(":")]
    for fragment, layer in LAYERS:
        if fragment in path:
            return layer
    return "other"


def _layer_shares(raw: Path) -> dict[str, float]:
    """Each layer's share of the GIL samples in py-spy's raw output (one
    ``frame;frame;... samples`` line per stack)."""
    samples: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        samples[_layer(stack.split(";")[-1])] += int(number)
    total = sum(samples.values())
    return {layer: n / total for layer, n in samples.most_common()} if total else {}


def measure(name: str, url: str, count: int, cpu: int | None, profile: bool) -> dict[str, object]:
    """Run one client's child process; its usage and, with ``profile``, its
    GIL time by layer."""
    command = [sys.executable, "-m", "benchmarks.breakdown", "--child", name, url, str(count)]
    child = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        preexec_fn=child_setup(cpu),
    )
    assert child.stdin is not None and child.stdout is not None
    spy = None
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp, "raw.txt")
        try:
            if child.stdout.readline().strip() != "READY":
                raise RuntimeError(f"{name}: the client did not start")
            if profile:
                spy = subprocess.Popen(
                    [
                        *("py-spy", "record", "--pid", str(child.pid), "--gil", "--nonblocking"),
                        *("--rate", str(RATE), "--format", "raw", "--output", str(raw)),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1.0)  # py-spy attaches before the loop starts
            child.stdin.write("go\n")
            child.stdin.flush()
            result: dict[str, object] = json.loads(child.stdout.readline())
        finally:
            child.wait(timeout=60)
            if spy is not None:
                spy.wait(timeout=60)
        if spy is not None and raw.exists():
            user = float(result["user_us"])  # type: ignore[arg-type]
            shares = _layer_shares(raw)
            result["layers_us"] = {layer: share * user for layer, share in shares.items()}
    return result


def _report(results: dict[str, dict[str, object]]) -> str:
    lines = [
        "| client | CPU us/req | user | system | voluntary switches/req | wall us/req |",
        "| --- | --: | --: | --: | --: | --: |",
    ]
    for name, r in results.items():
        user, system = float(r["user_us"]), float(r["system_us"])  # type: ignore[arg-type]
        lines.append(
            f"| {name} | {user + system:.0f} | {user:.0f} | {system:.0f} "
            f"| {float(r['switches']):.1f} | {float(r['wall_us']):.0f} |"  # type: ignore[arg-type]
        )
    roles = [r for r in ("caller", "reader", "writer", "other") if _has_role(results, r)]
    if roles:
        lines += ["", "CPU us per request by thread (each thread's own clock):", ""]
        lines.append("| client | " + " | ".join(roles) + " |")
        lines.append("| --- |" + " --: |" * len(roles))
        for name, r in results.items():
            by_role = _per_request(r, "threads_us")
            cells = [f"{by_role[role]:.0f}" if role in by_role else "-" for role in roles]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    layers: list[str] = []
    for r in results.values():
        for layer in _per_request(r, "layers_us"):
            if layer not in layers:
                layers.append(layer)
    if layers:
        lines += ["", "User time, us per request, by layer (shares of py-spy's GIL samples):", ""]
        lines.append("| layer | " + " | ".join(results) + " |")
        lines.append("| --- |" + " --: |" * len(results))
        for layer in layers:
            cells = []
            for r in results.values():
                value = _per_request(r, "layers_us").get(layer)
                cells.append("-" if value is None else f"{value:.0f}")
            lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _has_role(results: dict[str, dict[str, object]], role: str) -> bool:
    """Whether some client's threads in ``role`` used a measurable CPU time."""
    return any(_per_request(r, "threads_us").get(role, 0.0) >= 0.5 for r in results.values())


def _per_request(result: dict[str, object], key: str) -> dict[str, float]:
    """A client's microseconds per request by thread or layer (empty if not
    measured)."""
    return cast("dict[str, float]", result.get(key) or {})


def main(argv: list[str] | None = None) -> int:
    """The command line; prints a markdown report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.breakdown", description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000, help="per client")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--server", default="auto", choices=("auto", "nginx", "builtin"))
    parser.add_argument("--no-profile", action="store_true", help="usage only, no py-spy")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--out", help="also write the results to this JSON file")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        name, url, count = args.child
        _child(name, url, int(count))
        return 0
    profile = not args.no_profile and shutil.which("py-spy") is not None
    pin = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
    results: dict[str, dict[str, object]] = {}
    with start_server(args.server, 0 if pin else None) as server:
        url = server.base_url + "/tiny"
        for name in args.clients.split(","):
            results[name] = measure(name, url, args.requests, 1 if pin else None, profile)
    print(f"S1: {args.requests} GETs of {len(TINY_BODY)} bytes per client, {server.description}")
    if not profile:
        print("(py-spy not found or --no-profile: no breakdown by layer)")
    print()
    print(_report(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
