"""``101 Switching Protocols``: as Go's transport does, the connection of a
request that asked to upgrade (a WebSocket handshake, say) leaves the pool
and its workers, and is handed to the caller (``Response.upgraded``; over
httpx, the ``network_stream`` extension, as httpcore gives it)."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import httpcore
import httpx
import pytest
import trustme

import poolwatch
from tests import async_support
from tests.conftest import assert_at_rest
from tests.eventlog import WAIT, EventLog
from tests.servers import RawServer, ServerConnection, raw_server
from tests.tls_support import client_context, server_context

UPGRADE = {"Upgrade": "echo", "Connection": "Upgrade"}
SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"


class EchoServer:
    """Answers a request asking to upgrade with a 101 and ``hello`` (sent
    with the head), then echoes what it gets in capitals until the client
    closes or sends ``bye`` (then hangs up); answers any other request with
    ``200 ok``."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.context = context
        self.ended = threading.Event()

    def __call__(self, conn: ServerConnection) -> None:
        if self.context is not None:
            conn.sock = self.context.wrap_socket(conn.sock, server_side=True)
        while head := conn.recv_request_head():
            if b"upgrade: echo" not in head.lower():
                conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                continue
            conn.sock.sendall(SWITCHED + b"hello")
            try:
                while (data := conn.sock.recv(65536)) and data != b"bye":
                    conn.sock.sendall(data.upper())
            except OSError:
                pass
            self.ended.set()
            return


@contextmanager
def echo_server(context: ssl.SSLContext | None = None) -> Iterator[tuple[RawServer, EchoServer]]:
    echo = EchoServer(context)
    with raw_server(echo) as server:
        yield server, echo


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_the_connection_is_handed_over(scheme: str, ca: trustme.CA) -> None:
    """The 101 counts as a response without a body; the connection is
    closed for the pool (reason ``protocol_switched``) and its workers exit,
    but its socket stays open for the caller, bytes that came with the head
    first; closing the response closes it."""
    context = server_context(ca, "localhost") if scheme == "https" else None
    log = EventLog()
    with (
        echo_server(context) as (server, echo),
        poolwatch.Transport(ssl_context=client_context(ca)) as t,
    ):
        t.add_listener(log)
        url = f"{scheme}://localhost:{server.port}/socket"
        resp = t.request("GET", url, headers=UPGRADE)
        assert (resp.status, resp.outcome) == (101, "no_body")
        stream = resp.upgraded
        assert stream is not None
        assert log.wait_closed(resp.connection_id) == "protocol_switched"
        stats = assert_at_rest(t)
        assert (stats.requests, stats.bodies_without_content) == (1, 1)
        assert (stats.open_connections, stats.connections_closed, stats.workers_alive) == (0, 1, 0)
        assert stream.read(3) == b"hel"
        assert stream.read() == b"lo"
        stream.write(b"ping")
        assert stream.read(timeout=WAIT) == b"PING"
        assert stream.get_extra_info("server_addr")[1] == server.port
        tls = stream.get_extra_info("ssl_object")
        assert (tls is not None) == (scheme == "https")
        resp.close()  # the stream is its body: closed with it
        assert echo.ended.wait(WAIT)
        stream.close()  # again: nothing
        assert stream.get_extra_info("server_addr") is None
        # The pool goes on, on a new connection.
        with t.request("GET", url) as after:
            assert after.read() == b"ok"
            assert after.upgraded is None
        assert t.stats().connections_opened == 2


def test_read_timeout_end_and_write_error() -> None:
    with echo_server() as (server, echo), poolwatch.Transport() as t:
        url = server.origin + "/socket"
        stream = t.request("GET", url, headers=UPGRADE).upgraded
        assert stream is not None
        with stream:
            assert stream.read() == b"hello"
            with pytest.raises(poolwatch.ReadTimeout, match=r"within 0\.05s") as info:
                stream.read(timeout=0.05)
            assert info.value.url == url
            stream.write(b"bye")
            assert echo.ended.wait(WAIT)
            assert stream.read(timeout=WAIT) == b""
            with pytest.raises(poolwatch.WriteError, match="writing the switched connection"):
                for _ in range(100):  # the first may fit in the socket's buffer
                    stream.write(b"x" * 65536, timeout=WAIT)


FIRST = bytes(range(256)) * 40  # 10 240 bytes sent with the 101 head


def _switch_with_bytes(conn: ServerConnection) -> None:
    conn.recv_request_head()
    conn.sock.sendall(SWITCHED + FIRST)
    conn.recv_request_head()  # until the client closes


