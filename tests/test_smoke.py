"""The first things a user does."""

from __future__ import annotations

import subprocess
import sys

import poolwatch
from tests.conftest import assert_at_rest
from tests.servers import HTTPServer


def test_get_read_and_reuse(transport: poolwatch.Transport, server: HTTPServer) -> None:
    """Scenario 1: two GETs read to the end share one connection."""
    for _ in range(2):
        with transport.request("GET", server.url("/items")) as resp:
            assert resp.status == 200
            assert resp.headers["content-type"] == "text/plain"
            assert resp.read() == b"hello world!\n"
    stats = assert_at_rest(transport)
    assert stats.connections_opened == 1
    assert stats.reused_requests == 1
    assert stats.bodies_drained == 2
    assert server.accepted == 1


def test_keep_alive_disabled_dials_each_time(server: HTTPServer) -> None:
    """Scenario 1, second half: with keep-alive off, two connections."""
    with poolwatch.Transport(keep_alive=False) as t:
        for _ in range(2):
            assert t.request("GET", server.url()).read() == b"hello world!\n"
        stats = assert_at_rest(t)
        assert stats.connections_opened == 2
        assert stats.open_connections == 0
    assert server.accepted == 2


def test_import_pulls_in_no_optional_dependency() -> None:
    """``import poolwatch`` works without requests, httpx or prometheus_client
    being imported; the adapters load them on first use."""
    code = (
        "import sys, poolwatch\n"
        "optional = ('requests', 'httpx', 'prometheus_client')\n"
        "print(sorted(m for m in optional if m in sys.modules))\n"
        "poolwatch.RequestsAdapter\n"
        "print('requests' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "True"]
