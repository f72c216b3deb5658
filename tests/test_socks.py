"""Requests through a SOCKS proxy (tests/socks_server.py on loopback):
SOCKS5 with and without authentication, remote and local name resolution,
SOCKS4 and 4a, http and https targets, the errors a proxy can give, and the
same through the requests and httpx adapters next to their stock
counterparts (PySocks, socksio)."""

from __future__ import annotations

import gc
import threading
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
from poolwatch._core.socks import SocksError, SocksHandshake
from tests.conftest import assert_at_rest
from tests.proxy_support import free_port
from tests.servers import HTTPServer, ServerConnection, raw_server
from tests.socks_server import SocksServer, socks_server
from tests.tls_support import TLSServer, client_context

USER, PASSWORD = "user", "s3cret"
AUTH = f"{USER}:{PASSWORD}"


@pytest.fixture
def socks() -> Iterator[SocksServer]:
    with socks_server() as srv:
        yield srv


@pytest.fixture
def socks_auth() -> Iterator[SocksServer]:
    with socks_server((USER, PASSWORD)) as srv:
        yield srv


def test_handshake_bytes_split_anywhere() -> None:
    """The sans-I/O handshake reads a reply however the network splits it."""
    handshake = SocksHandshake("socks5", "example.test", 80, username="u", password="p")
    assert handshake.data_to_send() == b"\x05\x02\x00\x02"
    for byte in b"\x05\x02":
        handshake.receive_data(bytes([byte]))
    assert handshake.data_to_send() == b"\x01\x01u\x01p"
    handshake.receive_data(b"\x01\x00")
    assert handshake.data_to_send() == b"\x05\x01\x00\x03\x0cexample.test\x00\x50"
    reply = b"\x05\x00\x00\x03\x04host\x00\x50"
    for byte in reply:
        assert not handshake.done
        handshake.receive_data(bytes([byte]))
    assert handshake.done


@pytest.mark.parametrize(
    ("version", "reply", "message"),
    [
        ("socks5", b"\x05\xff", "no offered authentication"),
        ("socks5", b"\x04\x00", "not a SOCKS5 proxy"),
        ("socks5", b"\x05\x00\x05\x05\x00\x01" + bytes(6), "refused by the target"),
        ("socks4", b"\x00\x5b" + bytes(6), "rejected"),
        ("socks5", b"", "closed the connection"),
    ],
)
def test_handshake_refusals(version: str, reply: bytes, message: str) -> None:
    """Each refusal is a SocksError saying why."""
    handshake = SocksHandshake(version, "127.0.0.1", 80)
    handshake.data_to_send()
    with pytest.raises(SocksError, match=message):
        handshake.receive_data(reply)


# -- the native transport --------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "seen"),
    [
        ("socks5", (5, "ipv4", "127.0.0.1")),
        ("socks5h", (5, "domain", "localhost")),
        ("socks4", (4, "ipv4", "127.0.0.1")),
        ("socks4a", (4, "domain", "localhost")),
    ],
)
def test_http_through_socks_is_pooled(
    socks: SocksServer, server: HTTPServer, scheme: str, seen: tuple[int, str, str]
) -> None:
    """Plain http through each SOCKS flavour: names resolved by the client
    or by the proxy as the scheme says, origin-form requests, one
    connection for three requests, and stats keyed by origin and proxy."""
    url = f"http://localhost:{server.port}/a"
    with poolwatch.Transport() as t:
        for _ in range(3):
            assert t.request("GET", url, proxy=socks.url(scheme=scheme)).read() == (
                b"hello world!\n"
            )
        stats = assert_at_rest(t)
        assert stats.connections_opened == 1
        assert list(stats.per_origin) == [
            f"http://localhost:{server.port} via {scheme}://127.0.0.1:{socks.port}"
        ]
    assert socks.requests == [(*seen, server.port)]
    assert [path for _, _, path, _ in server.requests] == ["/a"] * 3


