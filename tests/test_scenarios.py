"""BEHAVIOUR.md's seed experiment and public acceptance scenarios 1-7 and 12,
each against a real loopback server."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import pytest

import poolwatch
from tests.conftest import assert_at_rest
from tests.servers import HTTPServer, ServerConnection, raw_server


def _events(t: poolwatch.Transport, name: str) -> threading.Event:
    """An Event set when the transport next emits ``name``."""
    seen = threading.Event()
    t.add_listener(lambda e: seen.set() if e.name == name else None)
    return seen


@pytest.mark.parametrize(
    ("read", "close", "expected"),
    [(False, False, 11), (False, True, 1), (True, False, 3), (True, True, 3)],
    ids=["loop1-held", "loop2-closed", "loop3-read", "loop4-read-closed"],
)
def test_seed_experiment(server: HTTPServer, read: bool, close: bool, expected: int) -> None:
    """The seed experiment: workers + 1 after five GETs per loop (R1, R4-R6)."""
    with poolwatch.Transport() as t:
        kept = []
        for _ in range(5):
            resp = t.request("GET", server.url())
            if read:
                resp.read()
            if close:
                resp.close()
            kept.append(resp)
        assert_at_rest(t)
        assert t.stats().workers_alive + 1 == expected
        for resp in kept:
            resp.close()


def test_scenario_2_connection_close(server: HTTPServer) -> None:
    """Scenario 2 (R8): Connection: close means a new connection per request,
    bodies still fully readable, and nothing left after close_idle."""
    with poolwatch.Transport() as t:
        for _ in range(3):
            assert t.request("GET", server.url("/close")).read() == b"bye\n"
        t.close_idle_connections()
        stats = assert_at_rest(t)
        assert stats.connections_opened == 3
        assert stats.open_connections == 0
        assert stats.workers_alive == 0
    assert server.accepted == 3


@pytest.mark.parametrize("path", ["/bytes/5000", "/chunked/5000"])
def test_scenario_3_read_but_never_closed(server: HTTPServer, path: str) -> None:
    """Scenario 3 (R4): bodies read to EOF but never closed share one
    connection, returned during the read that reached the end."""
    with poolwatch.Transport() as t:
        kept = []
        for _ in range(3):
            resp = t.request("GET", server.url(path))
            assert len(resp.read()) == 5000
            assert t.stats().idle_connections == 1  # before any close()
            kept.append(resp)
        stats = assert_at_rest(t)
        assert stats.connections_opened == 1
        assert stats.bodies_drained == 3
    assert server.accepted == 1


def test_read_n_reaching_the_end_drains(server: HTTPServer) -> None:
    """R4/R18: a read(n) that returns the last byte of a Content-Length body
    has reached the end."""
    with poolwatch.Transport() as t:
        resp = t.request("GET", server.url("/bytes/10"))
        assert resp.read(4) == b"xxxx"
        assert resp.outcome is None
        assert resp.read(6) == b"xxxxxx"
        assert resp.outcome == "drained"
        assert assert_at_rest(t).idle_connections == 1


def test_scenario_4_endless_body_closed_early() -> None:
    """Scenario 4 (R5): an endless body read partly then closed: close
    returns at once and the server sees the connection go away."""
    saw_close = threading.Event()

    def endless(conn: ServerConnection) -> None:
        conn.recv_request_head()
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            while True:
                conn.sock.sendall(b"400\r\n" + b"z" * 1024 + b"\r\n")
        except OSError:
            saw_close.set()

    with raw_server(endless) as srv, poolwatch.Transport() as t:
        resp = t.request("GET", srv.url())
        assert len(resp.read(10000)) == 10000
        resp.close()
        assert resp.outcome == "closed_early"
        assert saw_close.wait(10)
        stats = assert_at_rest(t)
        assert stats.bodies_closed_early == 1
        assert stats.open_connections == 0


def test_scenario_5_one_connection_per_host(server: HTTPServer) -> None:
    """Scenario 5 (R12): max_connections_per_host=1, ten concurrent GETs,
    one connection dialled; the rest queue in FIFO order."""
    with poolwatch.Transport(max_connections_per_host=1) as t:
        start = threading.Barrier(10)
        results: list[bytes] = []

        def get() -> None:
            start.wait()
            results.append(t.request("GET", server.url()).read())

        threads = [threading.Thread(target=get) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [b"hello world!\n"] * 10
        stats = assert_at_rest(t)
        assert stats.connections_opened == 1
        assert stats.requests == 10
    assert server.accepted == 1


def test_scenario_6_idle_timeout(server: HTTPServer) -> None:
    """Scenario 6 (R11): inside the idle timeout requests share a connection;
    after it the pool has closed the connection and dials anew."""
    with poolwatch.Transport(idle_timeout=0.3) as t:
        expired = _events(t, "conn_closed")
        t.request("GET", server.url()).read()
        t.request("GET", server.url()).read()
        assert t.stats().connections_opened == 1
        assert expired.wait(10)
        stats = assert_at_rest(t)
        assert stats.idle_expired == 1
        assert stats.idle_connections == 0
        t.request("GET", server.url()).read()
        assert assert_at_rest(t).connections_opened == 2
    assert server.accepted == 2


def test_scenario_7_server_drops_idle_connection() -> None:
    """Scenario 7 (R3): the server closes an idle connection; the reader
    notices with no request made, and the next request dials anew."""

    idle = threading.Event()

    def one_request(conn: ServerConnection) -> None:
        conn.recv_request_head()
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        idle.wait(10)  # the body read: the connection is idle in the pool

    with raw_server(one_request) as srv, poolwatch.Transport() as t:
        closed = _events(t, "conn_closed")
        assert t.request("GET", srv.url()).read() == b"ok"
        idle.set()
        assert closed.wait(10)
        stats = assert_at_rest(t)
        assert stats.idle_connections == 0
        assert stats.idle_closed_by_server == 1
        assert t.request("GET", srv.url()).read() == b"ok"
        assert assert_at_rest(t).connections_opened == 2


def test_scenario_12_many_204s_then_close_idle(server: HTTPServer) -> None:
    """Scenario 12 (R7, R14): 25 concurrent 204s, all closed, then
    close_idle_connections(): no worker left."""
    with poolwatch.Transport(max_idle_per_host=25) as t:
        start = threading.Barrier(25)

        def get() -> None:
            start.wait()
            with t.request("GET", server.url("/empty")) as resp:
                assert resp.status == 204 and resp.outcome == "no_body"

        threads = [threading.Thread(target=get) for _ in range(25)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        t.close_idle_connections()
        stats = assert_at_rest(t)
        assert stats.workers_alive == 0
        assert stats.bodies_without_content == 25


def _mixed_worker(t: poolwatch.Transport, server: HTTPServer, seed: int) -> Callable[[], None]:
    rng = random.Random(seed)

    def run() -> None:
        for _ in range(15):
            choice = rng.randrange(5)
            resp = t.request("GET", server.url(rng.choice(["/bytes/3000", "/chunked/900"])))
            if choice == 0:
                resp.close()  # closed early
            elif choice == 1:
                resp.read(10)
                resp.close()
            elif choice == 2:
                resp.read()
                # Not while holding resp: with a per-host limit, sixteen threads
                # each holding one connection and asking for another would
                # deadlock, as in Go (R6, R12).
                t.request("GET", server.url("/empty")).close()
            else:
                resp.read()

    return run


@pytest.mark.parametrize("limits", [{}, {"max_connections_per_host": 4, "max_idle_per_host": 2}])
def test_sixteen_threads_share_a_transport(server: HTTPServer, limits: dict[str, int]) -> None:
    """Sixteen threads with mixed drained, early-closed and no-body responses:
    no deadlock, every request answered, R18 invariants at the end."""
    with poolwatch.Transport(**limits) as t:  # type: ignore[arg-type]
        threads = [threading.Thread(target=_mixed_worker(t, server, i)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = assert_at_rest(t)
        assert stats.open_bodies == 0
        assert stats.requests >= 16 * 15
        if limits:
            assert server.accepted <= stats.connections_opened
            assert stats.open_connections <= 2


def test_drain_that_times_out_is_still_an_early_close() -> None:
    """R5: with drain_on_close, a body that stalls past the drain budget is
    closed early (not errored) and its connection torn down."""
    release = threading.Event()

    def stalls(conn: ServerConnection) -> None:
        conn.recv_request_head()
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        release.wait(10)

    with raw_server(stalls) as srv, poolwatch.Transport(drain_on_close=True) as t:
        try:
            resp = t.request("GET", srv.url())
            assert resp.read(3) == b"abc"
            resp.close()
            assert resp.outcome == "closed_early"
            stats = assert_at_rest(t)
            assert (stats.bodies_closed_early, stats.bodies_errored) == (1, 0)
            assert stats.open_connections == 0
        finally:
            release.set()
