"""A transport, or a ``requests.Session`` or ``httpx.Client`` over one,
dropped without being closed, as code that makes one per call often does:
with the stock transports the garbage collector closes their sockets.
poolwatch's connections have workers that reference them, so the caller
holds a handle to the transport (see ``poolwatch._core.handle``), and the
transport is closed when the handle is collected, unless a response of it
is still held. The tests watch the transport through its core, which the
connections hold."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from typing import Any

import httpx
import pytest
import requests

import poolwatch
from poolwatch.adapters.requests import RequestsAdapter
from tests import async_support
from tests.eventlog import WAIT
from tests.servers import HTTPServer

CLIENTS = ["poolwatch", "requests", "httpx"]


def make_client(kind: str, transport: poolwatch.Transport | None = None) -> tuple[Any, Any]:
    """A client of ``kind`` (over ``transport`` if given), and its transport."""
    if kind == "poolwatch":
        made = poolwatch.Transport() if transport is None else transport
        return made, made
    if kind == "requests":
        session = requests.Session()
        adapter = RequestsAdapter(transport=transport)
        session.mount("http://", adapter)
        return session, adapter.transport
    adapter_x = poolwatch.HTTPXTransport(transport=transport)
    return httpx.Client(transport=adapter_x), adapter_x.transport


def stream(client: Any, url: str) -> Any:
    """A streamed response, its body not read."""
    if isinstance(client, poolwatch.Transport):
        return client.request("GET", url)
    if isinstance(client, requests.Session):
        return client.get(url, stream=True)
    return client.send(httpx.Request("GET", url), stream=True)


def read_rest(response: Any) -> bytes:
    if isinstance(response, requests.Response):
        return bytes(response.raw.read())
    return bytes(response.read())


def use_and_drop(kind: str, url: str) -> poolwatch.Transport:
    """Make a client, read one response to its end, and drop the client
    unclosed; returns the core of its transport."""
    client, transport = make_client(kind)
    assert read_rest(stream(client, url)) == b"hello world!\n"
    return transport._core  # type: ignore[no-any-return]


def collect_garbage() -> None:
    """Collect, and wait for the closes that finalisers started."""
    gc.collect()
    for thread in threading.enumerate():
        if thread.name == "poolwatch-close":
            thread.join(WAIT)


@pytest.mark.parametrize("kind", CLIENTS)
def test_dropped_unclosed_the_transport_is_closed(server: HTTPServer, kind: str) -> None:
    core = use_and_drop(kind, server.url())
    collect_garbage()
    stats = core.stats()
    assert (stats.open_connections, stats.connections_closed, stats.workers_alive) == (0, 1, 0)
    with pytest.raises(poolwatch.PoolClosed):
        core.request("GET", server.url())


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_response_still_held_keeps_the_transport_open(server: HTTPServer, kind: str) -> None:
    """As with the stock transports, whose responses hold their pool."""
    client, transport = make_client(kind)
    core = transport._core
    response = stream(client, server.url("/chunked/5000"))
    del client, transport
    collect_garbage()
    assert len(read_rest(response)) == 5000
    stats = core.stats()
    assert (stats.bodies_drained, stats.open_connections) == (1, 1)
    response.close()
    del response
    collect_garbage()
    assert core.stats().open_connections == 0


@pytest.mark.parametrize("kind", ["requests", "httpx"])
def test_a_transport_passed_in_stays_open(server: HTTPServer, kind: str) -> None:
    with poolwatch.Transport() as transport:
        client, _ = make_client(kind, transport)
        assert read_rest(stream(client, server.url())) == b"hello world!\n"
        del client
        collect_garbage()
        with transport.request("GET", server.url()) as resp:
            assert resp.read() == b"hello world!\n"
        stats = transport.stats()
        assert (stats.open_connections, stats.connections_opened) == (1, 1)


async def collect_garbage_then_turn() -> None:
    """Collect, then let the loop run the closes finalisers scheduled."""
    gc.collect()
    for _ in range(3):
        await asyncio.sleep(0)


@pytest.mark.usefixtures("event_loop_kind")
@pytest.mark.parametrize("kind", ["poolwatch", "httpx"])
def test_dropped_unclosed_an_async_transport_is_closed_on_its_loop(
    server: HTTPServer, kind: str
) -> None:
    """Its worker tasks would otherwise live as long as the loop runs."""

    async def main() -> None:
        if kind == "poolwatch":
            transport = poolwatch.AsyncTransport()
            core = transport._core
            response = await transport.request("GET", server.url())
            assert await response.read() == b"hello world!\n"
            del transport
        else:
            adapter = poolwatch.AsyncHTTPXTransport()
            core = adapter.transport._core
            response = await httpx.AsyncClient(transport=adapter).get(server.url())
            assert response.text == "hello world!\n"
            del adapter
        del response
        await collect_garbage_then_turn()
        await core.settle()
        stats = core.stats()
        assert (stats.open_connections, stats.connections_closed, stats.workers_alive) == (0, 1, 0)
        with pytest.raises(poolwatch.PoolClosed):
            await core.request("GET", server.url())

    async_support.run(main)


@pytest.mark.usefixtures("event_loop_kind")
def test_an_async_response_still_held_keeps_the_transport_open(server: HTTPServer) -> None:
    async def main() -> None:
        adapter = poolwatch.AsyncHTTPXTransport()
        core = adapter.transport._core
        request = httpx.Request("GET", server.url("/chunked/5000"))
        response = await httpx.AsyncClient(transport=adapter).send(request, stream=True)
        del adapter
        await collect_garbage_then_turn()
        assert len(await response.aread()) == 5000
        assert core.stats().open_connections == 1
        await response.aclose()
        del response
        await collect_garbage_then_turn()
        await core.settle()
        assert core.stats().open_connections == 0

    async_support.run(main)


def test_dropped_with_a_body_left_open_the_body_counts_as_leaked(server: HTTPServer) -> None:
    """The transport's close and the leak's report race; the leak is what
    happened, and it is what the stats say."""
    transport = poolwatch.Transport()
    core = transport._core
    response = transport.request("GET", server.url("/stream"))
    response.read(10)
    with pytest.warns(poolwatch.LeakWarning):
        del transport, response
        collect_garbage()
    core.settle()
    stats = core.stats()
    assert (stats.bodies_leaked, stats.bodies_errored, stats.open_connections) == (1, 0, 0)
    assert stats.invariant_violations() == []


@pytest.mark.parametrize("cls", [poolwatch.Transport, poolwatch.AsyncTransport])
def test_a_transport_that_failed_to_construct_has_nothing_to_close(
    cls: type[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(ValueError, match="max_connections"):
        cls(max_connections=0)
    collect_garbage()
    assert unraisable == []


@pytest.mark.parametrize("cls", [poolwatch.Transport, poolwatch.AsyncTransport])
def test_the_handle_and_the_core_share_every_attribute(cls: type[Any]) -> None:
    handle = cls()
    core = handle._core
    assert core is not handle and core.__dict__ is handle.__dict__
    handle.set_on_handle = 1
    core.set_on_core = 2
    assert (core.set_on_handle, handle.set_on_core) == (1, 2)
    del handle, core
    collect_garbage()
