"""Cancellation at every phase of a request on the asyncio transport: the
connection is never pooled in an unknown state, no worker task is left, the
pool stays usable, and the connection is closed unless nothing was written.

Each test cancels from a listener at a precise event, so no sleep orders it.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading

import pytest
import trustme

import poolwatch
from tests.async_support import assert_at_rest, run, worker_tasks
from tests.servers import HTTPServer, ServerConnection, raw_server
from tests.tls_support import client_context

pytestmark = pytest.mark.usefixtures("event_loop_kind")
# Python 3.10 cannot tell a pending cancellation apart (no
# Task.cancelling()): there the request may already be with the writer, and
# the connection is closed instead (README, "cancelled while").
NEEDS_CANCELLING = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="needs Task.cancelling() (Python 3.11+)"
)


def _cancel_on(
    transport: poolwatch.AsyncTransport, name: str, task: asyncio.Task[object]
) -> list[str]:
    """Cancel ``task`` when the transport first emits ``name``; returns the
    list of events seen (for assertions)."""
    seen: list[str] = []

    def listener(event: poolwatch.Event) -> None:
        seen.append(event.name)
        if event.name == name and seen.count(name) == 1:
            task.cancel()

    transport.add_listener(listener)
    return seen


async def _request_cancelled_at(
    t: poolwatch.AsyncTransport, name: str, method: str, url: str, **kwargs: object
) -> list[str]:
    current = asyncio.current_task()
    assert current is not None

    async def go() -> None:
        resp = await t.request(method, url, **kwargs)  # type: ignore[arg-type]
        await resp.read()

    task: asyncio.Task[None] = asyncio.ensure_future(go())
    seen = _cancel_on(t, name, task)  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        await task
    return seen


@NEEDS_CANCELLING
def test_cancel_before_anything_written_keeps_the_connection(server: HTTPServer) -> None:
    """Cancelled between getting a reused connection and its first byte: the
    connection goes back to the pool as it was, not closed."""

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:
            await (await t.request("GET", server.url())).read()
            seen = await _request_cancelled_at(t, "got_conn", "GET", server.url())
            assert "wrote_headers" not in seen
            stats = await assert_at_rest(t)
            assert (stats.connections_opened, stats.connections_closed) == (1, 0)
            assert stats.idle_connections == 1
            resp = await t.request("GET", server.url())
            assert await resp.read() == b"hello world!\n"
            assert resp.reused_connection
        assert len(server.requests) == 2

    run(main)


def test_cancel_while_waiting_for_the_pool(server: HTTPServer) -> None:
    """Cancelled in the pool's queue (R12): it leaves the queue, and the
    connection freed later goes to the next request."""

    async def main() -> None:
        async with poolwatch.AsyncTransport(max_connections_per_host=1) as t:
            holder = await t.request("GET", server.url("/bytes/10"))
            await _request_cancelled_at(t, "pool_wait_start", "GET", server.url())
            assert t.stats().waiting_requests == 0
            await holder.read()
            assert await (await t.request("GET", server.url())).read() == b"hello world!\n"
            stats = await assert_at_rest(t)
            assert stats.connections_opened == 1

    run(main)


def test_cancel_while_connecting(server: HTTPServer) -> None:
    """Cancelled during the TCP connect: the slot is given back and no
    socket or task is left (the no-leftovers guard checks sockets)."""

    async def main() -> None:
        async with poolwatch.AsyncTransport(max_connections=1) as t:
            seen = await _request_cancelled_at(t, "connect_start", "GET", server.url())
            assert "connect_done" not in seen
            stats = await assert_at_rest(t)
            assert stats.connections_opened == 0
            assert await (await t.request("GET", server.url())).read() == b"hello world!\n"

    run(main)


def test_cancel_during_tls_handshake() -> None:
    """Cancelled while the TLS handshake waits for a silent server: the
    socket closes and the slot is given back."""
    ca = trustme.CA()
    release = threading.Event()

    def silent(conn: ServerConnection) -> None:
        release.wait(10)

    async def main(url: str) -> None:
        async with poolwatch.AsyncTransport(ssl_context=client_context(ca)) as t:
            await _request_cancelled_at(t, "tls_handshake_start", "GET", url)
            stats = await assert_at_rest(t)
            assert (stats.connections_opened, stats.open_connections) == (0, 0)
        release.set()

    with raw_server(silent) as srv:
        run(lambda: main(srv.url().replace("http://", "https://")))


def test_cancel_while_the_request_is_written() -> None:
    """Cancelled mid-upload: the connection is closed, the server sees it
    go, and the pool dials anew."""
    closed = threading.Event()

    def handler(conn: ServerConnection) -> None:
        head = conn.recv_request_head()
        if b"POST" in head:
            conn.wait_for_close()  # reads the upload until the client goes
            closed.set()
            return
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        conn.wait_for_close()

    def upload() -> object:
        while True:
            yield b"u" * 65536

    async def main(url: str) -> None:
        async with poolwatch.AsyncTransport() as t:
            seen = await _request_cancelled_at(t, "wrote_headers", "POST", url, body=upload())
            assert "wrote_request" not in seen
            stats = await assert_at_rest(t)
            assert (stats.connections_opened, stats.connections_closed) == (1, 1)
            assert await (await t.request("GET", url)).read() == b"ok"

    with raw_server(handler) as srv:
        run(lambda: main(srv.url()))
        assert closed.wait(10)


def test_cancel_while_waiting_for_the_head(server: HTTPServer) -> None:
    """Cancelled after the request was written, before the head: the
    connection is closed (its response would come to nobody)."""

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:
            await _request_cancelled_at(t, "wrote_request", "GET", server.url("/wait/never"))
            stats = await assert_at_rest(t)
            assert (stats.connections_opened, stats.connections_closed) == (1, 1)
            assert stats.requests == 0
            assert await (await t.request("GET", server.url())).read() == b"hello world!\n"
        server.release("never")

    run(main)


def test_cancel_mid_body(server: HTTPServer) -> None:
    """Cancelled while reading an endless body: outcome closed_early, the
    connection closed, both worker tasks gone."""

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:
            resp = await t.request("GET", server.url("/stream"))
            assert len(await resp.read(5000)) == 5000
            reading = asyncio.Event()

            async def read_forever() -> None:
                async for _ in resp.aiter_bytes():
                    reading.set()

            reader = asyncio.ensure_future(read_forever())
            await reading.wait()
            reader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reader
            assert resp.outcome == "closed_early"
            stats = await assert_at_rest(t)
            assert (stats.open_connections, stats.workers_alive) == (0, 0)
            assert worker_tasks() == 0
            await resp.aclose()  # a no-op now
            assert await (await t.request("GET", server.url())).read() == b"hello world!\n"

    run(main)


def test_cancel_as_a_bodyless_response_is_pooled(server: HTTPServer) -> None:
    """Cancelled just as a 204 went back to the pool (R7): the connection,
    already idle, stays open and serves the next request."""

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:
            await _request_cancelled_at(t, "put_idle_conn", "GET", server.url("/empty"))
            stats = await assert_at_rest(t)
            assert (stats.connections_closed, stats.idle_connections) == (0, 1)
            assert stats.bodies_without_content == 1
            resp = await t.request("GET", server.url())
            assert await resp.read() == b"hello world!\n"
            assert resp.reused_connection

    run(main)


def test_anyio_cancel_scopes_catch_their_own_cancellations(server: HTTPServer) -> None:
    """A body read with a read timeout awaits ``asyncio.wait_for``, which on
    Python 3.11 can hand back data from a read that completed as the task
    was cancelled. The cancellation is raised all the same, and when an
    anyio cancel scope made it, the scope must know it for its own:
    ``move_on_after`` swallows it, ``fail_after`` makes it a TimeoutError;
    none escapes to cancel the caller's whole task. Deadlines are spread
    over the read of a 200 KB body, so that some land as a read completes."""
    anyio = pytest.importorskip("anyio")
    rnd = random.Random(5)
    escaped: list[BaseException] = []

    async def main() -> None:
        async with poolwatch.AsyncTransport(read_timeout=10) as t:
            for _ in range(400):
                try:
                    with anyio.move_on_after(rnd.uniform(0, 0.003)):
                        resp = await t.request("GET", server.url("/bytes/200000"))
                        async with resp:
                            await resp.read()
                except asyncio.CancelledError as exc:
                    escaped.append(exc)
                    current = asyncio.current_task()
                    assert current is not None
                    current.uncancel()  # to go on counting
            await assert_at_rest(t)

    run(main)
    assert escaped == []
