"""The asyncio transport through a real HTTP proxy (proxy.py): absolute-form
for http, CONNECT tunnels for https, proxy authentication."""

from __future__ import annotations

import pytest
import trustme

import poolwatch
from tests.async_support import assert_at_rest, run
from tests.servers import HTTPServer
from tests.test_proxy import _proxy, proxy_port
from tests.tls_support import TLSServer, client_context

pytestmark = pytest.mark.usefixtures("event_loop_kind")

__all__ = ["proxy_port"]  # the proxy.py fixture, shared with test_proxy


def test_http_and_https_through_the_proxy(
    proxy_port: int, server: HTTPServer, https_server: TLSServer, ca: trustme.CA
) -> None:
    """http in absolute form and https through a CONNECT tunnel, each pooled
    as one connection per origin and proxy."""
    proxy = _proxy(proxy_port)

    async def main() -> None:
        async with poolwatch.AsyncTransport(ssl_context=client_context(ca)) as t:
            for _ in range(2):
                resp = await t.request("GET", server.url("/a"), proxy=proxy)
                assert await resp.read() == b"hello world!\n"
                resp = await t.request("GET", https_server.url("/b"), proxy=proxy)
                assert await resp.read() == b"hello world!\n"
            stats = await assert_at_rest(t)
            assert stats.connections_opened == 2
            assert stats.reused_requests == 2

    run(main)
    assert https_server.accepted == 1


def test_wrong_credentials(proxy_port: int, server: HTTPServer, https_server: TLSServer) -> None:
    """407 for http (a response); ProxyError naming it for a tunnel."""
    proxy = _proxy(proxy_port, "user:wrong")

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:
            resp = await t.request("GET", server.url(), proxy=proxy)
            assert resp.status == 407
            await resp.aclose()
            with pytest.raises(poolwatch.ProxyError, match="407"):
                await t.request("GET", https_server.url(), proxy=proxy)
            await assert_at_rest(t)

    run(main)
