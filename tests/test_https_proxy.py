"""Requests through an https proxy (proxy.py listening with TLS, on
loopback, with a trustme certificate): plain http in absolute form over the
TLS connection to the proxy, https through a CONNECT tunnel inside it (TLS
inside TLS), through Transport, RequestsAdapter and HTTPXTransport."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import httpx
import pytest
import requests
import trustme

import poolwatch
from tests.conftest import assert_at_rest
from tests.proxy_support import CREDENTIALS, proxy_py
from tests.servers import HTTPServer
from tests.test_errors import assert_names_request, reply_then_stall
from tests.test_tls_faults import tls_scripted
from tests.tls_support import TLSServer, client_context


@pytest.fixture(scope="module")
def tls_proxy_port(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """proxy.py with a TLS listener (certificate for 127.0.0.1) and basic
    authentication, for this module."""
    directory = tmp_path_factory.mktemp("proxy")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    with proxy_py("--cert-file", str(cert_file), "--key-file", str(key_file)) as port:
        yield port


def _proxy(port: int, credentials: str | None = CREDENTIALS) -> str:
    userinfo = f"{credentials}@" if credentials else ""
    return f"https://{userinfo}127.0.0.1:{port}"


def test_http_through_https_proxy(tls_proxy_port: int, server: HTTPServer, ca: trustme.CA) -> None:
    """Plain http: TLS to the proxy, absolute-form requests over it, one
    connection reused, stats keyed by origin and proxy."""
    with poolwatch.Transport(ssl_context=client_context(ca)) as t:
        for _ in range(3):
            resp = t.request("GET", server.url("/a"), proxy=_proxy(tls_proxy_port))
            assert resp.read() == b"hello world!\n"
        stats = assert_at_rest(t)
        assert stats.connections_opened == 1
        assert list(stats.per_origin) == [
            f"{server.origin} via https://127.0.0.1:{tls_proxy_port}"
        ]
    assert [path for _, _, path, _ in server.requests] == ["/a"] * 3


def test_https_through_https_proxy_is_tls_in_tls(
    tls_proxy_port: int, https_server: TLSServer, ca: trustme.CA
) -> None:
    """https: CONNECT over TLS to the proxy, then TLS to the origin inside
    it; uploads and downloads both ways, and the tunnel is reused."""
    with poolwatch.Transport(ssl_context=client_context(ca)) as t:
        proxy = _proxy(tls_proxy_port)
        assert t.request("GET", https_server.url("/bytes/300000"), proxy=proxy).read() == (
            b"x" * 300000
        )
        payload = bytes(range(256)) * 1000
        echoed = t.request("POST", https_server.url("/echo"), body=payload, proxy=proxy).read()
        assert echoed == payload
        stats = assert_at_rest(t)
        assert (stats.connections_opened, stats.reused_requests) == (1, 1)
    assert https_server.accepted == 1


def test_origin_silent_inside_the_tunnel_is_a_connect_timeout(
    tls_proxy_port: int, ca: trustme.CA
) -> None:
    """An origin that never answers the TLS handshake inside the tunnel:
    ConnectTimeout naming the request, within the connect timeout."""
    with (
        tls_scripted(ca, reply_then_stall(b""), tls=False) as origin,
        poolwatch.Transport(ssl_context=client_context(ca), connect_timeout=0.5) as t,
    ):
        url = origin + "/inside"
        with pytest.raises(poolwatch.ConnectTimeout) as info:
            t.request("GET", url, proxy=_proxy(tls_proxy_port))
        assert_names_request(info.value, "GET", url)
        assert assert_at_rest(t).open_connections == 0


def test_untrusted_https_proxy_is_a_tls_error(tls_proxy_port: int, server: HTTPServer) -> None:
    """The proxy's certificate is checked: an unknown CA fails the dial."""
    other = client_context(trustme.CA())
    with poolwatch.Transport(ssl_context=other) as t, pytest.raises(poolwatch.TLSError) as info:
        t.request("GET", server.url("/"), proxy=_proxy(tls_proxy_port))
    assert f"https://127.0.0.1:{tls_proxy_port}" in str(info.value)
    assert server.accepted == 0


def test_https_proxy_authentication_required(
    tls_proxy_port: int, https_server: TLSServer, ca: trustme.CA
) -> None:
    """Wrong credentials: ProxyError for the tunnel, naming the 407."""
    with poolwatch.Transport(ssl_context=client_context(ca)) as t:
        with pytest.raises(poolwatch.ProxyError, match="407"):
            t.request("GET", https_server.url("/"), proxy=_proxy(tls_proxy_port, "user:wrong"))
        assert_at_rest(t)


@pytest.mark.parametrize("scheme", ["https", "HTTPS"])
@pytest.mark.parametrize("target", ["http", "https"])
def test_requests_through_https_proxy(
    tls_proxy_port: int,
    server: HTTPServer,
    https_server: TLSServer,
    ca_bundle: str,
    target: str,
    scheme: str,
) -> None:
    """RequestsAdapter as HTTPAdapter: the same response, whatever the case
    of the proxy's scheme. poolwatch checks the proxy's certificate with
    ``verify`` for http targets too, where HTTPAdapter leaves it unchecked
    and warns."""
    url = server.url("/r") if target == "http" else https_server.url("/r")
    proxy = _proxy(tls_proxy_port).replace("https://", f"{scheme}://")
    proxies = {"http": proxy, "https": proxy}
    seen = []
    adapters: list[requests.adapters.BaseAdapter] = [
        requests.adapters.HTTPAdapter(),
        poolwatch.RequestsAdapter(),
    ]
    for adapter in adapters:
        with requests.Session() as session, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            resp = session.get(url, proxies=proxies, verify=ca_bundle)
            warned = {w.category for w in caught}
            seen.append((resp.status_code, resp.content))
    assert seen[0] == seen[1] == (200, b"hello world!\n")
    assert not warned  # poolwatch's run


@pytest.mark.parametrize("target", ["http", "https"])
def test_httpx_through_https_proxy(
    tls_proxy_port: int, server: HTTPServer, https_server: TLSServer, ca: trustme.CA, target: str
) -> None:
    """HTTPXTransport as httpx.HTTPTransport with an httpx.Proxy carrying
    the proxy's ssl_context."""
    url = server.url("/x") if target == "http" else https_server.url("/x")
    context = client_context(ca)
    seen = []
    for make in (httpx.HTTPTransport, poolwatch.HTTPXTransport):
        proxy = httpx.Proxy(_proxy(tls_proxy_port), ssl_context=context)
        transport = make(verify=context, proxy=proxy)  # type: ignore[operator]
        with httpx.Client(transport=transport) as client:
            resp = client.get(url)
            seen.append((resp.status_code, resp.content))
    assert seen[0] == seen[1] == (200, b"hello world!\n")


def test_proxy_has_its_own_ssl_context(
    tls_proxy_port: int, server: HTTPServer, ca: trustme.CA
) -> None:
    """A Proxy made with its own ssl_context checks the proxy with it, not
    with the transport's."""
    proxy = poolwatch.parse_proxy(_proxy(tls_proxy_port), ssl_context=client_context(ca))
    with poolwatch.Transport(ssl_context=client_context(trustme.CA())) as t:
        assert t.request("GET", server.url("/"), proxy=proxy).read() == b"hello world!\n"
        assert_at_rest(t)
