"""Errors and timeouts on the asyncio transport (R3, R10, R12, R16, R17),
with the sync suite's fault scripts and its table of malformed responses:
each error names the request, closes its connection, and leaves the pool
usable."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

import poolwatch
from tests.async_support import assert_at_rest, event_seen, run
from tests.servers import HTTPServer, ServerConnection, raw_server
from tests.test_errors import (
    reply_then_hang_up,
    reply_then_stall,
    reply_then_wait,
    scripted,
    test_framing_error_closes_connection,
    upload,
)

pytestmark = pytest.mark.usefixtures("event_loop_kind")

# The sync suite's table of malformed responses, reused as it is.
FRAMING_CASES = test_framing_error_closes_connection.pytestmark[0].args[1]


async def _pool_still_works(t: poolwatch.AsyncTransport, url: str) -> poolwatch.AsyncResponse:
    async with await t.request("GET", url) as resp:
        assert resp.status == 200
        assert await resp.read() == b"ok"
        assert not resp.reused_connection
    return resp


@pytest.mark.parametrize(("response", "hangs_up", "phase"), FRAMING_CASES)
def test_framing_error_closes_connection(response: bytes, hangs_up: bool, phase: str) -> None:
    """R10: RemoteProtocolError naming the URL, from request() for a bad head
    or read() for a bad body; outcome errored; the connection is closed."""
    fault = reply_then_hang_up(response) if hangs_up else reply_then_wait(response)

    async def main(url: str, next_url: str) -> None:
        async with poolwatch.AsyncTransport() as t:
            with pytest.raises(poolwatch.RemoteProtocolError, match="/framing"):
                resp = await t.request("GET", url)
                assert phase == "body", f"the bad head was accepted: {resp!r}"
                try:
                    await resp.read()
                finally:
                    assert resp.outcome == "errored"
            stats = await assert_at_rest(t)
            assert (stats.connections_closed, stats.idle_connections, stats.retries) == (1, 0, 0)
            assert stats.bodies_errored == (1 if phase == "body" else 0)
            await _pool_still_works(t, next_url)

    with scripted(fault) as (server, script):
        run(lambda: main(server.url("/framing"), server.url("/next")))
        if not hangs_up:  # the server saw the faulty connection go
            faulty = next(conn for conn in script.conns if conn.index == 1)
            assert faulty.closed_by_peer.wait(10)
    assert server.accepted == 2


def test_write_timeout_on_unread_upload() -> None:
    """R17: an upload the server never reads: WriteTimeout naming the URL."""

    async def main(url: str, next_url: str) -> None:
        async with poolwatch.AsyncTransport(write_timeout=0.2) as t:
            closed = event_seen(t, "conn_closed")
            with pytest.raises(poolwatch.WriteTimeout, match="/upload"):
                await t.request("POST", url, body=upload(64 * 1024 * 1024))
            await closed.wait()
            stats = await assert_at_rest(t)
            assert (stats.connections_closed, stats.requests, stats.retries) == (1, 0, 0)
            await _pool_still_works(t, next_url)

    with scripted(reply_then_stall(b"")) as (server, _):
        run(lambda: main(server.url("/upload"), server.url("/next")))


def test_read_timeout_between_body_bytes() -> None:
    """R17: a body that stalls: ReadTimeout (not a header timeout), errored."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"

    async def main(url: str, next_url: str) -> None:
        async with poolwatch.AsyncTransport(read_timeout=0.2) as t:
            resp = await t.request("GET", url)
            assert await resp.read(3) == b"abc"
            with pytest.raises(poolwatch.ReadTimeout, match="/trickle") as info:
                await resp.read()
            assert not isinstance(info.value, poolwatch.ResponseHeaderTimeout)
            assert resp.outcome == "errored"
            with pytest.raises(poolwatch.ReadError, match="closed"):
                await resp.read()
            assert (await assert_at_rest(t)).bodies_errored == 1
            await _pool_still_works(t, next_url)

    with scripted(reply_then_stall(head)) as (server, _):
        run(lambda: main(server.url("/trickle"), server.url("/next")))


