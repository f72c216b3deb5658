"""Per-request options for what the URL cannot say: the name TLS asks for
(``server_hostname``, httpcore's ``sni_hostname``), the request target sent
in place of the URL's (``target``: ``OPTIONS *``), and headers for an http
proxy (``parse_proxy(headers=...)``, httpx's ``Proxy(headers=...)``), sync
and async."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import trustme

import poolwatch
from tests import async_support
from tests.conftest import assert_at_rest
from tests.servers import RawServer, ServerConnection, raw_server
from tests.tls_support import client_context, server_context, tls_server

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@contextmanager
def localhost_only(ca: trustme.CA) -> Iterator[tuple[str, list[str | None]]]:
    """An https server whose certificate names ``localhost`` only, reached
    at ``https://127.0.0.1``; yields its URL and the SNI names it heard."""
    heard: list[str | None] = []
    context = server_context(ca, "localhost")
    context.sni_callback = lambda tls, name, ctx: heard.append(name)  # type: ignore[assignment]
    with tls_server(context) as server:
        yield f"https://127.0.0.1:{server.port}/", heard


def test_server_hostname_is_asked_for_and_checked(ca: trustme.CA) -> None:
    """TLS asks for ``server_hostname`` (SNI) and checks the certificate
    against it; connections made for it pool apart from the URL host's."""
    with (
        localhost_only(ca) as (url, heard),
        poolwatch.Transport(ssl_context=client_context(ca)) as t,
    ):
        for _ in range(2):
            assert t.request("GET", url, server_hostname="localhost").read() == b"hello world!\n"
        with pytest.raises(poolwatch.TLSError, match=r"127\.0\.0\.1"):
            t.request("GET", url)
        assert heard == ["localhost", None]  # no SNI for an IP address
        stats = assert_at_rest(t)
        assert (stats.connections_opened, stats.reused_requests) == (1, 1)


def test_async_server_hostname_is_asked_for_and_checked(ca: trustme.CA) -> None:
    """The same with the async transport."""
    with localhost_only(ca) as (url, heard):

        async def main() -> None:
            async with poolwatch.AsyncTransport(ssl_context=client_context(ca)) as t:
                for _ in range(2):
                    resp = await t.request("GET", url, server_hostname="localhost")
                    assert await resp.read() == b"hello world!\n"
                with pytest.raises(poolwatch.TLSError, match=r"127\.0\.0\.1"):
                    await t.request("GET", url)
                stats = await async_support.assert_at_rest(t)
                assert (stats.connections_opened, stats.reused_requests) == (1, 1)

        async_support.run(main)
        assert heard == ["localhost", None]


REFUSED = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"


@contextmanager
def recording(answer: bytes) -> Iterator[tuple[RawServer, list[bytes]]]:
    """A server that records each request head and answers ``answer`` (a
    CONNECT: 403, so that no tunnel opens)."""
    heads: list[bytes] = []

    def serve(conn: ServerConnection) -> None:
        while head := conn.recv_request_head():
            heads.append(head)
            conn.sock.sendall(REFUSED if head.startswith(b"CONNECT") else answer)

    with raw_server(serve) as server:
        yield server, heads


def test_target_replaces_the_urls() -> None:
    """``target`` is sent as given (``*``, or a path not normalised); a
    target that could not be sent is refused, nothing sent."""
    with recording(OK) as (server, heads), poolwatch.Transport() as t:
        assert t.request("OPTIONS", server.url("/x"), target="*").read() == b"ok"
        assert t.request("GET", server.url("/x"), target=b"/a/../b?c").read() == b"ok"
        for bad in ("a b", "/\r\nX: y", "", "/caf\u00e9"):
            with pytest.raises(poolwatch.LocalProtocolError, match="invalid request target"):
                t.request("GET", server.url("/x"), target=bad)
        with pytest.raises(TypeError, match="target must be"):
            t.request("GET", server.url("/x"), target=3)  # type: ignore[arg-type]
        assert [head.split(b"\r\n")[0] for head in heads] == [
            b"OPTIONS * HTTP/1.1",
            b"GET /a/../b?c HTTP/1.1",
        ]


