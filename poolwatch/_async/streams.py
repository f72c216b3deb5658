"""Streams over a connected socket that receive into one buffer per
transport instead of a fresh one per read.

``asyncio.open_connection`` gives the socket a plain ``Protocol``, and the
event loop then calls ``sock.recv(256 KiB)`` for every read: a new 256 KiB
bytes object each time, which glibc serves with ``mmap`` and, once the
object is shrunk to the bytes that came and freed, gives back with
``mremap`` and ``munmap``. Three system calls and fresh pages per read cost
more than the read itself (on a small response, about 20 us of CPU against
4 us with ``recv_into``). A ``BufferedProtocol`` lets the loop call
``recv_into`` on a buffer the protocol hands out; the stream reader copies
what arrived into its own buffer at once, so every connection of a transport
can share one receive buffer (all of them run on the transport's loop, and
each read fills and empties it in one callback).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import cast

from .._core.tls import offer_http11
from .exchange import within

__all__ = ["NO_HANDSHAKE_TIMER", "RecvBuffer", "open_streams"]

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]

# The stream reader's limit, as asyncio.open_connection's: reading pauses
# when twice this much waits unread.
STREAM_LIMIT = 64 * 1024
# What asyncio's own handshake timer is set to: a week, so that it never
# fires first. It ends a slow handshake with a ConnectionAbortedError, which
# says nothing of a timeout; the handshake is timed with within() instead.
NO_HANDSHAKE_TIMER = 7 * 86400.0


class RecvBuffer:
    """The receive buffer that a transport's connections share."""

    __slots__ = ("view",)

    def __init__(self, size: int) -> None:
        self.view = memoryview(bytearray(size))


class _BufferedStreamProtocol(asyncio.StreamReaderProtocol, asyncio.BufferedProtocol):
    """A stream reader's protocol that the loop reads into with ``recv_into``."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        buffer: RecvBuffer,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(reader, loop=loop)
        self._recv_buffer = buffer.view
        self.made: asyncio.Transport | None = None  # once connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport: the connect may still be cancelled after this
        (see :func:`open_streams`)."""
        self.made = cast(asyncio.Transport, transport)  # a stream's: it can abort
        super().connection_made(transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        """The shared buffer: the loop fills it and calls
        :meth:`buffer_updated` before anything else runs."""
        return self._recv_buffer

    def buffer_updated(self, nbytes: int) -> None:
        """Hand what arrived to the stream reader, which copies it out of
        the shared buffer before this returns (``feed_data`` extends its
        ``bytearray`` with any buffer, not only ``bytes``)."""
        self.data_received(self._recv_buffer[:nbytes])  # type: ignore[arg-type]


async def open_streams(
    sock: socket.socket,
    buffer: RecvBuffer,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
) -> Streams:
    """``asyncio.open_connection(sock=sock, ...)`` with a protocol that
    receives into ``buffer`` (TLS, if ``ssl_context`` is given, decrypts into
    it the same way). A TLS handshake longer than ``ssl_handshake_timeout``
    raises ``TimeoutError``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
    protocol = _BufferedStreamProtocol(reader, buffer, loop)
    try:
        if ssl_context is None:
            transport, _ = await loop.create_connection(lambda: protocol, sock=sock)
        else:
            offer_http11(ssl_context)
            connecting = loop.create_connection(
                lambda: protocol,
                sock=sock,
                ssl=ssl_context,
                server_hostname=server_hostname,
                ssl_handshake_timeout=NO_HANDSHAKE_TIMER,
            )
            transport, _ = await within(ssl_handshake_timeout, connecting)
    except BaseException:
        # Cancelled (or timed out) after the handshake completed but before
        # the connect returned, asyncio closes the TLS transport gracefully:
        # the socket stays registered with the loop through the TLS shutdown,
        # and the caller's close of the socket would leave a live transport
        # on a descriptor number the next socket reuses. Abort it instead.
        if protocol.made is not None:
            protocol.made.abort()
        raise
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
