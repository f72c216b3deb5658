"""The response object of the asyncio transport, and its body outcomes
(R4-R7)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType

import h11
from typing_extensions import Self

from .._core.exchange import BODY
from .._core.failures import body_closed_error
from .._core.timings import DRAIN_MAX_BYTES, DRAIN_MAX_SECONDS
from .._exceptions import PoolwatchError, RemoteProtocolError
from .._response import ResponseHead, check_size
from .connection import AsyncConnection
from .exchange import AsyncExchange
from .upgraded import AsyncUpgradedStream

__all__ = ["AsyncResponse"]


class AsyncResponse(ResponseHead):
    """An HTTP response whose body is read from its connection on demand.

    As :class:`~poolwatch.Response`, with ``await read()``,
    ``aiter_bytes()`` and ``await aclose()``: read to the end, the connection
    goes back to the pool during the last read (R4); closed before the end, it
    is torn down (R5); neither, it stays checked out until the response is
    garbage-collected, which emits a :class:`~poolwatch.LeakWarning` (R6).
    A read cancelled mid-body closes the connection. Use ``async with``.
    """

    __slots__ = ("_loop",)
    _connection: AsyncConnection
    _exchange: AsyncExchange

    def __init__(
        self, exchange: AsyncExchange, *, drain_on_close: bool = False, owner: object = None
    ) -> None:
        super().__init__(exchange, drain_on_close, owner)
        self._loop = exchange.head_ready.get_loop()

    # -- reading -------------------------------------------------------------

    async def read(self, amt: int | None = None) -> bytes:
        """Read up to ``amt`` bytes of the body, or all of it. Reading the
        last byte returns the connection to the pool before this returns."""
        check_size("amt", amt)
        if amt is None or amt < 0:
            chunks = [self._take()]
            while not self._end_seen:
                chunks.append(await self._next_chunk(gather=True))
            if self._exchange.state == BODY:
                await self._connection.finish_body(self._exchange, "drained", True)  # R4
            return b"".join(chunks)
        have = self._buffered()
        if have < amt and not self._end_seen:
            pieces = [self._take()]
            try:
                while have < amt and not self._end_seen:
                    pieces.append(await self._next_chunk(gather=True))
                    have += len(pieces[-1])
            finally:
                self._keep(pieces)  # one join: a read of many pieces copies once
        data = self._take(amt)
        if self._end_seen and not self._buffer and self._exchange.state == BODY:
            await self._connection.finish_body(self._exchange, "drained", True)  # R4
        return data

    async def read1(self, amt: int | None = None) -> bytes:
        """Read what has arrived, up to ``amt`` bytes, waiting only if nothing
        has (``b""`` at the end). Without ``amt``, a chunked body comes a
        chunk at a time, as it was sent."""
        check_size("amt", amt)
        if not self._buffer and not self._end_seen:
            self._keep([await self._next_chunk(gather=amt is not None and amt >= 0)])
        data = self._take(amt)
        if self._end_seen and not self._buffer and self._exchange.state == BODY:
            await self._connection.finish_body(self._exchange, "drained", True)  # R4
        return data

    async def aiter_bytes(self, chunk_size: int | None = None) -> AsyncIterator[bytes]:
        """Iterate over the body, in chunks of ``chunk_size`` bytes (the last
        may be shorter) or as they arrive."""
        check_size("chunk_size", chunk_size, positive=True)
        while True:
            data = await (self.read(chunk_size) if chunk_size else self.read1())
            if not data:
                return
            yield data

    async def _next_chunk(self, gather: bool = False) -> bytes:
        """The next piece of the body (with ``gather``, the chunks of a
        chunked body already received in one piece, for reads that want
        bytes, not chunks). An error ends the body as errored (a
        :class:`~poolwatch.ReadError` saying so after a close on this side,
        such as the transport closing); a cancellation ends it as closed
        early and closes the connection."""
        exchange = self._exchange
        if exchange.state != BODY:
            raise body_closed_error(exchange, self._connection.close_reason)
        conn = self._connection
        try:
            event = conn.buffered_body_event(exchange, gather)
            if event is None:
                event = await conn.read_body_event(exchange, gather)
            if isinstance(event, h11.Data):
                data = bytes(event.data)
                exchange.bytes_read += len(data)
                self._end_seen = conn.peek_end_of_body()
            else:
                data = b""
                self._end_seen = True
            if self._end_seen and conn.extra_bytes_after_body():
                raise RemoteProtocolError(
                    "bytes after the end of the response body", method=self.method, url=self.url
                )
        except PoolwatchError as error:
            # Before end_body_now, whose close would give a reason of its own.
            closed = conn.closed_error(exchange)
            exchange.error = error if closed is None else closed
            conn.end_body_now(exchange, "errored")
            if closed is not None:  # not the server's doing
                raise closed from error
            raise
        except asyncio.CancelledError:
            conn.end_body_now(exchange, "closed_early", "cancelled")
            raise
        return data

    # -- closing -------------------------------------------------------------

    @property
    def upgraded(self) -> AsyncUpgradedStream | None:
        """As :attr:`poolwatch.Response.upgraded`: after ``101 Switching
        Protocols`` to a request that asked to upgrade, the connection as a
        stream for the new protocol; ``None`` for any other response."""
        return self._connection.upgraded if self.status == 101 else None

    async def aclose(self) -> None:
        """End the body. Before its end this tears the connection down (R5),
        unless ``drain_on_close`` saved it; after it, this does nothing. A
        ``101`` response's :attr:`upgraded` stream is its body: this closes
        it."""
        exchange = self._exchange
        if exchange.state != BODY or exchange.leaked:
            if self.status == 101 and self._connection.upgraded is not None:
                await self._connection.upgraded.aclose()
            return
        self._drop_buffer()
        conn = self._connection
        saved = self._drain_on_close
        if saved and not self._end_seen:
            try:
                saved = await conn.drain_body(exchange, DRAIN_MAX_SECONDS, DRAIN_MAX_BYTES)
            except asyncio.CancelledError:
                conn.end_body_now(exchange, "closed_early", "cancelled")
                raise
        await conn.finish_body(exchange, "closed_early", saved)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _let_go(self) -> None:
        # The reader does the bookkeeping, on the loop.
        try:
            self._loop.call_soon_threadsafe(self._connection.body_leaked, self._exchange)
        except RuntimeError:
            pass  # the loop is closed: its connections died with it
