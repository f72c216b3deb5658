"""Content-Length bodies read straight from the socket, past h11: the same
outcomes and framing rules as bodies read through h11 (R4, R8, R10, R17),
and the fall-back for everything else."""

from __future__ import annotations

import threading

import pytest

import poolwatch
from poolwatch._core.exchange import ClientProtocol
from tests.conftest import assert_at_rest
from tests.servers import HTTPServer, Reply, ServerConnection, raw_server

# Larger than the reader's first read, so that most of the body is read
# past h11 by the caller.
BIG = 3 * 1024 * 1024 + 7


def _body(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + bytes(range(size % 256))


def test_whole_body_read_at_once_is_reused(server: HTTPServer) -> None:
    body = _body(BIG)
    server.routes["/big"] = lambda request, _: Reply(body=body)
    with poolwatch.Transport() as transport:
        for _ in range(3):
            response = transport.request("GET", server.url("/big"))
            assert response.read() == body
            assert response.outcome == "drained"  # R4: during the read
        response = transport.request("GET", server.url("/"))
        assert response.read() == b"hello world!\n"
        stats = assert_at_rest(transport)
    assert stats.connections_opened == 1
    assert stats.reused_requests == 3
    assert stats.bodies_drained == 4


@pytest.mark.parametrize("how", ["read1", "read_n", "iter_bytes"])
def test_body_read_in_pieces(server: HTTPServer, how: str) -> None:
    body = _body(BIG)
    server.routes["/big"] = lambda request, _: Reply(body=body)
    with poolwatch.Transport() as transport:
        response = transport.request("GET", server.url("/big"))
        pieces = []
        if how == "read1":
            while piece := response.read1(100_000):
                assert len(piece) <= 100_000
                pieces.append(piece)
        elif how == "read_n":
            while piece := response.read(70_001):
                pieces.append(piece)
            assert all(len(piece) == 70_001 for piece in pieces[:-1])
        else:
            pieces.extend(response.iter_bytes())
        assert b"".join(pieces) == body
        assert response.outcome == "drained"
        assert transport.request("GET", server.url("/")).read() == b"hello world!\n"
        stats = assert_at_rest(transport)
    assert stats.connections_opened == 1


def test_connection_close_is_not_reused(server: HTTPServer) -> None:
    body = _body(BIG)
    server.routes["/big"] = lambda request, _: Reply(body=body, close=True)
    with poolwatch.Transport() as transport:
        assert transport.request("GET", server.url("/big")).read() == body
        assert transport.request("GET", server.url("/")).read() == b"hello world!\n"
        stats = assert_at_rest(transport)
    assert stats.connections_opened == 2  # R8
    assert stats.reused_requests == 0


def test_request_connection_close_is_not_reused(server: HTTPServer) -> None:
    body = _body(BIG)
    server.routes["/big"] = lambda request, _: Reply(body=body)
    with poolwatch.Transport() as transport:
        response = transport.request("GET", server.url("/big"), headers={"Connection": "close"})
        assert response.read() == body
        assert transport.request("GET", server.url("/")).read() == b"hello world!\n"
        stats = assert_at_rest(transport)
    assert stats.connections_opened == 2  # R8


def _serve_raw(head: bytes, body: bytes, then: bytes = b"", requests: int = 1):
    """A handler answering ``requests`` requests with ``head`` + ``body``
    (+ ``then`` after the first), then waiting for the client to close."""

    def handler(conn: ServerConnection) -> None:
        for index in range(requests):
            conn.recv_request_head()
            conn.sock.sendall(head + body + (then if index == 0 else b""))
        conn.wait_for_close()

    return handler


@pytest.mark.parametrize("size", [BIG, 13, 0])
def test_http10_keep_alive_is_reused(size: int) -> None:
    """Large: read past h11; small: taken whole from h11's buffer."""
    body = _body(size)
    head = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: %d\r\n\r\n" % size
    with raw_server(_serve_raw(head, body, requests=2)) as srv, poolwatch.Transport() as transport:
        for _ in range(2):
            assert transport.request("GET", srv.url("/")).read() == body
        stats = assert_at_rest(transport)
    assert stats.connections_opened == 1
    assert stats.reused_requests == 1


def test_short_body_is_a_protocol_error() -> None:
    body = _body(BIG)

    def handler(conn: ServerConnection) -> None:
        conn.recv_request_head()
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (BIG + 10) + body)
        # then the handler returns: the server closes 10 bytes short

    with raw_server(handler) as srv, poolwatch.Transport() as transport:
        response = transport.request("GET", srv.url("/x"))
        with pytest.raises(poolwatch.RemoteProtocolError) as info:
            response.read()
        assert srv.url("/x") in str(info.value)
        assert f"expected {BIG + 10}" in str(info.value)
        assert response.outcome == "errored"
        stats = assert_at_rest(transport)
    assert stats.open_connections == 0
    assert stats.bodies_errored == 1


