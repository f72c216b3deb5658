"""Limits on the asyncio transport (R12, R15, R17): a wait for a future the
transport owns is one timer that resolves it, a write or connect limit one
timer on the waiting task; none starts a task."""

from __future__ import annotations

import asyncio
import sys

import pytest

import poolwatch
from poolwatch._async.exchange import wait_or_expire, within
from tests.async_support import assert_at_rest, run
from tests.servers import HTTPServer
from tests.test_errors import reply_then_stall, scripted

pytestmark = pytest.mark.usefixtures("event_loop_kind")

# Loop turns for a task to reach a wait that needs no I/O first.
_TURNS = 10
_STALLED_BODY = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"


def test_wait_or_expire_resolved_first() -> None:
    """A future resolved before the limit: True, and its result stands."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        loop.call_soon(future.set_result, None)
        assert await wait_or_expire(future, 30.0) is True
        assert future.done() and not future.cancelled()
        done: asyncio.Future[None] = loop.create_future()
        done.set_result(None)
        assert await wait_or_expire(done, 0.0) is True

    run(main)


def test_wait_or_expire_limit_passes() -> None:
    """Nobody resolves it: False once the limit passes, the future done."""

    async def main() -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        assert await wait_or_expire(future, 0.01) is False
        assert future.done()

    run(main)


def test_wait_or_expire_cancelled() -> None:
    """A cancelled wait raises CancelledError and cancels the future."""

    async def main() -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = asyncio.ensure_future(wait_or_expire(future, 30.0))
        for _ in range(_TURNS):
            await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert future.cancelled()

    run(main)


def test_within() -> None:
    """No limit or a limit not reached: the result; a limit reached:
    TimeoutError, with the task not left cancelling."""

    async def slow() -> str:
        await asyncio.get_running_loop().create_future()  # never resolved
        return "never"

    async def value() -> str:
        return "value"

    async def main() -> None:
        assert await within(None, value()) == "value"
        assert await within(30.0, value()) == "value"
        with pytest.raises(asyncio.TimeoutError):
            await within(0.01, slow())
        if sys.version_info >= (3, 11):
            task = asyncio.current_task()
            assert task is not None and task.cancelling() == 0

    run(main)


def test_read_under_a_limit_cancelled() -> None:
    """R17: a body read under a read limit, cancelled, raises CancelledError,
    not ReadTimeout; the body ends closed early and the connection closes."""

    async def main(url: str) -> None:
        async with poolwatch.AsyncTransport(read_timeout=30) as t:
            resp = await t.request("GET", url)
            reading = asyncio.ensure_future(resp.read())
            for _ in range(_TURNS):
                await asyncio.sleep(0)
            assert not reading.done()
            reading.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reading
            assert resp.outcome == "closed_early"
            stats = await assert_at_rest(t)
            assert (stats.bodies_closed_early, stats.connections_closed) == (1, 1)

    with scripted(reply_then_stall(_STALLED_BODY)) as (server, _):
        run(lambda: main(server.url("/stall")))


def test_read_timeout_leaves_caller_uncancelled() -> None:
    """R17: after a ReadTimeout the caller's task carries no cancellation,
    and goes on awaiting."""

    async def main(url: str) -> None:
        async with poolwatch.AsyncTransport(read_timeout=0.05) as t:
            resp = await t.request("GET", url)
            with pytest.raises(poolwatch.ReadTimeout, match="/stall"):
                await resp.read()
            if sys.version_info >= (3, 11):
                task = asyncio.current_task()
                assert task is not None and task.cancelling() == 0
            await asyncio.sleep(0)
            assert resp.outcome == "errored"
            assert (await assert_at_rest(t)).bodies_errored == 1

    with scripted(reply_then_stall(_STALLED_BODY)) as (server, _):
        run(lambda: main(server.url("/stall")))


def test_pool_wait_served_before_its_limit(server: HTTPServer) -> None:
    """R12: a waiter served within the pool limit gets the connection."""

    async def main() -> None:
        async with poolwatch.AsyncTransport(max_connections=1, pool_timeout=30) as t:
            holder = await t.request("GET", server.url("/stream"))
            waiting = asyncio.ensure_future(t.request("GET", server.url()))
            for _ in range(_TURNS):
                await asyncio.sleep(0)
            assert not waiting.done()
            await holder.aclose()
            resp = await waiting
            assert await resp.read() == b"hello world!\n"
            stats = await assert_at_rest(t)
            assert (stats.pool_waits, stats.connections_opened) == (1, 2)

    run(main)