def test_https_through_socks5_with_auth(
    socks_auth: SocksServer, https_server: TLSServer, ca: trustme.CA
) -> None:
    """TLS to the origin over the SOCKS connection, with authentication."""
    proxy = socks_auth.url(scheme="socks5h", auth=AUTH)
    with poolwatch.Transport(ssl_context=client_context(ca)) as t:
        for _ in range(2):
            assert t.request("GET", https_server.url("/b"), proxy=proxy).read() == (
                b"hello world!\n"
            )
        stats = assert_at_rest(t)
        assert (stats.connections_opened, stats.reused_requests) == (1, 1)
    assert https_server.accepted == 1
    assert socks_auth.requests == [(5, "domain", "localhost", https_server.port)]


@pytest.mark.parametrize(
    ("auth", "message"),
    [(None, "no offered authentication"), (f"{USER}:wrong", "rejected the username")],
)
def test_socks_authentication_failures(
    socks_auth: SocksServer, server: HTTPServer, auth: str | None, message: str
) -> None:
    """Missing or wrong credentials: ProxyError naming the proxy, the
    target and the cause; the pool keeps working."""
    with poolwatch.Transport() as t:
        with pytest.raises(poolwatch.ProxyError, match=message) as info:
            t.request("GET", server.url("/"), proxy=socks_auth.url(auth=auth))
        text = str(info.value)
        assert f"socks5://127.0.0.1:{socks_auth.port}" in text
        assert server.url("/") in text
        assert PASSWORD not in text and "wrong" not in text
        good = socks_auth.url(auth=AUTH)
        assert t.request("GET", server.url("/"), proxy=good).read() == b"hello world!\n"
        stats = assert_at_rest(t)
        assert stats.connections_opened == 1
    assert server.accepted == 1


def test_socks_proxy_cannot_reach_target(socks: SocksServer) -> None:
    """The target refuses the proxy: ProxyError with the proxy's reason."""
    url = f"http://127.0.0.1:{free_port()}/"
    with poolwatch.Transport() as t:
        with pytest.raises(poolwatch.ProxyError, match="refused by the target") as info:
            t.request("GET", url, proxy=socks.url())
        assert url in str(info.value)
        assert_at_rest(t)


def test_socks_proxy_refuses_connections(server: HTTPServer) -> None:
    """Nothing listens at the proxy's address: ProxyError naming it."""
    proxy = f"socks5://127.0.0.1:{free_port()}"
    with poolwatch.Transport() as t, pytest.raises(poolwatch.ProxyError, match=proxy):
        t.request("GET", server.url("/"), proxy=proxy)
    assert server.accepted == 0


# -- the adapters next to their stock counterparts -------------------------------


def _requests_outcome(adapter: requests.adapters.BaseAdapter, url: str, proxy: str) -> Any:
    with requests.Session() as session:
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        try:
            resp = session.get(url, proxies={"http": proxy, "https": proxy})
        except rexc.RequestException as exc:
            return type(exc)
        return (resp.status_code, resp.content, resp.headers.get("Content-Type"))


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
@pytest.mark.parametrize("auth", [AUTH, f"{USER}:wrong"], ids=["auth", "bad-auth"])
def test_requests_parity_through_socks(
    socks_auth: SocksServer, server: HTTPServer, scheme: str, auth: str
) -> None:
    """RequestsAdapter through SOCKS as HTTPAdapter with PySocks: the same
    response, or for bad credentials an exception of the stock type (or a
    subclass: poolwatch says ProxyError where PySocks says ConnectionError)."""
    proxy = socks_auth.url(scheme=scheme, auth=auth)
    url = f"http://localhost:{server.port}/x"
    stock = _requests_outcome(requests.adapters.HTTPAdapter(), url, proxy)
    gc.collect()  # urllib3 closes a failed SOCKS connection when collected
    adapter = poolwatch.RequestsAdapter()
    ours = _requests_outcome(adapter, url, proxy)
    if isinstance(stock, type):
        assert stock is rexc.ConnectionError
        assert isinstance(ours, type) and issubclass(ours, stock)
    else:
        assert stock == ours == (200, b"hello world!\n", "text/plain")
        assert list(adapter.stats().per_origin) == [
            f"http://localhost:{server.port} via {scheme}://127.0.0.1:{socks_auth.port}"
        ]
    assert_at_rest(adapter.transport)


