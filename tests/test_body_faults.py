"""Bodies in trouble, sync and asyncio: a Content-Length too large to
allocate is a body cut short (R10), an upload source that stalls does not
hold up the early answer to it (R9), and a transport closed under a body
read is the caller's ReadError, not the server's fault (R14)."""

from __future__ import annotations

import asyncio
import threading
import tracemalloc
from collections.abc import AsyncIterator, Iterator

import pytest

import poolwatch
from poolwatch._sync import connection as sync_connection
from tests import async_support
from tests.conftest import assert_at_rest
from tests.servers import ServerConnection
from tests.test_errors import (
    WAIT,
    Script,
    assert_names_request,
    assert_pool_still_works,
    reply_then_hang_up,
    reply_then_wait,
    scripted,
    watched_transport,
)

# Declared lengths no client could allocate up front: the largest plain
# one, 20 digits (past a C ssize_t), 30 GB, and 1 GiB (which an up-front
# allocation might get, and the memory check below then catches).
HUGE_LENGTHS = ["1000000000000000000", "99999999999999999999", "30000000000", str(1 << 30)]
# What reading such a body may allocate before its bytes arrive: the read
# ahead (16 MiB) and change, far below any of them.
READ_AHEAD_LIMIT = 32 * 1024 * 1024
# An answer sent before the upload is read, which closes the connection (R9).
EARLY_413 = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig"
# A body of which only 10 bytes come before the server waits.
PARTIAL = {
    "content-length": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"z" * 10,
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n" + b"z" * 10 + b"\r\n",
}


def _cut_short(length: str) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: " + length.encode() + b"\r\n\r\nok"


# -- a Content-Length too large to allocate (R10) ---------------------------


@pytest.mark.parametrize("length", HUGE_LENGTHS)
def test_huge_content_length_is_a_body_cut_short(length: str) -> None:
    """R10: a server that declares more than could ever be allocated and
    sends two bytes is a body cut short, as on the asyncio transport: a
    RemoteProtocolError naming the URL, outcome errored. It was a
    MemoryError or an OverflowError (the whole length allocated before a
    byte came), counted closed_early. Memory is taken as bytes arrive: the
    read allocates at most MAX_READ_AHEAD ahead of them (1 GiB was allocated
    whole)."""
    with scripted(reply_then_hang_up(_cut_short(length))) as (server, _):
        url = server.url("/huge")
        with watched_transport() as (transport, _):
            resp = transport.request("GET", url)
            tracemalloc.start()
            try:
                with pytest.raises(poolwatch.RemoteProtocolError) as caught:
                    resp.read()
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert_names_request(caught.value, "GET", url)
            assert f"(received 2 bytes, expected {length})" in str(caught.value)
            assert peak < READ_AHEAD_LIMIT, peak
            assert resp.outcome == "errored"
            stats = assert_at_rest(transport)
            assert (stats.bodies_errored, stats.bodies_closed_early) == (1, 0)
            assert_pool_still_works(transport, server.url("/next"))


@pytest.mark.usefixtures("event_loop_kind")
def test_async_huge_content_length_is_a_body_cut_short() -> None:
    """R10, as on the thread transport (parity)."""
    length = HUGE_LENGTHS[1]

    async def main(url: str) -> None:
        async with poolwatch.AsyncTransport() as t:
            resp = await t.request("GET", url)
            with pytest.raises(poolwatch.RemoteProtocolError) as caught:
                await resp.read()
            assert_names_request(caught.value, "GET", url)
            assert f"(received 2 bytes, expected {length})" in str(caught.value)
            assert resp.outcome == "errored"
            stats = await async_support.assert_at_rest(t)
            assert (stats.bodies_errored, stats.bodies_closed_early) == (1, 0)

    with scripted(reply_then_hang_up(_cut_short(length))) as (server, _):
        async_support.run(lambda: main(server.url("/huge")))