def test_small_reads_of_what_came_with_the_head_slice_it_in_place() -> None:
    """A WebSocket client reads two-byte frame headers: the bytes that came
    with the 101 head are handed out by offset, not copied again for each
    read (which made reading them quadratic), and every byte comes once."""
    with raw_server(_switch_with_bytes) as server, poolwatch.Transport() as t:
        resp = t.request("GET", server.origin + "/socket", headers=UPGRADE)
        stream = resp.upgraded
        assert stream is not None
        with stream:
            taken = [stream.read(2)]
            first = stream._first
            assert len(first) > 1000  # came with the head (all of it, as a rule)
            while len(taken) < 100:
                taken.append(stream.read(2))
                assert stream._first is first
            taken.append(stream.read(1))
            while sum(map(len, taken)) < len(FIRST):
                taken.append(stream.read(65536, timeout=WAIT))
            assert b"".join(taken) == FIRST
            assert not stream._first


def test_an_unasked_switch_is_still_an_error() -> None:
    """A 101 to a request without Upgrade is a protocol error (R10)."""

    def switch_anyway(conn: ServerConnection) -> None:
        conn.recv_request_head()
        conn.sock.sendall(SWITCHED)
        conn.wait_for_close()

    with raw_server(switch_anyway) as server, poolwatch.Transport() as t:
        with pytest.raises(poolwatch.RemoteProtocolError, match="bad response"):
            t.request("GET", server.origin + "/")
        assert assert_at_rest(t).connections_closed == 1


class SwitchBeforeTheBody:
    """Answers 101 to the head of a request and reads nothing more until
    told to (:attr:`done`), then waits for the client to hang up."""

    def __init__(self) -> None:
        self.done = threading.Event()

    def __call__(self, conn: ServerConnection) -> None:
        conn.recv_request_head()
        conn.sock.sendall(SWITCHED)  # the request's body is still to come
        self.done.wait(WAIT)
        conn.wait_for_close()


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "bytes"])
def test_a_switch_before_the_request_was_sent_is_an_error(streamed: bool) -> None:
    """A 101 while the upload is still going out cannot be handed over: the
    new protocol would start in the middle of the request's body. The
    request fails with a protocol error naming it, the connection is closed
    (not switched), and the pool keeps working. The upload is held back by
    the caller (streamed), or by the server not reading it (bytes larger
    than the sockets' buffers)."""
    more = threading.Event()

    def upload() -> Iterator[bytes]:
        yield b"first"
        more.wait(WAIT)  # held back until the response has been seen
        yield b"second"

    body = upload() if streamed else b"x" * (64 << 20)
    log = EventLog()
    switch = SwitchBeforeTheBody()
    with raw_server(switch) as server, poolwatch.Transport() as t:
        t.add_listener(log)
        with pytest.raises(poolwatch.RemoteProtocolError, match="before the request was sent"):
            t.request("POST", server.origin + "/socket", headers=UPGRADE, body=body)
        more.set()
        switch.done.set()
        stats = assert_at_rest(t)
        assert (stats.connections_closed, stats.open_connections) == (1, 0)
        [closed] = log.wait_for("conn_closed")
        assert closed["reason"] != "protocol_switched"
        with echo_server() as (other, _), t.request("GET", other.origin + "/") as after:
            assert after.read() == b"ok"


@pytest.mark.usefixtures("event_loop_kind")
def test_async_switch_before_the_request_was_sent_is_an_error() -> None:
    more = asyncio.Event()

    async def upload() -> AsyncIterator[bytes]:
        yield b"first"
        await asyncio.wait_for(more.wait(), WAIT)
        yield b"second"

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:
            with pytest.raises(poolwatch.RemoteProtocolError, match="before the request was sent"):
                await t.request("POST", server.origin + "/socket", headers=UPGRADE, body=upload())
            more.set()
            switch.done.set()
            stats = await async_support.assert_at_rest(t)
            assert (stats.connections_closed, stats.open_connections) == (1, 0)

    switch = SwitchBeforeTheBody()
    with raw_server(switch) as server:
        async_support.run(main)


@pytest.mark.usefixtures("event_loop_kind")
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_async_transport_hands_the_connection_over(scheme: str, ca: trustme.CA) -> None:
    context = server_context(ca, "localhost") if scheme == "https" else None

    async def main() -> None:
        async with poolwatch.AsyncTransport(ssl_context=client_context(ca)) as t:
            url = f"{scheme}://localhost:{server.port}/socket"
            resp = await t.request("GET", url, headers=UPGRADE)
            assert (resp.status, resp.outcome) == (101, "no_body")
            stream = resp.upgraded
            assert stream is not None
            stats = await async_support.assert_at_rest(t)
            assert (stats.requests, stats.bodies_without_content) == (1, 1)
            assert (stats.open_connections, stats.connections_closed) == (0, 1)
            assert await stream.read(3) == b"hel"
            assert await stream.read() == b"lo"
            await stream.write(b"ping")
            assert await stream.read(timeout=WAIT) == b"PING"
            with pytest.raises(poolwatch.ReadTimeout, match="nothing to read"):
                await stream.read(timeout=0.05)
            assert stream.get_extra_info("server_addr")[1] == server.port
            assert (stream.get_extra_info("ssl_object") is not None) == (scheme == "https")
            await resp.aclose()  # the stream is its body: closed with it
            assert stream.get_extra_info("server_addr") is None
            with pytest.raises(poolwatch.ReadError, match="closed"):
                await stream.read()  # as the sync stream: not an end of stream
            async with await t.request("GET", url) as after:
                assert await after.read() == b"ok"
                assert after.upgraded is None

    with echo_server(context) as (server, echo):
        async_support.run(main)
        assert echo.ended.wait(WAIT)


