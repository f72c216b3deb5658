"""R17 against a server that trickles its response a byte at a time: the
read timeout is between body bytes, the response-header timeout is for the
whole head (started again by each interim response)."""

from __future__ import annotations

import threading

import pytest

import poolwatch
from tests.async_support import assert_at_rest as async_assert_at_rest
from tests.async_support import run
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


def _processing(stop: threading.Event, interims: int) -> object:
    """A server that answers ``102 Processing`` ``interims`` times, PACE
    apart, then 200 (a slow job keeping its client waiting)."""

    def serve(conn: ServerConnection) -> None:
        conn.recv_request_head()
        for _ in range(interims):
            if stop.wait(0.1):
                return
            conn.sock.sendall(b"HTTP/1.1 102 Processing\r\n\r\n")
        if stop.wait(0.1):
            return
        conn.sock.sendall(HEAD + BODY)
        conn.recv_request_head()

    return serve


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_interim_response_starts_the_response_header_limit_again(kind: str) -> None:
    """``102 Processing`` every 0.1 s for 0.7 s, then the response: each
    interim response starts the 0.4 s limit again (R17), so the request
    succeeds although the whole head took longer than the limit."""
    stop = threading.Event()
    limit = poolwatch.Timeout(response_header=0.4)
    with raw_server(_processing(stop, interims=6)) as srv:
        try:
            if kind == "sync":
                with poolwatch.Transport() as transport:
                    response = transport.request("GET", srv.url(), timeout=limit)
                    assert response.read() == BODY
                    timings = response.timings
                    assert_at_rest(transport)
            else:

                async def main() -> poolwatch.Timings:
                    async with poolwatch.AsyncTransport() as transport:
                        response = await transport.request("GET", srv.url(), timeout=limit)
                        assert await response.read() == BODY
                        await async_assert_at_rest(transport)
                        return response.timings

                timings = run(main)
        finally:
            stop.set()
    assert timings.response_head is not None and timings.request_written is not None
    assert timings.response_head - timings.request_written > 0.5
