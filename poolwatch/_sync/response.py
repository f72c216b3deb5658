"""The response object of the synchronous transport, and its body outcomes
(R4-R7)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import TracebackType

import h11
from typing_extensions import Self

from .._core.exchange import BODY, RECV_SIZE
from .._core.failures import body_closed_error
from .._core.timings import DRAIN_MAX_BYTES, DRAIN_MAX_SECONDS, Timings
from .._exceptions import PoolwatchError, RemoteProtocolError
from .._response import ResponseHead, check_size
from .connection import Connection, Exchange
from .upgraded import UpgradedStream

__all__ = ["Response", "Timings"]


class Response(ResponseHead):
    """An HTTP response whose body is read from its connection on demand.

    The body must end one of three ways: read to the end (the connection is
    reused at once, R4), :meth:`close` before the end (the connection is torn
    down, R5), or neither, in which case the connection stays checked out
    until the response is garbage-collected, which emits a
    :class:`~poolwatch.LeakWarning` (R6). Use it as a context manager.
    """

    __slots__ = ()
    _connection: Connection
    _exchange: Exchange

    def __init__(
        self, exchange: Exchange, *, drain_on_close: bool = False, owner: object = None
    ) -> None:
        super().__init__(exchange, drain_on_close, owner)

    @property
    def upgraded(self) -> UpgradedStream | None:
        """After ``101 Switching Protocols`` to a request that asked to
        upgrade (``Upgrade`` and ``Connection: Upgrade`` headers, as a
        WebSocket handshake sends): the connection, as a stream for the new
        protocol. It has left the pool and its workers have exited; close it,
        or the response (as in Go, where it is the body), when done. ``None``
        for any other response."""
        return self._connection.upgraded if self.status == 101 else None

    # -- reading -------------------------------------------------------------

    def read(self, amt: int | None = None) -> bytes:
        """Read up to ``amt`` bytes of the body, or all of it. Reading the
        last byte returns the connection to the pool before this returns."""
        check_size("amt", amt)
        try:
            if amt is None or amt < 0:
                chunks = [self._take()]
                while not self._end_seen:
                    if not self._exchange.body_buffered and self._connection.direct_body_left():
                        # The rest in one read into one buffer, after what came.
                        chunks = [self._next_chunk(whole=True, prefix=b"".join(chunks))]
                    else:
                        chunks.append(self._next_chunk(gather=True))
                self._finish_if_done()
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            have = self._buffered()
            if have < amt and not self._end_seen:
                pieces = [self._take()]
                try:
                    while have < amt and not self._end_seen:
                        pieces.append(self._next_chunk(gather=True))
                        have += len(pieces[-1])
                finally:
                    self._keep(pieces)  # one join: a read of many pieces copies once
            data = self._take(amt)
            self._finish_if_done()
            return data
        except PoolwatchError:
            raise
        except BaseException:
            self._interrupted()
            raise

    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """Iterate over the body, in chunks of ``chunk_size`` bytes (the last
        may be shorter) or as they arrive."""
        check_size("chunk_size", chunk_size, positive=True)
        while True:
            data = self.read(chunk_size) if chunk_size else self.read1()
            if not data:
                return
            yield data

    def read1(self, amt: int | None = None) -> bytes:
        """Read what has arrived, up to ``amt`` bytes, waiting only if nothing
        has: at most one read from the socket (``b""`` at the end). Without
        ``amt``, a chunked body comes a chunk at a time, as it was sent."""
        check_size("amt", amt)
        try:
            if not self._buffer and not self._end_seen:
                self._keep([self._next_chunk(gather=amt is not None and amt >= 0)])
            data = self._take(amt)
            self._finish_if_done()
            return data
        except PoolwatchError:
            raise
        except BaseException:
            self._interrupted()
            raise

    def _interrupted(self) -> None:
        """A read stopped on an exception from outside poolwatch
        (KeyboardInterrupt, or one a signal handler raised), perhaps with
        bytes taken from the socket and not yet handed over: the body ends
        closed early, and its connection is closed."""
        self._drop_buffer()
        self._connection.interrupted(self._exchange)

    def _next_chunk(
        self,
        *,
        closing: bool = False,
        whole: bool = False,
        prefix: bytes = b"",
        gather: bool = False,
    ) -> bytes:
        """The next piece of the body. With ``whole``, the rest of a body
        read past h11, after ``prefix`` (see
        :meth:`Connection.read_body_direct`); with ``gather``, the chunks of
        a chunked body already received in one piece (for reads that want
        bytes, not chunks). An error ends the body as
        errored, unless it happens while ``close()`` drains (then it is
        closed early). After a close on this side (the transport closing),
        the error is a :class:`~poolwatch.ReadError` saying so."""
        exchange = self._exchange
        if exchange.state != BODY:
            raise body_closed_error(exchange, self._connection.close_reason)
        conn = self._connection
        if exchange.bytes_read == 0 and not exchange.body_buffered:
            conn.prepare_body_read(exchange)
        try:
            arrived = conn.take_whole_body() if exchange.body_buffered else None
            if arrived is not None:  # it came with the head, up to its end
                data, extra = arrived
                exchange.bytes_read += len(data)
                self._end_seen = True
            else:
                data = self._read_piece(whole, prefix, gather)
                extra = self._end_seen and conn.extra_bytes_after_body()
            if extra:
                raise RemoteProtocolError(
                    "bytes after the end of the response body",
                    method=self.method,
                    url=self.url,
                )
        except PoolwatchError as error:
            # Before finish_body, whose close would give a reason of its own.
            closed = conn.closed_error(exchange)
            if not closing:
                exchange.error = error if closed is None else closed
                conn.finish_body(exchange, "errored")
            if closed is not None:  # not the server's doing
                raise closed from error
            raise
        return data

    def _read_piece(self, whole: bool, prefix: bytes, gather: bool) -> bytes:
        """The next piece from the socket, past h11 or through it."""
        conn = self._connection
        exchange = self._exchange
        data = conn.read_body_direct(exchange, -1 if whole else RECV_SIZE, prefix)
        if data is not None:
            exchange.bytes_read += len(data) - len(prefix)
            self._end_seen = conn.peek_end_of_body()
            return data
        assert not prefix
        event = conn.read_body_event(exchange, gather)
        if isinstance(event, h11.EndOfMessage):
            self._end_seen = True
            return b""
        data = bytes(event.data)
        exchange.bytes_read += len(data)
        self._end_seen = conn.peek_end_of_body()
        return data

    def _finish_if_done(self) -> None:
        if self._end_seen and not self._buffer and self._exchange.state == BODY:
            self._connection.finish_body(self._exchange, "drained")

    # -- closing -------------------------------------------------------------

    def close(self) -> None:
        """End the body. Before its end this tears the connection down (R5),
        unless ``drain_on_close`` saved it; after it, this does nothing. A
        ``101`` response's :attr:`upgraded` stream is its body, as in Go:
        this closes it."""
        exchange = self._exchange
        if exchange.state != BODY or exchange.leaked:
            if self.status == 101 and self._connection.upgraded is not None:
                self._connection.upgraded.close()
            return
        self._drop_buffer()
        try:
            saved = self._drain_on_close and (self._end_seen or self._drain())
        except BaseException:  # not a PoolwatchError: _drain() takes those
            self._interrupted()
            raise
        self._connection.finish_body(exchange, "closed_early", reuse=saved)

    def _drain(self) -> bool:
        """Read and discard the rest of the body within the budget: a rest
        known to be larger is not read at all, one found larger stops the
        drain after the read that found it."""
        conn = self._connection
        exchange = self._exchange
        left = exchange.body_left()
        if left is not None and left > DRAIN_MAX_BYTES:
            return False
        deadline = time.monotonic() + DRAIN_MAX_SECONDS
        limit = exchange.bytes_read + DRAIN_MAX_BYTES
        try:
            while not self._end_seen:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                conn.set_read_timeout(remaining)
                self._next_chunk(closing=True, gather=True)
                if exchange.bytes_read > limit:
                    return False
        except PoolwatchError:
            return False
        return not conn.extra_bytes_after_body()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _let_go(self) -> None:
        # The reader does the bookkeeping, or the transport if the reader is
        # gone (the server hung up first).
        exchange = self._exchange
        exchange.release_reader()
        if exchange.body_buffered:
            self._connection.leaked_while_buffered(exchange)
