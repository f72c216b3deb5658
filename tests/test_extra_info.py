"""``Response.get_extra_info()``, and httpx's ``network_stream`` extension
over the adapters: what the connection a response came on tells (its
addresses, socket and TLS session), by the names httpcore answers to."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trustme

import poolwatch
from tests import async_support
from tests.servers import RawServer, ServerConnection, raw_server
from tests.tls_support import TLSServer, client_context

NAMES = ("client_addr", "server_addr", "socket", "ssl_object", "is_readable")


def tell_peer(conn: ServerConnection) -> None:
    """Answer each request with the address the server sees the client at."""
    pending = b""
    while True:
        while b"\r\n\r\n" not in pending:
            data = conn.sock.recv(65536)
            if not data:
                return
            pending += data
        pending = pending.split(b"\r\n\r\n", 1)[1]
        host, port = conn.sock.getpeername()[:2]
        body = f"{host} {port}".encode()
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


@pytest.fixture
def peer_server() -> Iterator[RawServer]:
    with raw_server(tell_peer) as server:
        yield server


def seen_by_server(body: bytes) -> tuple[str, int]:
    host, port = body.decode().split()
    return host, int(port)


def test_addresses_socket_and_no_tls_over_plain_tcp(peer_server: RawServer) -> None:
    with poolwatch.Transport() as t:
        resp = t.request("GET", peer_server.origin + "/")
        info = {name: resp.get_extra_info(name) for name in NAMES}
        assert info["client_addr"] == seen_by_server(resp.read())
        assert info["server_addr"] == ("127.0.0.1", peer_server.port)
        assert isinstance(info["socket"], socket.socket)
        assert info["socket"].getpeername() == info["server_addr"]
        assert info["ssl_object"] is None
        assert info["is_readable"] is False  # idle: nothing waiting
        assert resp.get_extra_info("no such name") is None
    # Closed with the transport: no addresses, and readable (the end).
    assert resp.get_extra_info("server_addr") is None
    assert resp.get_extra_info("is_readable") is True


def test_the_tls_session(https_server: TLSServer, ca: trustme.CA) -> None:
    with (
        poolwatch.Transport(ssl_context=client_context(ca)) as t,
        t.request("GET", https_server.url()) as resp,
    ):
        tls = resp.get_extra_info("ssl_object")
        assert isinstance(tls, ssl.SSLObject)
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert tls.server_hostname == "localhost"
        assert ("DNS", "localhost") in tls.getpeercert()["subjectAltName"]
        assert resp.get_extra_info("server_addr")[1] == https_server.port
        assert resp.read() == b"hello world!\n"


@pytest.mark.usefixtures("event_loop_kind")
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_async_transport(
    scheme: str, peer_server: RawServer, https_server: TLSServer, ca: trustme.CA
) -> None:
    async def main() -> None:
        async with poolwatch.AsyncTransport(ssl_context=client_context(ca)) as t:
            url = peer_server.origin + "/" if scheme == "http" else https_server.url()
            resp = await t.request("GET", url)
            info = {name: resp.get_extra_info(name) for name in NAMES}
            body = await resp.read()
            port = peer_server.port if scheme == "http" else https_server.port
            assert info["server_addr"][1] == port
            assert info["socket"].getsockname() == info["client_addr"]
            # Idle: nothing waiting (the head may come before its body's
            # bytes, which are then readable for a moment).
            assert resp.get_extra_info("is_readable") is False
            if scheme == "http":
                assert info["client_addr"] == seen_by_server(body)
                assert info["ssl_object"] is None
            else:
                assert info["ssl_object"].version() in ("TLSv1.2", "TLSv1.3")
        assert resp.get_extra_info("server_addr") is None

    async_support.run(main)


def test_httpx_network_stream_as_stock(peer_server: RawServer) -> None:
    """The extension answers as httpcore's does; it cannot be read or
    written, since the connection's workers do that."""
    url = peer_server.origin + "/"
    seen: dict[str, Any] = {}
    for name, transport in (
        ("stock", httpx.HTTPTransport()),
        ("poolwatch", poolwatch.HTTPXTransport()),
    ):
        with httpx.Client(transport=transport) as client, client.stream("GET", url) as resp:
            stream = resp.extensions["network_stream"]
            client_addr = stream.get_extra_info("client_addr")
            assert client_addr == seen_by_server(resp.read())
            seen[name] = (
                stream.get_extra_info("server_addr"),
                stream.get_extra_info("ssl_object"),
                type(stream.get_extra_info("socket")),
                stream.get_extra_info("no such name"),
            )
            if name == "poolwatch":
                with pytest.raises(NotImplementedError, match="get_extra_info"):
                    stream.write(b"x")
                with pytest.raises(NotImplementedError):
                    stream.read(1)
    assert seen["poolwatch"] == seen["stock"]


@pytest.mark.usefixtures("event_loop_kind")
def test_async_httpx_network_stream(https_server: TLSServer, ca: trustme.CA) -> None:
    async def main() -> None:
        transport = poolwatch.AsyncHTTPXTransport(verify=client_context(ca))
        async with httpx.AsyncClient(transport=transport) as client:
            resp = await client.get(https_server.url())
            stream = resp.extensions["network_stream"]
            assert stream.get_extra_info("server_addr")[1] == https_server.port
            assert stream.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
            with pytest.raises(NotImplementedError):
                await stream.read(1)

    async_support.run(main)
