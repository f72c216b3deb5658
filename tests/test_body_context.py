"""A streamed request body is the caller's code: its iterator runs in the
context variables of the caller that made the request, also on a
connection another caller opened (the writer that sends it is the
connection's); and the connection keeps nothing of it once done."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import io
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator

import pytest

import poolwatch
from tests.async_support import assert_at_rest as async_assert_at_rest
from tests.async_support import run
from tests.conftest import assert_at_rest
from tests.servers import HTTPServer

TENANT: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="nobody")


def _pieces(seen: list[str]) -> Iterator[bytes]:
    seen.append(TENANT.get())
    yield b"part1-"
    seen.append(TENANT.get())
    yield b"part2"


async def _async_pieces(seen: list[str]) -> AsyncIterator[bytes]:
    for piece in _pieces(seen):
        yield piece


def test_a_body_iterator_sees_its_callers_context(server: HTTPServer) -> None:
    """Two callers, each in a thread with its own tenant, one after the
    other on one connection: each body sees its own caller's value."""
    seen: list[str] = []
    with poolwatch.Transport() as transport:

        def call(tenant: str) -> None:
            TENANT.set(tenant)
            response = transport.request("POST", server.url("/echo"), body=_pieces(seen))
            assert response.read() == b"part1-part2"

        for tenant in ("alice", "bob"):
            caller = threading.Thread(target=call, args=(tenant,))
            caller.start()
            caller.join()
        stats = assert_at_rest(transport)
    assert seen == ["alice", "alice", "bob", "bob"]
    assert (stats.connections_opened, stats.reused_requests) == (1, 1)


@pytest.mark.parametrize("kind", ["async iterator", "iterator"])
def test_an_async_body_iterator_sees_its_callers_context(
    server: HTTPServer, event_loop_kind: str, kind: str
) -> None:
    """The same with the asyncio transport: two tasks, one connection."""
    seen: list[str] = []

    async def main() -> poolwatch.PoolStats:
        async with poolwatch.AsyncTransport() as transport:

            async def call(tenant: str) -> None:
                TENANT.set(tenant)
                body = _async_pieces(seen) if kind == "async iterator" else _pieces(seen)
                response = await transport.request("POST", server.url("/echo"), body=body)
                assert await response.read() == b"part1-part2"

            for tenant in ("alice", "bob"):
                await asyncio.create_task(call(tenant))
            return await async_assert_at_rest(transport)

    stats = run(main)
    assert seen == ["alice", "alice", "bob", "bob"]
    assert (stats.connections_opened, stats.reused_requests) == (1, 1)


def _freed(ref: weakref.ref[object]) -> bool:
    """Whether ``ref``'s object is freed, or is within a few seconds: the
    connection's workers let go of a request once past it, which may be
    just after its response was read (a wait for a state, not an order)."""
    deadline = time.monotonic() + 5.0
    while True:
        gc.collect()
        if ref() is None:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_idle_connection_keeps_no_request_body(server: HTTPServer, kind: str) -> None:
    """Once its request is done, a connection back in the pool holds
    nothing of it: the body's file (or a large buffer) is freed when the
    caller drops it, not when the connection next carries a request."""
    body = io.BytesIO(b"sent once")
    gone = weakref.ref(body)
    if kind == "sync":
        with poolwatch.Transport() as transport:
            response = transport.request("POST", server.url("/echo"), body=body)
            assert response.read() == b"sent once"
            del body, response
            assert _freed(gone)
            assert assert_at_rest(transport).idle_connections == 1
    else:

        async def main() -> None:
            nonlocal body
            async with poolwatch.AsyncTransport() as transport:
                response = await transport.request("POST", server.url("/echo"), body=body)
                assert await response.read() == b"sent once"
                del body, response
                # Waited for on a thread of its own: the loop runs the workers.
                assert await asyncio.get_running_loop().run_in_executor(None, _freed, gone)
                assert (await async_assert_at_rest(transport)).idle_connections == 1

        run(main)
