"""Idle connections cost little memory (S7): a reader waiting for the next
response holds no receive buffer, over plain TCP or TLS. A blocked
``recv(RECV_SIZE)`` would hold RECV_SIZE bytes per idle connection,
resident once the allocator hands out reused memory (``python -m
benchmarks.idle --path /1m``)."""

from __future__ import annotations

import os
import tracemalloc

import trustme

import poolwatch
from tests.conftest import assert_at_rest
from tests.servers import HTTPServer
from tests.tls_support import TLSServer, client_context

CONNECTIONS = 20
PACKAGE_FILES = os.path.join(os.path.dirname(os.path.abspath(poolwatch.__file__)), "*")


def _live_per_connection(transport: poolwatch.Transport, url: str) -> float:
    """Bytes allocated by poolwatch and still live, per connection, with
    CONNECTIONS connections to ``url`` idle in ``transport``."""
    tracemalloc.start()
    try:
        held = [transport.request("GET", url) for _ in range(CONNECTIONS)]
        for resp in held:
            assert resp.read() == b"hello world!\n"
        del held, resp
        stats = assert_at_rest(transport)
        assert stats.idle_connections == stats.connections_opened == CONNECTIONS
        snapshot = tracemalloc.take_snapshot()
        mine = snapshot.filter_traces([tracemalloc.Filter(True, PACKAGE_FILES)])
        live = sum(s.size for s in mine.statistics("filename"))
    finally:
        tracemalloc.stop()
    return live / CONNECTIONS


def test_idle_reader_holds_no_receive_buffer(server: HTTPServer) -> None:
    """Per idle connection: far below a receive buffer (256 KiB)."""
    with poolwatch.Transport(max_idle_per_host=CONNECTIONS) as t:
        live = _live_per_connection(t, server.url("/"))
    assert live < 32 * 1024, f"{live / 1024:.1f} KiB per connection"


def test_idle_tls_reader_holds_no_receive_buffer(https_server: TLSServer, ca: trustme.CA) -> None:
    """The same over TLS: the reader waits for the socket to be readable
    before it takes a buffer for the encrypted bytes."""
    context = client_context(ca)
    with poolwatch.Transport(max_idle_per_host=CONNECTIONS, ssl_context=context) as t:
        live = _live_per_connection(t, https_server.url("/"))
    assert live < 32 * 1024, f"{live / 1024:.1f} KiB per connection"
