"""Faults over TLS: the same documented exceptions, closed connections and
working pool as over plain TCP (R3, R11, R17), with the TLS reader waiting
for the socket in ``poll()`` before it takes a buffer. Each fault runs on
the first connection of a scripted TLS server; later connections answer
``200 ok``."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trustme

import poolwatch
from tests.conftest import assert_at_rest
from tests.eventlog import EventLog
from tests.servers import Reply, Route, ServerConnection, raw_server
from tests.test_errors import (
    WAIT,
    Script,
    assert_names_request,
    assert_pool_still_works,
    reply_then_stall,
    upload,
    watched_transport,
)
from tests.tls_support import TLSServer, client_context, server_context, tls_server

Fault = Callable[[Script, ServerConnection], None]


@contextmanager
def tls_scripted(ca: trustme.CA, fault: Fault, *, tls: bool = True) -> Iterator[str]:
    """A loopback server running a :class:`Script` with ``fault`` behind
    TLS (with ``tls`` false, its first connection never answers the
    handshake); yields its ``https://localhost`` origin."""
    script = Script(fault)
    context = server_context(ca, "localhost")

    def handler(conn: ServerConnection) -> None:
        if conn.index == 1 and not tls:
            script.finished.wait(WAIT)  # a TCP peer that never speaks TLS
            return
        try:
            conn.sock = context.wrap_socket(conn.sock, server_side=True)
        except (ssl.SSLError, OSError):
            return
        script(conn)

    with raw_server(handler) as server:
        try:
            yield f"https://localhost:{server.port}"
        finally:
            script.finished.set()  # before stop(), which joins the handlers


@contextmanager
def tls_fault(
    ca: trustme.CA, fault: Fault, *, tls: bool = True, **options: Any
) -> Iterator[tuple[str, poolwatch.Transport, EventLog]]:
    """:func:`tls_scripted`, and a watched transport trusting ``ca`` with
    ``options``: yields the origin, the transport and its event log."""
    with (
        tls_scripted(ca, fault, tls=tls) as origin,
        watched_transport(ssl_context=client_context(ca), **options) as (transport, log),
    ):
        yield origin, transport, log


def test_handshake_timeout(ca: trustme.CA) -> None:
    """R17: a server that accepts but never answers the handshake raises
    ConnectTimeout naming the request; the pool stays usable."""
    with tls_fault(ca, reply_then_stall(b""), tls=False, connect_timeout=0.2) as (origin, t, _):
        url = origin + "/hello"
        with pytest.raises(poolwatch.ConnectTimeout) as info:
            t.request("GET", url)
        assert_names_request(info.value, "GET", url)
        assert assert_at_rest(t).open_connections == 0
        assert_pool_still_works(t, origin + "/next")


def test_https_proxy_handshake_timeout(ca: trustme.CA) -> None:
    """R17: an https proxy that never answers the handshake: ConnectTimeout
    naming the request."""
    with tls_fault(ca, reply_then_stall(b""), tls=False, connect_timeout=0.2) as (origin, t, _):
        url = "http://localhost:9/via-proxy"  # never reached
        with pytest.raises(poolwatch.ConnectTimeout) as info:
            t.request("GET", url, proxy=origin)
        assert_names_request(info.value, "GET", url)
        assert assert_at_rest(t).open_connections == 0
        assert_pool_still_works(t, origin + "/next")


def test_response_header_timeout(ca: trustme.CA) -> None:
    """R17: no head within the limit raises ResponseHeaderTimeout; the
    connection is closed for it and the next request dials anew."""
    stall = reply_then_stall(b"")
    with tls_fault(ca, stall, response_header_timeout=0.2) as (origin, t, log):
        url = origin + "/slow"
        with pytest.raises(poolwatch.ResponseHeaderTimeout) as info:
            t.request("GET", url)
        assert_names_request(info.value, "GET", url)
        assert log.wait_for("conn_closed")[0]["reason"] == "response_header_timeout"
        assert_pool_still_works(t, origin + "/next")


# Heads (and a body's first bytes) after which the server stalls.
STALLED_HEADS = [
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", id="content-length"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", id="chunked"
    ),
]


@pytest.mark.parametrize("head", STALLED_HEADS)
def test_read_timeout_between_body_bytes(ca: trustme.CA, head: bytes) -> None:
    """R17: a body that stalls mid-way raises ReadTimeout from read(); the
    body is errored, the connection closed, the pool usable."""
    with tls_fault(ca, reply_then_stall(head), read_timeout=0.2) as (origin, t, log):
        url = origin + "/trickle"
        resp = t.request("GET", url)
        assert resp.read(3) == b"abc"
        with pytest.raises(poolwatch.ReadTimeout) as info:
            resp.read()
        assert not isinstance(info.value, poolwatch.ResponseHeaderTimeout)
        assert_names_request(info.value, "GET", url)
        assert resp.outcome == "errored"
        assert log.wait_closed(resp.connection_id) == "errored"
        assert assert_at_rest(t).bodies_errored == 1
        assert_pool_still_works(t, origin + "/next")