def test_async_target_replaces_the_urls() -> None:
    """The same with the async transport."""
    with recording(OK) as (server, heads):

        async def main() -> None:
            async with poolwatch.AsyncTransport() as t:
                resp = await t.request("OPTIONS", server.url("/x"), target="*")
                assert await resp.read() == b"ok"
                with pytest.raises(poolwatch.LocalProtocolError):
                    await t.request("GET", server.url("/x"), target="a b")

        async_support.run(main)
        assert [head.split(b"\r\n")[0] for head in heads] == [b"OPTIONS * HTTP/1.1"]


Send = Callable[[poolwatch.Proxy, str], None]


def _sync_send(proxy: poolwatch.Proxy, url: str) -> None:
    with poolwatch.Transport() as t:
        try:
            t.request("GET", url, proxy=proxy).read()
        except poolwatch.ProxyError:
            pass  # the recording proxy opens no tunnel


def _async_send(proxy: poolwatch.Proxy, url: str) -> None:
    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:
            try:
                await (await t.request("GET", url, proxy=proxy)).read()
            except poolwatch.ProxyError:
                pass

    async_support.run(main)


@pytest.mark.parametrize("send", [_sync_send, _async_send], ids=["sync", "async"])
def test_proxy_headers_go_with_forwarded_requests_and_connect(send: Send) -> None:
    """A proxy's own headers go with each request it forwards and each
    CONNECT; they are not shown in the proxy's repr."""
    with recording(OK) as (server, heads):
        proxy = poolwatch.parse_proxy(
            f"http://127.0.0.1:{server.port}", headers={"X-Proxy-Token": "t0ken"}
        )
        assert "t0ken" not in repr(proxy) and "t0ken" not in str(proxy)
        send(proxy, "http://127.0.0.1:9/plain")
        send(proxy, "https://127.0.0.1:9/tunnelled")
    lines = [head.split(b"\r\n") for head in heads]
    assert lines[0][0] == b"GET http://127.0.0.1:9/plain HTTP/1.1"
    assert lines[1][0] == b"CONNECT 127.0.0.1:9 HTTP/1.1"
    assert all(b"X-Proxy-Token: t0ken" in head for head in lines)


def test_proxy_headers_are_checked() -> None:
    """Headers for a proxy are checked as a request's are, and the error
    shows neither the value nor the proxy's password."""
    for name, value in (("X-A", "a\r\nb"), ("X A", "b")):
        with pytest.raises(poolwatch.LocalProtocolError, match="invalid header") as info:
            poolwatch.parse_proxy("http://u:s3cret@127.0.0.1:1", headers=[(name, value)])
        assert "s3cret" not in str(info.value) and "a\r\nb" not in str(info.value)


def test_httpx_proxy_headers_as_httpx_sends_them() -> None:
    """``httpx.Proxy(headers=...)`` reaches the proxy through poolwatch's
    transport as through httpx's, with forwarded requests and CONNECT."""
    import httpx

    def seen(transport: httpx.BaseTransport, heads: list[bytes]) -> list[list[bytes]]:
        with httpx.Client(transport=transport) as client:
            client.get("http://127.0.0.1:9/plain")
            with pytest.raises(httpx.ProxyError):
                client.get("https://127.0.0.1:9/tunnelled")
        found = [
            [line for line in head.split(b"\r\n") if line.startswith((b"GET", b"CONNECT", b"X-"))]
            for head in heads
        ]
        heads.clear()
        return found

    with recording(OK) as (server, heads):
        proxy = httpx.Proxy(f"http://127.0.0.1:{server.port}", headers={"X-Proxy-Token": "t"})
        stock = seen(httpx.HTTPTransport(proxy=proxy), heads)
        ours = seen(poolwatch.HTTPXTransport(proxy=proxy), heads)
    assert ours == stock
    assert all(b"X-Proxy-Token: t" in lines for lines in ours) and len(ours) == 2


def test_httpx_retries_leave_a_proxys_refusal_alone() -> None:
    """``retries=N`` tries a failed connect again, but not a proxy that
    answered CONNECT with a refusal: its credentials would go again, as
    httpcore never sends them twice."""
    import httpx

    with recording(OK) as (server, heads):
        proxy = f"http://127.0.0.1:{server.port}"
        for transport in (
            httpx.HTTPTransport(proxy=proxy, retries=3),
            poolwatch.HTTPXTransport(proxy=proxy, retries=3),
        ):
            with httpx.Client(transport=transport) as client, pytest.raises(httpx.ProxyError):
                client.get("https://127.0.0.1:9/tunnelled")
            assert [head.split(b" ")[0] for head in heads] == [b"CONNECT"]
            heads.clear()
