"""TLS for the tests: a certificate authority made at test time (trustme)
and an HTTPS variant of the loopback server."""

from __future__ import annotations

import datetime
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import trustme

from tests.servers import HTTPServer, Route, ServerConnection


class TLSServer(HTTPServer):
    """HTTPServer behind TLS with the given server context."""

    def __init__(self, context: ssl.SSLContext, routes: dict[str, Route] | None = None):
        self.context = context
        super().__init__(routes)

    @property
    def origin(self) -> str:
        return f"https://localhost:{self.port}"

    def _serve(self, conn: ServerConnection) -> None:
        conn.sock = self.context.wrap_socket(
            conn.sock, server_side=True, do_handshake_on_connect=False
        )
        with self._lock:
            self._socks.append(conn.sock)
        try:
            conn.sock.do_handshake()
        except (ssl.SSLError, OSError):
            # One side refused the other's certificate, and the alert is out.
            # Read what the client sent until it closes: closing with its
            # bytes unread would send a reset, which can overtake the alert.
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                return
            conn.wait_for_close()
            return
        super()._serve(conn)


def server_context(
    ca: trustme.CA, *hosts: str, not_after: datetime.datetime | None = None
) -> ssl.SSLContext:
    """A server context with a certificate from ``ca`` for ``hosts``."""
    if not_after is None:
        cert = ca.issue_cert(*hosts)
    else:
        cert = ca.issue_cert(*hosts, not_after=not_after)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    """A client context trusting ``ca``."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@contextmanager
def tls_server(
    context: ssl.SSLContext, routes: dict[str, Route] | None = None
) -> Iterator[TLSServer]:
    server = TLSServer(context, routes)
    try:
        yield server
    finally:
        server.stop()
