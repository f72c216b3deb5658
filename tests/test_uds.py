"""HTTP over a Unix domain socket: ``Transport(uds=...)`` and
``HTTPXTransport(uds=...)`` (as ``httpx.HTTPTransport(uds=...)``), against
a real HTTP/1.1 server listening on a socket file in a temporary directory."""

from __future__ import annotations

import http.server
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import poolwatch
from tests.conftest import assert_at_rest


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: UnixHTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def do_GET(self) -> None:
        body = f"host={self.headers['Host']} path={self.path}\n".encode()
        with self.server.lock:
            self.server.paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # a Unix socket peer has no address to log


class UnixHTTPServer(socketserver.ThreadingUnixStreamServer):
    """The standard library's HTTP server on a Unix socket; one thread per
    connection, all joined on close."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, path: str) -> None:
        super().__init__(path, _Handler)
        self.path = path
        self.lock = threading.Lock()
        self.connections = 0
        self.paths: list[str] = []


@pytest.fixture
def unix_server(tmp_path: Path) -> Iterator[UnixHTTPServer]:
    server = UnixHTTPServer(str(tmp_path / "http.sock"))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="test-unix-server")
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.mark.parametrize("as_path", [False, True], ids=["str", "Path"])
def test_transport_over_unix_socket(unix_server: UnixHTTPServer, as_path: bool) -> None:
    """Requests go to the socket (given as a str or a path object) whatever
    the URL's host; the Host header comes from the URL; one connection is
    reused; stats name the socket."""
    uds = Path(unix_server.path) if as_path else unix_server.path
    with poolwatch.Transport(uds=uds) as t:
        for path in ("/a", "/b"):
            resp = t.request("GET", f"http://example.invalid{path}")
            assert resp.read() == f"host=example.invalid path={path}\n".encode()
        stats = assert_at_rest(t)
        assert (stats.connections_opened, stats.reused_requests) == (1, 1)
        assert list(stats.per_origin) == [f"http://example.invalid:80 via unix:{unix_server.path}"]
        assert t.connections()[0].origin.endswith(f"unix:{unix_server.path}")
    assert unix_server.connections == 1
    assert unix_server.paths == ["/a", "/b"]


def test_missing_socket_is_a_connect_error(tmp_path: Path) -> None:
    """No socket file: ConnectError naming the URL and the socket path."""
    path = str(tmp_path / "nothing.sock")
    with poolwatch.Transport(uds=path) as t:
        with pytest.raises(poolwatch.ConnectError, match=r"nothing\.sock") as info:
            t.request("GET", "http://localhost/")
        assert "http://localhost/" in str(info.value)
        assert_at_rest(t)


def test_httpx_uds_parity(unix_server: UnixHTTPServer) -> None:
    """HTTPXTransport(uds=...) gives what httpx.HTTPTransport(uds=...) gives."""
    seen = []
    transports: list[httpx.BaseTransport] = [
        httpx.HTTPTransport(uds=unix_server.path),
        poolwatch.HTTPXTransport(uds=unix_server.path),
    ]
    for transport in transports:
        with httpx.Client(transport=transport) as client:
            resp = client.get("http://localhost:8080/x")
            seen.append((resp.status_code, resp.headers["Content-Type"], resp.content))
    assert seen[0] == seen[1] == (200, "text/plain", b"host=localhost:8080 path=/x\n")
