"""Parity through real proxies: the same request through requests'
HTTPAdapter and poolwatch's RequestsAdapter, and through httpx's
HTTPTransport and poolwatch's HTTPXTransport, via an HTTP proxy (proxy.py:
absolute-form and CONNECT) and a SOCKS5 proxy (tests/socks_server.py). Both
must see the same status, headers, body or exception type, and poolwatch's
stats must show the proxied connections under their origin."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import requests.adapters
import requests.exceptions as rexc
import trustme

import poolwatch
from tests.conftest import assert_at_rest
from tests.parity_support import visible_headers
from tests.proxy_support import CREDENTIALS
from tests.servers import HTTPServer
from tests.socks_server import SocksServer, socks_server
from tests.test_proxy import proxy_port
from tests.tls_support import TLSServer, client_context

__all__ = ["proxy_port"]  # the proxy.py fixture, shared with test_proxy


@pytest.fixture
def socks() -> Iterator[SocksServer]:
    with socks_server() as srv:
        yield srv


def _target(kind: str, server: HTTPServer, https_server: TLSServer) -> tuple[str, str]:
    """The URL to fetch and the origin the stats should name."""
    chosen = server if kind == "http" else https_server
    return chosen.url("/p?q=1"), chosen.origin


def _proxy_url(kind: str, proxy_port: int, socks: SocksServer, credentials: str) -> str:
    if kind == "http-proxy":
        return f"http://{credentials}@127.0.0.1:{proxy_port}"
    return socks.url(scheme="socks5h")


def _proxy_key(kind: str, proxy_port: int, socks: SocksServer) -> str:
    if kind == "http-proxy":
        return f"http://127.0.0.1:{proxy_port}"
    return f"socks5h://127.0.0.1:{socks.port}"


# -- requests --------------------------------------------------------------------


def _requests_seen(
    adapter: requests.adapters.BaseAdapter, url: str, proxy: str, bundle: str
) -> Any:
    with requests.Session() as session:
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        try:
            resp = session.get(url, proxies={"http": proxy, "https": proxy}, verify=bundle)
        except rexc.RequestException as exc:
            return type(exc)
        return (resp.status_code, visible_headers(resp.headers.items()), resp.content)


@pytest.mark.parametrize("target", ["http", "https"])
@pytest.mark.parametrize("proxy_kind", ["http-proxy", "socks5"])
def test_requests_proxy_parity(
    proxy_port: int,
    socks: SocksServer,
    server: HTTPServer,
    https_server: TLSServer,
    ca_bundle: str,
    target: str,
    proxy_kind: str,
) -> None:
    """Same status, headers and body; stats keyed by origin via proxy."""
    url, origin = _target(target, server, https_server)
    proxy = _proxy_url(proxy_kind, proxy_port, socks, CREDENTIALS)
    stock = _requests_seen(requests.adapters.HTTPAdapter(), url, proxy, ca_bundle)
    adapter = poolwatch.RequestsAdapter()
    ours = _requests_seen(adapter, url, proxy, ca_bundle)
    assert stock[0] == 200 and stock[2] == b"hello world!\n"
    assert ours == stock
    stats = assert_at_rest(adapter.transport)
    assert list(stats.per_origin) == [f"{origin} via {_proxy_key(proxy_kind, proxy_port, socks)}"]
    assert stats.connections_opened == 1


@pytest.mark.parametrize(("target", "expected"), [("http", 407), ("https", rexc.ProxyError)])
def test_requests_proxy_auth_failure_parity(
    proxy_port: int,
    server: HTTPServer,
    https_server: TLSServer,
    ca_bundle: str,
    target: str,
    expected: Any,
) -> None:
    """Wrong credentials: the proxy's 407 for http, ProxyError for a tunnel."""
    url, _ = _target(target, server, https_server)
    proxy = f"http://user:wrong@127.0.0.1:{proxy_port}"
    seen = []
    for adapter in (requests.adapters.HTTPAdapter(), poolwatch.RequestsAdapter()):
        outcome = _requests_seen(adapter, url, proxy, ca_bundle)
        seen.append(outcome[0] if isinstance(outcome, tuple) else outcome)
        gc.collect()  # urllib3 closes a failed tunnel's socket when collected
    assert seen == [expected, expected]


# -- httpx -----------------------------------------------------------------------


def _httpx_seen(transport: httpx.BaseTransport, url: str) -> Any:
    with httpx.Client(transport=transport) as client:
        try:
            resp = client.get(url)
        except httpx.HTTPError as exc:
            return type(exc)
        return (resp.status_code, visible_headers(resp.headers.items()), resp.content)


@pytest.mark.parametrize("target", ["http", "https"])
@pytest.mark.parametrize("proxy_kind", ["http-proxy", "socks5"])
def test_httpx_proxy_parity(
    proxy_port: int,
    socks: SocksServer,
    server: HTTPServer,
    https_server: TLSServer,
    ca: trustme.CA,
    target: str,
    proxy_kind: str,
) -> None:
    """Same status, headers and body; stats keyed by origin via proxy."""
    url, origin = _target(target, server, https_server)
    proxy = _proxy_url(proxy_kind, proxy_port, socks, CREDENTIALS)
    context = client_context(ca)
    stock = _httpx_seen(httpx.HTTPTransport(verify=context, proxy=proxy), url)
    transport = poolwatch.HTTPXTransport(verify=context, proxy=proxy)
    ours = _httpx_seen(transport, url)
    assert stock[0] == 200 and stock[2] == b"hello world!\n"
    assert ours == stock
    stats = assert_at_rest(transport.transport)
    assert list(stats.per_origin) == [f"{origin} via {_proxy_key(proxy_kind, proxy_port, socks)}"]


@pytest.mark.parametrize(("target", "expected"), [("http", 407), ("https", httpx.ProxyError)])
def test_httpx_proxy_auth_failure_parity(
    proxy_port: int,
    server: HTTPServer,
    https_server: TLSServer,
    ca: trustme.CA,
    target: str,
    expected: Any,
) -> None:
    """Wrong credentials: the proxy's 407 for http, ProxyError for a tunnel."""
    url, _ = _target(target, server, https_server)
    proxy = f"http://user:wrong@127.0.0.1:{proxy_port}"
    seen = []
    for make in (httpx.HTTPTransport, poolwatch.HTTPXTransport):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)  # httpcore's failed tunnel
            outcome = _httpx_seen(make(verify=client_context(ca), proxy=proxy), url)  # type: ignore[operator]
            gc.collect()
        seen.append(outcome[0] if isinstance(outcome, tuple) else outcome)
    assert seen == [expected, expected]
