"""What the server sends after a response whose body arrived whole with its
head, while the caller still holds that body unread: bytes are the
response's fault (R10, a protocol error for the read), a hang-up is not
(the body reads whole); neither is the end of an idle connection (R3)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import requests

import poolwatch
from tests import async_support
from tests.conftest import assert_at_rest
from tests.eventlog import EventLog
from tests.servers import ServerConnection, raw_server

HEAD_AND_BODY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _then(after: bytes, go_on: threading.Event) -> Callable[[ServerConnection], None]:
    """Answer whole, wait for ``go_on``, send ``after`` (if any), hang up."""

    def handler(conn: ServerConnection) -> None:
        conn.recv_request_head()
        conn.sock.sendall(HEAD_AND_BODY)
        go_on.wait(10)
        if after:
            conn.sock.sendall(after)

    return handler


@pytest.mark.parametrize(
    ("after", "reason"), [(b"EXTRA", "bytes_after_body"), (b"", "server_closed")]
)
def test_what_follows_a_held_body(after: bytes, reason: str) -> None:
    go_on = threading.Event()
    log = EventLog()
    with raw_server(_then(after, go_on)) as server, poolwatch.Transport() as t:
        t.add_listener(log)
        resp = t.request("GET", server.url())
        go_on.set()
        assert log.wait_closed(resp.connection_id) == reason  # its reader saw it
        if after:
            with pytest.raises(poolwatch.RemoteProtocolError, match="bytes after the end"):
                resp.read()
            assert resp.outcome == "errored"
        else:
            assert resp.read() == b"ok"
            assert resp.outcome == "drained"
        stats = assert_at_rest(t)
        assert stats.idle_closed_by_server == 0
        assert stats.open_connections == 0


@pytest.mark.parametrize(
    ("after", "reason"), [(b"EXTRA", "bytes_after_body"), (b"", "server_closed")]
)
def test_async_what_follows_a_held_body(after: bytes, reason: str) -> None:
    go_on = threading.Event()

    async def main(url: str) -> None:
        async with poolwatch.AsyncTransport() as t:
            reasons: list[str] = []
            closed = async_support.event_seen(t, "conn_closed")
            t.add_listener(
                lambda e: reasons.append(e["reason"]) if e.name == "conn_closed" else None
            )
            resp = await t.request("GET", url)
            go_on.set()
            await closed.wait()
            assert reasons == [reason]
            if after:
                with pytest.raises(poolwatch.RemoteProtocolError, match="bytes after the end"):
                    await resp.read()
            else:
                assert await resp.read() == b"ok"
            stats = await async_support.assert_at_rest(t)
            assert stats.idle_closed_by_server == 0

    with raw_server(_then(after, go_on)) as server:
        async_support.run(lambda: main(server.url()))


def test_requests_says_what_followed_the_body() -> None:
    """Through requests, the error says bytes followed the body, not that
    the body was cut short (0 more expected)."""
    go_on = threading.Event()
    adapter = poolwatch.RequestsAdapter()
    with raw_server(_then(b"EXTRA", go_on)) as server, requests.Session() as session:
        session.mount("http://", adapter)
        log = EventLog()
        adapter.transport.add_listener(log)
        with session.get(server.url(), stream=True) as resp:
            go_on.set()
            assert log.wait_closed(resp.raw._poolwatch.connection_id) == "bytes_after_body"
            with pytest.raises(requests.exceptions.ChunkedEncodingError) as raised:
                _ = resp.content
        assert "bytes after the end of the response body" in str(raised.value)
        assert "IncompleteRead" not in str(raised.value)


def test_drain_on_close_after_the_server_hung_up() -> None:
    """A body that came whole, the server gone since (its reader closed the
    socket): close() with drain_on_close takes what came and ends the body
    closed early, with no error (it set a read timeout on the closed socket)."""
    go_on = threading.Event()
    log = EventLog()
    with (
        raw_server(_then(b"", go_on)) as server,
        poolwatch.Transport(drain_on_close=True) as t,
    ):
        t.add_listener(log)
        resp = t.request("GET", server.url())
        go_on.set()
        assert log.wait_closed(resp.connection_id) == "server_closed"
        resp.close()
        assert resp.outcome == "closed_early"
        assert assert_at_rest(t).open_connections == 0
