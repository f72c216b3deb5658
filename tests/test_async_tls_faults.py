"""Faults over TLS on the asyncio transport, with the sync suite's scripted
TLS server (R3, R11, R17): the same exceptions, closed connections and
working pool as over plain TCP."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
import trustme

import poolwatch
from poolwatch._async.connection import _unsent
from poolwatch._async.streams import _BufferedStreamProtocol
from tests.async_support import assert_at_rest, run
from tests.servers import ServerConnection
from tests.test_errors import WAIT, reply_then_stall, upload
from tests.test_tls_faults import (
    BIG_ROUTES,
    IDLE_ENDINGS,
    PATTERN,
    STALLED_HEADS,
    TOO_LARGE,
    close_notify,
    reset,
    serve_one_then,
    tls_scripted,
)
from tests.tls_support import TLSServer, client_context, server_context, tls_server

pytestmark = pytest.mark.usefixtures("event_loop_kind")


class _Closes:
    """The reasons of the transport's ``conn_closed`` events, with a wait
    for the first."""

    def __init__(self, transport: poolwatch.AsyncTransport) -> None:
        self.reasons: list[str] = []
        self._seen = asyncio.Event()
        transport.add_listener(self)

    def __call__(self, event: poolwatch.Event) -> None:
        if event.name == "conn_closed":
            self.reasons.append(str(event["reason"]))
            self._seen.set()

    async def first(self) -> str:
        await asyncio.wait_for(self._seen.wait(), WAIT)
        return self.reasons[0]


def _transport(ca: trustme.CA, **options: Any) -> poolwatch.AsyncTransport:
    return poolwatch.AsyncTransport(ssl_context=client_context(ca), **options)


async def _pool_still_works(t: poolwatch.AsyncTransport, url: str) -> None:
    async with await t.request("GET", url) as resp:
        assert await resp.read() == b"ok"
        assert not resp.reused_connection


def test_handshake_timeout(ca: trustme.CA) -> None:
    """R17: no answer to the handshake: ConnectTimeout naming the URL."""

    async def main(origin: str) -> None:
        async with _transport(ca, connect_timeout=0.2) as t:
            with pytest.raises(poolwatch.ConnectTimeout, match=f"GET {origin}/hello"):
                await t.request("GET", origin + "/hello")
            assert (await assert_at_rest(t)).open_connections == 0
            await _pool_still_works(t, origin + "/next")

    with tls_scripted(ca, reply_then_stall(b""), tls=False) as origin:
        run(lambda: main(origin))


def test_https_proxy_handshake_timeout(ca: trustme.CA) -> None:
    """R17: an https proxy that never answers the handshake: ConnectTimeout."""
    url = "http://localhost:9/via-proxy"  # never reached

    async def main(origin: str) -> None:
        async with _transport(ca, connect_timeout=0.2) as t:
            with pytest.raises(poolwatch.ConnectTimeout, match=f"GET {url}"):
                await t.request("GET", url, proxy=origin)
            assert (await assert_at_rest(t)).open_connections == 0
            await _pool_still_works(t, origin + "/next")

    with tls_scripted(ca, reply_then_stall(b""), tls=False) as origin:
        run(lambda: main(origin))


def test_response_header_timeout(ca: trustme.CA) -> None:
    """R17: no head within the limit: ResponseHeaderTimeout; closed for it."""

    async def main(origin: str) -> None:
        async with _transport(ca, response_header_timeout=0.2) as t:
            closes = _Closes(t)
            with pytest.raises(poolwatch.ResponseHeaderTimeout, match=f"GET {origin}/slow"):
                await t.request("GET", origin + "/slow")
            assert await closes.first() == "response_header_timeout"
            await _pool_still_works(t, origin + "/next")

    with tls_scripted(ca, reply_then_stall(b"")) as origin:
        run(lambda: main(origin))


@pytest.mark.parametrize("head", STALLED_HEADS)
def test_read_timeout_between_body_bytes(ca: trustme.CA, head: bytes) -> None:
    """R17: a body that stalls: ReadTimeout from read(), outcome errored."""

    async def main(origin: str) -> None:
        async with _transport(ca, read_timeout=0.2) as t:
            resp = await t.request("GET", origin + "/trickle")
            assert await resp.read(3) == b"abc"
            with pytest.raises(poolwatch.ReadTimeout, match="/trickle") as info:
                await resp.read()
            assert not isinstance(info.value, poolwatch.ResponseHeaderTimeout)
            assert resp.outcome == "errored"
            assert (await assert_at_rest(t)).bodies_errored == 1
            await _pool_still_works(t, origin + "/next")

    with tls_scripted(ca, reply_then_stall(head)) as origin:
        run(lambda: main(origin))


def test_early_answer_to_upload(ca: trustme.CA) -> None:
    """R9: a 64 MiB upload answered 413: the caller gets the 413, the
    connection is closed, not pooled."""

    async def main(origin: str) -> None:
        async with _transport(ca) as t:
            closes = _Closes(t)
            async with await t.request(
                "POST", origin + "/upload", body=upload(64 * 1024 * 1024)
            ) as resp:
                assert resp.status == 413
                assert await resp.read() == b"too large"
            assert await closes.first() == "not_reusable"
            await _pool_still_works(t, origin + "/next")
            stats = await assert_at_rest(t)
            assert (stats.connections_opened, stats.bodies_drained, stats.retries) == (2, 2, 0)

    with tls_scripted(ca, reply_then_stall(TOO_LARGE)) as origin:
        run(lambda: main(origin))


def test_write_timeout_on_unread_upload(ca: trustme.CA) -> None:
    """R17: an upload the server never reads: WriteTimeout naming the URL."""

    async def main(origin: str) -> None:
        async with _transport(ca, write_timeout=0.2) as t:
            closes = _Closes(t)
            url = origin + "/upload"
            with pytest.raises(poolwatch.WriteTimeout, match=f"POST {url}"):
                await t.request("POST", url, body=upload(64 * 1024 * 1024))
            assert await closes.first() == "write_error"
            await _pool_still_works(t, origin + "/next")

    with tls_scripted(ca, reply_then_stall(b"")) as origin:
        run(lambda: main(origin))


@pytest.mark.parametrize("action", IDLE_ENDINGS)
def test_server_closes_idle_connection(
    ca: trustme.CA, action: Callable[[ServerConnection], None]
) -> None:
    """R3: the server ends an idle TLS connection: out of the pool at once."""
    idle = threading.Event()

    async def main(origin: str) -> None:
        async with _transport(ca) as t:
            closes = _Closes(t)
            assert await (await t.request("GET", origin + "/first")).read() == b"ok"
            idle.set()
            assert await closes.first() == "server_closed_idle"
            stats = await assert_at_rest(t)
            assert (stats.open_connections, stats.idle_closed_by_server) == (0, 1)
            await _pool_still_works(t, origin + "/next")

    with tls_scripted(ca, serve_one_then(action, idle)) as origin:
        run(lambda: main(origin))


@pytest.mark.parametrize("action", [close_notify, reset], ids=["close_notify", "reset"])
def test_unsent_bytes_of_a_lost_tls_connection(
    ca: trustme.CA, action: Callable[[ServerConnection], None]
) -> None:
    """The writer's count of unsent bytes on a TLS connection the server
    ended: a count, or ConnectionResetError (the connection is closed).
    Python 3.10's TLS transport raised AttributeError there while it still
    said it was not closing, and a request sent on such a connection failed
    with it, outside the documented errors."""

    async def main(origin: str) -> None:
        port = int(origin.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection(
            "localhost", port, ssl=client_context(ca), server_hostname="localhost"
        )
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        try:
            assert (await reader.read()).endswith(b"ok")
            await writer.wait_closed()  # the connection is lost
        except ConnectionResetError:
            pass
        try:
            unsent = _unsent(writer.transport)
        except ConnectionResetError:
            unsent = 0
        assert unsent >= 0
        writer.close()

    with tls_scripted(ca, serve_one_then(action)) as origin:
        run(lambda: main(origin))


def test_idle_timeout(ca: trustme.CA) -> None:
    """R11: an idle TLS connection is closed once the idle timeout passes."""

    async def main(origin: str) -> None:
        async with _transport(ca, idle_timeout=0.2) as t:
            closes = _Closes(t)
            assert await (await t.request("GET", origin + "/first")).read() == b"ok"
            assert await closes.first() == "idle_timeout"
            stats = await assert_at_rest(t)
            assert (stats.open_connections, stats.idle_expired) == (0, 1)

    keep_open = serve_one_then(lambda conn: conn.wait_for_close(WAIT))
    with tls_scripted(ca, keep_open) as origin:
        run(lambda: main(origin))


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="on 3.10 a cancellation as the wait completes can be lost (README)",
)
def test_cancelled_as_the_handshake_completes(
    ca: trustme.CA, https_server: TLSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request cancelled after its TLS handshake completed but before the
    connect returned: asyncio closes that TLS transport gracefully, which
    keeps its socket registered with the loop. The transport is aborted, so
    that the next socket, which gets the same descriptor number, connects
    (it raised RuntimeError: "File descriptor ... is used by transport")."""
    made = _BufferedStreamProtocol.connection_made
    victims: list[asyncio.Task[Any]] = []

    def made_then_cancel(protocol: Any, transport: asyncio.BaseTransport) -> None:
        made(protocol, transport)
        if victims:
            victims.pop().cancel()  # before the connect's task resumes

    async def main(url: str) -> None:
        async with _transport(ca) as t:
            monkeypatch.setattr(_BufferedStreamProtocol, "connection_made", made_then_cancel)
            task = asyncio.ensure_future(t.request("GET", url))
            victims.append(task)
            with pytest.raises(asyncio.CancelledError):
                await task
            monkeypatch.undo()
            for _ in range(3):
                async with await t.request("GET", url) as resp:
                    assert await resp.read() == b"hello world!\n"
            stats = await assert_at_rest(t)
            assert (stats.connections_opened, stats.requests) == (1, 3)

    run(lambda: main(https_server.url("/")))


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
@pytest.mark.parametrize("how", ["read", "aiter_bytes", "read1"])
def test_large_bodies_arrive_intact(ca: trustme.CA, path: str, how: str) -> None:
    """3 MiB bodies arrive byte for byte over one reused connection."""

    async def read(resp: poolwatch.AsyncResponse) -> bytes:
        if how == "read":
            return await resp.read()
        if how == "aiter_bytes":
            return b"".join([piece async for piece in resp.aiter_bytes()])
        pieces = []
        while piece := await resp.read1(100_000):
            pieces.append(piece)
        return b"".join(pieces)

    async def main(url: str) -> None:
        async with _transport(ca) as t:
            for _ in range(2):
                async with await t.request("GET", url) as resp:
                    assert await read(resp) == PATTERN
            stats = await assert_at_rest(t)
            assert (stats.connections_opened, stats.bodies_drained) == (1, 2)

    with tls_server(server_context(ca, "localhost"), BIG_ROUTES) as server:
        run(lambda: main(server.url(path)))


