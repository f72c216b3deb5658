"""Reads go into lent buffers (ReadBuffers), so that a read allocates only
the bytes it got: response heads on plain TCP, and decrypted bytes over
TLS; over real loopback TCP and TLS connections."""

from __future__ import annotations

import socket
import tracemalloc
from collections.abc import Iterator

import pytest
import trustme

import poolwatch
from poolwatch._sync import connection, streams
from poolwatch._sync.streams import ReadBuffers
from tests.conftest import assert_at_rest
from tests.servers import HTTPServer
from tests.tls_support import client_context, server_context, tls_server

HELLO = b"hello world!\n"


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected TCP pair on 127.0.0.1: (reading side, non-blocking; writing side)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        writer = socket.create_connection(listener.getsockname())
        reader, _ = listener.accept()
    reader.setblocking(False)
    try:
        yield reader, writer
    finally:
        reader.close()
        writer.close()


def _wait_readable(sock: socket.socket) -> None:
    sock.settimeout(10)
    sock.recv(1, socket.MSG_PEEK)
    sock.setblocking(False)


def test_read_returns_what_came(pair: tuple[socket.socket, socket.socket]) -> None:
    reader, writer = pair
    buffers = ReadBuffers(16)
    writer.sendall(b"abc")
    _wait_readable(reader)
    data = buffers.read(reader.fileno())
    assert data == b"abc" and type(data) is bytes
    writer.sendall(b"x" * 40)  # more than one buffer: the rest waits
    got = b""
    while len(got) < 40:
        _wait_readable(reader)
        piece = buffers.read(reader.fileno())
        assert 0 < len(piece) <= 16
        got += piece
    assert got == b"x" * 40
    writer.shutdown(socket.SHUT_WR)
    _wait_readable(reader)
    assert buffers.read(reader.fileno()) == b""  # EOF


def test_one_buffer_serves_every_read(pair: tuple[socket.socket, socket.socket]) -> None:
    """Each read gives its buffer back, also when it raises; results never
    share memory with the buffer."""
    reader, writer = pair
    buffers = ReadBuffers(16)
    with pytest.raises(BlockingIOError):
        buffers.read(reader.fileno())  # nothing to read yet
    assert len(buffers._free) == 1
    lent = buffers._free[0]
    results = []
    for chunk in (b"first", b"second"):
        writer.sendall(chunk)
        _wait_readable(reader)
        results.append(buffers.read(reader.fileno()))
        assert buffers._free == [lent] and buffers._free[0] is lent
    assert results == [b"first", b"second"]


def test_spare_buffers_are_bounded(pair: tuple[socket.socket, socket.socket]) -> None:
    reader, _ = pair
    buffers = ReadBuffers(16, max_spare=3)
    lent = [buffers.take() for _ in range(4)]
    for buffer in lent:
        buffers.give(buffer)
    assert len(buffers._free) == 3
    with pytest.raises(BlockingIOError):
        buffers.read(reader.fileno())
    assert len(buffers._free) == 3


def test_transport_reads_heads_through_the_buffers(
    server: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader of a plain connection reads heads through the shared
    buffers: after many responses one was lent, and given back each time."""
    pool = ReadBuffers(streams.READ_SIZE)
    monkeypatch.setattr(connection, "READ_BUFFERS", pool)
    with poolwatch.Transport() as transport:
        for _ in range(20):
            assert transport.request("GET", server.url("/")).read() == HELLO
        assert len(pool._free) == 1
        assert_at_rest(transport)


def test_tls_reads_decrypt_into_lent_buffers(
    ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over TLS the decrypted bytes are read into lent buffers too, record
    by record: bodies of every framing arrive whole, and one buffer serves
    every read (the reader waits for the socket holding none)."""
    pool = ReadBuffers(streams.READ_SIZE)
    monkeypatch.setattr(streams, "READ_BUFFERS", pool)
    with (
        tls_server(server_context(ca, "localhost")) as srv,
        poolwatch.Transport(ssl_context=client_context(ca)) as transport,
    ):
        for path, size in (("/", 13), ("/bytes/300000", 300000), ("/chunked/70000", 70000)):
            response = transport.request("GET", srv.url(path))
            assert response.read() == (HELLO if size == 13 else b"x" * size)
            assert len(pool._free) == 1
        assert_at_rest(transport)


def test_tls_socket_reads_go_into_lent_buffers(
    ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The encrypted bytes are read from the socket into lent 256 KiB
    buffers, once the socket is readable: one buffer serves every read of
    a connection, small or large. ``recv(256 KiB)`` made a 256 KiB object
    per read and shrank it, which grew a long TLS soak's RSS by 10 MiB."""
    pool = ReadBuffers(256 * 1024, max_spare=8)
    monkeypatch.setattr(streams, "_RECORD_BUFFERS", pool)
    with (
        tls_server(server_context(ca, "localhost")) as srv,
        poolwatch.Transport(ssl_context=client_context(ca)) as transport,
    ):
        for path, size in (("/", 13), ("/bytes/300000", 300000), ("/", 13)):
            assert transport.request("GET", srv.url(path)).read() == (
                HELLO if size == 13 else b"x" * size
            )
            assert len(pool._free) == 1
        tracemalloc.start()
        try:
            for _ in range(20):
                assert transport.request("GET", srv.url("/")).read() == HELLO
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 128 * 1024, f"{peak / 1024:.0f} KiB at the peak"
        assert_at_rest(transport)
