"""Worker threads parked between connections: a new connection's reader and
writer run on the threads a closed one left, still two per open connection
(R1), and none outlives the transport's close() (R14)."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

import poolwatch
from poolwatch._sync import connection, workers
from poolwatch._sync.wakeup import HAVE_EVENTFD, EventPool
from poolwatch._sync.workers import SPARE_NAME, WorkerPool
from tests.async_support import run
from tests.conftest import assert_at_rest
from tests.servers import HTTPServer

HELLO = b"hello world!\n"


def _named(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]


def test_next_connection_runs_on_parked_workers(server: HTTPServer) -> None:
    transport = poolwatch.Transport()
    try:
        first = transport.request("GET", server.url("/close"))
        assert first.read() == b"bye\n"
        stats = assert_at_rest(transport)
        assert (stats.open_connections, stats.workers_alive) == (0, 0)
        parked = set(_named(SPARE_NAME))
        assert len(parked) == 2
        assert transport._workers.spare == 2

        second = transport.request("GET", server.url("/"))
        alive = {t.name: t for t in _named("poolwatch-")}
        reader = alive[f"poolwatch-reader-{second.connection_id}"]
        writer = alive[f"poolwatch-writer-{second.connection_id}"]
        assert {reader, writer} == parked  # the same threads, renamed
        assert transport.stats().workers_alive == 2
        assert second.read() == HELLO
        stats = assert_at_rest(transport)
        assert (stats.connections_opened, stats.open_connections, stats.workers_alive) == (2, 1, 2)
    finally:
        transport.close()
    assert _named("poolwatch-") == []  # parked ones included
    for thread in parked:
        assert not thread.is_alive()


def test_many_connections_one_after_another(server: HTTPServer) -> None:
    with poolwatch.Transport(keep_alive=False) as transport:
        for _ in range(20):
            assert transport.request("GET", server.url("/")).read() == HELLO
        stats = assert_at_rest(transport)
        assert stats.connections_opened == 20
        assert stats.workers_alive == 0
        assert len(_named("poolwatch-")) <= workers.MAX_SPARE
    assert _named("poolwatch-") == []


def test_close_while_bodies_are_open(server: HTTPServer) -> None:
    transport = poolwatch.Transport()
    held = [transport.request("GET", server.url("/")) for _ in range(3)]
    assert transport.stats().workers_alive == 6
    transport.close()
    assert _named("poolwatch-") == []
    for response in held:
        with pytest.raises(poolwatch.ReadError):
            response.read()


def test_close_as_the_response_is_handed_over(
    server: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R14: a close() that lands after the head arrived but before the
    caller got its response ends that body as errored; reading it raises
    ReadError, never returns an empty body as if it had none."""
    transport = poolwatch.Transport()
    round_trip = connection.Connection.round_trip

    def then_close(self: connection.Connection, exchange: Any) -> None:
        round_trip(self, exchange)
        transport.close()

    monkeypatch.setattr(connection.Connection, "round_trip", then_close)
    resp = transport.request("GET", server.url("/bytes/100000"))
    with pytest.raises(poolwatch.ReadError, match="closed"):
        resp.read()
    assert resp.outcome == "errored"


def test_async_close_as_the_response_is_handed_over(
    server: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same on the asyncio transport."""
    from poolwatch._async.connection import AsyncConnection

    round_trip = AsyncConnection.round_trip

    async def main() -> None:
        transport = poolwatch.AsyncTransport()

        async def then_close(self: AsyncConnection, exchange: Any) -> None:
            await round_trip(self, exchange)
            await transport.aclose()

        monkeypatch.setattr(AsyncConnection, "round_trip", then_close)
        resp = await transport.request("GET", server.url("/bytes/100000"))
        with pytest.raises(poolwatch.ReadError, match="closed"):
            await resp.read()
        assert resp.outcome == "errored"

    run(main)


def test_readable_now_on_a_closed_socket() -> None:
    """The end-of-body check on a socket the transport closed meanwhile
    answers "nothing waiting" instead of raising ValueError."""
    left, right = socket.socketpair()
    with right:
        right.sendall(b"x")
        assert connection._readable_now(left)
        left.close()
        assert not connection._readable_now(left)


def test_parked_worker_exits_when_unused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "SPARE_SECONDS", 0.05)
    pool = WorkerPool()
    ran = threading.Event()
    job = pool.run(ran.set, "poolwatch-test-job")
    job.join()
    assert ran.is_set()
    assert job.thread is not None
    job.thread.join(10)  # retires on its own, unused
    assert not job.thread.is_alive()
    assert pool.spare == 0
    pool.close()


def test_pool_keeps_at_most_max_spare() -> None:
    pool = WorkerPool(max_spare=1)
    gate = threading.Event()
    jobs = [pool.run(gate.wait, f"poolwatch-test-{i}") for i in range(3)]
    gate.set()
    for job in jobs:
        job.join()
    threads = {job.thread for job in jobs}
    assert len(threads) == 3  # all ran at once, each on its own thread
    assert pool.spare == 1  # the other two exit
    again = pool.run(lambda: None, "poolwatch-test-again")
    again.join()
    assert again.thread in threads  # ran on the parked one
    pool.close()
    for thread in threads:
        assert thread is not None
        thread.join(10)
        assert not thread.is_alive()


def test_a_parked_worker_that_died_is_replaced() -> None:
    """As in a child process after fork(): the parked thread is gone."""
    pool = WorkerPool()
    first = pool.run(lambda: None, "poolwatch-test-first")
    first.join()
    assert pool.spare == 1
    dead = pool._spare[0]
    assert dead.wake is not None
    dead.wake.release()  # no job: the thread exits without leaving the pool
    dead.thread.join(10)
    assert not dead.thread.is_alive()
    ran = threading.Event()
    second = pool.run(ran.set, "poolwatch-test-second")
    second.join()
    assert ran.is_set()
    assert second.thread is not dead.thread
    pool.close()
    assert second.thread is not None
    second.thread.join(10)
    assert not second.thread.is_alive()


def test_parked_worker_waits_on_a_lent_event() -> None:
    """A parked worker waits on an event lent by the transport's pool (an
    eventfd, written to with the GIL released) and gives it back once
    woken: one event serves every wait. Closing the pool leaves no
    descriptor open (checked by the no_leftovers fixture)."""
    events = EventPool()
    pool = WorkerPool(events=events)
    try:
        first = pool.run(lambda: None, "poolwatch-test-first")
        first.join()
        ran = threading.Event()
        second = pool.run(ran.set, "poolwatch-test-second")
        second.join()
        assert ran.is_set()
        assert second.thread is first.thread
    finally:
        pool.close()  # wakes the parked worker, which gives its event back
        assert events.spare == (1 if HAVE_EVENTFD else 0)
        events.close()
    assert second.thread is not None
    assert not second.thread.is_alive()


def test_transport_close_wakes_parked_workers(server: HTTPServer) -> None:
    """close() wakes the parked workers through their events; they exit and
    the events close with the transport."""
    transport = poolwatch.Transport(keep_alive=False)
    for _ in range(3):
        assert transport.request("GET", server.url("/")).read() == HELLO
    assert transport._workers.spare == 2
    parked = _named(SPARE_NAME)
    transport.close()
    for thread in parked:
        assert not thread.is_alive()
    assert transport._events.spare == 0
