"""Connection lifecycle: dial, idle, drain, early close, leak, no body and
``Connection: close`` (R1, R3-R8), public scenarios 1-4 and 7, and the seed
experiment of BEHAVIOUR.md, against real loopback servers."""

from __future__ import annotations

import logging
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from operator import attrgetter
from typing import Any

import pytest

import poolwatch
from tests.conftest import assert_at_rest
from tests.servers import HTTPServer, Reply, ServerConnection, raw_server

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
HELLO = b"hello world!\n"  # HTTPServer's default body
HELLO5 = b"Content-Length: 5\r\n\r\nhello"  # the rest of a response head, and its body
# Generous for a loopback round trip; every wait asserts its result.
WAIT = 10.0


# -- helpers -----------------------------------------------------------------


class EventLog:
    """A transport listener that keeps every event's name (R19), so a test
    can wait for one instead of sleeping."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, event: poolwatch.Event) -> None:
        with self._cond:
            self.names.append(event.name)
            self._cond.notify_all()

    def wait_for(self, name: str) -> None:
        with self._cond:
            seen = self._cond.wait_for(lambda: name in self.names, WAIT)
        assert seen, f"no {name!r} event in {WAIT}s: {self.names}"


@contextmanager
def watched(**options: Any) -> Iterator[tuple[poolwatch.Transport, EventLog]]:
    """A transport with an :class:`EventLog`, closed at the end."""
    log = EventLog()
    with poolwatch.Transport(**options) as transport:
        transport.add_listener(log)
        yield transport, log


@pytest.fixture
def log(transport: poolwatch.Transport) -> EventLog:
    """An :class:`EventLog` on the ``transport`` fixture."""
    events = EventLog()
    transport.add_listener(events)
    return events


# (open, idle, active, open bodies, workers alive) of a stats snapshot.
gauges = attrgetter(
    "open_connections", "idle_connections", "active_connections", "open_bodies", "workers_alive"
)
NOTHING_OPEN = (0, 0, 0, 0, 0)
ONE_IDLE = (1, 1, 0, 0, 2)


# -- R1: dial ----------------------------------------------------------------


def test_each_dial_starts_two_workers(transport: poolwatch.Transport, server: HTTPServer) -> None:
    """R1: a new connection starts its reader and writer at once, so
    workers_alive rises by 2 per dial; they live on while it is idle."""
    held = []
    for count in (1, 2, 3):
        held.append(transport.request("GET", server.url()))  # unread: the next one dials
        stats = transport.stats()
        assert (stats.connections_opened, stats.workers_alive) == (count, 2 * count)
    alive = {t.name for t in threading.enumerate() if t.is_alive()}
    for resp in held:
        workers = {f"poolwatch-{role}-{resp.connection_id}" for role in ("reader", "writer")}
        assert workers <= alive
        assert resp.read() == HELLO
    assert gauges(assert_at_rest(transport)) == (3, 3, 0, 0, 6)
    transport.close_idle_connections()
    assert gauges(assert_at_rest(transport)) == NOTHING_OPEN
    assert server.accepted == 3


# -- the seed experiment, scenarios 1 and 3 ----------------------------------------


@pytest.mark.parametrize(
    ("read", "close", "expected", "dials"),
    [
        pytest.param(False, False, 11, 5, id="loop1-unread-unclosed"),
        pytest.param(False, True, 1, 5, id="loop2-unread-closed"),
        pytest.param(True, False, 3, 1, id="loop3-read-unclosed"),
        pytest.param(True, True, 3, 1, id="loop4-read-closed"),
    ],
)
def test_seed_experiment(
    server: HTTPServer, read: bool, close: bool, expected: int, dials: int
) -> None:
    """Seed experiment (R4, R5, R6): five GETs in a fresh transport; once it
    settles, workers + 1 (the main thread) is 11, 1, 3, 3 for loops 1-4."""
    with poolwatch.Transport() as t:
        held = []  # loop 1 holds its responses, as Go's goroutines do
        for _ in range(5):
            resp = t.request("GET", server.url())
            if read:
                assert resp.read() == HELLO
            if close:
                resp.close()
            held.append(resp)
        stats = assert_at_rest(t)
        assert stats.workers_alive + 1 == expected
        assert stats.connections_opened == dials
    assert server.accepted == dials


@pytest.mark.parametrize("path", ["/bytes/100", "/chunked/100"])
@pytest.mark.parametrize("close", [True, False], ids=["closed", "never-closed"])
@pytest.mark.parametrize(("keep_alive", "dials"), [(True, 1), (False, 3)])
def test_gets_read_to_the_end(
    server: HTTPServer, path: str, close: bool, keep_alive: bool, dials: int
) -> None:
    """Scenarios 1 and 3 (R4): GETs whose bodies are read to the end, closed
    or never closed, Content-Length or chunked, share one connection; with
    keep-alive disabled each dials."""
    with poolwatch.Transport(keep_alive=keep_alive) as t:
        held = []
        for _ in range(3):
            resp = t.request("GET", server.url(path))
            assert resp.read() == b"x" * 100
            if close:
                resp.close()
            held.append(resp)
        assert [r.outcome for r in held] == ["drained"] * 3
        stats = assert_at_rest(t)
        assert (stats.connections_opened, stats.bodies_drained) == (dials, 3)
        assert stats.reused_requests == 3 - dials
    assert server.connections_seen() == set(range(1, dials + 1))


# -- R3: the reader while idle -----------------------------------------------


class IdleServer:
    """RawServer handler: answers each request with ``200 ok``. On the first
    connection, once its first response is out and the test sets ``go``, it
    sends ``data`` and waits for the client to close; with ``b""`` it hangs
    up, with ``None`` it resets the connection."""

    def __init__(self, data: bytes | None) -> None:
        self.data = data
        self.go = threading.Event()
        self.client_closed: list[bool] = []  # what wait_for_close saw

    def __call__(self, conn: ServerConnection) -> None:
        while conn.recv_request_head():
            conn.sock.sendall(OK)
            if conn.index == 1:
                if self.go.wait(WAIT):
                    self._fault(conn)
                return

    def _fault(self, conn: ServerConnection) -> None:
        if self.data is None:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif self.data:
            conn.sock.sendall(self.data)
            self.client_closed.append(conn.wait_for_close(WAIT))


@pytest.mark.parametrize(
    ("data", "logged"),
    [
        pytest.param(b"", 0, id="fin"),
        pytest.param(None, 0, id="rst"),
        pytest.param(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n", 0, id="408"),
        pytest.param(b"HTTP/1.0 408 Request Timeout\r\n\r\n", 0, id="408-http10"),
        pytest.param(OK, 1, id="stray-response"),
        pytest.param(b"garbage\r\n", 1, id="garbage"),
    ],
)
def test_idle_connection_ended_by_server(
    data: bytes | None, logged: int, caplog: pytest.LogCaptureFixture
) -> None:
    """R3, scenario 7: when the server closes an idle connection, with no
    request made the pool's idle count reaches zero and both workers exit;
    a 408 on it closes it quietly, other unsolicited bytes close it and are
    logged. The next request succeeds on a new connection."""
    caplog.set_level(logging.WARNING, logger="poolwatch")
    script = IdleServer(data)
    with raw_server(script) as server, watched() as (t, log):
        try:
            with t.request("GET", server.url()) as resp:
                assert resp.read() == b"ok"
            assert gauges(t.stats()) == ONE_IDLE
        finally:
            script.go.set()
        log.wait_for("conn_closed")  # fires once both workers have exited
        stats = t.stats()
        assert gauges(stats) == NOTHING_OPEN
        assert stats.requests == 1
        if not data:
            assert stats.idle_closed_by_server == 1
        assert server.wait_handlers_done(1)
        assert script.client_closed == ([True] if data else [])  # the client closed it
        with t.request("GET", server.url()) as resp:
            assert resp.read() == b"ok"
            assert not resp.reused_connection
        assert_at_rest(t)
    assert server.accepted == 2
    warnings = [r for r in caplog.record_tuples if r[0] == "poolwatch" and r[1] >= logging.WARNING]
    assert len(warnings) == logged, warnings


# -- R4: drained means reusable ----------------------------------------------


def pieces(*sizes: int | None) -> Callable[[poolwatch.Response], bytes]:
    """Read with ``read(size)`` for each size; the body stays open until the
    last one."""

    def read(resp: poolwatch.Response) -> bytes:
        data = b""
        for size in sizes[:-1]:
            data += resp.read(size)
            assert resp.outcome is None
        return data + resp.read(sizes[-1])

    return read


@pytest.mark.parametrize(
    ("path", "read"),
    [
        pytest.param("/bytes/1000", pieces(None), id="read()"),
        pytest.param("/bytes/1000", pieces(1000), id="read(n)-exact"),
        pytest.param("/bytes/1000", pieces(5000), id="read(n)-more"),
        pytest.param("/bytes/1000", pieces(400, 400, 200), id="read(n)-pieces"),
        pytest.param("/bytes/600000", pieces(*[100_000] * 6), id="read(n)-large"),
        pytest.param("/chunked/1000", pieces(None), id="chunked-read()"),
        pytest.param("/chunked/1000", pieces(300, 300, 300, None), id="chunked-pieces"),
        pytest.param("/chunked/1000", lambda r: b"".join(r.iter_bytes()), id="chunked-iter"),
    ],
)
def test_read_reaching_the_end_releases_connection(
    transport: poolwatch.Transport,
    server: HTTPServer,
    log: EventLog,
    path: str,
    read: Callable[[poolwatch.Response], bytes],
) -> None:
    """R4, R18: the read that reaches the end of the body puts the connection
    back in the idle pool before it returns (a read(n) returning the last
    byte of a Content-Length body included); a later close() is a no-op."""
    resp = transport.request("GET", server.url(path))
    assert read(resp) == b"x" * int(path.rsplit("/", 1)[1])
    # No close() yet: the read itself finished the body.
    assert resp.outcome == "drained"
    assert log.names[-2:] == ["body_done", "put_idle_conn"]
    stats = transport.stats()
    assert gauges(stats) == ONE_IDLE
    assert (stats.bodies_drained, stats.bodies_closed_early) == (1, 0)
    resp.close()
    assert resp.outcome == "drained"
    assert transport.stats() == stats
    with transport.request("GET", server.url()) as again:
        assert again.read() == HELLO
        assert again.reused_connection


# -- R5: early close means teardown ------------------------------------------


def slow_tail(server: HTTPServer) -> None:
    """Add ``/tail``: a chunked body of 10 bytes at once and 100 more once
    the test releases the gate ``tail``."""

    def body() -> Iterator[bytes]:
        yield b"a" * 10
        server.gate("tail").wait(WAIT)
        yield b"b" * 100

    server.routes["/tail"] = lambda request, data: Reply(body=body(), chunked=True)


@pytest.mark.parametrize(
    ("path", "drain_on_close", "saved"),
    [
        pytest.param("/stream", False, False, id="endless"),
        pytest.param("/stream", True, False, id="endless-over-drain-budget"),
        pytest.param("/bytes/1000", False, False, id="buffered"),
        pytest.param("/bytes/1000", True, True, id="buffered-drain"),
        pytest.param("/tail", False, False, id="on-the-wire"),
        pytest.param("/tail", True, True, id="on-the-wire-drain"),
    ],
)
def test_early_close(server: HTTPServer, path: str, drain_on_close: bool, saved: bool) -> None:
    """R5, scenario 4: close() before the end returns at once and tears the
    connection down, even with the whole body already buffered; the server
    sees it go away. With drain_on_close a small rest is read and discarded
    and the connection reused (outcome closed_early, counted in
    bodies_drained_on_close); an endless body is over the budget."""
    slow_tail(server)
    with poolwatch.Transport(drain_on_close=drain_on_close) as t:
        resp = t.request("GET", server.url(path))
        assert len(resp.read(5)) == 5
        server.release("tail")
        started = time.monotonic()
        resp.close()
        assert time.monotonic() - started < 2.0
        assert resp.outcome == "closed_early"
        if not saved:
            assert server.wait_handlers_done(1), "the server did not see the connection close"
        stats = assert_at_rest(t)
        assert stats.bodies_closed_early == 1
        assert gauges(stats) == (ONE_IDLE if saved else NOTHING_OPEN)
        assert stats.bodies_drained_on_close == saved
        with t.request("GET", server.url()) as again:
            assert again.read() == HELLO
            assert again.reused_connection is saved
    assert server.accepted == 2 - saved


DRAIN_BUDGET = 256 * 1024  # what drain_on_close may read of the rest (README)


@pytest.mark.parametrize(
    ("rest", "saved"),
    [
        pytest.param(DRAIN_BUDGET, True, id="rest-at-the-budget"),
        pytest.param(DRAIN_BUDGET + 1, False, id="rest-over-the-budget"),
    ],
)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_drain_on_close_budget(rest: int, saved: bool, kind: str) -> None:
    """drain_on_close reads at most 256 KiB of the rest: a rest of that
    size is read and the connection saved; a rest its Content-Length shows
    to be larger is not read at all, and the connection is closed."""
    tail_sent = threading.Event()

    def first_bytes_then_rest(conn: ServerConnection) -> None:
        conn.recv_request_head()
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (10 + rest)
        conn.sock.sendall(head + b"a" * 10)
        tail_sent.wait(WAIT)
        conn.sock.sendall(b"b" * rest)
        conn.recv_request_head()  # the next request, on a saved connection
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        conn.wait_for_close()

    async def close_async(url: str) -> tuple[int, bool]:
        async with poolwatch.AsyncTransport(drain_on_close=True) as t:
            resp = await t.request("GET", url)
            assert await resp.read(10) == b"a" * 10
            tail_sent.set()
            await resp.aclose()
            received = resp._exchange.bytes_read
            again = await t.request("GET", url)
            await again.read()
            return received, again.reused_connection

    with raw_server(first_bytes_then_rest) as server:
        if kind == "async":
            from tests import async_support

            received, reused = async_support.run(lambda: close_async(server.url()))
        else:
            with poolwatch.Transport(drain_on_close=True) as t:
                resp = t.request("GET", server.url())
                assert resp.read(10) == b"a" * 10
                tail_sent.set()
                resp.close()
                received = resp._exchange.bytes_read
                again = t.request("GET", server.url())
                again.read()
                reused = again.reused_connection
    assert received == (10 + rest if saved else 10)
    assert reused is saved


# -- R6: leak ----------------------------------------------------------------


def test_unread_response_keeps_connection_checked_out(server: HTTPServer) -> None:
    """R6: a response neither read nor closed keeps its connection checked
    out: active, with live workers, counted against the per-host limit, and
    listed by open_bodies() with the call site that made the request."""
    with poolwatch.Transport(max_connections_per_host=1, pool_timeout=0.2) as t:
        resp, line = t.request("GET", server.url("/bytes/10")), sys._getframe().f_lineno
        assert gauges(assert_at_rest(t)) == (1, 0, 1, 1, 2)
        (body,) = t.open_bodies()
        assert (body.method, body.url, body.status) == ("GET", server.url("/bytes/10"), 200)
        assert body.connection_id == resp.connection_id
        function = "test_unread_response_keeps_connection_checked_out"
        assert body.call_site.frames[0] == (__file__, line, function)
        with pytest.raises(poolwatch.PoolTimeout):
            t.request("GET", server.url())
        assert resp.read() == b"x" * 10
        assert t.open_bodies() == []
        with t.request("GET", server.url()) as again:
            assert again.read() == HELLO
            assert again.connection_id == resp.connection_id
        assert gauges(assert_at_rest(t)) == ONE_IDLE
    assert server.accepted == 1


# -- R7: no body ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("HEAD", "/head", 200), ("GET", "/empty", 204), ("GET", "/304", 304), ("GET", "/zero", 200)],
    ids=["HEAD", "204", "304", "content-length-0"],
)
def test_response_without_body_is_released_before_return(
    transport: poolwatch.Transport,
    server: HTTPServer,
    log: EventLog,
    method: str,
    path: str,
    status: int,
) -> None:
    """R7: HEAD, 204, 304 and Content-Length: 0 responses have no body: the
    connection is back in the pool before the response is returned, and
    never closing the response is fine."""
    server.routes["/304"] = lambda request, data: Reply(status=304)
    head = Reply(headers=[("Content-Length", "10")], body=iter(()))  # announces, never sends
    server.routes["/head"] = lambda request, data: head
    for count in (1, 2):
        resp = transport.request(method, server.url(path))
        assert log.names.count("put_idle_conn") == count
        assert gauges(transport.stats()) == ONE_IDLE
        assert (resp.status, resp.outcome, resp.is_closed) == (status, "no_body", True)
        assert resp.reused_connection is (count == 2)
        assert resp.read() == b""
    stats = assert_at_rest(transport)
    assert (stats.bodies_without_content, stats.requests) == (2, 2)
    assert server.accepted == 1


# -- R8: Connection: close -----------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "response", "hangs_up"),
    [
        pytest.param({}, b"HTTP/1.1 200 OK\r\nConnection: close\r\n" + HELLO5, False, id="server"),
        pytest.param({"Connection": "close"}, b"HTTP/1.1 200 OK\r\n" + HELLO5, False, id="client"),
        pytest.param({}, b"HTTP/1.0 200 OK\r\n" + HELLO5, False, id="http10"),
        pytest.param({}, b"HTTP/1.0 200 OK\r\n\r\nhello", True, id="http10-until-eof"),
    ],
)
def test_connection_close_is_never_pooled(
    headers: dict[str, str], response: bytes, hangs_up: bool
) -> None:
    """R8, scenario 2: when either side says Connection: close, or the
    server speaks HTTP/1.0 without keep-alive, the body is fully readable
    and the client closes the connection after it (even while the server
    keeps it open), never pooling it: a new connection per request, none
    left after close_idle_connections()."""
    client_closed: list[bool] = []

    def handler(conn: ServerConnection) -> None:
        conn.recv_request_head()
        conn.sock.sendall(response)
        if not hangs_up:
            client_closed.append(conn.wait_for_close(WAIT))

    with raw_server(handler) as server, watched() as (t, log):
        for _ in range(2):
            with t.request("GET", server.url(), headers=headers) as resp:
                assert resp.read() == b"hello"
                assert (resp.outcome, resp.reused_connection) == ("drained", False)
        t.close_idle_connections()
        assert server.wait_handlers_done(2)
        stats = assert_at_rest(t)
        assert gauges(stats) == NOTHING_OPEN
        assert stats.connections_opened == 2
        assert "put_idle_conn" not in log.names
    assert server.accepted == 2
    assert client_closed == ([] if hangs_up else [True, True])


def test_settle_returns_once_each_close_is_announced() -> None:
    """When ``settle()`` returns, every connection it waited for has also
    announced its close (``conn_closed``) to the listeners, not only left
    the stats. Here the server ends an idle connection and ``settle()`` is
    called while the listener is inside that announcement: it must wait
    for it to finish (the listener gives up waiting for ``settle()`` after
    a moment, so a wrong order fails instead of hanging)."""
    announcing = threading.Event()
    settled = threading.Event()
    closed: list[str] = []

    def listener(event: poolwatch.Event) -> None:
        if event.name == "conn_closed":
            announcing.set()
            settled.wait(0.2)  # never set first when settle() waits, as it must
            closed.append(str(event["reason"]))

    hang_up = threading.Event()

    def answer_then_hang_up(conn: ServerConnection) -> None:
        conn.recv_request_head()
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        hang_up.wait(10)

    with raw_server(answer_then_hang_up) as server, poolwatch.Transport() as t:
        t.add_listener(listener)
        assert t.request("GET", server.url()).read() == b"ok"  # back in the pool
        hang_up.set()
        assert announcing.wait(10)  # the reader saw the hang-up
        t.settle()
        assert closed == ["server_closed_idle"]
        settled.set()
        assert t.stats().connections_closed == 1