def test_close_while_busy(ca: trustme.CA, https_server: TLSServer) -> None:
    """R14 over TLS: ``aclose()`` while 32 tasks are mid-request. Every call
    returns its whole body or raises a PoolwatchError, each task's next
    call raises PoolClosed, and no worker task is left."""
    outcomes: list[str] = []

    async def main() -> None:
        t = _transport(ca)
        busy = asyncio.Event()

        async def caller(index: int) -> None:
            path = "/bytes/100000" if index % 2 else "/chunked/50000"
            while True:
                try:
                    resp = await t.request("GET", https_server.url(path))
                    got = await resp.read()
                    outcome = "ok" if len(got) in (100000, 50000) else f"short {len(got)}"
                except poolwatch.PoolClosed:
                    outcome = "closed"
                except poolwatch.PoolwatchError as exc:
                    outcome = type(exc).__name__
                outcomes.append(outcome)
                if len(outcomes) >= 100:
                    busy.set()
                if outcome == "closed":
                    return

        tasks = [asyncio.create_task(caller(i)) for i in range(32)]
        try:
            await asyncio.wait_for(busy.wait(), WAIT)
        finally:
            await t.aclose()
            _, pending = await asyncio.wait(tasks, timeout=WAIT)
        assert not pending
        assert t.stats().workers_alive == 0

    run(main)
    assert outcomes.count("closed") == 32
    assert not [o for o in outcomes if o.startswith("short")]
