"""One HTTP/1.1 connection and its two worker tasks (R1-R10), on asyncio.

Theory of operation
-------------------

The thread connection's design (``poolwatch/_sync/connection.py``) with
tasks for threads and futures for one-shot locks:

* the **writer** task takes exchanges from its inbox and writes each request,
  then reports whether all of it went out (R9);
* the **reader** task awaits the socket for the connection's whole life.
  While the connection is idle, bytes or an EOF there close it at once (R3).
  With a request in flight it parses the head, hands it to the caller
  through a future and *parks* on another future until the body is done.

The caller reads the body from the stream itself while the reader is parked,
so a body read costs no task switch. Everything runs on the loop, so the h11
state needs no lock; the pool lock is a plain ``threading.Lock`` held only
for bookkeeping (never across an ``await``) so that ``stats()`` from another
thread sees a consistent state.

Cancellation: every ``await`` of the caller may be cancelled. A request
cancelled before the writer took it leaves the connection as it was; one
cancelled later, or in the middle of its body, closes the connection, so that
no connection goes back to the pool in an unknown state.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable
from contextvars import copy_context
from typing import TYPE_CHECKING, Any

import h11

from .._core.exchange import (
    ABANDONED,
    BODY,
    RECV_SIZE,
    WAITING,
    ClientProtocol,
    request_error,
)
from .._core.failures import (
    SERVER_ENDED_UNDER_BODY,
    BodySourceFailed,
    closed_while_reading,
    is_peer_gone,
    leak_message,
    no_response_error,
    read_failed,
    write_error,
)
from .._core.netinfo import socket_info
from .._core.stats import Counters
from .._core.wire import Head
from .._exceptions import (
    PoolwatchError,
    ReadTimeout,
    RemoteProtocolError,
    ResponseHeaderTimeout,
)
from .._models import Origin, body_chunk_bytes
from .exchange import AsyncExchange, cancel_pending, wait_or_expire, wake, within
from .upgraded import AsyncUpgradedStream

if TYPE_CHECKING:
    from .transport import AsyncTransport

__all__ = ["AsyncConnection", "AsyncExchange"]


logger = logging.getLogger("poolwatch")
leak_logger = logging.getLogger("poolwatch.leaks")  # R6 reports, with call sites

# How long a finished response waits for its request's upload to finish
# before giving up on reusing the connection (Go's
# maxWriteWaitBeforeConnReuse).
WRITE_WAIT_BEFORE_REUSE = 0.05


class AsyncConnection:
    """An open connection with its reader and writer tasks."""

    _ids = itertools.count(1)

    def __init__(
        self,
        transport: AsyncTransport,
        origin: Origin,
        streams: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        tls_version: str | None = None,
    ) -> None:
        self.id = next(AsyncConnection._ids)
        self.origin = origin
        self.tls_version = tls_version
        self._transport = transport
        self._loop = transport._loop_now()
        self.counters = Counters()  # its origin's, once open (see Book.opened_locked)
        self._reader, self._writer = streams
        self._proto = ClientProtocol()
        self._inbox: deque[AsyncExchange | None] = deque()
        self._inbox_ready: asyncio.Future[None] | None = None  # the idle writer waits on it
        self._idle_timer: asyncio.TimerHandle | None = None
        self.created_at = self._loop.time()
        self.idle_since = self.created_at  # pool lock
        self.holds_slot = True  # pool lock
        self.exchange: AsyncExchange | None = None  # pool lock: the request in flight
        self.requests_served = 0  # pool lock
        self.closing = False  # pool lock
        self.close_reason = ""  # pool lock
        self._workers_left = 2  # pool lock
        # After a 101: the streams, handed to the response, which the
        # workers then leave open (pool lock).
        self.upgraded: AsyncUpgradedStream | None = None
        self.workers: tuple[asyncio.Task[None], ...] = ()
        # Owned by the writer: it is sending a streamed request body, whose
        # iterator (the caller's code) may wait as long as it likes; a close
        # cancels the writer then (see close()).
        self._in_body = False

    def start(self) -> None:
        """Start both workers (R1)."""
        loop = self._loop
        self.workers = (
            loop.create_task(self._read_loop(), name=f"poolwatch-reader-{self.id}"),
            loop.create_task(self._write_loop(), name=f"poolwatch-writer-{self.id}"),
        )

    def __repr__(self) -> str:
        state = "closing" if self.closing else "active" if self.exchange else "idle"
        return (
            f"<AsyncConnection #{self.id} {self.origin} {state}, {self.requests_served} requests>"
        )

    # -- the caller's side ----------------------------------------------------

    async def round_trip(self, exchange: AsyncExchange) -> None:
        """Hand the request to the writer and wait for the reader to deliver
        the response head (R2). Raises the error that ended the exchange.
        Cancelled, it closes the connection unless nothing was written."""
        if cancel_pending(self._loop):
            # Take the cancellation now, before the writer sees the request.
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                self._release_unsent(exchange)
                raise
        self._inbox.append(exchange)
        wake(self._inbox_ready)
        try:
            await exchange.head_ready
        except asyncio.CancelledError:
            self._round_trip_cancelled(exchange)
            raise
        if exchange.error is not None:
            raise exchange.error

    def _round_trip_cancelled(self, exchange: AsyncExchange) -> None:
        transport = self._transport
        if exchange.head_timer is not None:
            exchange.head_timer.cancel()
        if exchange in self._inbox:
            self._inbox.remove(exchange)
            self._release_unsent(exchange)
            return
        with transport._lock:
            state = exchange.state
            if state == WAITING:
                exchange.state = ABANDONED
        if state == WAITING:
            self.close("cancelled")  # its response would come to nobody
        elif state == BODY:
            # Delivered just as the cancellation came: nobody will read it.
            self.end_body_now(exchange, "closed_early", "cancelled")
        # Otherwise the exchange is over already: a body-less response whose
        # connection went back to the pool, or an error whose closed it.

    def _release_unsent(self, exchange: AsyncExchange) -> None:
        """The writer never saw ``exchange``: the connection is as it was,
        and goes back to the pool."""
        transport = self._transport
        with transport._lock:
            if exchange.state == WAITING:
                exchange.state = ABANDONED
            if self.closing or self.exchange is not exchange:
                return
            self.exchange = None
            decision = transport._pool.release_locked(self, True, self._loop.time())
        transport._act(decision)
        if self not in decision.close:
            self._arm_idle_timer()

    def _head_timed_out(self, exchange: AsyncExchange) -> None:
        """The response-header limit passed since the request was written (R17)."""
        with self._transport._lock:
            if exchange.state != WAITING:
                return
            limit = exchange.timeout.response_header
            assert limit is not None and exchange.written_at is not None
            left = exchange.written_at + limit - self._loop.time()
            if left > 0:  # an interim response came meanwhile
                exchange.head_timer = self._loop.call_later(left, self._head_timed_out, exchange)
                return
            exchange.fail_locked(
                request_error(
                    exchange.request,
                    ResponseHeaderTimeout,
                    f"no response head within {limit}s of sending the request",
                )
            )
        self.close("response_header_timeout")

    def buffered_body_event(
        self, exchange: AsyncExchange, gather: bool = False
    ) -> h11.Data | h11.EndOfMessage | None:
        """The next piece of the body if it has arrived already, else
        ``None`` (no I/O: a small body comes with its head); see
        ``next_body_event`` for ``gather``. Raises on errors."""
        return self._proto.next_body_event(exchange, gather)

    async def read_body_event(
        self, exchange: AsyncExchange, gather: bool = False
    ) -> h11.Data | h11.EndOfMessage:
        """The next piece of the body, reading the stream if needed (the
        caller's task, while the reader is parked). Raises on errors."""
        proto = self._proto
        event = proto.next_body_event(exchange, gather)
        while event is None:
            data = await self._recv_body(exchange, exchange.timeout.read)
            proto.receive_data(data)
            event = proto.next_body_event(exchange, gather)
        return event

    async def _recv_body(self, exchange: AsyncExchange, limit: float | None) -> bytes:
        try:
            if limit is None:
                return await self._reader.read(RECV_SIZE)
            # Not within(): wait_for's task costs a loop turn per read, in
            # which more of a large body arrives, and fewer, larger reads cost
            # less CPU per byte than the task does (a 1 MiB body: about 2.5 ms
            # against 3.3 ms with the read awaited directly).
            return await _read_within(self._reader, limit)
        except asyncio.TimeoutError as exc:
            raise self._error(exchange, ReadTimeout, f"no body byte within {limit}s") from exc
        except OSError as exc:
            raise read_failed(exchange, exc) from exc

    async def drain_body(self, exchange: AsyncExchange, limit: float, max_bytes: int) -> bool:
        """Read and discard what is left of the body within ``limit`` seconds
        and ``max_bytes`` (drain_on_close, R5); whether the end was reached."""
        proto = self._proto
        left = exchange.body_left()
        if left is not None and left > max_bytes:
            return False  # known to be over the budget: not read at all
        deadline = self._loop.time() + limit
        try:
            while True:
                event = proto.next_body_event(exchange)
                if isinstance(event, h11.EndOfMessage):
                    return not proto.extra_bytes_after_body()
                if isinstance(event, h11.Data):
                    exchange.bytes_read += len(event.data)
                    max_bytes -= len(event.data)
                    if max_bytes < 0:
                        return False
                elif event is None:
                    remaining = deadline - self._loop.time()
                    if remaining <= 0:
                        return False
                    proto.receive_data(await self._recv_body(exchange, remaining))
        except PoolwatchError:
            return False

    def closed_error(self, exchange: AsyncExchange) -> PoolwatchError | None:
        """If this side closed the connection (the transport closing, say),
        the error for a body read that failed since: it was not the
        server's doing. ``None`` if the connection is open."""
        reason = self.close_reason if self.closing else ""
        if not reason or reason in SERVER_ENDED_UNDER_BODY:
            return None
        return closed_while_reading(exchange, reason)

    def peek_end_of_body(self) -> bool:
        """Whether the body's end is already buffered (no I/O)."""
        return self._proto.peek_end_of_body()

    def extra_bytes_after_body(self) -> bool:
        """Whether bytes followed the end of the response (R10)."""
        return self._proto.extra_bytes_after_body()

    async def finish_body(self, exchange: AsyncExchange, outcome: str, reuse: bool) -> None:
        """The body ended with ``outcome``: reuse the connection if it can be
        (R4, R7, R9), otherwise close it; then let the reader go on."""
        written = exchange.has_written_all_now() if reuse else False
        if written is None:  # the upload is still going: wait a little
            try:
                written = await exchange.has_written_all(WRITE_WAIT_BEFORE_REUSE)
            except asyncio.CancelledError:
                self.end_body_now(exchange, outcome, "cancelled")
                raise
        reusable = written and self._proto.can_reuse(exchange)
        if not reusable:
            self.end_body_now(exchange, outcome)
            if asyncio.current_task() not in self.workers:
                await self.wait_closed()  # as the thread transport joins its workers
            return
        transport = self._transport
        exchange.marks["body_done"] = self._loop.time()
        self._emit_body_done(exchange, outcome, True)
        with transport._lock:
            if exchange.state == BODY:
                transport._book.end_body_locked(exchange, outcome)
            if self.closing:
                decision = None
            else:
                if outcome == "closed_early":
                    self.counters.bodies_drained_on_close += 1
                self.exchange = None
                decision = transport._pool.release_locked(self, True, self._loop.time())
        if decision is None:
            return
        exchange.release_reader()
        transport._act(decision)
        if self in decision.close:  # over the idle limits: closed instead
            transport._emit("put_idle_conn", self, exchange, error="too many idle connections")
        else:
            self._arm_idle_timer()
            if self._listening(exchange):
                transport._emit("put_idle_conn", self, exchange)

    def end_body_now(self, exchange: AsyncExchange, outcome: str, reason: str = "") -> None:
        """End the body with ``outcome`` and close the connection, for
        ``reason`` (by default the outcome, as the thread transport says it);
        no I/O to wait for: safe in a cancelled task."""
        transport = self._transport
        exchange.marks["body_done"] = self._loop.time()
        self._emit_body_done(exchange, outcome, False)
        with transport._lock:
            if exchange.state == BODY:
                transport._book.end_body_locked(exchange, outcome)
        self.close(reason or (outcome if outcome != "drained" else "not_reusable"))

    def _listening(self, exchange: AsyncExchange) -> bool:
        """Whether anyone listens to events of ``exchange`` (without one, an
        event costs only this check)."""
        return bool(self._transport._listeners) or exchange.listener is not None

    def _emit_body_done(self, exchange: AsyncExchange, outcome: str, reused: bool) -> None:
        transport = self._transport
        if self._listening(exchange):
            data = exchange.body_done_data(outcome, reused)
            transport._emit("body_done", self, exchange, **data)

    def body_leaked(self, exchange: AsyncExchange) -> None:
        """On the loop, after the garbage collector found the response
        unclosed: wake whichever worker does the bookkeeping (R6). On a
        closing connection the reader may have exited already (the server
        hung up after a buffered body): count the leak here. Whoever comes
        second finds it counted (the book checks)."""
        exchange.release_reader()
        if self.closing:
            self._body_released(exchange)
        elif exchange.body_buffered:
            self._abort()  # its reader is on the stream

    # -- idle ------------------------------------------------------------

    def _arm_idle_timer(self) -> None:
        """Make sure a timer will look at the idle connection (R11). One
        timer per connection, re-armed by itself: none per request."""
        idle_timeout = self._transport._pool.limits.idle_timeout
        if idle_timeout is not None and self._idle_timer is None:
            self._idle_timer = self._loop.call_later(idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        """Close the connection if it has been idle past the idle timeout
        (R11); if it is in use, look again one idle timeout later."""
        self._idle_timer = None
        transport = self._transport
        pool = transport._pool
        with transport._lock:
            if self.closing:
                return
            if self.exchange is not None or not pool.is_idle(self):
                self._arm_idle_timer()
                return
            left = pool.time_left_idle(self, self._loop.time())
            if left is None:
                return
            if left > 0:
                self._idle_timer = self._loop.call_later(left, self._idle_check)
                return
            pool.remove_idle_locked(self)
        self.close("idle_timeout")

    # -- closing -----------------------------------------------------------

    def close(self, reason: str) -> None:
        """Tear the connection down: abort the stream, stop both workers and
        free its pool slot. Idempotent; never waits (see :meth:`wait_closed`).
        A writer in the middle of a streamed request body is cancelled: its
        iterator is the caller's code, which may wait for as long as it
        likes, and neither a response's read or close nor the transport's
        close should wait for it."""
        transport = self._transport
        with transport._lock:
            if self.closing:
                return
            self.closing = True
            # A reason found first (by the reader, say) is kept.
            self.close_reason = self.close_reason or reason
            exchange = self.exchange
            in_body = exchange is not None and exchange.state == BODY
            decision = transport._book.closed_locked(self)
            # The close ended the body: errored, or leaked at the loop's end
            # (a response without one is reported by whoever finishes it).
            ended = in_body and exchange is not None and exchange.outcome in ("errored", "leaked")
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self.upgraded is None:
            self._abort()
        self._inbox.append(None)
        wake(self._inbox_ready)
        if self._in_body:
            writer = self.workers[1]
            if writer is not asyncio.current_task():
                writer.cancel()
        if exchange is not None:
            if ended:
                self._body_ended_by_close(exchange)
            exchange.release_reader()
        transport._act(decision)

    def _body_ended_by_close(self, exchange: AsyncExchange) -> None:
        """Report a body this connection's close ended: ``errored`` (the
        transport closed under it), or ``leaked`` (left open as the event
        loop shut down, R6)."""
        exchange.marks["body_done"] = self._loop.time()
        if exchange.outcome != "leaked":
            self._emit_body_done(exchange, "errored", reused=False)
            return
        request = exchange.request
        leak_logger.warning(
            "response to %s %s was left open as its event loop shut down; request made at:\n%s",
            request.method,
            request.url,
            exchange.call_site.format(),
        )
        if self._listening(exchange):
            self._transport._emit(
                "leak_detected",
                self,
                exchange,
                method=request.method,
                call_site=exchange.call_site,
            )

    def _abort(self) -> None:
        transport = self._writer.transport
        try:
            if not transport.is_closing():
                transport.abort()
            else:
                transport.close()
        except RuntimeError:
            # The loop has closed (its pending workers are being destroyed):
            # the stream went with it.
            if not self._loop.is_closed():
                raise

    def extra_info(self, name: str) -> Any:
        """See :meth:`poolwatch.Response.get_extra_info`."""
        if self.closing:
            return socket_info(name, None, None)
        writer = self._writer
        return socket_info(
            name, writer.get_extra_info("socket"), writer.get_extra_info("ssl_object")
        )

    async def wait_closed(self) -> None:
        """Wait for both workers to exit (never from a worker)."""
        current = asyncio.current_task()
        others = [task for task in self.workers if task is not current]
        if others:
            await asyncio.wait(others)

    def _worker_exited(self) -> None:
        transport = self._transport
        with transport._lock:
            self._workers_left -= 1
            last = self._workers_left == 0
            transport._book.worker_exited_locked(self, last)
        if last:
            transport._emit(
                "conn_closed",
                self,
                reason=self.close_reason,
                age=self._loop.time() - self.created_at,
                requests=self.requests_served,
            )

    # -- the writer ----------------------------------------------------------

    async def _write_loop(self) -> None:
        try:
            while True:
                inbox = self._inbox
                while not inbox:
                    self._inbox_ready = self._loop.create_future()
                    await self._inbox_ready
                exchange = inbox.popleft()
                if exchange is None:
                    break
                await self._write_request(exchange)
                exchange = None  # its request body is not kept while idle
        except asyncio.CancelledError:
            self.close("loop_shutdown")
            raise
        except BaseException:  # pragma: no cover - a bug; keep the pool alive
            logger.exception("poolwatch writer of %r failed", self)
            self.close("writer_crashed")
        finally:
            self._inbox_ready = None
            self._worker_exited()

    async def _write_request(self, exchange: AsyncExchange) -> None:
        request = exchange.request
        proto = self._proto
        exchange.write_started = True
        try:
            data, body, more = proto.start_request(request)
            await self._send(exchange, data)
            if body:
                await self._send(exchange, body)
            if self._listening(exchange):
                self._transport._emit("wrote_headers", self, exchange)
            if request.expects_continue and not await self._may_send_body(exchange):
                more = False  # the server answered and will close: skip it
            if more:
                await self._send_body(exchange)
        except Exception as exc:
            self._write_failed(exchange, exc)
            return
        exchange.written_at = exchange.marks["written"] = self._loop.time()
        exchange.write_finished = True
        wake(exchange.write_done)
        limit = exchange.timeout.response_header
        if limit is not None and exchange.state == WAITING:
            exchange.head_timer = self._loop.call_later(limit, self._head_timed_out, exchange)
        if self._listening(exchange):
            self._transport._emit("wrote_request", self, exchange)

    async def _send_body(self, exchange: AsyncExchange) -> None:
        self._in_body = True
        try:
            # In a task made in the caller's context: the body's iterator is
            # the caller's code, and reads its context variables. Cancelling
            # the writer cancels it too.
            context = exchange.body_context or copy_context()
            await context.run(self._loop.create_task, self._send_body_chunks(exchange))
        finally:
            self._in_body = False

    async def _send_body_chunks(self, exchange: AsyncExchange) -> None:
        proto = self._proto
        pieces = _pieces(exchange)
        try:
            while True:
                try:
                    data = await anext(pieces, None)
                except Exception as exc:  # the caller's code: not a write error
                    raise BodySourceFailed(exc) from exc
                if data is None:
                    break
                await self._send(exchange, proto.body_chunk(data))
        finally:
            await pieces.aclose()  # now, not by a task the collector would start
        await self._send(exchange, proto.end_request())

    async def _send(self, exchange: AsyncExchange, data: bytes) -> None:
        writer = self._writer
        if writer.transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        writer.write(data)
        if _unsent(writer.transport) == 0:
            if writer.transport.is_closing():
                # The send failed at once (a reset): the transport dropped
                # the data and is closing, and write() raises nothing.
                raise ConnectionResetError("the connection was lost while writing")
            return  # all of it went out at once: nothing to wait for
        await within(exchange.timeout.write, writer.drain())

    async def _may_send_body(self, exchange: AsyncExchange) -> bool:
        """Wait for ``100 Continue``, a final response or the timeout (R15)."""
        if exchange.head is None and "got_100" not in exchange.marks:
            exchange.go_ahead = self._loop.create_future()
            await wait_or_expire(exchange.go_ahead, self._transport.expect_continue_timeout)
        return self._proto.may_send_body(exchange)

    def _write_failed(self, exchange: AsyncExchange, exc: BaseException) -> None:
        """Record why the request could not be written (R9, R16)."""
        error = write_error(exchange, exc, timed_out=isinstance(exc, asyncio.TimeoutError))
        exchange.write_error = error
        exchange.write_finished = True
        wake(exchange.write_done)
        if is_peer_gone(exc):
            # A response the server sent first is still readable, and the
            # reader will see the end (R9).
            return
        # The server waits for bytes it will never get: end the exchange now,
        # unless its response already came.
        self._fail_exchange(exchange, error)
        self.close("write_error")

    # -- the reader ----------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while True:
                found = await self._wait_for_response()
                if found is None or not await self._read_head(*found):
                    break
                found = None  # its exchange is not kept while idle
        except asyncio.CancelledError:
            self.close_reason = self.close_reason or "loop_shutdown"
            raise
        except BaseException:  # pragma: no cover - a bug; keep the pool alive
            logger.exception("poolwatch reader of %r failed", self)
        finally:
            self.close(self.close_reason or "reader_exited")
            self._worker_exited()

    async def _recv(self) -> bytes | OSError:
        try:
            return await self._reader.read(RECV_SIZE)
        except OSError as exc:
            return exc

    async def _wait_for_response(self) -> tuple[AsyncExchange, bytes | OSError] | None:
        """Await the stream until a response starts, or decide that the idle
        connection is over (R3, R11)."""
        transport = self._transport
        data = await self._recv()
        with transport._lock:
            exchange, over = transport._book.arrived_locked(self, data)
        if self.close_reason == "unsolicited_response":
            self._log_unsolicited(data)
        elif self.close_reason == "bytes_after_body":
            self._proto.direct_extra_bytes()  # its owner raises for them (R10)
        if not over:
            assert exchange is not None
            return exchange, data
        if exchange is not None:
            self._body_released(exchange)
        return None

    def _log_unsolicited(self, data: bytes | OSError) -> None:
        if isinstance(data, bytes):
            logger.warning(
                "poolwatch: %r received %d unsolicited bytes while idle: %r; closing",
                self,
                len(data),
                data[:40],
            )

    async def _read_head(self, exchange: AsyncExchange, data: bytes | OSError) -> bool:
        """Read the response head and deliver it; then park until the body is
        done. Returns whether the connection lives on."""
        proto = self._proto
        first = True
        told_100 = False
        received = 0
        while True:
            if isinstance(data, OSError) or not data:
                self._fail_exchange(exchange, no_response_error(exchange, data, first))
                return False
            received += len(data)
            if first:
                exchange.response_started = True
                exchange.marks["first_byte"] = self._loop.time()
                if self._listening(exchange):
                    self._transport._emit("got_first_response_byte", self, exchange)
                first = False
            try:
                head = proto.receive_head(exchange, data, received)
            except RemoteProtocolError as error:
                self._fail_exchange(exchange, error)
                return False
            if not told_100 and "got_100" in exchange.marks:
                # As it arrives: the writer sends the body meanwhile (R15).
                self._transport._emit("got_100_continue", self, exchange)
                told_100 = True
            if head is not None:
                return await self._deliver_head(exchange, head)
            data = await self._recv()

    async def _deliver_head(self, exchange: AsyncExchange, head: Head) -> bool:
        transport = self._transport
        try:
            no_body = self._proto.check_head(exchange, head)
        except RemoteProtocolError as error:
            self._fail_exchange(exchange, error)
            return False
        if exchange.head_timer is not None:
            exchange.head_timer.cancel()
        if head.status_code == 101:
            return await self._hand_over(exchange, head)
        exchange.head = head  # before the go-ahead, which reads it
        wake(exchange.go_ahead)
        if not no_body:
            exchange.body_buffered = self._proto.take_buffered_body()
        with transport._lock:
            if exchange.state != WAITING:
                return False  # the caller gave up (timeout or cancellation)
            exchange.marks["head"] = self._loop.time()
            transport._book.delivered_locked(exchange)
        if no_body:
            # R7: back in the pool before the caller sees the response.
            await self.finish_body(exchange, "no_body", True)
        exchange.head_delivered()
        if exchange.body_buffered and not no_body:
            return True  # nothing left to read for it: back to the stream
        await exchange.park_reader()
        return self._body_released(exchange)

    async def _hand_over(self, exchange: AsyncExchange, head: Head) -> bool:
        """A ``101 Switching Protocols`` to a request that asked to upgrade:
        the connection leaves the pool and its workers, its streams handed
        to the response (see the thread connection's ``_hand_over``)."""
        written = exchange.has_written_all_now()
        if written is None:  # still writing: wait a little
            written = await exchange.has_written_all(WRITE_WAIT_BEFORE_REUSE)
        if not written:
            message = "101 Switching Protocols before the request was sent"
            self._fail_exchange(exchange, self._error(exchange, RemoteProtocolError, message))
            return False
        request = exchange.request
        stream = AsyncUpgradedStream(
            self._reader,
            self._writer,
            self._proto.switched_bytes(),
            method=request.method,
            url=request.url,
        )
        exchange.head = head
        wake(exchange.go_ahead)
        transport = self._transport
        with transport._lock:
            if exchange.state != WAITING or self.closing:
                return False  # the caller gave up, or the transport closed
            exchange.marks["head"] = self._loop.time()
            transport._book.delivered_locked(exchange)
            self.upgraded = stream  # before the close, which then leaves the streams
        self.end_body_now(exchange, "no_body", "protocol_switched")
        exchange.head_delivered()
        return False

    def _body_released(self, exchange: AsyncExchange) -> bool:
        """The body owner let go of ``exchange``; whether the connection lives on."""
        transport = self._transport
        with transport._lock:
            leaked, alive = transport._book.released_locked(self, exchange)
        if leaked:
            leak_logger.warning(*leak_message(exchange))
            transport._emit(
                "leak_detected",
                self,
                exchange,
                method=exchange.request.method,
                call_site=exchange.call_site,
            )
        return alive

    def _fail_exchange(self, exchange: AsyncExchange, error: BaseException) -> None:
        """Deliver ``error`` to a caller still waiting for the head."""
        if exchange.head_timer is not None:
            exchange.head_timer.cancel()
        with self._transport._lock:
            exchange.fail_locked(error)

    def _error(
        self, exchange: AsyncExchange, kind: type[PoolwatchError], message: str
    ) -> PoolwatchError:
        return request_error(exchange.request, kind, message)


async def _read_within(reader: asyncio.StreamReader, limit: float) -> bytes:
    """``reader.read()`` within ``limit`` seconds, through ``wait_for``. On
    Python 3.11, ``wait_for`` hands back the data of a read that completed
    as its caller was being cancelled, dropping the cancellation; this
    raises it instead, so a cancelled task never runs on. First it yields
    once to the loop: a canceller that repeats its cancellation until the
    task stops (anyio's cancel scopes) does so then, with its own message,
    by which it knows the cancellation for its own (a bare one it would let
    through, cancelling the caller's whole task)."""
    task = asyncio.current_task()
    before = _cancelling(task)
    data = await asyncio.wait_for(reader.read(RECV_SIZE), limit)
    if _cancelling(task) > before:
        await asyncio.sleep(0)
        raise asyncio.CancelledError
    return data


def _unsent(transport: asyncio.WriteTransport) -> int:
    """Bytes written to ``transport`` and not yet sent. Python 3.10's TLS
    transport, once its connection is lost, raises ``AttributeError`` here
    while it still says it is not closing: that is a closed connection."""
    try:
        return transport.get_write_buffer_size()
    except AttributeError:
        raise ConnectionResetError("the connection is closed") from None


def _cancelling(task: asyncio.Task[Any] | None) -> int:
    """How many cancellations of ``task`` are pending (0 before 3.11, which
    cannot tell)."""
    if task is None or sys.version_info < (3, 11):
        return 0
    return task.cancelling()


async def _pieces(exchange: AsyncExchange) -> AsyncGenerator[bytes, None]:
    """The request body's non-empty pieces, from its async iterator, its
    file (each read in a thread: it may block on the disk) or its iterator."""
    body = exchange.request.body
    if isinstance(body, AsyncIterable):
        async for chunk in body:
            if data := body_chunk_bytes(chunk):
                yield data
    elif hasattr(body, "read"):
        chunks = exchange.request.body_chunks()
        while (chunk := await asyncio.to_thread(next, chunks, b"")) != b"":
            yield chunk
    else:
        for chunk in exchange.request.body_chunks():
            if chunk:
                yield chunk