# A keep-alive 413 to an upload far larger than the socket buffers hold.
TOO_LARGE = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo large"


def test_early_answer_to_upload(ca: trustme.CA) -> None:
    """R9: a 64 MiB upload answered 413 after its head: the caller gets the
    413 (no write error instead) while the writer is still sending through
    the shared TLS session; the connection is closed, not pooled."""
    with tls_fault(ca, reply_then_stall(TOO_LARGE)) as (origin, t, log):
        with t.request("POST", origin + "/upload", body=upload(64 * 1024 * 1024)) as resp:
            assert resp.status == 413
            assert resp.read() == b"too large"
        assert log.wait_closed(resp.connection_id) == "not_reusable"
        assert log.named("put_idle_conn") == []
        assert_pool_still_works(t, origin + "/next")
        stats = assert_at_rest(t)
        assert (stats.connections_opened, stats.bodies_drained, stats.retries) == (2, 2, 0)


def test_write_timeout_on_unread_upload(ca: trustme.CA) -> None:
    """R17: an upload the server never reads: WriteTimeout naming the
    request once the write limit passes; the pool stays usable."""
    with tls_fault(ca, reply_then_stall(b""), write_timeout=0.2) as (origin, t, log):
        url = origin + "/upload"
        with pytest.raises(poolwatch.WriteTimeout) as info:
            t.request("POST", url, body=upload(64 * 1024 * 1024))
        assert_names_request(info.value, "POST", url)
        assert log.wait_for("conn_closed")[0]["reason"] == "write_error"
        assert_pool_still_works(t, origin + "/next")


def serve_one_then(
    action: Callable[[ServerConnection], object], idle: threading.Event | None = None
) -> Fault:
    """Answer one request, then (once ``idle`` is set, if given: the body
    read, the connection idle) do ``action`` to the connection."""

    def fault(script: Script, conn: ServerConnection) -> None:
        script.serve_ok(conn, count=1)
        if idle is not None:
            idle.wait(WAIT)
        action(conn)

    return fault


def close_notify(conn: ServerConnection) -> None:
    """End TLS cleanly, then close the socket."""
    assert isinstance(conn.sock, ssl.SSLSocket)
    conn.sock.unwrap().close()


def reset(conn: ServerConnection) -> None:
    """Close with a TCP reset."""
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.sock.close()


# Ways a server ends an idle TLS connection.
IDLE_ENDINGS = [
    pytest.param(close_notify, id="close_notify"),
    pytest.param(lambda conn: conn.sock.close(), id="bare-close"),
    pytest.param(reset, id="reset"),
]


@pytest.mark.parametrize("action", IDLE_ENDINGS)
def test_server_closes_idle_connection(
    ca: trustme.CA, action: Callable[[ServerConnection], None]
) -> None:
    """R3: when the server ends an idle TLS connection, its reader takes it
    out of the pool at once, with no request involved."""
    idle = threading.Event()
    with tls_fault(ca, serve_one_then(action, idle)) as (origin, t, log):
        resp = t.request("GET", origin + "/first")
        assert resp.read() == b"ok"
        idle.set()
        assert log.wait_closed(resp.connection_id) == "server_closed_idle"
        stats = assert_at_rest(t)
        assert (stats.open_connections, stats.idle_closed_by_server) == (0, 1)
        assert_pool_still_works(t, origin + "/next")


def test_idle_timeout(ca: trustme.CA) -> None:
    """R11: an idle TLS connection is closed by its reader once the idle
    timeout passes (the reader's wait times out in ``poll()``)."""
    keep_open = serve_one_then(lambda conn: conn.wait_for_close(WAIT))
    with tls_fault(ca, keep_open, idle_timeout=0.2) as (origin, t, log):
        resp = t.request("GET", origin + "/first")
        assert resp.read() == b"ok"
        assert log.wait_closed(resp.connection_id) == "idle_timeout"
        stats = assert_at_rest(t)
        assert (stats.open_connections, stats.idle_expired) == (0, 1)


EARLY: list[bytes] = []  # request heads that came with body bytes