def test_body_past_the_read_ahead_is_read_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body larger than MAX_READ_AHEAD, read whole, arrives byte for byte
    and is drained (R4); cut short after several pieces, it says how much
    came (R10)."""
    monkeypatch.setattr(sync_connection, "MAX_READ_AHEAD", 64 * 1024)
    body = bytes(range(256)) * 4099  # 1 049 344 bytes: 16 read-aheads and more
    whole = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (2 * len(body)) + body
    with scripted(reply_then_wait(whole)) as (server, _), watched_transport() as (transport, _):
        resp = transport.request("GET", server.url("/whole"))
        assert resp.read() == body
        assert resp.outcome == "drained"
        assert_at_rest(transport)
    with scripted(reply_then_hang_up(cut)) as (server, _), watched_transport() as (transport, _):
        resp = transport.request("GET", server.url("/cut"))
        with pytest.raises(poolwatch.RemoteProtocolError, match="received 1049344 bytes"):
            resp.read()
        assert resp.outcome == "errored"
        assert_at_rest(transport)


def test_body_within_the_read_ahead_is_read_into_one_buffer() -> None:
    """The fast path stays (S2, docs/performance.md): a 1 MiB body is read
    straight into the object returned, with no second copy of it."""
    size = 1 << 20
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"b" * size
    with scripted(reply_then_wait(reply)) as (server, _), watched_transport() as (transport, _):
        resp = transport.request("GET", server.url("/mib"))
        tracemalloc.start()
        try:
            data = resp.read()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert data == b"b" * size
        assert peak < size + size // 2, peak


# -- an upload source that stalls (R9) -------------------------------------


class StalledSource:
    """A streamed request body that yields a piece, then waits (a slow pipe,
    a queue, a sensor) until released, then yields another."""

    def __init__(self) -> None:
        self.waiting = threading.Event()  # set once it waits
        self.release = threading.Event()
        self.resumed = threading.Event()  # set once its wait ended
        self.called_after_close = False

    def __iter__(self) -> Iterator[bytes]:
        yield b"first piece"
        self.waiting.set()
        self.release.wait(WAIT)
        self.resumed.set()
        yield b"second piece"
        self.called_after_close = True  # only if asked for a third


def answer_at_once(script: Script, conn: ServerConnection) -> None:
    """Answer 413 with Connection: close before reading the upload."""
    script.read_head(conn)
    conn.sock.sendall(EARLY_413)
    conn.wait_for_close(WAIT)


@pytest.mark.parametrize("end", ["read", "close"])
def test_stalled_upload_source_does_not_hold_up_the_answer(end: str) -> None:
    """R9: an early answer to a streamed upload is read to its end, or
    closed, while the upload's source still waits: the connection is closed
    (the server sees it go) without waiting for the source. The writer
    thread, inside the source, cannot be stopped there: it exits when the
    source next yields, without asking it for more, and is counted alive
    until then (R18). Reading the 3 bytes used to take as long as the
    source waited (for ever, for a source that never yields again)."""
    source = StalledSource()
    with scripted(answer_at_once) as (server, script):
        try:
            with watched_transport() as (transport, log):
                resp = transport.request("POST", server.url("/upload"), body=source)
                assert resp.status == 413
                assert source.waiting.wait(WAIT)
                if end == "read":
                    assert resp.read() == b"big"
                    assert resp.outcome == "drained"
                else:
                    resp.close()
                    assert resp.outcome == "closed_early"
                assert not source.resumed.is_set(), "waited for the upload source"
                assert script.conns[0].closed_by_peer.wait(WAIT)
                stats = transport.stats()
                assert (stats.open_connections, stats.workers_alive) == (0, 1)  # the writer
                source.release.set()
                stats = assert_at_rest(transport)
                assert (stats.connections_closed, stats.workers_alive) == (1, 0)
                assert not source.called_after_close
                assert len(log.named("conn_closed")) == 1
                assert_pool_still_works(transport, server.url("/next"))
        finally:
            source.release.set()


@pytest.mark.usefixtures("event_loop_kind")
def test_async_stalled_upload_source_does_not_hold_up_the_answer() -> None:
    """R9, on the asyncio transport: the answer is read while the upload's
    source waits; the writer task is cancelled in the source (which sees
    the cancellation), so it exits at once. Used to wait for the source."""
    seen: list[str] = []

    async def main(url: str) -> None:
        waiting = asyncio.Event()

        async def source() -> AsyncIterator[bytes]:
            yield b"first piece"
            waiting.set()
            try:
                await asyncio.wait_for(asyncio.Event().wait(), WAIT)  # never set
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
            except asyncio.TimeoutError:
                seen.append("waited")
            yield b"second piece"

        async with poolwatch.AsyncTransport() as t:
            resp = await t.request("POST", url, body=source())
            assert resp.status == 413
            await asyncio.wait_for(waiting.wait(), WAIT)
            assert await asyncio.wait_for(resp.read(), 2 * WAIT) == b"big"
            assert resp.outcome == "drained"
            assert seen == ["cancelled"]
            stats = await async_support.assert_at_rest(t)
            assert (stats.connections_closed, stats.workers_alive) == (1, 0)

    with scripted(answer_at_once) as (server, script):
        async_support.run(lambda: main(server.url("/upload")))
        assert script.conns[0].closed_by_peer.wait(WAIT)


# -- the transport closed under a body read (R14) ----------------------------


@pytest.mark.parametrize("kind", list(PARTIAL))
def test_transport_closed_during_body_read_is_a_read_error(kind: str) -> None:
    """R14, docs/reliability.md: close() from another thread while read()
    waits for the rest of a body raises ReadError saying the transport was
    closed, outcome errored; it used to be a RemoteProtocolError blaming the
    server ("peer closed connection..."). A read that comes after the close
    says the same."""
    with scripted(reply_then_wait(PARTIAL[kind])) as (server, _):
        url = server.url(f"/{kind}")
        transport = poolwatch.Transport()
        try:
            resp = transport.request("GET", url)
            assert resp.read(10) == b"z" * 10
            reading = threading.Event()

            def close_while_reading() -> None:
                reading.wait(WAIT)
                transport.close()

            closer = threading.Thread(target=close_while_reading)
            closer.start()
            reading.set()
            with pytest.raises(poolwatch.ReadError, match="the transport was closed") as caught:
                resp.read()
            closer.join()
            assert_names_request(caught.value, "GET", url)
            assert not isinstance(caught.value, poolwatch.RemoteProtocolError)
            assert resp.outcome == "errored"
            with pytest.raises(poolwatch.ReadError, match="the transport was closed"):
                resp.read()
        finally:
            transport.close()
        stats = transport.stats()
        assert (stats.bodies_errored, stats.workers_alive) == (1, 0)


@pytest.mark.usefixtures("event_loop_kind")
@pytest.mark.parametrize("kind", list(PARTIAL))
def test_async_transport_closed_during_body_read_is_a_read_error(kind: str) -> None:
    """R14: aclose() from another task while read() awaits the rest of a
    body: ReadError saying the transport was closed (was a
    RemoteProtocolError blaming the server)."""

    async def main(url: str) -> None:
        t = poolwatch.AsyncTransport()
        try:
            resp = await t.request("GET", url)
            assert await resp.read(10) == b"z" * 10
            reading = asyncio.Event()

            async def close_while_reading() -> None:
                await reading.wait()
                await t.aclose()

            closer = asyncio.create_task(close_while_reading())
            reading.set()  # the closer runs once read() awaits the socket
            with pytest.raises(poolwatch.ReadError, match="the transport was closed") as caught:
                await resp.read()
            await closer
            assert_names_request(caught.value, "GET", url)
            assert resp.outcome == "errored"
            with pytest.raises(poolwatch.ReadError, match="the transport was closed"):
                await resp.read()
        finally:
            await t.aclose()
        stats = t.stats()
        assert (stats.bodies_errored, stats.workers_alive) == (1, 0)

    with scripted(reply_then_wait(PARTIAL[kind])) as (server, _):
        async_support.run(lambda: main(server.url(f"/{kind}")))


def _get_or_post(kind: str, url: str, body: object, listener: object = None) -> object:
    """POST ``body`` with a fresh transport of ``kind``: the response's
    status and body, or the exception raised; with the transport's stats
    and the ``request_failed`` events heard."""
    failed: list[poolwatch.Event] = []

    def hear(event: poolwatch.Event) -> None:
        if event.name == "request_failed":
            failed.append(event)
        if callable(listener):
            listener(event)

    if kind == "sync":
        with poolwatch.Transport() as t:
            t.add_listener(hear)
            try:
                response = t.request("POST", url, body=body)  # type: ignore[arg-type]
                outcome: object = (response.status, response.read())
            except Exception as exc:
                outcome = exc
            stats = assert_at_rest(t)
    else:

        async def main() -> tuple[object, poolwatch.PoolStats]:
            async with poolwatch.AsyncTransport() as t:
                t.add_listener(hear)
                try:
                    response = await t.request("POST", url, body=body)  # type: ignore[arg-type]
                    result: object = (response.status, await response.read())
                except Exception as exc:
                    result = exc
                return result, await async_support.assert_at_rest(t)

        outcome, stats = async_support.run(main)
    return outcome, stats, failed


@pytest.mark.parametrize("error", [ConnectionResetError, BrokenPipeError, TimeoutError, OSError])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_upload_sources_own_error_reaches_the_caller(kind: str, error: type) -> None:
    """The request body's own iterator raising, even an exception a socket
    raises (a relay whose source socket died): the caller gets it as
    raised, at once (it is not the server hanging up, R9, and nothing would
    end the wait for a response), the call is counted as failed (R18), and
    the connection is closed."""

    def source() -> Iterator[bytes]:
        yield b"first piece"
        raise error("the source failed")

    async def async_source() -> AsyncIterator[bytes]:
        for piece in source():
            yield piece

    with scripted(reply_then_wait(b"")) as (server, _):
        body = source() if kind == "sync" else async_source()
        outcome, stats, failed = _get_or_post(kind, server.url("/upload"), body)
    assert type(outcome) is error and str(outcome) == "the source failed"
    assert (stats.request_errors, stats.open_connections) == (1, 0)
    assert [event.data["error"] for event in failed] == [outcome]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_early_answer_without_a_body_survives_the_upload_failing(kind: str) -> None:
    """A 401 with no body, sent before the upload is read, then the upload
    source fails: the 401 is the caller's (R9), and reads as empty (R7),
    not as a body the connection's close cut short; its end heard once."""
    head_came = threading.Event()
    ends: list[str] = []

    def listener(event: poolwatch.Event) -> None:
        if event.name == "got_first_response_byte":
            head_came.set()
        elif event.name == "body_done":
            ends.append(event.data["outcome"])

    def source() -> Iterator[bytes]:
        yield b"first piece"
        head_came.wait(WAIT)
        raise ValueError("the source failed")

    async def async_source() -> AsyncIterator[bytes]:
        yield b"first piece"
        await asyncio.get_running_loop().run_in_executor(None, head_came.wait, WAIT)
        raise ValueError("the source failed")

    answer = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"
    with scripted(reply_then_wait(answer)) as (server, _):
        body = source() if kind == "sync" else async_source()
        outcome, stats, _ = _get_or_post(kind, server.url("/upload"), body, listener)
    assert outcome == (401, b"")
    assert (stats.bodies_without_content, stats.bodies_errored) == (1, 0)
    assert ends == ["no_body"]  # heard once
