"""Connection resets (RST, via SO_LINGER 0) at each phase: the caller gets a
documented error, the connection is gone, and the next request works."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable

import pytest

import poolwatch
from tests.conftest import assert_at_rest
from tests.servers import ServerConnection, raw_server

HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"


def _reset(conn: ServerConnection) -> None:
    """Close with a reset rather than a FIN."""
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.sock.close()


def _script(
    before_reset: Callable[[ServerConnection], None],
) -> Callable[[ServerConnection], None]:
    """First connection: run ``before_reset``, then reset. Later ones: answer."""

    def serve(conn: ServerConnection) -> None:
        if conn.index == 1:
            before_reset(conn)
            _reset(conn)
            return
        while conn.recv_request_head():
            conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    return serve


@pytest.mark.parametrize(
    ("before_reset", "method", "body", "errors"),
    [
        pytest.param(lambda c: None, "GET", None, (poolwatch.NetworkError,), id="on-accept"),
        pytest.param(
            lambda c: c.sock.recv(100),
            "POST",
            b"u" * 64_000_000,  # more than the kernel's buffers take
            (poolwatch.RemoteDisconnected,),
            id="during-request-write",
        ),
        pytest.param(
            lambda c: c.recv_request_head(),
            "GET",
            None,
            (poolwatch.NetworkError,),
            id="before-status-line",
        ),
        pytest.param(
            lambda c: (c.recv_request_head(), c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-")),
            "GET",
            None,
            (poolwatch.NetworkError,),
            id="mid-headers",
        ),
        pytest.param(
            lambda c: (c.recv_request_head(), c.sock.sendall(HEAD + b"x" * 10)),
            "GET",
            None,
            (poolwatch.NetworkError, poolwatch.RemoteProtocolError),
            id="mid-body",
        ),
    ],
)
def test_reset_at_each_phase(
    before_reset: Callable[[ServerConnection], object],
    method: str,
    body: bytes | None,
    errors: tuple[type[Exception], ...],
) -> None:
    """A reset at any phase: a documented error naming the URL, the
    connection closed, and the pool still usable."""
    with raw_server(_script(before_reset)) as srv, poolwatch.Transport() as t:
        with (
            pytest.raises(errors) as info,
            t.request(method, srv.url("/first"), body=body) as resp,
        ):
            resp.read()
        assert srv.url("/first") in str(info.value)
        assert t.request("GET", srv.url("/next")).read() == b"ok"
        stats = assert_at_rest(t)
        # A reset on accept may already fail the dial (nothing opened then).
        assert stats.connections_opened - stats.connections_closed == 1
        assert stats.open_connections == 1
    assert srv.accepted == 2


UPLOAD = b"u" * 64_000_000  # more than the kernel's buffers take
HANG_UPS = [
    pytest.param(_reset, id="reset"),
    pytest.param(lambda conn: conn.sock.close(), id="close-unread"),
    pytest.param(lambda conn: conn.sock.shutdown(socket.SHUT_WR), id="end"),
]


def hang_up_mid_upload(
    hang_up: Callable[[ServerConnection], None], released: threading.Event
) -> Callable[[ServerConnection], None]:
    """A server that reads a request's head, then hangs up as ``hang_up``
    does; a socket it only shut for writing stays unread until
    ``released``."""

    def serve(conn: ServerConnection) -> None:
        conn.recv_request_head()
        hang_up(conn)
        released.wait(10)

    return serve


def assert_hung_up_mid_upload(error: BaseException, url: str) -> None:
    """The same error whichever worker noticed the hang-up first."""
    assert type(error) is poolwatch.RemoteDisconnected, repr(error)
    assert str(error) == (
        f"POST {url}: server closed the connection without sending a response, "
        "while the request was being sent"
    )
    assert error.__cause__ is None or isinstance(error.__cause__, OSError)


@pytest.mark.parametrize("hang_up", HANG_UPS)
def test_a_hang_up_mid_upload_is_said_one_way(hang_up: Callable[[ServerConnection], None]) -> None:
    """A server that hangs up in the middle of an upload without answering:
    the writer (a broken pipe or a reset) or the reader (a reset or the end)
    may notice first, and the caller gets the same error either way."""
    released = threading.Event()
    with raw_server(hang_up_mid_upload(hang_up, released)) as srv, poolwatch.Transport() as t:
        try:
            url = srv.url("/up")
            for _ in range(20):
                with pytest.raises(poolwatch.RemoteDisconnected) as info:
                    t.request("POST", url, body=UPLOAD)
                assert_hung_up_mid_upload(info.value, url)
        finally:
            released.set()
        stats = assert_at_rest(t)
        assert (stats.request_errors, stats.open_connections) == (20, 0)
