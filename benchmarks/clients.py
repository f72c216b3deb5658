"""The benchmarked clients, one registered factory function each.

To benchmark another client, add one function decorated with
:func:`~benchmarks.registry.register`; entries made with ``default=False``
run only when named with ``--clients``. Every client checks the status of
every response and returns the body length, so a client that silently
failed cannot look fast.
"""

from __future__ import annotations

from typing import Any

from .rawsocket import RawSocketClient
from .registry import REGISTRY, AsyncClient, ClientOptions, SyncClient, check_status, register

__all__ = ["REGISTRY"]


# -- poolwatch ---------------------------------------------------------------


@register("poolwatch", label="poolwatch native", requires=("poolwatch",))
def make_poolwatch(opts: ClientOptions) -> SyncClient:
    """``poolwatch.Transport`` with its defaults (call-site capture on)."""
    return _native(opts)


@register(
    "poolwatch-lightest",
    label="poolwatch, no call-site capture",
    requires=("poolwatch",),
    default=False,
)
def make_poolwatch_lightest(opts: ClientOptions) -> SyncClient:
    """The lightest setting: no call-site capture (stats are always kept)."""
    return _native(opts, call_site_depth=0)


@register(
    "poolwatch-listener",
    label="poolwatch + a no-op listener",
    requires=("poolwatch",),
    default=False,
)
def make_poolwatch_listener(opts: ClientOptions) -> SyncClient:
    """The defaults plus one listener that does nothing: the cost of events."""
    return _native(opts, listener=lambda event: None)


def _native(opts: ClientOptions, listener: Any = None, **options: Any) -> SyncClient:
    import poolwatch

    transport = poolwatch.Transport(
        keep_alive=opts.keep_alive, max_idle_per_host=max(10, opts.threads), **options
    )
    if listener is not None:
        transport.add_listener(listener)
    base = opts.base_url

    def get(path: str) -> int:
        resp = transport.request("GET", base + path)
        body = resp.read()
        check_status(resp.status, path)
        return len(body)

    def post(path: str, body: bytes) -> int:
        resp = transport.request("POST", base + path, body=body)
        data = resp.read()
        check_status(resp.status, path)
        return len(data)

    def stats() -> dict[str, float]:
        s = transport.stats()
        return {"connections_opened": s.connections_opened, "reused_requests": s.reused_requests}

    return SyncClient(get, post, transport.close, stats)


@register(
    "requests+poolwatch",
    label="requests + poolwatch adapter",
    requires=("poolwatch", "requests"),
    default=False,
)
def make_requests_poolwatch(opts: ClientOptions) -> SyncClient:
    """``requests.Session`` with ``poolwatch.RequestsAdapter`` mounted."""
    import requests

    from poolwatch.adapters.requests import RequestsAdapter

    session = requests.Session()
    adapter = RequestsAdapter(pool_maxsize=max(10, opts.threads))
    session.mount("http://", adapter)
    return _requests_client(session, opts)


@register(
    "httpx+poolwatch",
    label="httpx + poolwatch transport",
    requires=("poolwatch", "httpx"),
    default=False,
)
def make_httpx_poolwatch(opts: ClientOptions) -> SyncClient:
    """``httpx.Client`` over ``poolwatch.HTTPXTransport``."""
    import httpx

    from poolwatch.adapters.httpx import HTTPXTransport

    return _httpx_client(httpx.Client(transport=HTTPXTransport()), opts)


# -- the stock clients -------------------------------------------------------


@register("urllib3", label="urllib3.PoolManager", requires=("urllib3",))
def make_urllib3(opts: ClientOptions) -> SyncClient:
    """``urllib3.PoolManager``, its pool sized to the threads sharing it
    (its default of 1 would discard connections under threads)."""
    import urllib3

    manager = urllib3.PoolManager(maxsize=max(1, opts.threads))
    base, headers = opts.base_url, opts.headers

    def get(path: str) -> int:
        resp = manager.request("GET", base + path, headers=headers)
        check_status(resp.status, path)
        return len(resp.data)

    def post(path: str, body: bytes) -> int:
        resp = manager.request("POST", base + path, body=body, headers=headers)
        check_status(resp.status, path)
        return len(resp.data)

    return SyncClient(get, post, manager.clear)


