"""One HTTP/1.1 connection and its two worker threads (R1-R10).

Theory of operation
-------------------

A connection owns a socket and two threads, like Go's ``persistConn``:

* the **writer** takes exchanges from its inbox and writes each request
  (headers, then body); it reports whether the whole request went out (R9);
* the **reader** blocks reading the socket for the connection's whole life.
  While the connection is idle, a byte or an EOF there means the server
  closed it or misbehaved, and the reader closes it at once (R3). When a
  request is in flight, the reader parses the response head and hands it to
  the caller, then *parks* until the body is finished.

The caller never writes a request or reads a head itself (R2). It does read
the body, straight from the socket, while the reader is parked: a body read
costs no thread hand-off. Whoever finishes the body (the caller reaching
EOF, an early close, the garbage collector finding a leaked response, or a
connection close) decides reuse or teardown, then un-parks the reader.

Each thread uses its own duplicate of the socket so that each can carry its
own timeout; every socket object always has a timeout (never ``None``)
because the duplicates share one non-blocking flag.

Locks: ``transport._lock`` guards pool and connection state (fields marked
"pool lock"); ``_proto_lock`` guards the h11 state machine, which the writer
(sending) and the reader or body owner (receiving) use concurrently. The
proto lock may be taken before the pool lock, never the other way round.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from queue import SimpleQueue
from typing import TYPE_CHECKING

import h11

from .._events import Listener
from .._exceptions import (
    LocalProtocolError,
    PoolwatchError,
    ReadError,
    ReadTimeout,
    RemoteDisconnected,
    RemoteProtocolError,
    ResponseHeaderTimeout,
    WriteError,
    WriteTimeout,
)
from .._leaks import CallSite
from .._models import Origin, Request, Timeout
from .streams import ReadStream, TLSSession, WriteStream

if TYPE_CHECKING:
    from .._core.stats import Counters
    from .transport import Transport

__all__ = ["Connection", "Exchange"]

logger = logging.getLogger("poolwatch")
leak_logger = logging.getLogger("poolwatch.leaks")  # R6 reports, with call sites

# Large enough for a typical response in one system call; h11 copies what it
# receives, so much larger buyers nothing for small responses.
RECV_SIZE = 256 * 1024
# Limit on the status line plus headers (h11's default is 16 KiB; browsers
# and Go allow more). A larger head is a protocol error (R10).
MAX_HEAD_SIZE = 64 * 1024
# Stands for "no timeout": the sockets must always have one (see the module
# docstring), and poll() takes at most 2**31 ms, about 24 days.
NO_TIMEOUT = 7 * 86400.0
# How long a finished response waits for its request's upload to finish
# before giving up on reusing the connection (Go's
# maxWriteWaitBeforeConnReuse).
WRITE_WAIT_BEFORE_REUSE = 0.05

# Exchange states.
WAITING = "waiting"  # for the response head
BODY = "body"  # head delivered, body checked out
DONE = "done"  # body finished (see outcome)
FAILED = "failed"  # an error was delivered instead of a head
ABANDONED = "abandoned"  # the caller stopped waiting for the head


class Exchange:
    """One request and its response on a connection."""

    __slots__ = (
        "body_buffered",
        "bytes_read",
        "call_site",
        "connection",
        "error",
        "go_ahead",
        "head",
        "head_ready",
        "leaked",
        "listener",
        "marks",
        "outcome",
        "reader_parked",
        "request",
        "response_started",
        "reused",
        "state",
        "timeout",
        "was_idle",
        "write_done",
        "write_error",
        "write_finished",
        "written_at",
    )

    def __init__(
        self,
        request: Request,
        timeout: Timeout,
        call_site: CallSite,
        listener: Listener | None = None,
    ) -> None:
        self.listener = listener
        # When each phase ended (time.monotonic()), for Response.timings.
        self.marks: dict[str, float] = {"start": time.monotonic()}
        self.connection: Connection | None = None  # pool lock: set at checkout
        self.reused = False  # pool lock: set at checkout
        self.was_idle = False  # pool lock: set at checkout
        self.response_started = False  # set by the reader
        self.request = request
        self.timeout = timeout
        self.call_site = call_site
        self.state = WAITING  # pool lock
        self.outcome: str | None = None  # pool lock
        self.head: h11.Response | None = None  # set by the reader, then read-only
        self.error: BaseException | None = None  # set before head_ready is released
        self.head_ready = threading.Lock()  # released once: head or error ready
        self.head_ready.acquire()
        self.reader_parked = threading.Lock()  # released once: the reader may go on
        self.reader_parked.acquire()
        self.go_ahead = threading.Lock()  # released by the reader: 100 or a final head
        self.go_ahead.acquire()
        self.write_done = threading.Lock()  # released once by the writer
        self.write_done.acquire()
        self.write_finished = False  # set by the writer before write_done
        self.write_error: BaseException | None = None  # set by the writer
        self.written_at: float | None = None  # set by the writer
        self.leaked = False  # set by the garbage collector's finaliser
        self.bytes_read = 0  # owned by the body owner
        # Set by the reader: the whole body arrived with the head, so the
        # reader went back to reading instead of parking.
        self.body_buffered = False

    def release_reader(self) -> None:
        """Let the parked reader go on; harmless if already released."""
        _release_once(self.reader_parked)

    def has_written_all(self, wait: float) -> bool:
        """Whether the writer finished the request without error, waiting up
        to ``wait`` seconds for it to finish (R9)."""
        if not self.write_finished:
            if not self.write_done.acquire(timeout=wait):
                return False
            self.write_done.release()
        return self.write_error is None


class Connection:
    """An open connection with its reader and writer threads."""

    _ids = itertools.count(1)  # next() on a count is atomic under the GIL

    def __init__(
        self,
        transport: Transport,
        origin: Origin,
        streams: tuple[ReadStream, WriteStream],
        tls: TLSSession | None = None,
    ) -> None:
        self.id = next(Connection._ids)
        self.origin = origin
        self.tls = tls
        self._transport = transport
        self._counters: Counters = transport._counters_for(origin)
        # The reader's stream, and the body owner's while the reader is parked.
        self._rsock: ReadStream = streams[0]
        self._wsock: WriteStream = streams[1]  # the writer's
        self._write_timeout: float | None = -1.0  # owned by the writer: as set on _wsock
        self._proto = _new_protocol()  # replaced only between exchanges
        self._proto_lock = threading.Lock()
        # Body events already taken from h11, for the body owner: filled by
        # the reader before it hands the head over, then the owner's.
        self._pending: deque[h11.Data | h11.EndOfMessage] = deque()
        self._inbox: SimpleQueue[Exchange | None] = SimpleQueue()
        self.created_at = time.monotonic()
        self.idle_since = self.created_at  # pool lock
        self.holds_slot = True  # pool lock
        self.exchange: Exchange | None = None  # pool lock: the request in flight
        self.requests_served = 0  # pool lock
        self.closing = False  # pool lock
        self.close_reason = ""  # pool lock
        self._workers_left = 2  # pool lock
        self._reader = threading.Thread(
            target=self._read_loop, name=f"poolwatch-reader-{self.id}", daemon=True
        )
        self._writer = threading.Thread(
            target=self._write_loop, name=f"poolwatch-writer-{self.id}", daemon=True
        )

    def start(self) -> None:
        """Start both workers (R1)."""
        self._reader.start()
        self._writer.start()

    def __repr__(self) -> str:
        state = "closing" if self.closing else "active" if self.exchange else "idle"
        return f"<Connection #{self.id} {self.origin} {state}, {self.requests_served} requests>"

    # -- the caller's side ----------------------------------------------------

    def round_trip(self, exchange: Exchange) -> None:
        """Hand the request to the writer and wait for the reader to deliver
        the response head (R2). Raises the error that ended the exchange."""
        self._inbox.put(exchange)
        self._wait_for_head(exchange)
        if exchange.error is not None:
            raise exchange.error

    def _wait_for_head(self, exchange: Exchange) -> None:
        limit = exchange.timeout.response_header
        wait = -1.0 if limit is None else limit
        while not exchange.head_ready.acquire(timeout=wait):
            assert limit is not None
            with self._transport._lock:
                if exchange.state != WAITING:
                    wait = -1.0  # delivered meanwhile: take it
                    continue
                written_at = exchange.written_at
                if written_at is None:
                    wait = limit  # still writing: the write timeout governs
                    continue
                wait = written_at + limit - time.monotonic()
                if wait > 0:
                    continue
                exchange.state = ABANDONED
            self.close("response_header_timeout")
            raise self._error(
                exchange,
                ResponseHeaderTimeout,
                f"no response head within {limit}s of sending the request",
            )

    def read_body_event(self, exchange: Exchange) -> h11.Data | h11.EndOfMessage:
        """The next piece of the body, reading the socket if needed (caller's
        thread, while the reader is parked). Raises on errors."""
        proto = self._proto
        if self._pending:
            return self._pending.popleft()
        event: object
        try:
            with self._proto_lock:
                event = proto.next_event()
        except h11.RemoteProtocolError as exc:
            raise self._error(exchange, RemoteProtocolError, f"bad body: {exc}") from exc
        while event is h11.NEED_DATA:
            try:
                data = self._rsock.recv(RECV_SIZE)
            except TimeoutError as exc:
                raise self._error(
                    exchange, ReadTimeout, f"no body byte within {exchange.timeout.read}s"
                ) from exc
            except OSError as exc:
                raise self._read_failed(exchange, exc) from exc
            try:
                with self._proto_lock:
                    proto.receive_data(data)
                    event = proto.next_event()
            except h11.RemoteProtocolError as exc:
                raise self._error(exchange, RemoteProtocolError, f"bad body: {exc}") from exc
        if isinstance(event, (h11.Data, h11.EndOfMessage)):
            return event
        raise self._error(exchange, RemoteProtocolError, f"unexpected {event!r}")

    def peek_end_of_body(self) -> bool:
        """Whether the body's end is already buffered, so that a read that
        took the last byte can finish the body without another call (R4,
        R18). Reads no socket; a Data event found is kept for the next read."""
        pending = self._pending
        if pending:
            if isinstance(pending[0], h11.EndOfMessage):
                pending.popleft()
                return True
            return False
        with self._proto_lock:
            proto = self._proto
            if proto.their_state is not h11.SEND_BODY:
                return proto.their_state is h11.DONE
            try:
                event = proto.next_event()
            except h11.RemoteProtocolError:
                return False  # the next read raises it
        if isinstance(event, h11.EndOfMessage):
            return True
        if isinstance(event, h11.Data):
            pending.append(event)
        return False

    def prepare_body_read(self, exchange: Exchange) -> None:
        """Give the socket the read timeout (the body owner's)."""
        self.set_read_timeout(exchange.timeout.read)

    def set_read_timeout(self, seconds: float | None) -> None:
        """Set the body owner's read timeout (only while the reader is parked)."""
        self._rsock.settimeout(NO_TIMEOUT if seconds is None else seconds)

    def finish_body(self, exchange: Exchange, outcome: str, *, reuse: bool | None = None) -> None:
        """The body ended with ``outcome``: reuse the connection if it can be
        (R4, R7, R9), otherwise close it; then let the reader go on."""
        if reuse is None:
            reuse = outcome in ("drained", "no_body")
        reusable = reuse and self._can_reuse(exchange)
        exchange.marks["body_done"] = time.monotonic()
        if self._transport._listeners or exchange.listener is not None:
            self._emit_body_done(exchange, outcome, reusable)
        transport = self._transport
        with transport._lock:
            if exchange.state == BODY:
                transport._end_body_locked(exchange, outcome)
            if not reusable or self.closing:
                decision = None
            else:
                if outcome == "closed_early":
                    self._counters.bodies_drained_on_close += 1
                self.exchange = None
                decision = transport._pool.release_locked(self, True, time.monotonic())
        if decision is None:
            self.close(outcome if outcome != "drained" else "not_reusable")
            return
        exchange.release_reader()
        transport._act(decision)
        if self in decision.close:  # over the idle limits: closed instead
            transport._emit("put_idle_conn", self, exchange, error="too many idle connections")
        else:
            transport._emit("put_idle_conn", self, exchange)

    def _emit_body_done(self, exchange: Exchange, outcome: str, reused: bool) -> None:
        head = exchange.head
        self._transport._emit(
            "body_done",
            self,
            exchange,
            outcome=outcome,
            bytes=exchange.bytes_read,
            reused=reused,
            method=exchange.request.method,
            status=head.status_code if head is not None else 0,
            elapsed=exchange.marks["body_done"] - exchange.marks["start"],
        )

    def _can_reuse(self, exchange: Exchange) -> bool:
        """Both sides finished cleanly with keep-alive, and nothing follows
        the response (R8, R9, R10)."""
        if not exchange.has_written_all(WRITE_WAIT_BEFORE_REUSE):
            return False
        with self._proto_lock:
            proto = self._proto
            if proto.trailing_data[0]:
                return False
            if proto.our_state is h11.DONE and proto.their_state is h11.DONE:
                proto.start_next_cycle()
                return True
            finished = (proto.our_state, proto.their_state) == (h11.MUST_CLOSE, h11.MUST_CLOSE)
            if finished and _is_http10_keep_alive(exchange):
                # h11 never reuses an HTTP/1.0 connection; a server that
                # promised keep-alive for a length-delimited body can be (R8).
                self._proto = _new_protocol()
                return True
            return False

    def extra_bytes_after_body(self) -> bool:
        """Whether bytes followed the end of the response (R10)."""
        with self._proto_lock:
            return bool(self._proto.trailing_data[0])

    # -- closing -----------------------------------------------------------

    def close(self, reason: str, *, join: bool = True) -> None:
        """Tear the connection down: shut the socket, stop both workers and
        free its pool slot. Idempotent. Joins the workers unless called from
        one of them (workers never wait for each other) or ``join`` is false."""
        transport = self._transport
        with transport._lock:
            if not self.closing:
                self.closing = True
                self.close_reason = reason
                decision = transport._connection_closed_locked(self)
                exchange = self.exchange
            else:
                decision, exchange = None, None
        if decision is not None:
            try:
                self._rsock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already reset or closed by the peer
            self._inbox.put(None)
            if exchange is not None:
                exchange.release_reader()
            transport._act(decision)
        current = threading.current_thread()
        if join and current is not self._reader and current is not self._writer:
            self.join()

    def join(self) -> None:
        """Wait for both workers to exit (never from a worker)."""
        for worker in (self._reader, self._writer):
            if worker.ident is not None and worker is not threading.current_thread():
                worker.join()

    def discard_unstarted(self) -> None:
        """Close the sockets of a connection whose workers never started."""
        self._rsock.close()
        self._wsock.close()

    def _worker_exited(self) -> None:
        transport = self._transport
        with transport._lock:
            self._workers_left -= 1
            last = self._workers_left == 0
            transport._worker_exited_locked(self, last)
        if last:
            transport._emit(
                "conn_closed",
                self,
                reason=self.close_reason,
                age=time.monotonic() - self.created_at,
                requests=self.requests_served,
            )

    # -- the writer ----------------------------------------------------------

    def _write_loop(self) -> None:
        try:
            while (exchange := self._inbox.get()) is not None:
                self._write_request(exchange)
        except BaseException:  # pragma: no cover - a bug; keep the pool alive
            logger.exception("poolwatch writer of %r failed", self)
            self.close("writer_crashed", join=False)
        finally:
            self._wsock.close()
            self._worker_exited()

    def _write_request(self, exchange: Exchange) -> None:
        request = exchange.request
        sock = self._wsock
        proto = self._proto
        try:
            write = exchange.timeout.write
            if write != self._write_timeout:  # settimeout costs system calls
                sock.settimeout(NO_TIMEOUT if write is None else write)
                self._write_timeout = write
            body = request.body
            with self._proto_lock:
                data = proto.send(request.event)
                if request.expects_continue:
                    pass  # the body waits for the server's go-ahead (R15)
                elif body is None or isinstance(body, bytes):
                    # The whole request in one system call.
                    if body:
                        data += proto.send(h11.Data(data=body))
                    data += proto.send(h11.EndOfMessage())
                    body = None
            sock.sendall(data)
            self._transport._emit("wrote_headers", self, exchange)
            if request.expects_continue and not self._may_send_body(exchange):
                body = None  # the server answered and will close: skip it
            elif body is not None:
                for chunk in request.body_chunks():
                    if chunk:
                        with self._proto_lock:
                            data = proto.send(h11.Data(data=chunk))
                        sock.sendall(data)
                with self._proto_lock:
                    data = proto.send(h11.EndOfMessage())
                sock.sendall(data)
        except BaseException as exc:
            self._write_failed(exchange, exc)
            return
        exchange.written_at = exchange.marks["written"] = time.monotonic()
        exchange.write_finished = True
        exchange.write_done.release()
        self._transport._emit("wrote_request", self, exchange)

    def _may_send_body(self, exchange: Exchange) -> bool:
        """Wait for ``100 Continue``, a final response or the timeout (R15).
        After a final response that closes the connection the body is not
        sent; otherwise it is, so that the framing stays in step (as Go)."""
        exchange.go_ahead.acquire(timeout=self._transport.expect_continue_timeout)
        head = exchange.head
        if head is None or head.status_code < 200:
            return True
        with self._proto_lock:
            closing = self._proto.our_state is h11.MUST_CLOSE or (
                self._proto.their_state is h11.MUST_CLOSE
            )
        return (
            not closing
            and not _says_close(head.headers)
            and not _says_close(exchange.request.event.headers)
        )

    def _write_failed(self, exchange: Exchange, exc: BaseException) -> None:
        """Record why the request could not be written (R9, R16)."""
        if isinstance(exc, h11.LocalProtocolError):
            error: BaseException = self._error(
                exchange, LocalProtocolError, f"request body does not match its framing: {exc}"
            )
        elif isinstance(exc, socket.timeout):
            error = self._error(
                exchange, WriteTimeout, f"request not sent within {exchange.timeout.write}s"
            )
        elif isinstance(exc, OSError):
            error = self._error(exchange, WriteError, f"sending the request failed: {exc}")
        else:
            error = exc  # the request body's own iterator or file failed
        error.__cause__ = exc if error is not exc else None
        exchange.write_error = error
        exchange.write_finished = True
        exchange.write_done.release()
        if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            # The server is gone or stopped reading: a response it sent first
            # is still readable, and the reader will see the end (R9).
            return
        # The server waits for bytes it will never get: end the exchange now,
        # unless its response already came.
        self._fail_exchange(exchange, error)
        self.close("write_error", join=False)

    # -- the reader ----------------------------------------------------------

    def _read_loop(self) -> None:
        try:
            while True:
                found = self._wait_for_response()
                if found is None or not self._read_head(*found):
                    break
        except BaseException:  # pragma: no cover - a bug; keep the pool alive
            logger.exception("poolwatch reader of %r failed", self)
        finally:
            self.close(self._reader_close_reason(), join=False)
            self._rsock.close()
            self._worker_exited()

    def _reader_close_reason(self) -> str:
        return self.close_reason or "reader_exited"

    def _wait_for_response(self) -> tuple[Exchange, bytes | OSError] | None:
        """Block reading the socket until a response starts, or decide that
        the idle connection is over (R3, R11)."""
        transport = self._transport
        sock = self._rsock
        idle_timeout = transport._pool.limits.idle_timeout
        sock.settimeout(NO_TIMEOUT if idle_timeout is None else idle_timeout)
        while True:
            data: bytes | OSError
            try:
                if isinstance(sock, socket.socket):
                    # Wait holding no buffer: a blocked recv() holds RECV_SIZE
                    # bytes, resident once reused, per idle connection (S7).
                    sock.recv(1, socket.MSG_PEEK)
                data = sock.recv(RECV_SIZE)
            except TimeoutError:
                remaining = self._idle_time_left()
                if remaining is None:
                    return None
                sock.settimeout(remaining)
                continue
            except OSError as exc:
                data = exc
            with transport._lock:
                exchange = self.exchange
                if exchange is not None and exchange.state != WAITING and not self.closing:
                    # A buffered body is still checked out, and nothing was
                    # asked: as for an idle connection, this is the end (R3).
                    if exchange.leaked:
                        self.close_reason = "leaked"
                    else:
                        self._idle_ended_locked(data)
                    buffered = exchange
                else:
                    buffered = None
                    if exchange is None or self.closing:
                        self._idle_ended_locked(data)
                        return None
            if buffered is not None:
                self._body_released(buffered)
                return None
            return exchange, data

    def _idle_time_left(self) -> float | None:
        """After the reader's idle timer fired: ``None`` if the connection is
        over (closing, or idle past the idle timeout, R11), else how long to
        wait before looking again."""
        transport = self._transport
        pool = transport._pool
        with transport._lock:
            if self.closing:
                return None
            if self.exchange is not None or not pool.is_idle(self):
                return NO_TIMEOUT  # in use: the caller's timeouts govern
            left = pool.time_left_idle(self, time.monotonic())
            if left is not None and left <= 0:
                pool.remove_idle_locked(self)
                self.close_reason = "idle_timeout"
                return None
            return NO_TIMEOUT if left is None else left

    def _idle_ended_locked(self, data: bytes | OSError) -> None:
        """Something arrived while no request was outstanding: the connection
        is over (R3)."""
        if self.closing:
            return
        self._transport._pool.remove_idle_locked(self)
        if isinstance(data, OSError) or not data:
            self._counters.idle_closed_by_server += 1
            self.close_reason = "server_closed_idle"
        elif data.startswith((b"HTTP/1.1 408", b"HTTP/1.0 408")):
            self.close_reason = "server_timeout_408"
        else:
            self.close_reason = "unsolicited_response"
            logger.warning(
                "poolwatch: %r received %d unsolicited bytes while idle: %r; closing",
                self,
                len(data),
                data[:40],
            )

    def _read_head(self, exchange: Exchange, data: bytes | OSError) -> bool:
        """Read the response head and deliver it; then park until the body is
        done. Returns whether the connection lives on."""
        proto = self._proto
        first = True
        received = 0
        while True:
            if isinstance(data, OSError) or not data:
                self._fail_exchange(exchange, self._no_response_error(exchange, data, first))
                return False
            received += len(data)
            if first:
                exchange.response_started = True
                exchange.marks["first_byte"] = time.monotonic()
                self._transport._emit("got_first_response_byte", self, exchange)
                first = False
            try:
                with self._proto_lock:
                    proto.receive_data(data)
                    event = self._next_head_event(exchange)
                    # h11 checks the size only of heads still incomplete.
                    if (
                        received > MAX_HEAD_SIZE
                        and isinstance(event, h11.Response)
                        and received - len(proto.trailing_data[0]) > MAX_HEAD_SIZE
                    ):
                        raise h11.RemoteProtocolError(
                            f"response head larger than {MAX_HEAD_SIZE} bytes"
                        )
            except h11.RemoteProtocolError as exc:
                error = self._error(exchange, RemoteProtocolError, f"bad response: {exc}")
                error.__cause__ = exc
                self._fail_exchange(exchange, error)
                return False
            if isinstance(event, h11.Response) and _has_both_lengths(event):
                # RFC 9112 section 6.3: a sign of response splitting; treated
                # as an error, and the connection is not trusted again (R10).
                error = self._error(
                    exchange,
                    RemoteProtocolError,
                    "bad response: both Content-Length and Transfer-Encoding",
                )
                self._fail_exchange(exchange, error)
                return False
            if isinstance(event, h11.Response):
                if "got_100" in exchange.marks:
                    self._transport._emit("got_100_continue", self, exchange)
                return self._deliver_head(exchange, event)
            try:
                data = self._rsock.recv(RECV_SIZE)
            except OSError as exc:
                data = exc

    def _next_head_event(self, exchange: Exchange) -> h11.Response | type[h11.NEED_DATA]:
        """Skip interim 1xx responses; a 100 lets the writer send the body
        (proto lock held)."""
        while True:
            event = self._proto.next_event()
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    raise h11.RemoteProtocolError("101 Switching Protocols to a plain request")
                if event.status_code == 100 and exchange.request.expects_continue:
                    exchange.marks["got_100"] = time.monotonic()
                    _release_once(exchange.go_ahead)
                continue
            if event is h11.NEED_DATA or isinstance(event, h11.Response):
                return event
            raise h11.RemoteProtocolError(f"unexpected {event!r} before the response head")

    def _deliver_head(self, exchange: Exchange, head: h11.Response) -> bool:
        transport = self._transport
        no_body = _has_no_body(exchange.request.method, head)
        if no_body and not self.peek_end_of_body():
            raise AssertionError("h11 expects a body where poolwatch expects none")
        if no_body and self.extra_bytes_after_body():
            error = self._error(exchange, RemoteProtocolError, "bytes after a body-less response")
            self._fail_exchange(exchange, error)
            return False
        exchange.head = head  # before the go-ahead, which reads it
        _release_once(exchange.go_ahead)
        if not no_body:
            exchange.body_buffered = self._take_buffered_body()
        with transport._lock:
            if exchange.state != WAITING:
                return False  # the caller gave up (response-header timeout)
            exchange.marks["head"] = time.monotonic()
            transport._response_delivered_locked(exchange)
            if not no_body:
                exchange.head_ready.release()
        if no_body:
            # R7: back in the pool before the caller sees the response.
            self.finish_body(exchange, "no_body")
            exchange.head_ready.release()
        if exchange.body_buffered:
            return True  # nothing left to read for it: back to the socket
        exchange.reader_parked.acquire()
        return self._body_released(exchange)

    def _take_buffered_body(self) -> bool:
        """Move the body events h11 already has to the pending queue; True
        if they reach the end of the body (the common small response)."""
        pending = self._pending
        with self._proto_lock:
            while True:
                try:
                    event = self._proto.next_event()
                except h11.RemoteProtocolError:
                    return False  # h11 raises it again for the body owner
                if isinstance(event, h11.Data):
                    pending.append(event)
                elif isinstance(event, h11.EndOfMessage):
                    pending.append(event)
                    return True
                else:
                    return False

    def interrupt(self) -> None:
        """Wake a reader blocked on the socket by shutting it (any thread,
        no lock): for a leaked body whose reader is not parked."""
        try:
            self._rsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _body_released(self, exchange: Exchange) -> bool:
        """The body owner let go of ``exchange``; whether the connection lives on."""
        transport = self._transport
        with transport._lock:
            leaked = exchange.leaked and exchange.state == BODY
            if leaked:
                transport._end_body_locked(exchange, "leaked")
                self.close_reason = self.close_reason or "leaked"
            alive = not self.closing and not leaked
        if leaked:
            request = exchange.request
            leak_logger.warning(
                "response to %s %s was garbage-collected unclosed; request made at:\n%s",
                request.method,
                request.url,
                exchange.call_site.format(),
            )
            transport._emit(
                "leak_detected",
                self,
                exchange,
                method=exchange.request.method,
                call_site=exchange.call_site,
            )
        return alive

    def _fail_exchange(self, exchange: Exchange, error: BaseException) -> None:
        """Deliver ``error`` to a caller still waiting for the head."""
        with self._transport._lock:
            if exchange.state != WAITING:
                return
            exchange.state = FAILED
            exchange.error = error
            exchange.head_ready.release()

    def _no_response_error(
        self, exchange: Exchange, data: bytes | OSError, nothing_received: bool
    ) -> PoolwatchError | BaseException:
        if exchange.write_error is not None:
            return exchange.write_error
        if isinstance(data, OSError):
            return self._read_failed(exchange, data)
        if nothing_received:
            return self._error(
                exchange,
                RemoteDisconnected,
                "server closed the connection without sending a response",
            )
        return self._error(
            exchange, ReadError, "server closed the connection in the middle of the response head"
        )

    def _read_failed(self, exchange: Exchange, exc: OSError) -> PoolwatchError:
        error = self._error(exchange, ReadError, f"reading the response failed: {exc}")
        error.__cause__ = exc
        return error

    def _error(
        self, exchange: Exchange, kind: type[PoolwatchError], message: str
    ) -> PoolwatchError:
        request = exchange.request
        return kind(message, method=request.method, url=request.url)


def _release_once(lock: threading.Lock) -> None:
    """Release a one-shot lock; harmless if already released."""
    try:
        lock.release()
    except RuntimeError:
        pass


def _says_close(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    return any(name == b"connection" and b"close" in value.lower() for name, value in headers)


def _has_both_lengths(head: h11.Response) -> bool:
    names = {name for name, _ in head.headers}
    return b"content-length" in names and b"transfer-encoding" in names


def _new_protocol() -> h11.Connection:
    return h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_SIZE)


def _is_http10_keep_alive(exchange: Exchange) -> bool:
    """An HTTP/1.0 response that says ``Connection: keep-alive`` and whose
    body had a length, to a request that did not ask to close."""
    head = exchange.head
    if head is None or head.http_version != b"1.0":
        return False
    if any(
        name == b"connection" and b"close" in value.lower()
        for name, value in exchange.request.event.headers
    ):
        return False
    tokens: set[bytes] = set()
    has_length = _has_no_body(exchange.request.method, head)
    for name, value in head.headers:
        if name == b"connection":
            tokens.update(token.strip().lower() for token in value.split(b","))
        elif name == b"content-length":
            has_length = True
    return b"keep-alive" in tokens and b"close" not in tokens and has_length


def _has_no_body(method: str, head: h11.Response) -> bool:
    """Whether a response cannot have a body (RFC 9112 section 6.3, R7)."""
    if method == "HEAD" or head.status_code in (204, 304) or head.status_code < 200:
        return True
    for name, value in head.headers:
        if name == b"content-length":
            return value == b"0"
        if name == b"transfer-encoding":
            return False
    return False
