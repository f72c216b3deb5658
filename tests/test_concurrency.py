"""Many threads sharing one transport (R4, R5, R7, R8, R12, R14, R18): bodies
drained, closed early, left unread and then closed, with and without pool
limits. Nothing may deadlock (pytest's per-test timeout), every call must
end with the body outcome its mode implies, and the R18 invariants must hold
at the end.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

import poolwatch
from tests.conftest import assert_at_rest
from tests.servers import HTTPServer, http_server
from tests.test_pool import WAIT, in_threads, result

THREADS = 16
ROUNDS = 12  # requests per thread
BIG = 200_000  # larger than one recv(), so early closes really are early


@dataclass(frozen=True)
class Mode:
    """One way of using a response: the path asked for, what is done with
    the body, and the outcome that must follow."""

    path: str
    use: Callable[[poolwatch.Response], bytes]
    outcome: str
    body_size: int | None  # bytes ``use`` must return, when it reads to the end


def read_all(response: poolwatch.Response) -> bytes:
    """Read to EOF, never call close (R4: drained anyway)."""
    return response.read()


def read_in_chunks(response: poolwatch.Response) -> bytes:
    """Iterate to EOF inside ``with`` (R4)."""
    with response:
        return b"".join(response.iter_bytes(4096))


def read_exact_length(response: poolwatch.Response) -> bytes:
    """``read(n)`` returning the last byte of a Content-Length body (R18)."""
    return response.read(int(response.headers["content-length"]))


def read_some_then_close(response: poolwatch.Response) -> bytes:
    """Read a little, then close before EOF (R5)."""
    with response:
        return response.read(1000)


def close_unread(response: poolwatch.Response) -> bytes:
    """Close without reading a byte (R5)."""
    response.close()
    return b""


MODES = (
    Mode("/bytes/5000", read_all, "drained", 5000),
    Mode("/chunked/5000", read_in_chunks, "drained", 5000),
    Mode("/bytes/777", read_exact_length, "drained", 777),
    Mode("/close", read_all, "drained", 4),  # R8: closed after the body
    Mode("/stream", read_some_then_close, "closed_early", None),
    Mode(f"/chunked/{BIG}", read_some_then_close, "closed_early", None),
    Mode(f"/bytes/{BIG}", close_unread, "closed_early", None),
    Mode("/empty", close_unread, "no_body", 0),  # R7: 204
    Mode("/zero", read_all, "no_body", 0),  # R7: Content-Length: 0
)


def use_once(t: poolwatch.Transport, url: str, mode: Mode) -> str:
    """Make one request in ``mode``; check what was read; return the body
    outcome."""
    response = t.request("GET", url + mode.path)
    assert response.status in (200, 204)
    data = mode.use(response)
    if mode.body_size is not None:
        assert len(data) == mode.body_size, (mode.path, len(data))
    assert response.is_closed
    assert response.outcome is not None
    return response.outcome


def plan(seed: int, servers: list[HTTPServer]) -> list[tuple[str, Mode]]:
    """A thread's requests: (server origin, mode) pairs, reproducible."""
    rng = random.Random(seed)
    return [(rng.choice(servers).origin, rng.choice(MODES)) for _ in range(ROUNDS)]


def run_mixed(t: poolwatch.Transport, servers: list[HTTPServer]) -> Counter[str]:
    """Run :data:`THREADS` threads through their plans at once; check each
    outcome against its mode; return the expected outcome totals."""
    plans = [plan(seed, servers) for seed in range(THREADS)]
    start = threading.Barrier(THREADS)

    def worker(steps: list[tuple[str, Mode]]) -> list[tuple[str, str]]:
        start.wait(WAIT)
        return [(use_once(t, url, mode), mode.outcome) for url, mode in steps]

    with in_threads(THREADS) as pool:
        futures = [pool.submit(worker, steps) for steps in plans]
        outcomes = [pair for future in futures for pair in result(future)]
    assert [got for got, _ in outcomes] == [wanted for _, wanted in outcomes]
    return Counter(wanted for _, wanted in outcomes)


def assert_outcomes(stats: poolwatch.OriginStats, expected: Counter[str]) -> None:
    """R18: every response is counted once, under the outcome it had."""
    assert stats.requests == THREADS * ROUNDS
    got = {
        "drained": stats.bodies_drained,
        "closed_early": stats.bodies_closed_early,
        "no_body": stats.bodies_without_content,
        "leaked": stats.bodies_leaked,
        "errored": stats.bodies_errored,
        "open": stats.open_bodies,
    }
    assert got == {name: expected.get(name, 0) for name in got}
    assert stats.retries == 0


