"""R17 against a server that trickles its response a byte at a time: the
read timeout is between body bytes, the response-header timeout is for the
whole head."""

from __future__ import annotations

import threading

import pytest

import poolwatch
from tests.conftest import assert_at_rest
from tests.servers import ServerConnection, raw_server

HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n"
BODY = b"t" * 20
PACE = 0.02  # seconds between bytes: well under the read timeout below


def _trickler(stop: threading.Event, head_at_once: bool) -> object:
    def serve(conn: ServerConnection) -> None:
        conn.recv_request_head()
        data = BODY if head_at_once else HEAD + BODY
        if head_at_once:
            conn.sock.sendall(HEAD)
        for byte in data:
            if stop.wait(PACE):  # pacing, and a way out at teardown
                return
            conn.sock.sendall(bytes([byte]))
        conn.recv_request_head()  # keep the connection until the client goes

    return serve


def test_read_timeout_resets_with_every_byte() -> None:
    """A body trickled a byte every 20 ms arrives whole under a 0.3 s read
    timeout, although it takes longer than that in total."""
    stop = threading.Event()
    with raw_server(_trickler(stop, head_at_once=True)) as srv, poolwatch.Transport() as t:
        try:
            resp = t.request("GET", srv.url(), timeout=poolwatch.Timeout(read=0.3))
            assert resp.read() == BODY
            timings = resp.timings
            assert timings.body_done is not None and timings.response_head is not None
            assert timings.body_done - timings.response_head > 0.3
            assert_at_rest(t)
        finally:
            stop.set()


def test_response_header_timeout_is_not_reset_by_trickling() -> None:
    """A head trickled a byte every 20 ms (about 0.8 s) fails a 0.3 s
    response-header timeout, and the connection is closed."""
    stop = threading.Event()
    with raw_server(_trickler(stop, head_at_once=False)) as srv, poolwatch.Transport() as t:
        try:
            with pytest.raises(poolwatch.ResponseHeaderTimeout):
                t.request("GET", srv.url(), timeout=poolwatch.Timeout(response_header=0.3))
            stats = assert_at_rest(t)
            assert stats.open_connections == 0
            assert stats.requests == 0
        finally:
            stop.set()
