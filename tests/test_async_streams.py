"""The asyncio transport's connections receive into one buffer per transport
(``poolwatch/_async/streams.py``): bodies read at the same time on several
connections, each larger than that buffer, arrive whole and unmixed, in
plain text and over TLS."""

from __future__ import annotations

import asyncio
import socket
import ssl

import h11
import pytest
import trustme

import poolwatch
from poolwatch._async.streams import RecvBuffer, open_streams
from tests.async_support import assert_at_rest, run
from tests.servers import Reply, http_server
from tests.tls_support import client_context, server_context, tls_server

pytestmark = pytest.mark.usefixtures("event_loop_kind")

# Larger than the shared receive buffer (256 KiB), so that each body takes
# several reads, interleaved with the other connections' reads.
BODY_SIZE = 600 * 1024
CONNECTIONS = 6


def _filled(request: h11.Request, body: bytes) -> Reply:
    """``/fill?N``: a body of one byte value per connection, with a marker
    at each end, so a mixed or shifted body cannot pass."""
    index = int(request.target.decode().partition("?")[2])
    return Reply(body=_expected(index))


def _expected(index: int) -> bytes:
    fill = bytes([ord("a") + index])
    return b"<%d>" % index + fill * BODY_SIZE + b"</%d>" % index


async def _read_all_at_once(t: poolwatch.AsyncTransport, url: str) -> list[bytes]:
    async def get(index: int) -> bytes:
        async with await t.request("GET", f"{url}?{index}") as resp:
            return await resp.read()

    return await asyncio.gather(*(get(i) for i in range(CONNECTIONS)))


@pytest.mark.parametrize("tls", [False, True])
def test_bodies_read_together_arrive_whole(tls: bool) -> None:
    """Six connections read 600 KiB bodies at once through the shared
    buffer; each body is its own, byte for byte, twice (reused)."""
    ca = trustme.CA()

    async def main(url: str, context: ssl.SSLContext | None) -> None:
        async with poolwatch.AsyncTransport(ssl_context=context) as t:
            for _ in range(2):
                bodies = await _read_all_at_once(t, url)
                assert bodies == [_expected(i) for i in range(CONNECTIONS)]
            stats = await assert_at_rest(t)
            assert stats.connections_opened == CONNECTIONS
            assert stats.bodies_drained == 2 * CONNECTIONS

    routes = {"/fill": _filled}
    if tls:
        with tls_server(server_context(ca, "localhost"), routes) as srv:
            run(lambda: main(srv.url("/fill"), client_context(ca)))
    else:
        with http_server(routes) as srv:
            run(lambda: main(srv.url("/fill"), None))


def test_open_streams_reads_through_the_buffer() -> None:
    """``open_streams`` gives the loop a buffered protocol; what it reads is
    copied out of the buffer, so later reads do not change earlier data."""

    async def main() -> None:
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        buffer = RecvBuffer(16)
        reader, writer = await open_streams(ours, buffer)
        try:
            protocol = writer.transport.get_protocol()
            assert isinstance(protocol, asyncio.BufferedProtocol)
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(theirs, b"0123456789abcdefXYZ")
            first = await reader.readexactly(19)
            await loop.sock_sendall(theirs, b"ponmlkjihgfedcba")
            second = await reader.readexactly(16)
            assert (first, second) == (b"0123456789abcdefXYZ", b"ponmlkjihgfedcba")
            theirs.close()
            assert await reader.read() == b""
        finally:
            writer.close()
            await writer.wait_closed()
            theirs.close()

    run(main)