def test_httpx_network_stream_as_stock() -> None:
    """Over httpx the switched connection is the ``network_stream``
    extension, raising httpcore's errors, as with httpx's own transport."""
    seen = {}
    for name, transport in (
        ("stock", httpx.HTTPTransport()),
        ("poolwatch", poolwatch.HTTPXTransport()),
    ):
        with echo_server() as (server, echo), httpx.Client(transport=transport) as client:
            with client.stream("GET", server.origin + "/", headers=UPGRADE) as resp:
                stream = resp.extensions["network_stream"]
                first = stream.read(5)
                stream.write(b"abc")
                echoed = stream.read(100)
                with pytest.raises(httpcore.ReadTimeout):
                    stream.read(100, timeout=0.05)
                port = stream.get_extra_info("server_addr")[1]
                stream.close()
            assert echo.ended.wait(WAIT)
            seen[name] = (resp.status_code, first, echoed, port == server.port)
    assert seen["poolwatch"] == seen["stock"] == (101, b"hello", b"ABC", True)


def websocket_echo(conn: ServerConnection) -> None:
    """A WebSocket server (wsproto) that echoes text messages."""
    wsproto = pytest.importorskip("wsproto")
    events = pytest.importorskip("wsproto.events")
    ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    while data := conn.sock.recv(65536):
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, events.Request):
                conn.sock.sendall(ws.send(events.AcceptConnection()))
            elif isinstance(event, events.TextMessage):
                conn.sock.sendall(ws.send(events.TextMessage(data="echo: " + event.data)))
            elif isinstance(event, events.CloseConnection):
                conn.sock.sendall(ws.send(event.response()))
                return


def test_a_websocket_client_over_the_httpx_adapter() -> None:
    """httpx-ws, a WebSocket client for httpx, runs over poolwatch's
    transport as over httpx's own."""
    httpx_ws = pytest.importorskip("httpx_ws")

    adapter = poolwatch.HTTPXTransport()
    with raw_server(websocket_echo) as server, httpx.Client(transport=adapter) as client:
        with httpx_ws.connect_ws(server.origin + "/ws", client) as ws:
            ws.send_text("hi")
            assert ws.receive_text() == "echo: hi"
        stats = assert_at_rest(adapter.transport)
        assert (stats.bodies_without_content, stats.open_connections) == (1, 0)


def test_a_switch_through_requests_is_closed_with_the_response() -> None:
    """requests gives no way to the switched connection: reading the
    response (empty) closes it, so no socket is left open."""
    requests = pytest.importorskip("requests")
    adapter = poolwatch.RequestsAdapter()
    with echo_server() as (server, echo), requests.Session() as session:
        session.mount("http://", adapter)
        resp = session.get(server.origin + "/socket", headers=UPGRADE)
        assert (resp.status_code, resp.content) == (101, b"")
        assert echo.ended.wait(WAIT)
        stats = assert_at_rest(adapter.transport)
        assert (stats.bodies_without_content, stats.open_connections) == (1, 0)


@pytest.mark.usefixtures("event_loop_kind")
def test_an_async_websocket_client_over_the_httpx_adapter() -> None:
    httpx_ws = pytest.importorskip("httpx_ws")

    async def main() -> None:
        adapter = poolwatch.AsyncHTTPXTransport()
        async with httpx.AsyncClient(transport=adapter) as client:
            async with httpx_ws.aconnect_ws(server.origin + "/ws", client) as ws:
                await ws.send_text("hi")
                assert await ws.receive_text() == "echo: hi"
            stats = await async_support.assert_at_rest(adapter.transport)
            assert (stats.bodies_without_content, stats.open_connections) == (1, 0)

    with raw_server(websocket_echo) as server:
        async_support.run(main)


def test_a_switched_connection_outlives_its_transport() -> None:
    """It is no longer the pool's: closing the transport leaves it open."""
    with echo_server() as (server, echo):
        t = poolwatch.Transport()
        resp = t.request("GET", server.origin + "/socket", headers=UPGRADE)
        t.close()
        stream = resp.upgraded
        assert stream is not None
        with stream:
            assert stream.read() == b"hello"
            stream.write(b"still here")
            assert stream.read(timeout=WAIT) == b"STILL HERE"
        assert echo.ended.wait(WAIT)
