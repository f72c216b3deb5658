"""The asyncio transport through SOCKS proxies, an https proxy (TLS to the
proxy, and TLS inside it for https), and over a Unix socket: the same
servers and expectations as the sync tests of each."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trustme

import poolwatch
from tests.async_support import assert_at_rest, run
from tests.servers import HTTPServer
from tests.socks_server import socks_server
from tests.test_errors import reply_then_stall
from tests.test_https_proxy import tls_proxy_port
from tests.test_tls_faults import tls_scripted
from tests.test_uds import UnixHTTPServer, unix_server
from tests.tls_support import TLSServer, client_context

pytestmark = pytest.mark.usefixtures("event_loop_kind")
# TLS inside the TLS session with an https proxy needs start_tls on a TLS
# stream, which Python 3.10's asyncio lacks: poolwatch raises ProxyError.
TLS_IN_TLS = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="TLS inside TLS needs Python 3.11+"
)

__all__ = ["tls_proxy_port", "unix_server"]  # fixtures shared with the sync tests

USER, PASSWORD = "user", "s3cret"


@pytest.mark.parametrize(
    ("scheme", "seen_host"), [("socks5", "127.0.0.1"), ("socks5h", "localhost")]
)
def test_http_through_socks(server: HTTPServer, scheme: str, seen_host: str) -> None:
    """Names resolved by the client (socks5, off the loop) or by the proxy
    (socks5h); one connection for both requests, keyed by origin and proxy."""
    url = f"http://localhost:{server.port}/a"
    with socks_server() as socks:
        proxy = socks.url(scheme=scheme)

        async def main() -> None:
            async with poolwatch.AsyncTransport() as t:
                for _ in range(2):
                    resp = await t.request("GET", url, proxy=proxy)
                    assert await resp.read() == b"hello world!\n"
                stats = await assert_at_rest(t)
                assert (stats.connections_opened, stats.reused_requests) == (1, 1)
                assert list(stats.per_origin) == [
                    f"http://localhost:{server.port} via {scheme}://127.0.0.1:{socks.port}"
                ]

        run(main)
        assert [request[2] for request in socks.requests] == [seen_host]


def test_https_through_socks5_with_auth_and_bad_credentials(
    https_server: TLSServer, ca: trustme.CA
) -> None:
    """TLS to the origin over the SOCKS connection; wrong credentials are a
    ProxyError naming the proxy, and the pool stays usable."""
    with socks_server((USER, PASSWORD)) as socks:
        good = socks.url(scheme="socks5h", auth=f"{USER}:{PASSWORD}")
        bad = socks.url(scheme="socks5h", auth=f"{USER}:wrong")

        async def main() -> None:
            async with poolwatch.AsyncTransport(ssl_context=client_context(ca)) as t:
                url = https_server.url("/b")
                await _refused_then_served(t, f"127.0.0.1:{socks.port}", (url, bad), (url, good))

        run(main)


async def _refused_then_served(
    t: poolwatch.AsyncTransport,
    match: str,
    refused: tuple[str, str],
    served: tuple[str, str],
) -> None:
    """A GET of the ``refused`` URL through its proxy is a ProxyError
    matching ``match``; then the ``served`` one is answered in full, and
    the pool is at rest."""
    with pytest.raises(poolwatch.ProxyError, match=match):
        await t.request("GET", refused[0], proxy=refused[1])
    resp = await t.request("GET", served[0], proxy=served[1])
    assert await resp.read() == b"hello world!\n"
    await assert_at_rest(t)


@TLS_IN_TLS
def test_http_and_https_through_an_https_proxy(
    tls_proxy_port: int, server: HTTPServer, https_server: TLSServer, ca: trustme.CA
) -> None:
    """http in absolute form over TLS to the proxy; https with TLS inside
    that TLS session, a large download through it, each connection reused."""
    proxy = f"https://user:secret@127.0.0.1:{tls_proxy_port}"

    async def main() -> None:
        async with poolwatch.AsyncTransport(ssl_context=client_context(ca)) as t:
            for _ in range(2):
                resp = await t.request("GET", server.url("/a"), proxy=proxy)
                assert await resp.read() == b"hello world!\n"
                resp = await t.request("GET", https_server.url("/bytes/300000"), proxy=proxy)
                assert await resp.read() == b"x" * 300000
            stats = await assert_at_rest(t)
            assert (stats.connections_opened, stats.reused_requests) == (2, 2)

    run(main)
    assert https_server.accepted == 1


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="Python 3.10's limit")
def test_https_through_an_https_proxy_needs_python_3_11(
    tls_proxy_port: int, server: HTTPServer, https_server: TLSServer, ca: trustme.CA
) -> None:
    """On Python 3.10, https through an https proxy is a ProxyError that
    says why; http through the same proxy goes on working."""
    proxy = f"https://user:secret@127.0.0.1:{tls_proxy_port}"

    async def main() -> None:
        async with poolwatch.AsyncTransport(ssl_context=client_context(ca)) as t:
            refused, served = (https_server.url("/a"), proxy), (server.url("/a"), proxy)
            await _refused_then_served(t, r"needs Python 3\.11", refused, served)

    run(main)


@TLS_IN_TLS
def test_origin_silent_inside_the_tunnel_is_a_connect_timeout(
    tls_proxy_port: int, ca: trustme.CA
) -> None:
    """An origin that never answers the TLS handshake inside the tunnel:
    ConnectTimeout naming the request."""
    proxy = f"https://user:secret@127.0.0.1:{tls_proxy_port}"

    async def main(url: str) -> None:
        async with poolwatch.AsyncTransport(
            ssl_context=client_context(ca), connect_timeout=0.5
        ) as t:
            with pytest.raises(poolwatch.ConnectTimeout, match=f"GET {url}"):
                await t.request("GET", url, proxy=proxy)
            assert (await assert_at_rest(t)).open_connections == 0

    with tls_scripted(ca, reply_then_stall(b""), tls=False) as origin:
        run(lambda: main(origin + "/inside"))


def test_untrusted_https_proxy_is_a_tls_error(tls_proxy_port: int, server: HTTPServer) -> None:
    """The proxy's certificate is checked against the default CAs here."""
    proxy = f"https://user:secret@127.0.0.1:{tls_proxy_port}"

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:
            with pytest.raises(poolwatch.TLSError, match="TLS handshake with proxy"):
                await t.request("GET", server.url("/a"), proxy=proxy)
            await assert_at_rest(t)

    run(main)


