"""Requests through a real HTTP proxy (proxy.py, started per module):
absolute-form for http, CONNECT tunnels for https, proxy authentication,
and pooling per proxy and origin."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator

import pytest
import trustme

import poolwatch
from tests import async_support
from tests.conftest import assert_at_rest
from tests.proxy_support import CREDENTIALS, free_port, proxy_py
from tests.servers import HTTPServer, ServerConnection, raw_server
from tests.tls_support import TLSServer, client_context


@pytest.fixture(scope="module")
def proxy_port() -> Iterator[int]:
    """proxy.py on loopback with basic authentication, for this module."""
    with proxy_py() as port:
        yield port


def _proxy(port: int, credentials: str | None = CREDENTIALS) -> str:
    return f"http://{credentials}@127.0.0.1:{port}" if credentials else f"http://127.0.0.1:{port}"


def test_http_through_proxy_is_pooled(proxy_port: int, server: HTTPServer) -> None:
    """Plain http goes to the proxy in absolute form; one connection to the
    proxy serves every request, and stats name the origin and the proxy."""
    with poolwatch.Transport() as t:
        for _ in range(3):
            assert t.request("GET", server.url("/a"), proxy=_proxy(proxy_port)).read() == (
                b"hello world!\n"
            )
        stats = assert_at_rest(t)
        assert stats.connections_opened == 1
        assert list(stats.per_origin) == [f"{server.origin} via http://127.0.0.1:{proxy_port}"]
    assert [path for _, _, path, _ in server.requests] == ["/a"] * 3


def test_https_through_connect_tunnel(
    proxy_port: int, https_server: TLSServer, ca: trustme.CA
) -> None:
    """https goes through a CONNECT tunnel and TLS to the origin; the tunnel
    is reused like any connection."""
    with poolwatch.Transport(ssl_context=client_context(ca)) as t:
        for _ in range(3):
            resp = t.request("GET", https_server.url("/b"), proxy=_proxy(proxy_port))
            assert resp.read() == b"hello world!\n"
        stats = assert_at_rest(t)
        assert stats.connections_opened == 1
        assert stats.reused_requests == 2
    assert https_server.accepted == 1


@pytest.mark.parametrize("credentials", [None, "user:wrong"], ids=["none", "wrong"])
def test_proxy_authentication_required(
    proxy_port: int, https_server: TLSServer, server: HTTPServer, credentials: str | None
) -> None:
    """Without the right credentials: 407 for http (a response), ProxyError
    for a tunnel, and the pool keeps working."""
    with poolwatch.Transport() as t:
        resp = t.request("GET", server.url(), proxy=_proxy(proxy_port, credentials))
        assert resp.status == 407
        resp.close()
        with pytest.raises(poolwatch.ProxyError, match="407"):
            t.request("GET", https_server.url(), proxy=_proxy(proxy_port, credentials))
        assert t.request("GET", server.url(), proxy=_proxy(proxy_port)).read() == b"hello world!\n"
        assert_at_rest(t)


def test_unreachable_proxy_is_a_connect_error(server: HTTPServer) -> None:
    """A proxy that refuses connections: ConnectError naming the proxy."""
    port = free_port()
    with poolwatch.Transport() as t, pytest.raises(poolwatch.ConnectError, match="proxy"):
        t.request("GET", server.url(), proxy=f"http://127.0.0.1:{port}")


def test_proxy_url_scheme_must_be_known(server: HTTPServer) -> None:
    """An unknown proxy scheme is an InvalidURL before any dial."""
    with poolwatch.Transport() as t, pytest.raises(poolwatch.InvalidURL, match="socks5://"):
        t.request("GET", server.url(), proxy="ftp://127.0.0.1:1080")
    assert server.accepted == 0


def _answer_connect_with(
    answer: bytes, done: threading.Event
) -> Callable[[ServerConnection], None]:
    """A proxy that answers CONNECT with ``answer``, then waits (an empty
    answer: it hangs up at once)."""

    def serve(conn: ServerConnection) -> None:
        if conn.recv_request_head() and answer:
            conn.sock.sendall(answer)
            done.wait(10)

    return serve


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"SSH-2.0-OpenSSH_9.0\r\n", "answered b'SSH-2'..., not HTTP"),
        (b"", "closed the connection without an answer"),
    ],
    ids=["not-http", "no-answer"],
)
def test_connect_answered_with_no_http_fails_at_once(answer: bytes, reason: str) -> None:
    """A proxy that answers CONNECT with another protocol (and keeps the
    connection open) or hangs up: ProxyError saying so, at once, with no
    time limit set; sync and async."""
    done = threading.Event()
    with raw_server(_answer_connect_with(answer, done)) as proxy:
        url = "https://127.0.0.1:9/tunnelled"
        via = f"http://127.0.0.1:{proxy.port}"
        with poolwatch.Transport(connect_timeout=None) as t:
            with pytest.raises(poolwatch.ProxyError, match=re.escape(reason)):
                t.request("GET", url, proxy=via)
            assert_at_rest(t)

        async def main() -> None:
            async with poolwatch.AsyncTransport(connect_timeout=None) as t:
                with pytest.raises(poolwatch.ProxyError, match=re.escape(reason)):
                    await t.request("GET", url, proxy=via)

        async_support.run(main)
        done.set()
