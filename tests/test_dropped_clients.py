"""A ``requests.Session`` or ``httpx.Client`` dropped without being closed,
as code that makes one per call often does: with the stock transports the
garbage collector closes their sockets. poolwatch's connections have worker
threads that keep the transport alive, so the adapter that made a transport
closes it when it is collected."""

from __future__ import annotations

import asyncio
import gc
import threading

import httpx
import pytest
import requests

import poolwatch
from poolwatch.adapters.requests import RequestsAdapter
from tests import async_support
from tests.eventlog import WAIT
from tests.servers import HTTPServer


def use_and_drop(
    client: str, url: str, transport: poolwatch.Transport | None = None
) -> poolwatch.Transport:
    """Make a client of kind ``client`` (over ``transport`` if given), make
    one request, and drop the client unclosed; returns its transport."""
    if client == "requests":
        session = requests.Session()
        adapter = RequestsAdapter(transport=transport)
        session.mount("http://", adapter)
        assert session.get(url).text == "hello world!\n"
        return adapter.transport
    adapter_x = poolwatch.HTTPXTransport(transport=transport)
    assert httpx.Client(transport=adapter_x).get(url).text == "hello world!\n"
    return adapter_x.transport


async def collect_garbage() -> None:
    """Collect, then let the loop run the closes finalisers scheduled."""
    gc.collect()
    for _ in range(3):
        await asyncio.sleep(0)


def wait_for_background_closes() -> None:
    for thread in threading.enumerate():
        if thread.name == "poolwatch-close":
            thread.join(WAIT)


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_a_dropped_client_closes_the_transport_it_made(server: HTTPServer, client: str) -> None:
    transport = use_and_drop(client, server.url())
    gc.collect()
    wait_for_background_closes()
    stats = transport.stats()
    assert (stats.open_connections, stats.connections_closed, stats.workers_alive) == (0, 1, 0)
    with pytest.raises(poolwatch.PoolClosed):
        transport.request("GET", server.url())


def stream_and_drop(
    client: str, url: str
) -> tuple[poolwatch.Transport, requests.Response | httpx.Response]:
    """A streamed response from a client made and dropped here unclosed,
    and the client's transport."""
    if client == "requests":
        session = requests.Session()
        adapter = RequestsAdapter()
        session.mount("http://", adapter)
        return adapter.transport, session.get(url, stream=True)
    adapter_x = poolwatch.HTTPXTransport()
    response = httpx.Client(transport=adapter_x).send(httpx.Request("GET", url), stream=True)
    return adapter_x.transport, response


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_a_response_still_held_keeps_the_transport_open(server: HTTPServer, client: str) -> None:
    """As with the stock transports, whose responses hold their pool."""
    transport, response = stream_and_drop(client, server.url("/chunked/5000"))
    gc.collect()
    wait_for_background_closes()
    body = response.raw.read() if isinstance(response, requests.Response) else response.read()
    assert len(body) == 5000
    stats = transport.stats()
    assert (stats.bodies_drained, stats.open_connections) == (1, 1)
    response.close()
    del response
    gc.collect()
    wait_for_background_closes()
    assert transport.stats().open_connections == 0


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_a_transport_passed_in_stays_open(server: HTTPServer, client: str) -> None:
    with poolwatch.Transport() as transport:
        assert use_and_drop(client, server.url(), transport) is transport
        gc.collect()
        wait_for_background_closes()
        with transport.request("GET", server.url()) as resp:
            assert resp.read() == b"hello world!\n"
        stats = transport.stats()
        assert (stats.open_connections, stats.connections_opened) == (1, 1)


@pytest.mark.usefixtures("event_loop_kind")
def test_a_dropped_async_client_closes_its_transport_on_its_loop(server: HTTPServer) -> None:
    """Its worker tasks would otherwise live as long as the loop runs."""

    async def main() -> None:
        adapter = poolwatch.AsyncHTTPXTransport()
        transport = adapter.transport
        response = await httpx.AsyncClient(transport=adapter).get(server.url())
        assert response.text == "hello world!\n"
        del adapter, response
        await collect_garbage()
        await transport.settle()
        stats = transport.stats()
        assert (stats.open_connections, stats.connections_closed, stats.workers_alive) == (0, 1, 0)
        with pytest.raises(poolwatch.PoolClosed):
            await transport.request("GET", server.url())

    async_support.run(main)


@pytest.mark.usefixtures("event_loop_kind")
def test_an_async_response_still_held_keeps_the_transport_open(server: HTTPServer) -> None:
    async def main() -> None:
        adapter = poolwatch.AsyncHTTPXTransport()
        transport = adapter.transport
        request = httpx.Request("GET", server.url("/chunked/5000"))
        response = await httpx.AsyncClient(transport=adapter).send(request, stream=True)
        del adapter
        await collect_garbage()
        assert len(await response.aread()) == 5000
        assert transport.stats().open_connections == 1
        await response.aclose()
        del response
        await collect_garbage()
        await transport.settle()
        assert transport.stats().open_connections == 0

    async_support.run(main)