def test_unix_socket(unix_server: UnixHTTPServer) -> None:
    """Every request goes to the socket (given as a path object); the Host
    header from the URL."""

    async def main() -> None:
        async with poolwatch.AsyncTransport(uds=Path(unix_server.path)) as t:
            for path in ("/a", "/b"):
                resp = await t.request("GET", f"http://example.invalid{path}")
                assert await resp.read() == f"host=example.invalid path={path}\n".encode()
            stats = await assert_at_rest(t)
            assert (stats.connections_opened, stats.reused_requests) == (1, 1)
            assert list(stats.per_origin) == [
                f"http://example.invalid:80 via unix:{unix_server.path}"
            ]

    run(main)


@TLS_IN_TLS
def test_untrusted_origin_inside_the_tunnel_is_a_tls_error(
    tls_proxy_port: int, https_server: TLSServer, ca: trustme.CA
) -> None:
    """An origin whose certificate fails inside the https proxy's tunnel:
    TLSError with the handshake's reason (asyncio's TLS-over-TLS transport
    fails its own clean-up there with a TypeError, which must not reach the
    caller); the pool goes on working."""
    proxy = poolwatch.parse_proxy(
        f"https://user:secret@127.0.0.1:{tls_proxy_port}", ssl_context=client_context(ca)
    )

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:  # the system's CAs for the origin
            with pytest.raises(poolwatch.TLSError, match="CERTIFICATE_VERIFY_FAILED"):
                await t.request("GET", https_server.url("/a"), proxy=proxy)
            resp = await t.request(
                "GET", https_server.url("/a"), proxy=proxy, ssl_context=client_context(ca)
            )
            assert await resp.read() == b"hello world!\n"
            stats = await assert_at_rest(t)
            assert (stats.request_errors, stats.requests) == (1, 1)

    run(main)
