"""Idle connections cost little memory (S7): a reader waiting for the next
response holds no receive buffer. A blocked ``recv(RECV_SIZE)`` would hold
RECV_SIZE bytes per idle connection, resident once the allocator hands out
reused memory (``python -m benchmarks.idle --path /1m``)."""

from __future__ import annotations

import os
import tracemalloc

import poolwatch
from tests.conftest import assert_at_rest
from tests.servers import HTTPServer

CONNECTIONS = 20
PACKAGE_FILES = os.path.join(os.path.dirname(os.path.abspath(poolwatch.__file__)), "*")


def test_idle_reader_holds_no_receive_buffer(server: HTTPServer) -> None:
    """Memory allocated by poolwatch and still live with 20 connections idle,
    per connection: far below a receive buffer (256 KiB)."""
    tracemalloc.start()
    try:
        with poolwatch.Transport(max_idle_per_host=CONNECTIONS) as t:
            held = [t.request("GET", server.url("/")) for _ in range(CONNECTIONS)]
            for resp in held:
                assert resp.read() == b"hello world!\n"
            del held, resp
            stats = assert_at_rest(t)
            assert stats.idle_connections == stats.connections_opened == CONNECTIONS
            snapshot = tracemalloc.take_snapshot()
            mine = snapshot.filter_traces([tracemalloc.Filter(True, PACKAGE_FILES)])
            live = sum(s.size for s in mine.statistics("filename"))
    finally:
        tracemalloc.stop()
    assert live / CONNECTIONS < 32 * 1024, f"{live / CONNECTIONS / 1024:.1f} KiB per connection"
