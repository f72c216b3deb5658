"""R15: ``Expect: 100-continue`` (scenario 10)."""

from __future__ import annotations

import threading

import pytest

import poolwatch
from tests.async_support import run
from tests.conftest import assert_at_rest
from tests.servers import ServerConnection, raw_server

BODY = b"b" * 5000
EXPECT = {"Expect": "100-continue"}
WAIT = 5.0  # generous for a loopback round trip; the test fails at it


def _read_body(conn: ServerConnection, head: bytes) -> bytes:
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    body = head.split(b"\r\n\r\n", 1)[1]
    while len(body) < length:
        body += conn.sock.recv(65536)
    return body


def test_body_sent_after_100() -> None:
    """After a 100 the body is sent; the connection is reused afterwards."""
    bodies: list[bytes] = []

    def server(conn: ServerConnection) -> None:
        while head := conn.recv_request_head():
            assert b"\r\n\r\n" + BODY[:1] not in head  # nothing before the go-ahead
            conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            bodies.append(_read_body(conn, head))
            conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    seen: list[str] = []
    with raw_server(server) as srv, poolwatch.Transport(expect_continue_timeout=30) as t:
        t.add_listener(lambda e: seen.append(e.name))
        for _ in range(2):
            assert t.request("POST", srv.url(), headers=EXPECT, body=BODY).read() == b"ok"
        assert bodies == [BODY, BODY]
        assert seen.count("got_100_continue") == 2
        assert assert_at_rest(t).connections_opened == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_got_100_continue_is_heard_as_the_100_arrives(kind: str) -> None:
    """R19: ``got_100_continue`` comes when the ``100 Continue`` does, not
    with the final response: the server sends its 200 only once the test
    has heard it."""
    heard = threading.Event()
    answered_first: list[bool] = []

    def server(conn: ServerConnection) -> None:
        head = conn.recv_request_head()
        conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        _read_body(conn, head)
        answered_first.append(not heard.wait(WAIT))
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def listener(event: poolwatch.Event) -> None:
        if event.name == "got_100_continue":
            heard.set()

    with raw_server(server) as srv:
        if kind == "sync":
            with poolwatch.Transport(expect_continue_timeout=30) as t:
                t.add_listener(listener)
                assert t.request("POST", srv.url(), headers=EXPECT, body=BODY).read() == b"ok"
        else:

            async def main() -> None:
                async with poolwatch.AsyncTransport(expect_continue_timeout=30) as t:
                    t.add_listener(listener)
                    resp = await t.request("POST", srv.url(), headers=EXPECT, body=BODY)
                    assert await resp.read() == b"ok"

            run(main)
    assert answered_first == [False]


def test_final_response_with_close_skips_the_body() -> None:
    """A final response that closes the connection: the body is never sent,
    the caller gets the response, the next request dials anew."""
    extra = threading.Event()

    def server(conn: ServerConnection) -> None:
        head = conn.recv_request_head()
        if b"/reject" in head:
            conn.sock.sendall(
                b"HTTP/1.1 417 Expectation Failed\r\n"
                b"Connection: close\r\nContent-Length: 0\r\n\r\n"
            )
            while data := conn.sock.recv(65536):  # until the client closes
                if data:
                    extra.set()  # the body came anyway
            return
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    with raw_server(server) as srv, poolwatch.Transport(expect_continue_timeout=30) as t:
        resp = t.request("POST", srv.url("/reject"), headers=EXPECT, body=BODY)
        assert resp.status == 417
        assert srv.wait_handlers_done(1)
        assert not extra.is_set()
        assert t.request("GET", srv.url("/next")).read() == b"ok"
        stats = assert_at_rest(t)
        assert stats.connections_opened == 2


def test_no_answer_sends_the_body_after_the_timeout() -> None:
    """A server that ignores Expect: the body goes after the timeout."""

    def server(conn: ServerConnection) -> None:
        head = conn.recv_request_head()
        body = _read_body(conn, head)
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    with raw_server(server) as srv, poolwatch.Transport(expect_continue_timeout=0.05) as t:
        assert t.request("POST", srv.url(), headers=EXPECT, body=BODY).read() == BODY
        assert_at_rest(t)