class PeakConnections:
    """A listener that samples ``stats()`` each time a request gets a
    connection, keeping the most connections seen open at once, in total
    and per origin (R12: never above the limits)."""

    def __init__(self, t: poolwatch.Transport) -> None:
        self._transport = t
        self._lock = threading.Lock()
        self.total = 0
        self.per_origin: Counter[str] = Counter()

    def __call__(self, event: poolwatch.Event) -> None:
        if event.name != "got_conn":
            return
        stats = self._transport.stats()
        with self._lock:
            self.total = max(self.total, stats.open_connections)
            for origin, per in stats.per_origin.items():
                self.per_origin[origin] = max(self.per_origin[origin], per.open_connections)

    def assert_within(self, options: dict[str, Any]) -> None:
        """The peaks respect the transport's connection limits."""
        per_host = options.get("max_connections_per_host")
        if per_host is not None:
            assert max(self.per_origin.values()) <= per_host, self.per_origin
        total = options.get("max_connections")
        if total is not None:
            assert self.total <= total, self.total
        assert self.total >= 1


LIMITS: list[dict[str, Any]] = [
    {},
    {"max_connections_per_host": 3, "pool_timeout": WAIT},
    {"max_connections": 4, "max_connections_per_host": 3, "pool_timeout": WAIT},
    {"max_idle_per_host": 1, "max_idle": 1},
    {"drain_on_close": True, "max_connections_per_host": 5, "pool_timeout": WAIT},
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("options", LIMITS, ids=lambda o: ",".join(o) or "defaults")
def test_threads_share_a_transport(options: dict[str, Any]) -> None:
    """R4, R5, R7, R8, R12 and R18: sixteen threads, two origins, mixed
    body handling: no deadlock, every outcome as expected, the limits never
    exceeded in what the servers saw, and the invariants hold at rest."""
    with (
        http_server() as one,
        http_server() as two,
        poolwatch.Transport(**options) as t,
    ):
        peaks = PeakConnections(t)
        t.add_listener(peaks)
        expected = run_mixed(t, [one, two])
        stats = assert_at_rest(t)
        assert_outcomes(stats, expected)
        peaks.assert_within(options)
        assert stats.waiting_requests == 0
        assert stats.idle_connections <= 2 * options.get("max_idle_per_host", 10)
        t.close_idle_connections()
        stats = assert_at_rest(t)
        assert (stats.open_connections, stats.workers_alive) == (0, 0)


@pytest.mark.timeout(120)
def test_threads_with_concurrent_close_idle_connections(server: HTTPServer) -> None:
    """R14 and R18: ``close_idle_connections()`` called over and over from
    another thread while sixteen threads make requests closes only idle
    connections: every request still succeeds with its expected outcome."""
    stop = threading.Event()

    def closer() -> int:
        calls = 0
        while not stop.is_set():
            t.close_idle_connections()
            calls += 1
            stop.wait(0.001)  # pacing only: correctness does not depend on it
        return calls

    with poolwatch.Transport(max_connections_per_host=4, pool_timeout=WAIT) as t:
        with in_threads(1) as pool:
            closing = pool.submit(closer)
            try:
                expected = run_mixed(t, [server])
            finally:
                stop.set()
            assert result(closing) > 0
        stats = assert_at_rest(t)
        assert_outcomes(stats, expected)
        assert stats.connections_closed >= 1


def test_close_while_connections_are_being_opened(server: HTTPServer) -> None:
    """R14: a close() that comes as other threads' dials register their
    connections raises nothing, and once it returns every worker has
    exited (the workers of a connection it found have started, so it
    joins them). Each round closes as soon as the first dial connects."""
    before = set(threading.enumerate())
    for _ in range(50):
        transport = poolwatch.Transport()
        dialled = threading.Event()
        transport.add_listener(lambda e, d=dialled: d.set() if e.name == "connect_done" else None)
        start = threading.Barrier(9)

        def get(t: poolwatch.Transport = transport, s: threading.Barrier = start) -> None:
            s.wait()
            try:
                t.request("GET", server.url()).read()
            except poolwatch.PoolwatchError:
                pass  # closed under it: PoolClosed or ReadError

        callers = [threading.Thread(target=get) for _ in range(8)]
        for caller in callers:
            caller.start()
        try:
            start.wait()
            assert dialled.wait(WAIT)
            transport.close()
            assert transport.stats().workers_alive == 0
            new = set(threading.enumerate()) - before
            assert not [t.name for t in new if t.name.startswith("poolwatch")]
        finally:
            for caller in callers:
                caller.join(WAIT)
            transport.close()