def test_pool_timeout(server: HTTPServer) -> None:
    """R12: a request waiting longer than the pool timeout raises PoolTimeout."""

    async def main() -> None:
        async with poolwatch.AsyncTransport(max_connections=1, pool_timeout=0.1) as t:
            holder = await t.request("GET", server.url("/stream"))
            with pytest.raises(poolwatch.PoolTimeout, match="no connection available"):
                await t.request("GET", server.url())
            await holder.aclose()
            assert await (await t.request("GET", server.url())).read() == b"hello world!\n"
            assert (await assert_at_rest(t)).pool_waits == 1

    run(main)


@pytest.mark.parametrize(
    ("declared", "chunks"),
    [(10, [b"abc"]), (2, [b"abc"])],
    ids=["fewer-bytes-than-declared", "more-bytes-than-declared"],
)
def test_body_length_mismatch(declared: int, chunks: list[bytes]) -> None:
    """R16: a body yielding other than its Content-Length: LocalProtocolError
    naming the URL; the connection is closed."""

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def main(url: str, next_url: str) -> None:
        async with poolwatch.AsyncTransport() as t:
            with pytest.raises(poolwatch.LocalProtocolError, match="/upload"):
                await t.request("PUT", url, {"Content-Length": str(declared)}, body())
            assert (await assert_at_rest(t)).connections_closed == 1
            await _pool_still_works(t, next_url)

    def read_head_then_wait(script: Any, conn: ServerConnection) -> None:
        script.read_head(conn)
        conn.wait_for_close()

    with scripted(read_head_then_wait) as (server, _):
        run(lambda: main(server.url("/upload"), server.url("/next")))


@pytest.mark.parametrize(
    ("sent", "reason"),
    [
        (b"", "server_closed_idle"),
        (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n", "server_timeout_408"),
        (b"surprise", "unsolicited_response"),
    ],
)
def test_idle_connection_ends_at_once(
    sent: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """R3: EOF, a 408 or unsolicited bytes on an idle connection close it at
    once, with no request involved; only the unsolicited bytes are logged."""
    nudge = threading.Event()

    def handler(conn: ServerConnection) -> None:
        conn.recv_request_head()
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        nudge.wait(10)  # until the connection is idle in the pool
        if sent:
            conn.sock.sendall(sent)

    async def main(url: str) -> None:
        async with poolwatch.AsyncTransport() as t:
            closed = event_seen(t, "conn_closed")
            reasons: list[str] = []
            t.add_listener(
                lambda e: reasons.append(e["reason"]) if e.name == "conn_closed" else None
            )
            resp = await t.request("GET", url)
            assert await resp.read() == b"ok"
            assert t.stats().idle_connections == 1
            nudge.set()
            await closed.wait()
            assert reasons == [reason]
            stats = await assert_at_rest(t)
            assert (stats.open_connections, stats.idle_connections) == (0, 0)

    with caplog.at_level(logging.WARNING, "poolwatch"), raw_server(handler) as srv:
        run(lambda: main(srv.url()))
    logged = [r for r in caplog.records if "unsolicited" in r.getMessage()]
    assert len(logged) == (1 if reason == "unsolicited_response" else 0)


def test_async_body_pieces_str_and_of_the_wrong_kind(server: HTTPServer) -> None:
    """An async iterable body's ``str`` pieces are sent UTF-8 encoded, as
    the sync transport sends them; a piece that is neither bytes-like nor
    ``str`` raises TypeError naming its kind (an int is not sent as that
    many zero bytes), the connection is closed and the pool works on."""

    async def pieces(*items: Any) -> AsyncIterator[Any]:
        for item in items:
            yield item

    def until_closed(conn: ServerConnection) -> None:
        conn.recv_request_head()
        conn.wait_for_close(10)

    async def main(upload_url: str) -> None:
        async with poolwatch.AsyncTransport() as t:
            body = pieces("h\u00e9", bytearray(b"l"), memoryview(b"lo"))
            async with await t.request("POST", server.url("/echo"), body=body) as resp:
                assert await resp.read() == "h\u00e9llo".encode()
            with pytest.raises(TypeError, match="pieces must be bytes or str, not int"):
                await t.request("POST", upload_url, body=pieces(b"ok", 5))
            stats = await assert_at_rest(t)
            assert stats.open_connections == 1  # the echo server's, idle
            async with await t.request("GET", server.url()) as resp:
                assert await resp.read() == b"hello world!\n"

    with raw_server(until_closed) as upload_server:
        run(lambda: main(upload_server.url()))
