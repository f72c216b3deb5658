"""Adapter details the parity suites do not cover: pickling, stats,
constructor options that reach the sockets, proxies through requests."""

from __future__ import annotations

import pickle
import re
import socket
import ssl
import threading
from typing import Any

import httpx
import pytest
import requests
import trustme

import poolwatch
from tests import async_support
from tests.servers import HTTPServer, ServerConnection, raw_server


def test_requests_adapter_pickles_like_http_adapter(server: HTTPServer) -> None:
    """The pickled adapter keeps its settings and gets a fresh transport."""
    adapter = poolwatch.RequestsAdapter(pool_maxsize=3, max_retries=2, pool_block=True)
    copy = pickle.loads(pickle.dumps(adapter))
    adapter.close()
    assert copy.max_retries.total == 2
    assert copy.transport is not adapter.transport
    assert copy.transport.limits.max_connections_per_host == 3
    with requests.Session() as session:
        session.mount("http://", copy)
        assert session.get(server.url()).text == "hello world!\n"
        assert copy.stats().requests == 1


def test_requests_adapter_shares_a_given_transport(server: HTTPServer) -> None:
    """``transport=`` is used as is, and closing the adapter leaves it open."""
    with poolwatch.Transport() as transport:
        adapter = poolwatch.RequestsAdapter(transport=transport)
        with requests.Session() as session:
            session.mount("http://", adapter)
            session.get(server.url())
        assert transport.stats().requests == 1
        assert transport.request("GET", server.url()).read() == b"hello world!\n"


def test_httpx_socket_options_and_local_address(server: HTTPServer) -> None:
    """``local_address`` and ``socket_options`` reach every new socket."""
    seen: list[tuple[str, int]] = []
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    transport = poolwatch.HTTPXTransport(local_address="127.0.0.1", socket_options=options)
    assert transport.transport.socket_options == tuple(options)
    with httpx.Client(transport=transport) as client:
        transport.transport.add_listener(
            lambda e: seen.append((e.name, e.connection_id or 0)) if e.name == "got_conn" else None
        )
        assert client.get(server.url()).text == "hello world!\n"
    assert seen and seen[0][0] == "got_conn"


def test_httpx_refuses_what_it_cannot_do() -> None:
    """HTTP/2 and unknown proxy schemes: a clear ValueError, not a silent fallback."""
    with pytest.raises(ValueError, match=r"HTTP/1\.1"):
        poolwatch.HTTPXTransport(http2=True)
    with pytest.raises(ValueError, match="scheme"):
        poolwatch.HTTPXTransport(proxy="socks4://127.0.0.1:1080")  # as httpx says


@pytest.mark.parametrize("cls", [poolwatch.HTTPXTransport, poolwatch.AsyncHTTPXTransport])
@pytest.mark.parametrize(
    ("options", "match"),
    [
        pytest.param({"verify": 5}, "verify must be", id="verify"),
        pytest.param({"local_address": 5}, "local_address", id="local-address"),
        pytest.param({"socket_options": [(1,)]}, "socket_options", id="socket-options"),
        pytest.param({"uds": 5}, "uds", id="uds"),
        pytest.param({"proxy": 123}, "proxy must be a URL or an httpx.Proxy", id="proxy"),
    ],
)
def test_httpx_transports_refuse_wrong_kinds_at_once(
    cls: type[Any], options: dict[str, Any], match: str
) -> None:
    """Arguments of the wrong kind raise TypeError naming them when the
    transport is made (httpx's own transport takes them and fails at the
    first connection, or later)."""
    with pytest.raises(TypeError, match=match):
        cls(**options)


