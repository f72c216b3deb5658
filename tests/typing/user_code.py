"""Code as a strictly typed application writes it against poolwatch's
public API: ``mypy --strict`` must accept it (``tests/test_typing.py``). A
line marked ``# type: ignore[...]`` is a mistake mypy must catch: were it
not caught, mypy would report the ignore as unused."""

from __future__ import annotations

import pathlib
import ssl
from collections.abc import AsyncIterator

import httpx
import requests
from opentelemetry.metrics import MeterProvider

import poolwatch
from poolwatch.otel import instrument


class Logged(poolwatch.Transport):
    """A subclass keeps its own type through ``with``."""

    def note(self) -> str:
        return "logged"


def sync_usage(url: str) -> int:
    with Logged(max_idle_per_host=4) as transport:
        assert transport.note() == "logged"
        headers: dict[str, str | bytes] = {"X-Token": b"secret", "Accept": "*/*"}
        resp = transport.request("GET", url, headers=headers, timeout=poolwatch.Timeout(read=5))
        with resp:
            size = len(resp.read())
        stats: poolwatch.PoolStats = transport.stats()
        transport.request("GET", url, timeout="5")  # type: ignore[arg-type]
        return size + stats.requests


async def async_usage(url: str, meter_provider: MeterProvider) -> bytes:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"x"

    async with poolwatch.AsyncTransport(uds=pathlib.Path("/tmp/x.sock")) as transport:
        instrumentation = instrument(transport, meter_provider)
        resp = await transport.request("POST", url, body=chunks())
        await transport.request("POST", url, body=123)  # type: ignore[arg-type]
        instrumentation.close()
        return await resp.read()


def adapters() -> None:
    session = requests.Session()
    adapter = poolwatch.RequestsAdapter(pool_maxsize=20)
    session.mount("http://", adapter)
    requests_made: int = adapter.stats().requests
    typo = adapter.stats().reused_request  # type: ignore[attr-defined]
    client = httpx.Client(transport=poolwatch.HTTPXTransport(verify=ssl.create_default_context()))
    async_client = httpx.AsyncClient(transport=poolwatch.AsyncHTTPXTransport())
    httpx.Client(transport=poolwatch.AsyncHTTPXTransport())  # type: ignore[arg-type]
    poolwatch.HTTPXTransport(proxy=123)  # type: ignore[arg-type]
    del requests_made, typo, client, async_client
