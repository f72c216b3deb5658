"""Reads of any size, in any mix, cost what they hand over: a small read
of a large piece taken from the socket slices it where it lies (the rest
is not copied again for each read), and a large read gathered from many
small pieces joins them once. Both transports, Content-Length and chunked
bodies; the bytes and the body's outcome are those of one whole read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

import poolwatch
from poolwatch._core.exchange import ClientProtocol
from tests import async_support
from tests.async_support import run
from tests.conftest import assert_at_rest
from tests.servers import HTTPServer, Reply, ServerConnection, raw_server

BODY = bytes(range(256)) * 16 + b"tail"  # 4 100 bytes


def _with_head(conn: ServerConnection) -> None:
    """The head and the whole body in one send: one piece for the client."""
    conn.recv_request_head()
    conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY))


def _chunks(size: int, count: int) -> Reply:
    return Reply(body=iter([bytes([i % 251]) * size for i in range(count)]), chunked=True)


def test_small_reads_slice_the_piece_in_place() -> None:
    with raw_server(_with_head) as srv, poolwatch.Transport() as transport:
        response = transport.request("GET", srv.url("/"))
        first = response.read(1)
        piece = response._buffer
        assert len(piece) == len(BODY)  # came whole with the head
        taken = [first]
        for amt in (1, 2, 3, 100, 1000):
            taken.append(response.read(amt))
            assert response._buffer is piece  # sliced, the rest not copied
        taken.append(response.read1(7))
        assert response._buffer is piece
        taken.append(response.read())
        assert b"".join(taken) == BODY
        assert [len(t) for t in taken[:-1]] == [1, 1, 2, 3, 100, 1000, 7]
        assert response.outcome == "drained"
        assert_at_rest(transport)


def test_async_small_reads_slice_the_piece_in_place() -> None:
    async def main() -> None:
        with raw_server(_with_head) as srv:
            async with poolwatch.AsyncTransport() as transport:
                response = await transport.request("GET", srv.url("/"))
                taken = [await response.read(1)]
                piece = response._buffer
                assert len(piece) == len(BODY)
                for amt in (1, 2, 3, 100, 1000):
                    taken.append(await response.read(amt))
                    assert response._buffer is piece
                taken.append(await response.read1(7))
                assert response._buffer is piece
                taken.append(await response.read())
                assert b"".join(taken) == BODY
                assert response.outcome == "drained"
                await async_support.assert_at_rest(transport)

    run(main)


SIZES = [1, 7, 100, 4096, 65_536, 300_000]


@pytest.mark.parametrize("amt", SIZES)
def test_reads_across_many_chunks(server: HTTPServer, amt: int) -> None:
    """2 000 chunks of 100 bytes, read ``amt`` at a time: each read but the
    last has exactly ``amt`` bytes, however many chunks it spans."""
    server.routes["/many"] = lambda request, _: _chunks(100, 2000)
    expected = b"".join(bytes([i % 251]) * 100 for i in range(2000))
    with poolwatch.Transport() as transport:
        response = transport.request("GET", server.url("/many"))
        pieces = list(response.iter_bytes(amt))
        assert all(len(p) == amt for p in pieces[:-1])
        assert b"".join(pieces) == expected
        assert response.outcome == "drained"
        stats = assert_at_rest(transport)
    assert stats.bodies_drained == 1


@pytest.mark.parametrize("amt", SIZES)
def test_async_reads_across_many_chunks(server: HTTPServer, amt: int) -> None:
    server.routes["/many"] = lambda request, _: _chunks(100, 2000)
    expected = b"".join(bytes([i % 251]) * 100 for i in range(2000))

    async def main() -> None:
        async with poolwatch.AsyncTransport() as transport:
            response = await transport.request("GET", server.url("/many"))
            pieces = [piece async for piece in response.aiter_bytes(amt)]
            assert all(len(p) == amt for p in pieces[:-1])
            assert b"".join(pieces) == expected
            assert response.outcome == "drained"
            await async_support.assert_at_rest(transport)

    run(main)


def test_mixed_reads_hand_over_every_byte_once(server: HTTPServer) -> None:
    """read(n), read1(n) and read1() in turn, over a chunked body and a
    Content-Length one larger than a socket read."""
    server.routes["/chunked"] = lambda request, _: _chunks(333, 3000)
    big = bytes(range(256)) * 4000 + b"!"
    server.routes["/big"] = lambda request, _: Reply(body=big)
    chunked = b"".join(bytes([i % 251]) * 333 for i in range(3000))
    with poolwatch.Transport() as transport:
        for path, expected in (("/chunked", chunked), ("/big", big)):
            response = transport.request("GET", server.url(path))
            taken: list[bytes] = []
            turn = 0
            while True:
                kind = turn % 3
                data = (
                    response.read(5_000)
                    if kind == 0
                    else response.read1(2_000)
                    if kind == 1
                    else response.read1()
                )
                if not data:
                    break
                if kind == 1:
                    assert len(data) <= 2_000
                taken.append(data)
                turn += 1
            assert b"".join(taken) == expected
            assert response.outcome == "drained"
        stats = assert_at_rest(transport)
    assert stats.connections_opened == 1


def test_a_read_cut_short_keeps_what_it_gathered() -> None:
    """A body cut short in the middle of a large read: the read raises,
    and the bytes it had gathered are still handed over by read1(), as
    before the read."""

    def cut(conn: ServerConnection) -> None:
        conn.recv_request_head()
        conn.sock.sendall(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"5\r\nhello\r\n" * 3
        )
        # then the handler returns: the server closes mid-body

    with raw_server(cut) as srv, poolwatch.Transport() as transport:
        response = transport.request("GET", srv.url("/"))
        assert response.read(3) == b"hel"
        with pytest.raises(poolwatch.RemoteProtocolError):
            response.read(1000)
        assert response.read1() == b"lohellohello"
        assert response.outcome == "errored"
        assert_at_rest(transport)


def _many_chunks(conn: ServerConnection) -> None:
    """2 000 chunks of 100 bytes, the whole response in one send, to each
    request on the connection."""
    chunks = b"".join(b"64\r\n" + bytes([i % 251]) * 100 + b"\r\n" for i in range(2000))
    response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    while conn.recv_request_head():
        conn.sock.sendall(response)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_reads_of_bytes_take_the_chunks_received_in_one_piece(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """read(), read(amt) and read1(amt) want bytes, not chunks: the chunks
    of a chunked body already received come out of the protocol together,
    not one trip each (2 000 chunks of 100 bytes, sent at once, here).
    read1() and iter_bytes() still hand them over as they were sent."""
    trips = 0
    next_body_event = ClientProtocol.next_body_event

    def counted(self: ClientProtocol, exchange: Any, gather: bool = False) -> Any:
        nonlocal trips
        trips += 1
        return next_body_event(self, exchange, gather)

    monkeypatch.setattr(ClientProtocol, "next_body_event", counted)
    expected = b"".join(bytes([i % 251]) * 100 for i in range(2000))

    async def read_async(url: str) -> tuple[bytes, bytes, list[bytes], list[bytes]]:
        async with poolwatch.AsyncTransport() as transport:
            first = await (await transport.request("GET", url)).read()
            response = await transport.request("GET", url)
            second = await response.read(150_000) + await response.read()
            response = await transport.request("GET", url)
            sized = [piece async for piece in _read1_pieces_async(response, 65_536)]
            response = await transport.request("GET", url)
            nonlocal trips
            counted_before = trips
            as_sent = [piece async for piece in response.aiter_bytes()]
            trips = counted_before
            return first, second, sized, as_sent

    with raw_server(_many_chunks) as srv:
        url = srv.url("/many")
        if kind == "sync":
            with poolwatch.Transport() as transport:
                first = transport.request("GET", url).read()
                response = transport.request("GET", url)
                second = response.read(150_000) + response.read()
                response = transport.request("GET", url)
                sized = list(iter(lambda: response.read1(65_536), b""))
                response = transport.request("GET", url)
                counted_before = trips
                as_sent = list(response.iter_bytes())
                trips = counted_before
        else:
            first, second, sized, as_sent = run(lambda: read_async(url))
    assert first == second == b"".join(sized) == expected
    assert trips < 100, trips  # one per chunk would be 6 000
    # read1() without a size, and so iter_bytes(), still a chunk at a time
    # (or a part of one, as it came): no piece spans two chunks, each of
    # which is one byte value.
    assert all(len(set(piece)) == 1 for piece in as_sent)
    assert len(as_sent) >= 2000
    assert b"".join(as_sent) == expected


async def _read1_pieces_async(response: poolwatch.AsyncResponse, amt: int) -> AsyncIterator[bytes]:
    while piece := await response.read1(amt):
        yield piece


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_large_bytes_body_is_sent_whole_after_its_head(server: HTTPServer, kind: str) -> None:
    """A body too large to join to its head goes in writes of its own,
    every byte, and the connection is reused after it."""
    body = bytes(range(256)) * 4096 + b"end"  # 1 MiB and 3 bytes

    async def post_async() -> list[bytes]:
        async with poolwatch.AsyncTransport() as transport:
            echoed = [
                await (await transport.request("POST", server.url("/echo"), body=body)).read()
            ]
            echoed.append(
                await (await transport.request("POST", server.url("/echo"), body=body)).read()
            )
            stats = await async_support.assert_at_rest(transport)
            assert stats.reused_requests == 1
            return echoed

    if kind == "sync":
        with poolwatch.Transport() as transport:
            echoed = [
                transport.request("POST", server.url("/echo"), body=body).read() for _ in "ab"
            ]
            assert assert_at_rest(transport).reused_requests == 1
    else:
        echoed = run(post_async)
    assert echoed == [body, body]