def test_leak_is_logged_with_its_call_site(
    server: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    """R6: a leak report also goes to the ``poolwatch.leaks`` logger, with the
    call-site stack."""
    with poolwatch.Transport() as t:
        closed = threading.Event()
        t.add_listener(lambda e: closed.set() if e.name == "conn_closed" else None)
        resp = t.request("GET", server.url())
        with pytest.warns(poolwatch.LeakWarning), caplog.at_level("WARNING", "poolwatch.leaks"):
            resp.report_leak()
            assert closed.wait(10)
        assert t.stats().bodies_leaked == 1
    assert any("test_adapters.py" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("name", ["pool_connections", "pool_maxsize"])
def test_requests_adapter_pool_sizes_must_be_ints(name: str) -> None:
    """A pool size that is not an int raises TypeError naming it (it was
    multiplied into a limit of another name first)."""
    with pytest.raises(TypeError, match=f"{name} must be an int, not 'x'"):
        poolwatch.RequestsAdapter(**{name: "x"})


def test_httpx_transport_outlives_its_clients(server: HTTPServer) -> None:
    """As httpx's own transport: one shared by clients in turn (each closes
    it on its way out) opens new connections for the next; its stats and
    listeners carry on. One passed in is reopened the same way."""
    for transport in (
        poolwatch.HTTPXTransport(),
        poolwatch.HTTPXTransport(transport=poolwatch.Transport()),
    ):
        got: list[str] = []
        transport.transport.add_listener(lambda e, got=got: got.append(e.name))
        for round_ in (1, 2):
            with httpx.Client(transport=transport) as client:
                assert client.get(server.url()).text == "hello world!\n"
            stats = transport.stats()
            assert (stats.requests, stats.connections_closed) == (round_, round_)
            assert stats.workers_alive == 0
        assert got.count("got_conn") == 2
    assert server.accepted == 4


def test_async_httpx_transport_outlives_its_clients(server: HTTPServer) -> None:
    """The same for the async transport."""

    async def main() -> None:
        transport = poolwatch.AsyncHTTPXTransport()
        for round_ in (1, 2):
            async with httpx.AsyncClient(transport=transport) as client:
                assert (await client.get(server.url())).text == "hello world!\n"
            stats = transport.stats()
            assert (stats.requests, stats.connections_closed) == (round_, round_)
            assert stats.workers_alive == 0

    async_support.run(main)
    assert server.accepted == 2


def test_requests_adapter_works_again_after_close(server: HTTPServer) -> None:
    """As ``HTTPAdapter``: a closed session can be used again; the stats
    carry on."""
    with requests.Session() as session:
        adapter = poolwatch.RequestsAdapter()
        session.mount("http://", adapter)
        for round_ in (1, 2):
            assert session.get(server.url()).text == "hello world!\n"
            session.close()
            stats = adapter.stats()
            assert (stats.requests, stats.connections_closed) == (round_, round_)
            assert stats.workers_alive == 0
    assert server.accepted == 2


def _refuse_without_client_certificate(
    listener: socket.socket, context: ssl.SSLContext, done: threading.Event
) -> None:
    """Accept one connection and fail its TLS handshake for want of a client
    certificate; under TLS 1.3 the client hears of it only when it reads
    (the alert follows its finished handshake). Then wait for the client to
    hang up, so that its request is written whole and never reset."""
    conn, _ = listener.accept()
    with conn:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_side=True)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                conn.sendall(outgoing.read())
                incoming.write(conn.recv(65536))
            except ssl.SSLError:
                conn.sendall(outgoing.read())  # the alert
                break
        while conn.recv(65536):
            pass
    done.set()


def test_requests_tls_alert_after_handshake_is_ssl_error(tmp_path: Any) -> None:
    """As with ``HTTPAdapter``: a server that wants a client certificate
    (none given) raises ``requests.exceptions.SSLError``, though the alert
    comes when the response is read, not during the handshake."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    done = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        server = threading.Thread(
            target=_refuse_without_client_certificate, args=(listener, context, done)
        )
        server.start()
        with requests.Session() as session:
            session.mount("https://", poolwatch.RequestsAdapter())
            with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_REQUIRED"):
                session.get(f"https://127.0.0.1:{port}/", verify=str(bundle))
        assert done.wait(10)
        server.join()


def test_requests_messages_name_the_pool(tmp_path: Any) -> None:
    """As ``HTTPAdapter``'s: a read timeout mid-body and a refused connection
    name the pool (not ``None``); a CA bundle or certificate file that does
    not exist is named before anything is sent."""
    stop = threading.Event()

    def stalled(conn: ServerConnection) -> None:
        if conn.recv_request_head():
            conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            stop.wait(10)

    pool = r"HTTPConnectionPool\(host='127\.0\.0\.1', port=\d+\)"
    with raw_server(stalled) as server, requests.Session() as session:
        session.mount("http://", poolwatch.RequestsAdapter())
        session.mount("https://", poolwatch.RequestsAdapter())
        resp = session.get(server.url(), stream=True, timeout=0.2)
        with pytest.raises(requests.exceptions.ConnectionError, match=pool + ": Read timed out"):
            resp.content  # noqa: B018
        stop.set()
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            refused = f"http://127.0.0.1:{unused.getsockname()[1]}/"
        with pytest.raises(
            requests.exceptions.ConnectionError, match="NewConnectionError"
        ) as info:
            session.get(refused)
        assert re.search(r'NewConnectionError\("' + pool + ": GET ", str(info.value))
        missing = str(tmp_path / "missing.pem")
        with pytest.raises(OSError, match=r"CA certificate bundle, invalid path: .*missing\.pem"):
            session.get(server.url().replace("http:", "https:"), verify=missing)
        with pytest.raises(OSError, match=r"certificate file, invalid path: .*missing\.pem"):
            session.get(server.url().replace("http:", "https:"), cert=missing)


def test_requests_session_close_lets_a_request_in_flight_finish() -> None:
    """As ``HTTPAdapter``: ``Session.close()`` while a request waits for its
    head lets it finish; its connection is closed after it."""
    release = threading.Event()
    arrived = threading.Event()

    def slow(conn: ServerConnection) -> None:
        if conn.recv_request_head():
            arrived.set()
            release.wait(10)
            conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")

    results: list[Any] = []
    with raw_server(slow) as server, requests.Session() as session:
        adapter = poolwatch.RequestsAdapter()
        session.mount("http://", adapter)
        caller = threading.Thread(target=lambda: results.append(session.get(server.url()).text))
        caller.start()
        assert arrived.wait(10)
        session.close()
        release.set()
        caller.join(10)
        assert results == ["late"]
        adapter.transport.settle()
        stats = adapter.stats()
        assert (stats.connections_closed, stats.open_connections) == (1, 0)


def test_requests_cut_short_body_counts_as_http_client_does() -> None:
    """A body cut short names the bytes read and those still expected, as
    ``HTTPAdapter``'s message does."""

    def cut(conn: ServerConnection) -> None:
        while conn.recv_request_head():
            conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n" + b"x" * 25)
            return

    messages = []
    with raw_server(cut) as server:
        for adapter in (requests.adapters.HTTPAdapter(), poolwatch.RequestsAdapter()):
            with requests.Session() as session:
                session.mount("http://", adapter)
                with pytest.raises(requests.exceptions.ChunkedEncodingError) as info:
                    session.get(server.url())
                messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert "IncompleteRead(25 bytes read, 475 more expected)" in messages[1]