def _continue_then_answer(script: Script, conn: ServerConnection) -> None:
    """Expect: 100-continue: the go-ahead, then the body read, then the
    body back. Heads that came with body bytes go to ``EARLY``."""
    while head := script.read_head(conn):
        if head.split(b"\r\n\r\n", 1)[1]:
            EARLY.append(head)  # the body did not wait for the go-ahead
        conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = head.split(b"\r\n\r\n", 1)[1]
        while len(body) < length:
            body += conn.sock.recv(65536)
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def test_expect_continue(ca: trustme.CA) -> None:
    """R15 over TLS: the body goes after the 100, inside the TLS session the
    reader shares, and the connection is reused."""
    body = bytes(range(256)) * 200
    EARLY.clear()
    with tls_fault(ca, _continue_then_answer, expect_continue_timeout=30) as (origin, t, log):
        for _ in range(2):
            resp = t.request("POST", origin + "/up", headers={"Expect": "100-continue"}, body=body)
            assert resp.read() == body
        assert len(log.named("got_100_continue")) == 2
        assert assert_at_rest(t).connections_opened == 1
    assert EARLY == []


@pytest.mark.parametrize(("size", "saved"), [(20_000, True), (2_000_000, False)])
def test_drain_on_close(ca: trustme.CA, size: int, saved: bool) -> None:
    """R5 over TLS with ``drain_on_close``: a body closed early with little
    left is read to its end and the connection reused; one with more than
    the budget left is torn down."""
    with (
        tls_server(server_context(ca, "localhost")) as server,
        poolwatch.Transport(ssl_context=client_context(ca), drain_on_close=True) as t,
    ):
        resp = t.request("GET", server.url(f"/bytes/{size}"))
        assert resp.read(10) == b"x" * 10
        resp.close()
        assert resp.outcome == "closed_early"
        again = t.request("GET", server.url("/"))
        assert again.read() == b"hello world!\n"
        assert again.reused_connection is saved
        stats = assert_at_rest(t)
        assert stats.bodies_drained_on_close == (1 if saved else 0)


SIZE = 3 * 1024 * 1024 + 7
# Every byte value, so that a piece out of place shows.
PATTERN = bytes(range(256)) * (SIZE // 256) + bytes(range(SIZE % 256))


def _big(request: object, body: bytes) -> Reply:
    return Reply(body=PATTERN)


def _big_chunked(request: object, body: bytes) -> Reply:
    pieces = [PATTERN[i : i + 300_001] for i in range(0, SIZE, 300_001)]
    return Reply(body=iter(pieces), chunked=True)


# Large bodies: with a Content-Length, and chunked in pieces of 300 001.
BIG_ROUTES: dict[str, Route] = {"/big": _big, "/big-chunked": _big_chunked}


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
@pytest.mark.parametrize("how", ["read", "iter_bytes", "read1"])
def test_large_bodies_arrive_intact(ca: trustme.CA, path: str, how: str) -> None:
    """Bodies larger than the 256 KiB reads, with and without chunking,
    arrive byte for byte over one reused connection, whichever way they are
    read."""
    context = client_context(ca)
    with (
        tls_server(server_context(ca, "localhost"), BIG_ROUTES) as server,
        poolwatch.Transport(ssl_context=context) as t,
    ):
        for _ in range(2):
            with t.request("GET", server.url(path)) as resp:
                if how == "read":
                    data = resp.read()
                elif how == "iter_bytes":
                    data = b"".join(resp.iter_bytes())
                else:
                    data = b"".join(iter(lambda: resp.read1(100_000), b""))
            assert data == PATTERN
        stats = assert_at_rest(t)
        assert (stats.connections_opened, stats.bodies_drained) == (1, 2)


def test_close_while_busy(ca: trustme.CA, https_server: TLSServer) -> None:
    """R14 over TLS: ``close()`` while 16 threads are mid-request. Every
    call returns its whole body or raises a PoolwatchError, each thread's
    next call raises PoolClosed, and no worker is left."""
    outcomes: list[str] = []
    lock = threading.Lock()
    busy = threading.Event()
    t = poolwatch.Transport(ssl_context=client_context(ca))

    def caller(index: int) -> None:
        path = "/bytes/100000" if index % 2 else "/chunked/50000"
        while True:
            try:
                got = t.request("GET", https_server.url(path)).read()
                outcome = "ok" if len(got) in (100000, 50000) else f"short {len(got)}"
            except poolwatch.PoolClosed:
                outcome = "closed"
            except poolwatch.PoolwatchError as exc:
                outcome = type(exc).__name__
            with lock:
                outcomes.append(outcome)
                if len(outcomes) >= 100:
                    busy.set()
            if outcome == "closed":
                return

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    try:
        assert busy.wait(WAIT)
    finally:
        t.close()
        for thread in threads:
            thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads)
    assert outcomes.count("closed") == 16
    assert not [o for o in outcomes if o.startswith("short")]
    assert t.stats().workers_alive == 0
