"""Connecting: an IP address in the URL is connected to without a name
lookup, a host name still goes through one, and both honour
``local_address`` and report failures the same way."""

from __future__ import annotations

import socket
from contextlib import AbstractContextManager

import pytest

import poolwatch
from poolwatch._models import ip_family
from tests.async_support import run
from tests.conftest import assert_at_rest
from tests.servers import RawServer, ServerConnection, raw_server

REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")


@pytest.mark.parametrize(
    ("host", "family"),
    [
        ("127.0.0.1", socket.AF_INET),
        ("::1", socket.AF_INET6),
        ("2001:db8::8a2e:370:7334", socket.AF_INET6),
        ("localhost", None),
        ("127.1", None),  # legal for getaddrinfo(), not the standard notation
        ("fe80::1%lo", None),  # a zone needs the lookup's scope id
        ("", None),
        ("256.0.0.1", None),
        ("1.2.3.4\x00", None),
    ],
)
def test_ip_family(host: str, family: int | None) -> None:
    """Only an address in the standard notation skips the lookup."""
    assert ip_family(host) == family


def _recording_server(
    host: str, peers: list[tuple[int, str]]
) -> AbstractContextManager[RawServer]:
    """A server that notes the family and address each connection came from."""

    def handler(conn: ServerConnection) -> None:
        peers.append((conn.sock.family, conn.sock.getpeername()[0]))
        while conn.recv_request_head():
            conn.sock.sendall(REPLY)

    return raw_server(handler, host)


def test_ipv4_address() -> None:
    """An IPv4 address is connected to directly; the connection is reused."""
    peers: list[tuple[int, str]] = []
    with _recording_server("127.0.0.1", peers) as srv, poolwatch.Transport() as transport:
        for _ in range(2):
            assert transport.request("GET", srv.url()).read() == b"ok"
        assert peers == [(socket.AF_INET, "127.0.0.1")]
        assert_at_rest(transport)


@needs_ipv6
def test_ipv6_address() -> None:
    """An IPv6 address (in brackets in the URL) gets an IPv6 socket."""
    peers: list[tuple[int, str]] = []
    with _recording_server("::1", peers) as srv, poolwatch.Transport() as transport:
        assert srv.url().startswith("http://[::1]:")
        assert transport.request("GET", srv.url()).read() == b"ok"
        assert peers == [(socket.AF_INET6, "::1")]
        assert_at_rest(transport)


def test_host_name_is_looked_up() -> None:
    """A name goes through getaddrinfo(): ``localhost`` reaches the server
    on 127.0.0.1 (after ::1 if the name resolves to it first)."""
    peers: list[tuple[int, str]] = []
    with _recording_server("127.0.0.1", peers) as srv, poolwatch.Transport() as transport:
        url = f"http://localhost:{srv.port}/"
        assert transport.request("GET", url).read() == b"ok"
        assert peers == [(socket.AF_INET, "127.0.0.1")]


def test_local_address_is_bound() -> None:
    """``local_address`` is bound before connecting to an address: the
    server sees it, and one of the other family fails as a ConnectError
    naming the URL, with the pool still usable."""
    peers: list[tuple[int, str]] = []
    with _recording_server("127.0.0.1", peers) as srv:
        with poolwatch.Transport(local_address="127.0.0.1") as transport:
            assert transport.request("GET", srv.url()).read() == b"ok"
        assert peers == [(socket.AF_INET, "127.0.0.1")]
        with poolwatch.Transport(local_address="::1") as transport:
            with pytest.raises(poolwatch.ConnectError) as caught:
                transport.request("GET", srv.url("/x"))
            assert srv.url("/x") in str(caught.value)
            assert "could not connect" in str(caught.value)
            stats = assert_at_rest(transport)
            assert stats.open_connections == stats.workers_alive == 0


def test_refused_address() -> None:
    """Nobody listening at an address: ConnectError naming the URL and the
    system's reason, on both transports (asyncio's own words name only the
    address)."""

    async def refused_async(url: str) -> str:
        async with poolwatch.AsyncTransport() as transport:
            with pytest.raises(poolwatch.ConnectError) as caught:
                await transport.request("GET", url)
        return str(caught.value)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        url = f"http://127.0.0.1:{port}/"
        with poolwatch.Transport() as transport, pytest.raises(poolwatch.ConnectError) as caught:
            transport.request("GET", url)
        for message in (str(caught.value), run(lambda: refused_async(url))):
            assert url in message
            assert message.endswith(": Connection refused")


@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("::1", marks=needs_ipv6), "localhost"])
def test_async_connects_the_same_way(host: str) -> None:
    """The asyncio transport: an address is connected to directly, in its
    own family; a name is looked up off the event loop."""
    peers: list[tuple[int, str]] = []
    listen = "127.0.0.1" if host == "localhost" else host
    with _recording_server(listen, peers) as srv:
        url = f"http://{'[::1]' if host == '::1' else host}:{srv.port}/"

        async def main() -> None:
            async with poolwatch.AsyncTransport() as transport:
                for _ in range(2):
                    assert await (await transport.request("GET", url)).read() == b"ok"

        run(main)
    family = socket.AF_INET6 if host == "::1" else socket.AF_INET
    assert peers == [(family, listen)]
