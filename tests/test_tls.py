"""https origins: verification, hostname checks, expiry, and pooling over
TLS (the reader and writer share one TLS session)."""

from __future__ import annotations

import datetime
import socket
import ssl
import warnings
from collections.abc import Callable
from typing import Any

import h11
import pytest
import requests
import trustme

import poolwatch
from tests import async_support
from tests.conftest import assert_at_rest
from tests.servers import HTTPServer, Reply, ServerConnection
from tests.tls_support import TLSServer, client_context, server_context, tls_server


def test_https_reuses_one_connection(ca: trustme.CA) -> None:
    """R4 over TLS: bodies of every framing drain and the connection is reused;
    a large upload and download cross the shared session concurrently."""
    with (
        tls_server(server_context(ca, "localhost")) as srv,
        poolwatch.Transport(ssl_context=client_context(ca)) as t,
    ):
        for path, size in (("/", 13), ("/bytes/300000", 300000), ("/chunked/70000", 70000)):
            assert len(t.request("GET", srv.url(path)).read()) == size
        upload = bytes(range(256)) * 2048
        assert t.request("POST", srv.url("/echo"), body=upload).read() == upload
        stats = assert_at_rest(t)
        assert stats.connections_opened == 1
        assert stats.reused_requests == 3
    assert srv.accepted == 1


@pytest.mark.parametrize(
    ("hosts", "url_host", "expired", "needle"),
    [
        (("localhost",), "localhost", False, "unable to get local issuer"),
        (("example.test",), "localhost", False, "match"),
        (("localhost",), "localhost", True, "expired"),
    ],
    ids=["untrusted-ca", "wrong-hostname", "expired"],
)
def test_tls_failures_raise_tls_error(
    ca: trustme.CA, hosts: tuple[str, ...], url_host: str, expired: bool, needle: str
) -> None:
    """Verification is on by default; each failure is a TLSError naming the URL,
    and no connection is kept."""
    not_after = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc) if expired else None
    trusted = trustme.CA() if needle == "unable to get local issuer" else ca
    with (
        tls_server(server_context(ca, *hosts, not_after=not_after)) as srv,
        poolwatch.Transport(ssl_context=client_context(trusted)) as t,
    ):
        url = f"https://{url_host}:{srv.port}/"
        with pytest.raises(poolwatch.TLSError) as info:
            t.request("GET", url)
        assert url in str(info.value)
        assert needle in str(info.value).lower() or needle in str(info.value.__cause__).lower()
        stats = assert_at_rest(t)
        assert stats.connections_opened == 0
        assert stats.requests == 0


def test_per_request_context_pools_apart(ca: trustme.CA) -> None:
    """Connections made with different TLS settings are not shared."""
    with tls_server(server_context(ca, "localhost")) as srv, poolwatch.Transport() as t:
        first, second = client_context(ca), client_context(ca)
        for context in (first, second, first):
            t.request("GET", srv.url(), ssl_context=context).read()
        stats = assert_at_rest(t)
        assert stats.connections_opened == 2
        assert list(stats.per_origin) == [srv.origin]


def test_client_certificate_is_presented(ca: trustme.CA) -> None:
    """A client certificate loaded into the context reaches the server."""
    server = server_context(ca, "localhost")
    server.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server)
    client = client_context(ca)
    ca.issue_cert("client@example.test").configure_cert(client)
    with tls_server(server) as srv, poolwatch.Transport(ssl_context=client) as t:
        assert t.request("GET", srv.url()).read() == b"hello world!\n"


def test_a_missing_client_certificate_is_said(ca: trustme.CA) -> None:
    """A server that wants a client certificate, given none: under TLS 1.3
    its alert comes after the client's handshake is done, as the request
    goes out. The error says why every time, on both transports (the test
    server reads what the client sent before it closes, so no reset can
    overtake the alert)."""
    server = server_context(ca, "localhost")
    server.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server)

    async def fetch_async(url: str) -> None:
        async with poolwatch.AsyncTransport(ssl_context=client_context(ca)) as t:
            with pytest.raises(poolwatch.ReadError, match="CERTIFICATE_REQUIRED"):
                await (await t.request("GET", url)).read()

    with tls_server(server) as srv:
        for _ in range(10):
            # The read's error, never the write's.
            with (
                poolwatch.Transport(ssl_context=client_context(ca)) as t,
                pytest.raises(poolwatch.ReadError, match="CERTIFICATE_REQUIRED"),
            ):
                t.request("GET", srv.url()).read()
            async_support.run(lambda: fetch_async(srv.url()))


