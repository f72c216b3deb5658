"""What the adapters' ``close()`` needs, as the stock transports behave:
``reopen()``, a closed transport taking requests again (R14 holds until
then: a closed transport refuses requests), and
``close_idle_connections(retire_active=True)``, connections in use closed
when their responses end instead of going back to the pool."""

from __future__ import annotations

import asyncio
import threading

import pytest

import poolwatch
from tests import async_support
from tests.conftest import assert_at_rest
from tests.servers import HTTPServer, ServerConnection, raw_server


def test_reopen_takes_requests_again(server: HTTPServer) -> None:
    """Closed, it refuses (R14); reopened, it dials anew, with its listeners
    and the stats' totals carried on; an open one is left as it is."""
    names: list[str] = []
    t = poolwatch.Transport()
    t.add_listener(lambda event: names.append(event.name))
    assert t.reopen() is True  # open: nothing to do
    assert t.request("GET", server.url()).read() == b"hello world!\n"
    t.close()
    with pytest.raises(poolwatch.PoolClosed):
        t.request("GET", server.url())
    assert t.reopen() is True
    assert t.request("GET", server.url()).read() == b"hello world!\n"
    stats = assert_at_rest(t)
    assert (stats.requests, stats.connections_opened, stats.connections_closed) == (2, 2, 1)
    assert names.count("connect_done") == 2
    t.close()
    assert t.stats().workers_alive == 0
    assert server.accepted == 2


def test_async_reopen_takes_requests_again(server: HTTPServer) -> None:
    """The same with the async transport."""

    async def main() -> None:
        t = poolwatch.AsyncTransport()
        assert t.reopen() is True
        await (await t.request("GET", server.url())).read()
        await t.aclose()
        with pytest.raises(poolwatch.PoolClosed):
            await t.request("GET", server.url())
        assert t.reopen() is True
        assert await (await t.request("GET", server.url())).read() == b"hello world!\n"
        stats = await async_support.assert_at_rest(t)
        assert (stats.requests, stats.connections_opened, stats.connections_closed) == (2, 2, 1)
        await t.aclose()

    async_support.run(main)
    assert server.accepted == 2


def test_retired_connections_close_when_their_responses_end(server: HTTPServer) -> None:
    """A response being read is read to its end, then its connection is
    closed (R14 leaves it alone without ``retire_active``)."""
    with poolwatch.Transport() as t:
        resp = t.request("GET", server.url("/bytes/100000"))
        idle = t.request("GET", server.url())
        idle.read()
        t.close_idle_connections(retire_active=True)
        assert len(resp.read()) == 100000 and resp.outcome == "drained"
        stats = assert_at_rest(t)
        assert (stats.connections_closed, stats.idle_connections) == (2, 0)
        assert t.request("GET", server.url()).read() == b"hello world!\n"
        assert assert_at_rest(t).idle_connections == 1
    assert server.accepted == 3


def test_async_retired_connections_close_when_their_responses_end(server: HTTPServer) -> None:
    """The same with the async transport."""

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:
            resp = await t.request("GET", server.url("/bytes/100000"))
            await t.close_idle_connections(retire_active=True)
            assert len(await resp.read()) == 100000 and resp.outcome == "drained"
            stats = await async_support.assert_at_rest(t)
            assert (stats.connections_closed, stats.idle_connections) == (1, 0)

    async_support.run(main)


def test_no_reopen_while_a_cut_short_dial_runs(server: HTTPServer) -> None:
    """A dial the close cut short still holds its pool slot: the transport
    reopens only once that dial has ended, so the slot goes back to the
    pool it came from."""
    handshaking = threading.Event()
    hang_up = threading.Event()

    def silent(conn: ServerConnection) -> None:
        hang_up.wait(10)  # no TLS handshake answer, then a hang-up

    t = poolwatch.Transport()
    t.add_listener(lambda e: handshaking.set() if e.name == "tls_handshake_start" else None)
    errors: list[BaseException] = []

    def dial(url: str) -> None:
        try:
            t.request("GET", url)
        except poolwatch.PoolwatchError as exc:
            errors.append(exc)

    with raw_server(silent) as tls_server:
        caller = threading.Thread(target=dial, args=(f"https://127.0.0.1:{tls_server.port}/",))
        caller.start()
        assert handshaking.wait(10)
        t.close()
        assert t.reopen() is False  # the dial still holds its slot
        hang_up.set()
        caller.join(10)
    assert len(errors) == 1
    assert t.reopen() is True
    assert t.request("GET", server.url()).read() == b"hello world!\n"
    stats = assert_at_rest(t)
    assert stats.open_connections == stats.idle_connections == 1
    t.close()


def test_a_connection_being_dialled_is_retired_too(server: HTTPServer) -> None:
    """Retiring while a request's connection is being dialled: the request
    is answered, then that connection closes instead of going idle."""
    with poolwatch.Transport() as t:

        def retire_during_dial(event: poolwatch.Event) -> None:
            if event.name == "connect_start":
                t.close_idle_connections(retire_active=True)

        resp = t.request("GET", server.url(), listener=retire_during_dial)
        assert resp.read() == b"hello world!\n"
        stats = assert_at_rest(t)
        assert (stats.connections_closed, stats.idle_connections) == (1, 0)
        # Requests made afterwards keep their connections as usual.
        assert t.request("GET", server.url()).read() == b"hello world!\n"
        assert assert_at_rest(t).idle_connections == 1


def test_a_request_queued_before_retiring_dials_a_retired_connection(server: HTTPServer) -> None:
    """A request waiting for a connection when the pool is told to retire
    its connections dials once a slot frees, and that connection closes
    after its response too."""
    queued = threading.Event()
    with poolwatch.Transport(max_connections_per_host=1) as t:
        first = t.request("GET", server.url("/bytes/10"))
        bodies: list[bytes] = []

        def second() -> None:
            def on_event(event: poolwatch.Event) -> None:
                if event.name == "pool_wait_start":
                    queued.set()

            bodies.append(t.request("GET", server.url(), listener=on_event).read())

        caller = threading.Thread(target=second)
        caller.start()
        assert queued.wait(10)
        t.close_idle_connections(retire_active=True)
        assert len(first.read()) == 10
        caller.join(10)
        assert bodies == [b"hello world!\n"]
        stats = assert_at_rest(t)
        assert (stats.connections_opened, stats.connections_closed) == (2, 2)
        assert stats.idle_connections == 0


def test_async_a_connection_being_dialled_is_retired_too(server: HTTPServer) -> None:
    """The same with the async transport: the retiring runs while the dial
    waits for its connection."""

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:
            tasks: list[asyncio.Task[None]] = []

            def retire_during_dial(event: poolwatch.Event) -> None:
                if event.name == "connect_start":
                    retire = t.close_idle_connections(retire_active=True)
                    tasks.append(asyncio.get_running_loop().create_task(retire))

            resp = await t.request("GET", server.url(), listener=retire_during_dial)
            assert tasks and tasks[0].done()
            assert await resp.read() == b"hello world!\n"
            stats = await async_support.assert_at_rest(t)
            assert (stats.connections_closed, stats.idle_connections) == (1, 0)

    async_support.run(main)
