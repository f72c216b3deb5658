"""Connecting: an IP address in the URL is connected to without a name
lookup, a host name still goes through one, and both honour
``local_address`` and report failures the same way."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest

import poolwatch
from poolwatch._core.dialing import interleaved
from poolwatch._models import ip_family
from tests.async_support import assert_at_rest as async_assert_at_rest
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


def test_addresses_are_tried_with_the_families_taking_turns() -> None:
    """RFC 8305 section 4: the first address's family first, then the
    families alternate, each in the order the lookup gave."""
    v4 = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (f"192.0.2.{n}", 80)) for n in (1, 2, 3)]
    v6 = [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (f"2001:db8::{n}", 80, 0, 0)) for n in (1, 2)
    ]
    assert interleaved([*v6, *v4]) == [v6[0], v4[0], v6[1], v4[1], v4[2]]
    assert interleaved([v4[0], *v6, *v4[1:]]) == [v4[0], v6[0], v4[1], v6[1], v4[2]]
    assert interleaved(v4) == v4


@contextmanager
def _unanswering_port() -> Iterator[int]:
    """A loopback port that never answers a connect: a listener that accepts
    nothing, its queue filled, so that the kernel drops further SYNs (the
    client's connect waits, as for an address that drops every packet)."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filler.connect(("127.0.0.1", port))
        with socket.socket() as probe:
            probe.setblocking(False)
            probe.connect_ex(("127.0.0.1", port))
            _, writable, _ = select.select([], [probe], [], 0.2)
        if writable:
            pytest.skip("this kernel answers connects to a full listen queue")
        yield port


def _resolving(monkeypatch: pytest.MonkeyPatch, name: str, ports: list[int]) -> None:
    """Make ``name`` resolve to 127.0.0.1 on each of ``ports``, in order."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host != name:
            return real(host, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)) for port in ports]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _get(kind: str, url: str, connect_timeout: float) -> tuple[bytes, float, int]:
    """GET ``url`` with a fresh transport of ``kind``: the body, the seconds
    the request took, and the connections opened (checked at rest, R18)."""
    if kind == "sync":
        with poolwatch.Transport(connect_timeout=connect_timeout) as transport:
            started = time.monotonic()
            body = transport.request("GET", url).read()
            took = time.monotonic() - started
            return body, took, assert_at_rest(transport).connections_opened

    async def main() -> tuple[bytes, float, int]:
        async with poolwatch.AsyncTransport(connect_timeout=connect_timeout) as transport:
            started = time.monotonic()
            body = await (await transport.request("GET", url)).read()
            took = time.monotonic() - started
            return body, took, (await async_assert_at_rest(transport)).connections_opened

    return run(main)


def _failure(kind: str, url: str, connect_timeout: float = 30.0) -> BaseException:
    """What a GET of ``url`` raises, with a fresh transport of ``kind``."""
    with pytest.raises(poolwatch.PoolwatchError) as caught:
        _get(kind, url, connect_timeout)
    return caught.value


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_the_addresses_of_a_name_race(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """When a name's first address does not answer, the next is tried a
    quarter of a second later (RFC 8305), not after the connect timeout;
    the attempt left waiting is closed."""
    peers: list[tuple[int, str]] = []
    with _unanswering_port() as dead, _recording_server("127.0.0.1", peers) as srv:
        _resolving(monkeypatch, "dual.test", [dead, srv.port])
        body, took, opened = _get(kind, "http://dual.test/", connect_timeout=20)
    assert (body, opened) == (b"ok", 1)
    assert took < 10, took  # not the connect timeout's 20 s
    assert peers == [(socket.AF_INET, "127.0.0.1")]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_the_last_failure_is_raised_when_no_address_answers(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Every address refused: the error names the URL and the reason. Every
    address silent: the connect timeout bounds the whole race, and every
    attempt's socket is closed."""
    with socket.socket() as one, socket.socket() as two, _unanswering_port() as dead:
        one.bind(("127.0.0.1", 0))
        two.bind(("127.0.0.1", 0))  # bound, not listening: refused
        _resolving(monkeypatch, "refused.test", [p.getsockname()[1] for p in (one, two)])
        refused = _failure(kind, "http://refused.test/")
        assert isinstance(refused, poolwatch.ConnectError)
        assert "http://refused.test/" in str(refused)
        assert str(refused).endswith(": Connection refused")

        _resolving(monkeypatch, "silent.test", [dead, dead, dead])
        silent = _failure(kind, "http://silent.test/", connect_timeout=0.6)
        assert isinstance(silent, poolwatch.ConnectTimeout)
        assert "http://silent.test/" in str(silent)


def test_a_request_making_its_connection_is_counted_as_connecting() -> None:
    """R18: a request whose connection is being made (here, a TLS handshake
    the server never answers) is in ``connecting_requests``, and no longer
    once that fails; it is on no open connection meanwhile."""
    handshaking = threading.Event()
    release = threading.Event()

    def silent(conn: ServerConnection) -> None:
        release.wait(10)  # takes the connection, never answers the hello

    def listener(event: poolwatch.Event) -> None:
        if event.name == "tls_handshake_start":
            handshaking.set()

    failures: list[BaseException] = []
    with raw_server(silent) as srv, poolwatch.Transport() as transport:
        transport.add_listener(listener)

        def call() -> None:
            try:
                transport.request("GET", f"https://127.0.0.1:{srv.port}/")
            except poolwatch.PoolwatchError as exc:
                failures.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        try:
            assert handshaking.wait(10)
            during = transport.stats()
        finally:
            release.set()
            caller.join(10)
        after = assert_at_rest(transport)
    assert (during.connecting_requests, during.open_connections) == (1, 0)
    assert during.per_origin[f"https://127.0.0.1:{srv.port}"].connecting_requests == 1
    assert (after.connecting_requests, len(failures)) == (0, 1)