class _ALPNServer(TLSServer):
    """Records the protocol each connection's TLS session agreed by ALPN."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.selected: list[str | None] = []
        super().__init__(context)

    def _serve(self, conn: ServerConnection) -> None:
        try:
            conn.sock = self.context.wrap_socket(conn.sock, server_side=True)
        except (ssl.SSLError, OSError):
            return
        self.selected.append(conn.sock.selected_alpn_protocol())
        HTTPServer._serve(self, conn)


@pytest.mark.parametrize("offered", [None, ["h2", "http/1.1"]], ids=["default", "h2-too"])
def test_only_http11_is_offered_by_alpn(ca: trustme.CA, offered: list[str] | None) -> None:
    """As urllib3 and httpcore: HTTP/1.1 is offered by ALPN, alone, even on a
    context made to offer h2 too, so that a server able to speak h2 answers
    in HTTP/1.1 rather than in a protocol poolwatch cannot read."""
    server_ctx = server_context(ca, "localhost")
    server_ctx.set_alpn_protocols(["h2", "http/1.1"])
    context = client_context(ca)
    if offered is not None:
        context.set_alpn_protocols(offered)

    async def fetch_async(url: str) -> bytes:
        async with poolwatch.AsyncTransport(ssl_context=context) as t:
            return await (await t.request("GET", url)).read()

    server = _ALPNServer(server_ctx)
    try:
        with poolwatch.Transport(ssl_context=context) as t:
            assert t.request("GET", server.url()).read() == b"hello world!\n"
        assert async_support.run(lambda: fetch_async(server.url())) == b"hello world!\n"
    finally:
        server.stop()
    assert server.selected == ["http/1.1", "http/1.1"]


def test_a_fully_qualified_host_name(
    ca: trustme.CA, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """``https://localhost./``: TLS sends and checks the name without its
    trailing dot (certificates never carry it), as urllib3 and Go do; through
    requests, the Host header drops it too, as urllib3's does."""
    real = socket.getaddrinfo

    def loopback_only(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        assert host == "localhost.", f"looked up {host!r}"
        return real("127.0.0.1", port, *args, **kwargs)

    def echo_host(request: h11.Request, body: bytes) -> Reply:
        return Reply(body=dict(request.headers)[b"host"])

    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with tls_server(server_context(ca, "localhost"), {"/host": echo_host}) as server:
        monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
        url = f"https://localhost.:{server.port}/host"
        with poolwatch.Transport(ssl_context=client_context(ca)) as t:
            assert t.request("GET", url).read() == f"localhost.:{server.port}".encode()
        with requests.Session() as session:
            session.mount("https://", poolwatch.RequestsAdapter())
            assert session.get(url, verify=str(bundle)).text == f"localhost:{server.port}"


@pytest.mark.parametrize("stock", [True, False], ids=["HTTPAdapter", "RequestsAdapter"])
def test_tls_files_that_do_not_load_are_requests_ssl_errors(
    ca: trustme.CA, tmp_path: Any, stock: bool
) -> None:
    """A client key that does not match its certificate, a certificate file
    without its key, a CA bundle that is none: requests' SSLError (a
    RequestException) through either adapter, before anything is sent;
    poolwatch's names the file."""
    cert = ca.issue_cert("client@example.org")
    cert_file, other_key, bundle, not_a_bundle = (
        str(tmp_path / name) for name in ("c.pem", "k.pem", "ca.pem", "x.pem")
    )
    cert.cert_chain_pems[0].write_to_path(cert_file)
    trustme.CA().issue_cert("x@example.org").private_key_pem.write_to_path(other_key)
    ca.cert_pem.write_to_path(bundle)
    (tmp_path / "x.pem").write_text("not PEM\n")
    adapter = requests.adapters.HTTPAdapter() if stock else poolwatch.RequestsAdapter()
    cases = [
        ({"verify": bundle, "cert": (cert_file, other_key)}, "k.pem"),
        ({"verify": bundle, "cert": cert_file}, "c.pem"),
        ({"verify": not_a_bundle}, "x.pem"),
    ]
    with tls_server(server_context(ca, "localhost")) as server, requests.Session() as session:
        session.mount("https://", adapter)
        for options, named in cases:
            with pytest.raises(requests.exceptions.SSLError) as raised:
                session.get(server.url(), **options)
            if not stock:
                assert named in str(raised.value)
    assert server.requests == []


@pytest.mark.parametrize("stock", [True, False], ids=["HTTPAdapter", "RequestsAdapter"])
def test_verify_false_warns_as_urllib3(ca: trustme.CA, stock: bool) -> None:
    """``verify=False``: urllib3's InsecureRequestWarning, its words and its
    module's, through either adapter, so that a filter on the module
    ``urllib3`` silences it, and the default action shows it once."""
    from urllib3.exceptions import InsecureRequestWarning

    def warned(setup: Callable[[], None]) -> list[warnings.WarningMessage]:
        adapter = requests.adapters.HTTPAdapter() if stock else poolwatch.RequestsAdapter()
        with warnings.catch_warnings(record=True) as caught, requests.Session() as session:
            warnings.resetwarnings()
            setup()
            session.mount("https://", adapter)
            for _ in range(2):
                assert session.get(server.url(), verify=False).status_code == 200
        return [w for w in caught if w.category is InsecureRequestWarning]

    with tls_server(server_context(ca, "localhost")) as server:
        shown = warned(lambda: warnings.simplefilter("default"))
        silenced = warned(lambda: warnings.filterwarnings("ignore", module="urllib3"))
    [warning] = shown
    assert "Adding certificate verification is strongly advised" in str(warning.message)
    assert "urllib3" in warning.filename
    assert silenced == []