def test_requests_https_through_socks(
    socks: SocksServer, https_server: TLSServer, ca: trustme.CA, tmp_path: Any
) -> None:
    """https through SOCKS5 with requests: verified TLS over the proxy."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with requests.Session() as session:
        adapter = poolwatch.RequestsAdapter()
        session.mount("https://", adapter)
        resp = session.get(
            https_server.url("/"),
            proxies={"https": socks.url(scheme="socks5h")},
            verify=str(bundle),
        )
        assert resp.content == b"hello world!\n"
    assert socks.requests == [(5, "domain", "localhost", https_server.port)]


def _httpx_outcome(transport: httpx.BaseTransport, url: str) -> Any:
    with httpx.Client(transport=transport) as client:
        try:
            resp = client.get(url)
        except httpx.HTTPError as exc:
            return type(exc)
        return (resp.status_code, resp.content, resp.headers.get("Content-Type"))


@pytest.mark.parametrize("auth", [AUTH, f"{USER}:wrong", None], ids=["auth", "bad-auth", "none"])
def test_httpx_parity_through_socks(
    socks_auth: SocksServer, server: HTTPServer, auth: str | None
) -> None:
    """HTTPXTransport(proxy="socks5://...") as httpx.HTTPTransport with
    socksio: the same response or the same exception type."""
    proxy = socks_auth.url(auth=auth)
    url = f"http://localhost:{server.port}/x"
    with warnings.catch_warnings():
        # httpcore leaves the socket of a failed SOCKS handshake unclosed.
        warnings.simplefilter("ignore", ResourceWarning)
        stock = _httpx_outcome(httpx.HTTPTransport(proxy=proxy), url)
        gc.collect()
    transport = poolwatch.HTTPXTransport(proxy=proxy)
    ours = _httpx_outcome(transport, url)
    assert ours == stock
    if auth == AUTH:
        assert stock == (200, b"hello world!\n", "text/plain")
    else:
        assert stock is httpx.ProxyError
    assert all(request[1] == "domain" for request in socks_auth.requests)


def test_httpx_https_through_socks(
    socks: SocksServer, https_server: TLSServer, ca: trustme.CA
) -> None:
    """https through SOCKS5 with httpx."""
    transport = poolwatch.HTTPXTransport(verify=client_context(ca), proxy=socks.url())
    with httpx.Client(transport=transport) as client:
        assert client.get(https_server.url("/")).content == b"hello world!\n"
    assert socks.requests == [(5, "domain", "localhost", https_server.port)]


@pytest.mark.parametrize(
    ("answer", "message"),
    [(b"", "closed the connection"), (b"HTTP/1.1 400 Bad Request\r\n\r\n", "not a SOCKS5")],
    ids=["hangs-up", "not-socks"],
)
def test_broken_socks_proxy(server: HTTPServer, answer: bytes, message: str) -> None:
    """A proxy that hangs up in the handshake or does not speak SOCKS:
    ProxyError naming the proxy, the URL and the cause."""

    def handler(conn: ServerConnection) -> None:
        conn.sock.recv(16)
        conn.sock.sendall(answer)

    with raw_server(handler) as proxy, poolwatch.Transport() as t:
        with pytest.raises(poolwatch.ProxyError, match=message) as info:
            t.request("GET", server.url("/"), proxy=f"socks5://127.0.0.1:{proxy.port}")
        assert f"socks5://127.0.0.1:{proxy.port}" in str(info.value)
        assert server.url("/") in str(info.value)
        assert_at_rest(t)
    assert server.accepted == 0


def test_silent_socks_proxy_is_a_connect_timeout(server: HTTPServer) -> None:
    """A proxy that accepts but never answers the handshake: the connect
    timeout covers the handshake, and the error says it was the SOCKS step."""
    done = threading.Event()

    def handler(conn: ServerConnection) -> None:
        done.wait(10)

    with raw_server(handler) as proxy, poolwatch.Transport(connect_timeout=0.2) as t:
        try:
            with pytest.raises(poolwatch.ConnectTimeout, match="SOCKS handshake") as info:
                t.request("GET", server.url("/"), proxy=f"socks5://127.0.0.1:{proxy.port}")
            assert f"socks5://127.0.0.1:{proxy.port}" in str(info.value)
            assert_at_rest(t)
        finally:
            done.set()