@pytest.mark.parametrize("whole", [True, False])
@pytest.mark.parametrize("size", [BIG, 13])
def test_bytes_after_the_body_are_a_protocol_error(whole: bool, size: int) -> None:
    body = _body(size)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size
    handler = _serve_raw(head, body, then=b"surprise")
    with raw_server(handler) as srv, poolwatch.Transport() as transport:
        response = transport.request("GET", srv.url("/"))
        with pytest.raises(poolwatch.RemoteProtocolError, match="bytes after"):
            if whole:
                response.read()
            else:
                while response.read1():
                    pass
        stats = assert_at_rest(transport)
    assert stats.open_connections == 0  # R10: never pooled
    assert stats.bodies_errored == 1


def test_read_timeout_mid_body() -> None:
    body = _body(BIG)
    done = threading.Event()

    def handler(conn: ServerConnection) -> None:
        conn.recv_request_head()
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (BIG + 1) + body)
        done.wait(10)

    with raw_server(handler) as srv, poolwatch.Transport(read_timeout=0.2) as transport:
        response = transport.request("GET", srv.url("/"))
        with pytest.raises(poolwatch.ReadTimeout):
            response.read()
        done.set()
        stats = assert_at_rest(transport)
    assert stats.bodies_errored == 1
    assert stats.open_connections == 0


def test_chunked_body_takes_the_h11_path(server: HTTPServer) -> None:
    with poolwatch.Transport() as transport:
        response = transport.request("GET", server.url(f"/chunked/{BIG}"))
        assert response.read() == b"x" * BIG
        assert response.read() == b""
        assert transport.request("GET", server.url("/")).read() == b"hello world!\n"
        stats = assert_at_rest(transport)
    assert stats.connections_opened == 1
    assert stats.bodies_drained == 2


def test_close_part_way_drains_when_asked(server: HTTPServer) -> None:
    body = _body(200_000)  # within the drain budget
    server.routes["/big"] = lambda request, _: Reply(body=body)
    with poolwatch.Transport(drain_on_close=True) as transport:
        response = transport.request("GET", server.url("/big"))
        assert response.read(10) == body[:10]
        response.close()
        assert response.outcome == "closed_early"
        assert transport.request("GET", server.url("/big")).read() == body
        stats = assert_at_rest(transport)
    assert stats.connections_opened == 1
    assert stats.bodies_drained_on_close == 1


def test_most_of_a_large_body_is_read_past_h11(
    server: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = _body(BIG)
    server.routes["/big"] = lambda request, _: Reply(body=body)
    direct: list[int] = []
    original = ClientProtocol.direct_body_received

    def counting(self: ClientProtocol, size: int) -> None:
        direct.append(size)
        original(self, size)

    monkeypatch.setattr(ClientProtocol, "direct_body_received", counting)
    with poolwatch.Transport() as transport:
        assert transport.request("GET", server.url("/big")).read() == body
        assert len(direct) == 1  # the rest in one buffer
        assert direct[0] > BIG // 2
        direct.clear()
        response = transport.request("GET", server.url("/big"))
        assert b"".join(response.iter_bytes()) == body
        assert sum(direct) > BIG // 2
        assert_at_rest(transport)