@register("requests", label="requests.Session", requires=("requests",))
def make_requests(opts: ClientOptions) -> SyncClient:
    """``requests.Session`` with its stock adapter."""
    import requests

    return _requests_client(requests.Session(), opts)


def _requests_client(session: Any, opts: ClientOptions) -> SyncClient:
    base, headers = opts.base_url, opts.headers

    def get(path: str) -> int:
        resp = session.get(base + path, headers=headers)
        check_status(resp.status_code, path)
        return len(resp.content)

    def post(path: str, body: bytes) -> int:
        resp = session.post(base + path, data=body, headers=headers)
        check_status(resp.status_code, path)
        return len(resp.content)

    return SyncClient(get, post, session.close)


@register("httpx", label="httpx.Client", requires=("httpx",))
def make_httpx(opts: ClientOptions) -> SyncClient:
    """``httpx.Client`` with its stock transport and limits."""
    import httpx

    return _httpx_client(httpx.Client(), opts)


def _httpx_client(client: Any, opts: ClientOptions) -> SyncClient:
    base, headers = opts.base_url, opts.headers

    def get(path: str) -> int:
        resp = client.get(base + path, headers=headers)
        check_status(resp.status_code, path)
        return len(resp.content)

    def post(path: str, body: bytes) -> int:
        resp = client.post(base + path, content=body, headers=headers)
        check_status(resp.status_code, path)
        return len(resp.content)

    return SyncClient(get, post, client.close)


# -- the floor -------------------------------------------------------------


@register("raw", label="raw socket (floor)", requires=())
def make_raw(opts: ClientOptions) -> SyncClient:
    """The floor: see :class:`RawSocketClient`."""
    raw = RawSocketClient(opts)
    return SyncClient(
        lambda path: raw.exchange("GET", path),
        lambda path, body: raw.exchange("POST", path, body),
        raw.close,
    )


# -- asyncio clients (S4) ----------------------------------------------------


@register("aiohttp", label="aiohttp.ClientSession", requires=("aiohttp",), kind="async")
async def make_aiohttp(opts: ClientOptions) -> AsyncClient:
    """``aiohttp.ClientSession`` with its stock connector (limit 100)."""
    import aiohttp

    session = aiohttp.ClientSession()
    base = opts.base_url

    async def get(path: str) -> int:
        async with session.get(base + path) as resp:
            body = await resp.read()
            check_status(resp.status, path)
            return len(body)

    return AsyncClient(get, session.close)


@register("httpx-async", label="httpx.AsyncClient", requires=("httpx",), kind="async")
async def make_httpx_async(opts: ClientOptions) -> AsyncClient:
    """``httpx.AsyncClient`` with its stock limits (100 connections, 20 kept
    idle)."""
    import httpx

    client = httpx.AsyncClient()
    base = opts.base_url

    async def get(path: str) -> int:
        resp = await client.get(base + path)
        check_status(resp.status_code, path)
        return len(resp.content)

    return AsyncClient(get, client.aclose)


@register("poolwatch-async", label="poolwatch.AsyncTransport", requires=(), kind="async")
async def make_poolwatch_async(opts: ClientOptions) -> AsyncClient:
    """poolwatch's native asyncio transport with its defaults, its idle limit
    raised to the number of tasks (as aiohttp keeps them all)."""
    import poolwatch

    transport = poolwatch.AsyncTransport(max_idle_per_host=max(10, opts.concurrency))
    base = opts.base_url

    async def get(path: str) -> int:
        resp = await transport.request("GET", base + path)
        body = await resp.read()
        check_status(resp.status, path)
        return len(body)

    return AsyncClient(get, transport.aclose)


@register(
    "httpx-async+poolwatch",
    label="httpx.AsyncClient + AsyncHTTPXTransport",
    requires=("httpx",),
    kind="async",
    default=False,
)
async def make_httpx_async_poolwatch(opts: ClientOptions) -> AsyncClient:
    """``httpx.AsyncClient`` over poolwatch's async transport."""
    import httpx

    from poolwatch.adapters.httpx import AsyncHTTPXTransport

    client = httpx.AsyncClient(transport=AsyncHTTPXTransport())
    base = opts.base_url

    async def get(path: str) -> int:
        resp = await client.get(base + path)
        check_status(resp.status_code, path)
        return len(resp.content)

    return AsyncClient(get, client.aclose)
