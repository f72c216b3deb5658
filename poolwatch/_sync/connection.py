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

A Content-Length body on plain TCP is read past h11: once h11 has handed
over what came with the head, the body owner reads the rest straight from
the socket (:meth:`Connection.read_body_direct`), and a fresh h11 state
takes the next request.

The two threads come from the transport's :class:`~.workers.WorkerPool`:
threads that served a closed connection wait there, parked, for the next
one, so a new connection usually starts no thread.

Every socket object always has a timeout (never ``None``), so the socket
is always non-blocking. Over TLS (and without ``poll()``) each thread uses
its own duplicate of the socket so that each can carry its own timeout. On
plain TCP both use one socket: the reader waits with its own ``poll()``,
the writer applies its timeout itself, the body owner's timeout is the
socket's, and the last worker out closes it.

Thread hand-offs are the cost of this design, so each worker does its
Python work before it wakes another thread and blocks right after: the
reader wakes the caller just before it goes back to waiting on the socket,
not while it still has bookkeeping to do (all three threads share one GIL).
On plain TCP the reader waits in ``poll()`` with its own timeout and then
reads once (the socket is non-blocking), into a buffer lent for that read
(:data:`~.streams.READ_BUFFERS`, so that a read allocates only the bytes
it got), instead of a socket timeout that costs a system call to change
and a second ``poll()`` for every ``recv()``; the writer sends with
``os.write()``, polling only when the socket's send buffer is full.

Locks: ``transport._lock`` guards pool and connection state (fields marked
"pool lock"); ``_proto_lock`` guards the h11 state machine, which the writer
(sending) and the reader or body owner (receiving) use concurrently. The
proto lock may be taken before the pool lock, never the other way round.
"""

from __future__ import annotations

import errno
import io
import itertools
import logging
import math
import os
import select
import socket
import threading
import time
from contextvars import copy_context
from typing import TYPE_CHECKING, Any, cast

import h11

from .._core.exchange import (
    ABANDONED,
    BODY,
    DONE,
    RECV_SIZE,
    WAITING,
    ClientProtocol,
    request_error,
)
from .._core.exchange import Exchange as CoreExchange
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
from .._events import Listener
from .._exceptions import (
    PoolwatchError,
    ReadTimeout,
    RemoteProtocolError,
    ResponseHeaderTimeout,
)
from .._leaks import CallSite
from .._models import Origin, Request, Timeout
from .streams import READ_BUFFERS, READ_SIZE, ReadStream, TLSSession, TLSSocket, WriteStream
from .upgraded import UpgradedStream
from .wakeup import EventPool, Inbox, OneShot
from .workers import Job

if TYPE_CHECKING:
    from .transport import Transport

__all__ = ["Connection", "Exchange"]

logger = logging.getLogger("poolwatch")
leak_logger = logging.getLogger("poolwatch.leaks")  # R6 reports, with call sites

# Stands for "no timeout": the sockets must always have one (see the module
# docstring), and poll() takes at most 2**31 ms, about 24 days.
NO_TIMEOUT = 7 * 86400.0
# How long a finished response waits for its request's upload to finish
# before giving up on reusing the connection (Go's
# maxWriteWaitBeforeConnReuse).
WRITE_WAIT_BEFORE_REUSE = 0.05
# The reader's reads, for a response head: enough for a small response
# whole, small enough that little of a large body passes through h11 (a
# Content-Length body's rest is read past it, see read_body_direct).
HEAD_RECV_SIZE = READ_SIZE
# The most a read of a whole Content-Length body allocates before its bytes
# arrive. A larger body is read in pieces that grow with what has come (and
# joined, one more copy), so that a huge or hostile Content-Length costs
# memory only as its bytes arrive instead of a MemoryError up front. Far
# above S2's 1 MiB, which is read straight into the one object returned.
MAX_READ_AHEAD = 16 * 1024 * 1024


class Exchange(CoreExchange):
    """One request and its response on a thread connection: the shared
    exchange state plus the one-shot locks that wake the caller, the writer
    and the parked reader."""

    __slots__ = (
        "body_context",
        "go_ahead",
        "head_ready",
        "hold_wake",
        "reader_parked",
        "write_done",
    )

    def __init__(
        self,
        request: Request,
        timeout: Timeout,
        call_site: CallSite,
        listener: Listener | None = None,
        events: EventPool | None = None,
    ) -> None:
        super().__init__(request, timeout, call_site, listener, time.monotonic())
        self.head_ready = OneShot(events)  # released once: head or error ready
        # Set by a worker that fails the exchange and wakes the caller itself,
        # once it has closed the connection (see Connection._fail_exchange).
        self.hold_wake = False
        self.reader_parked = OneShot(events)  # released once: the reader may go on
        self.go_ahead = _locked()  # released by the reader: 100 or a final head
        self.write_done = _locked()  # released once by the writer
        # A streamed body is produced on the writer's thread, in the context
        # variables of the caller that made the request.
        self.body_context = None if isinstance(request.body, bytes | None) else copy_context()

    def head_delivered(self) -> None:
        """Wake the caller waiting in :meth:`Connection.round_trip`, unless
        the worker failing the exchange does that later (``hold_wake``)."""
        if not self.hold_wake:
            self.head_ready.release()

    def continue_received(self) -> None:
        """Let the writer send the body (R15)."""
        self.marks["got_100"] = time.monotonic()
        _release_once(self.go_ahead)

    def interim_received(self) -> None:
        """Start the response-header limit again: the waiting caller
        reckons its deadline from ``written_at``."""
        self.written_at = time.monotonic()

    def release_reader(self) -> None:
        """Let the parked reader go on; harmless if already released."""
        self.reader_parked.release()

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
        tls: TLSSession | None,
        sock: socket.socket,
    ) -> None:
        self.id = next(Connection._ids)
        self.origin = origin
        self.tls = tls
        self._sock = sock  # the TCP socket under the streams, for extra_info()
        self._transport = transport
        self.counters = Counters()  # its origin's, once open (see Book.opened_locked)
        # The reader's stream, and the body owner's while the reader is parked.
        self._rsock: ReadStream = streams[0]
        self._wsock: WriteStream = streams[1]  # the writer's; may be the same socket
        # One socket for both workers (plain TCP with poll()): the writer
        # keeps its timeout to itself, and the last worker out closes it.
        self._shared = streams[0] is cast(object, streams[1])
        self._write_timeout: float | None = -1.0  # owned by the writer: as set on _wsock
        # As set on _rsock (by the reader, or the body owner while it is parked).
        self._read_timeout: float = -1.0
        # Plain TCP: the descriptors the workers read and write directly,
        # and the reader's poll() on its own (see the module docstring).
        self._rfd = -1
        self._wfd = -1
        self._poller: select.poll | None = None
        rsock, wsock = streams
        plain = isinstance(rsock, socket.socket) and isinstance(wsock, socket.socket)
        if plain and hasattr(select, "poll"):  # no poll() on Windows
            self._rfd = rsock.fileno()  # type: ignore[attr-defined]
            self._wfd = wsock.fileno()  # type: ignore[attr-defined]
            self._poller = select.poll()
            self._poller.register(self._rfd, select.POLLIN)
        self._wpoller: select.poll | None = None  # the writer's, made when a send blocks
        # Owned by the reader: the caller to wake just before the reader
        # next blocks (a head delivered with its whole body).
        self._wake: OneShot | None = None
        self._head_wait = NO_TIMEOUT  # owned by the reader: its last wait for bytes
        self._proto = ClientProtocol()
        self._proto_lock = threading.Lock()
        self._inbox: Inbox[Exchange | None] = Inbox()
        self.created_at = time.monotonic()
        self.idle_since = self.created_at  # pool lock
        self.holds_slot = True  # pool lock
        self.exchange: Exchange | None = None  # pool lock: the request in flight
        self.requests_served = 0  # pool lock
        self.closing = False  # pool lock
        self.close_reason = ""  # pool lock
        # After a 101: the socket, handed to the response, which the workers
        # then leave open (pool lock).
        self.upgraded: UpgradedStream | None = None
        self._workers_left = 2  # pool lock
        self._reader: Job | None = None
        self._writer: Job | None = None
        # Owned by the writer: it is inside the request body's iterator or
        # file, the caller's code, which may block as long as it likes (see
        # join()).
        self._in_body = False
        # The body owner is inside a read of _rsock (set by it), and the
        # workers are done with _rsock, whose close is then left to it (set
        # by the worker that would close it): see _close_rsock().
        self._owner_reading = False
        self._rsock_doomed = False

    def start(self) -> None:
        """Start both workers (R1), on threads parked by an earlier
        connection when the transport has some."""
        workers = self._transport._workers
        self._reader = workers.run(self._read_loop, f"poolwatch-reader-{self.id}")
        self._writer = workers.run(self._write_loop, f"poolwatch-writer-{self.id}")

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

    def interrupted(self, exchange: Exchange) -> None:
        """The caller stopped on an exception from outside poolwatch
        (KeyboardInterrupt, or one a signal handler raised) while waiting
        for the head or reading the body: close the connection, whose
        response, or the rest of it, would come to nobody."""
        with self._transport._lock:
            state = exchange.state
            if state == WAITING:
                exchange.state = ABANDONED
        if state == WAITING:
            self.close("interrupted")
        elif state == BODY:  # the head came just before
            self.finish_body(exchange, "closed_early", reuse=False, reason="interrupted")
        # Otherwise the exchange is over: a body-less response whose
        # connection went back to the pool, or an error that closed it.

    def _wait_for_head(self, exchange: Exchange) -> None:
        try:
            self._wait_for_head_signal(exchange)
        finally:
            exchange.head_ready.done()

    def _wait_for_head_signal(self, exchange: Exchange) -> None:
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

    def read_body_event(
        self, exchange: Exchange, gather: bool = False
    ) -> h11.Data | h11.EndOfMessage:
        """The next piece of the body, reading the socket if needed (caller's
        thread, while the reader is parked); see ``next_body_event`` for
        ``gather``. Raises on errors."""
        proto = self._proto
        lock = self._proto_lock
        with lock:
            event = proto.next_body_event(exchange, gather)
        while event is None:
            self._owner_reading = True  # before the check: see _close_rsock()
            try:
                if self._rsock_doomed:
                    raise OSError(errno.EBADF, "the connection is closed")
                data = self._rsock.recv(RECV_SIZE)
            except OSError as exc:
                raise self._body_read_error(exchange, exc) from exc
            finally:
                self._owner_reading = False
                if self._rsock_doomed:
                    self._rsock.close()
            with lock:
                proto.receive_data(data)
                event = proto.next_body_event(exchange, gather)
        return event

    def direct_body_left(self) -> int:
        """How many body bytes :meth:`read_body_direct` would read past h11
        (0: none; the body goes through :meth:`read_body_event`)."""
        if not isinstance(self._rsock, socket.socket):
            return 0  # TLS: the record layer copies anyway
        with self._proto_lock:
            return self._proto.direct_body_left()

    def read_body_direct(self, exchange: Exchange, size: int, prefix: bytes = b"") -> bytes | None:
        """Up to ``size`` bytes of a Content-Length body read straight from
        the socket, past h11 (caller's thread, while the reader is parked);
        ``None`` if the body is not read that way (see
        :meth:`ClientProtocol.direct_body_left`). With ``size`` of -1, the
        whole rest of the body after ``prefix``, read into one buffer that
        starts with ``prefix``. Raises on errors, including a body cut
        short (R10)."""
        sock = self._rsock
        left = self.direct_body_left()
        if not left:
            return None
        assert isinstance(sock, socket.socket)
        proto = self._proto
        want = left if size < 0 else min(size, left)
        # One byte more on the last read: a byte after the body (R10).
        extra = 1 if want == left else 0
        more = False
        self._owner_reading = True  # before the check: see _close_rsock()
        try:
            if self._rsock_doomed:
                raise OSError(errno.EBADF, "the connection is closed")
            if size < 0:
                data = _recv_exactly(sock, want, prefix)
                if len(data) - len(prefix) == want and _readable_now(sock):
                    more = bool(sock.recv(1, socket.MSG_PEEK))  # b"": EOF
            else:
                data = sock.recv(want + extra)  # at most one read, as read1()
        except OSError as exc:
            raise self._body_read_error(exchange, exc) from exc
        finally:
            self._owner_reading = False
            if self._rsock_doomed:
                sock.close()
        got = len(data) - len(prefix) if size < 0 else len(data)
        if got > want:
            got = want
            data = data[:-1]
            more = True
        if more:
            with self._proto_lock:
                proto.direct_extra_bytes()
        with self._proto_lock:
            if not got:
                raise proto.cut_short(exchange)
            proto.direct_body_received(got)
        return data

    def closed_error(self, exchange: Exchange) -> PoolwatchError | None:
        """If this side closed the connection (the transport closing, say),
        the error for a body read that failed since: it was not the
        server's doing. ``None`` if the connection is open."""
        with self._transport._lock:
            reason = self.close_reason if self.closing else ""
        if not reason or reason in SERVER_ENDED_UNDER_BODY:
            return None
        return closed_while_reading(exchange, reason)

    def _body_read_error(self, exchange: Exchange, exc: OSError) -> PoolwatchError:
        """The error for a failed read of the body: a timeout, or the cause."""
        if isinstance(exc, TimeoutError):
            return self._error(
                exchange, ReadTimeout, f"no body byte within {exchange.timeout.read}s"
            )
        return read_failed(exchange, exc)

    def take_whole_body(self) -> tuple[bytes, bool] | None:
        """The rest of a body that arrived whole with its head, and whether
        bytes followed it (R10); ``None`` if some of it is still to read (see
        :meth:`ClientProtocol.take_whole_body`)."""
        with self._proto_lock:
            proto = self._proto
            data = proto.take_whole_body()
            return None if data is None else (data, proto.extra_bytes_after_body())

    def peek_end_of_body(self) -> bool:
        """Whether the body's end is already buffered (see
        :meth:`ClientProtocol.peek_end_of_body`). Reads no socket."""
        with self._proto_lock:
            return self._proto.peek_end_of_body()

    def prepare_body_read(self, exchange: Exchange) -> None:
        """Give the socket the read timeout (the body owner's)."""
        self.set_read_timeout(exchange.timeout.read)

    def set_read_timeout(self, seconds: float | None) -> None:
        """Set the body owner's read timeout (only while the reader is parked)."""
        self._set_rsock_timeout(NO_TIMEOUT if seconds is None else seconds)

    def _set_rsock_timeout(self, seconds: float) -> None:
        """Give the read socket this timeout, unless it has it already
        (settimeout costs a system call). Reader or parked reader's body
        owner only."""
        if seconds != self._read_timeout:
            try:
                self._rsock.settimeout(seconds)
            except OSError:  # closed by the reader (the server hung up)
                return  # the read that follows says so, or has nothing to read
            self._read_timeout = seconds

    def finish_body(
        self, exchange: Exchange, outcome: str, *, reuse: bool | None = None, reason: str = ""
    ) -> None:
        """The body ended with ``outcome``: reuse the connection if it can be
        (R4, R7, R9), otherwise close it (for ``reason``, by default the
        outcome); then let the reader go on."""
        if reuse is None:
            reuse = outcome in ("drained", "no_body")
        reusable = reuse and self._can_reuse(exchange)
        exchange.marks["body_done"] = time.monotonic()
        if self._transport._listeners or exchange.listener is not None:
            self._emit_body_done(exchange, outcome, reusable)
        transport = self._transport
        with transport._lock:
            if exchange.state == BODY:
                transport._book.end_body_locked(exchange, outcome)
            if not reusable or self.closing or self.close_reason:
                decision = None  # closed, or about to be by its reader
            else:
                if outcome == "closed_early":
                    self.counters.bodies_drained_on_close += 1
                self.exchange = None
                decision = transport._pool.release_locked(self, True, time.monotonic())
        if decision is None:
            self.close(reason or (outcome if outcome != "drained" else "not_reusable"))
            return
        exchange.release_reader()
        transport._act(decision)
        if self in decision.close:  # over the idle limits: closed instead
            transport._emit("put_idle_conn", self, exchange, error="too many idle connections")
        else:
            transport._emit("put_idle_conn", self, exchange)

    def _emit_body_done(self, exchange: Exchange, outcome: str, reused: bool) -> None:
        data = exchange.body_done_data(outcome, reused)
        self._transport._emit("body_done", self, exchange, **data)

    def _can_reuse(self, exchange: Exchange) -> bool:
        """Both sides finished cleanly with keep-alive, and nothing follows
        the response (R8, R9, R10)."""
        if not exchange.has_written_all(WRITE_WAIT_BEFORE_REUSE):
            return False
        with self._proto_lock:
            return self._proto.can_reuse(exchange)

    def extra_bytes_after_body(self) -> bool:
        """Whether bytes followed the end of the response (R10)."""
        with self._proto_lock:
            return self._proto.extra_bytes_after_body()

    # -- closing -----------------------------------------------------------

    def close(self, reason: str, *, join: bool = True) -> None:
        """Tear the connection down: shut the socket, stop both workers and
        free its pool slot. Idempotent. Joins the workers unless called from
        one of them (workers never wait for each other) or ``join`` is false;
        never a writer inside the request body's iterator (see :meth:`join`),
        so that a response is read and closed without waiting for the
        caller's upload source."""
        transport = self._transport
        with transport._lock:
            if not self.closing:
                self.closing = True
                # A reason found first (by the reader, say) is kept.
                self.close_reason = self.close_reason or reason
                exchange = self.exchange
                in_body = exchange is not None and exchange.state == BODY
                decision = transport._book.closed_locked(self)
                # The close cut the body short (a response without one is
                # reported by the reader finishing it).
                ended = in_body and exchange is not None and exchange.outcome == "errored"
            else:
                decision, exchange, ended = None, None, False
        if ended:
            assert exchange is not None
            exchange.marks["body_done"] = time.monotonic()
            self._emit_body_done(exchange, "errored", reused=False)
        if decision is not None:
            if self.upgraded is None:
                try:
                    self._rsock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already reset or closed by the peer
            self._inbox.put(None)
            if exchange is not None:
                exchange.release_reader()
            transport._act(decision)
        if join and not self._on_worker():
            self.join(body_writer=False)

    def _close_rsock(self) -> None:
        """Close the read socket, as the last worker using it exits; or, if
        the body owner is inside a read of it (the transport closing under
        a body read), leave that to the owner, whose read ends at once on
        the shut socket. Closed under the owner, the descriptor's number
        could be reused (by an eventfd, another connection) before the
        owner's ``poll()`` used it, which would then wait on the wrong file
        past every timeout. The flags are set before they are checked on
        both sides, so that at least one side closes it (twice is
        harmless) and neither while the other is inside a read."""
        self._rsock_doomed = True
        if not self._owner_reading:
            self._rsock.close()

    def _on_worker(self) -> bool:
        """Whether the calling thread is one of this connection's workers."""
        return any(job is not None and job.is_current() for job in (self._reader, self._writer))

    def extra_info(self, name: str) -> Any:
        """See :meth:`poolwatch.Response.get_extra_info`."""
        if self.closing:
            return socket_info(name, None, None)
        return socket_info(name, self._sock, None if self.tls is None else self.tls.tls)

    def join(self, *, body_writer: bool = True) -> None:
        """Wait for both workers to finish this connection (never from a
        worker). With ``body_writer`` false, not for a writer that is inside
        the request body's iterator or file: a thread cannot be stopped in
        the caller's code, so it exits when that next returns (it calls it
        no more once the connection is closing, see :meth:`_send_body`)."""
        writer = self._writer
        for job in (self._reader, writer):
            if job is None or job.is_current():
                continue
            # Read after ``closing`` was set: if the writer is not inside the
            # body yet, it sees ``closing`` before it goes in.
            if job is writer and not body_writer and self._in_body:
                continue
            job.join()

    def forget_after_fork(self) -> None:
        """In a forked child, where this connection's workers do not exist:
        close the child's copy of its sockets, and touch nothing the parent
        still uses (no shutdown, no TLS close, no lock a parent thread may
        have held at the fork)."""
        self.closing = True
        self.close_reason = "left in the parent process by fork()"
        exchange = self.exchange
        if exchange is not None and exchange.state == BODY:
            exchange.state, exchange.outcome = DONE, "errored"  # not readable here
        for sock in (self._rsock, self._wsock):
            try:
                sock.close()
            except OSError:
                pass

    def discard_unstarted(self) -> None:
        """Close the sockets of a connection whose workers never started."""
        self._rsock.close()
        self._wsock.close()  # the same one again if shared: harmless
        self._inbox.close()

    def _worker_exited(self) -> None:
        transport = self._transport
        with transport._lock:
            self._workers_left -= 1
            last = self._workers_left == 0
            transport._book.worker_exited_locked(self, last=False)  # settled below
        if not last:
            return
        try:
            if self._shared and self.upgraded is None:
                # Only now: a descriptor closed under a running worker could
                # be reused by another connection and written to.
                self._close_rsock()
            transport._emit(
                "conn_closed",
                self,
                reason=self.close_reason,
                age=time.monotonic() - self.created_at,
                requests=self.requests_served,
            )
        finally:
            with transport._lock:
                transport._book.settled_locked(self)

    # -- the writer ----------------------------------------------------------

    def _write_loop(self) -> None:
        try:
            while (exchange := self._inbox.get()) is not None:
                self._write_request(exchange)
                exchange = None  # its request body is not kept while idle
        except BaseException:  # pragma: no cover - a bug; keep the pool alive
            logger.exception("poolwatch writer of %r failed", self)
            self.close("writer_crashed", join=False)
        finally:
            if not self._shared:
                self._wsock.close()
            self._inbox.close()
            self._worker_exited()

    def _write_request(self, exchange: Exchange) -> None:
        request = exchange.request
        sock = self._wsock
        proto = self._proto
        try:
            write = exchange.timeout.write
            if write != self._write_timeout:  # settimeout costs system calls
                if not self._shared:  # else _send() applies it
                    sock.settimeout(NO_TIMEOUT if write is None else write)
                self._write_timeout = write
            with self._proto_lock:
                data, body, more = proto.start_request(request)
            self._send(data)
            if body:
                self._send(body)
            self._transport._emit("wrote_headers", self, exchange)
            if request.expects_continue and not self._may_send_body(exchange):
                more = False  # the server answered and will close: skip it
            if more:
                self._send_body(exchange)
        except BaseException as exc:
            self._write_failed(exchange, exc)
            return
        exchange.written_at = exchange.marks["written"] = time.monotonic()
        exchange.write_finished = True
        exchange.write_done.release()
        self._transport._emit("wrote_request", self, exchange)

    def _send_body(self, exchange: Exchange) -> None:
        """Send the request body as its iterator or file yields it, then its
        end. Those are the caller's code, run in the caller's context
        variables, and may block for as long as they like: ``_in_body``
        says the writer is inside them, so that a close does not wait for
        it (see :meth:`join`); once the connection is closing they are not
        called again."""
        proto = self._proto
        chunks = exchange.request.body_chunks()
        context = exchange.body_context or copy_context()
        while True:
            self._in_body = True  # before the check: see join()
            try:
                if self.closing:
                    raise BrokenPipeError(errno.EPIPE, "the connection was closed")
                try:
                    chunk = context.run(next, chunks, None)
                except Exception as exc:  # the caller's code: not a write error
                    raise BodySourceFailed(exc) from exc
            finally:
                self._in_body = False
            if chunk is None:
                break
            if chunk:
                with self._proto_lock:
                    data = proto.body_chunk(chunk)
                self._send(data)
        with self._proto_lock:
            data = proto.end_request()
        self._send(data)

    def _send(self, data: bytes) -> None:
        """Send ``data`` (the writer's). On plain TCP, as much as the socket
        takes at once with one system call instead of a ``poll()`` and a
        ``send()``, then the rest as room comes, all within the write
        timeout (as ``sendall()`` would; raises TimeoutError)."""
        if self._wfd < 0:
            self._wsock.sendall(data)
            return
        view = memoryview(data)
        deadline: float | None = None
        while view:
            try:
                sent = os.write(self._wfd, view)
            except BlockingIOError:
                sent = 0
            if sent:
                view = view[sent:]
                continue
            if deadline is None:
                limit = self._write_timeout
                deadline = time.monotonic() + (NO_TIMEOUT if limit is None else limit)
            if not self._wait_writable(deadline - time.monotonic()):
                raise TimeoutError("timed out")

    def _wait_writable(self, wait: float) -> bool:
        """Wait up to ``wait`` seconds for room in the socket's send buffer."""
        if wait <= 0:
            return False
        poller = self._wpoller
        if poller is None:
            poller = self._wpoller = select.poll()
            poller.register(self._wfd, select.POLLOUT)
        return bool(poller.poll(math.ceil(wait * 1000)))

    def _may_send_body(self, exchange: Exchange) -> bool:
        """Wait for ``100 Continue``, a final response or the timeout (R15).
        After a final response that closes the connection the body is not
        sent; otherwise it is, so that the framing stays in step (as Go)."""
        exchange.go_ahead.acquire(timeout=self._transport.expect_continue_timeout)
        with self._proto_lock:
            return self._proto.may_send_body(exchange)

    def _write_failed(self, exchange: Exchange, exc: BaseException) -> None:
        """Record why the request could not be written (R9, R16)."""
        error = write_error(exchange, exc, timed_out=isinstance(exc, socket.timeout))
        exchange.write_error = error
        exchange.write_finished = True
        exchange.write_done.release()
        if is_peer_gone(exc):
            # A response the server sent first is still readable, and the
            # reader will see the end (R9).
            return
        # The server waits for bytes it will never get: end the exchange now,
        # unless its response already came; the caller hears of it once the
        # connection is closed.
        try:
            self._fail_exchange(exchange, error)
            self.close("write_error", join=False)
        finally:
            exchange.head_ready.release()

    # -- the reader ----------------------------------------------------------

    def _read_loop(self) -> None:
        try:
            while True:
                found = self._wait_for_response()
                if found is None or not self._read_head(*found):
                    break
                found = None  # its exchange is not kept while idle
        except BaseException:  # pragma: no cover - a bug; keep the pool alive
            logger.exception("poolwatch reader of %r failed", self)
        finally:
            try:
                self.close(self._reader_close_reason(), join=False)
            finally:
                self._wake_caller()  # a caller failed, or given a last head
            if not self._shared and self.upgraded is None:
                self._close_rsock()
            self._worker_exited()

    def _reader_close_reason(self) -> str:
        return self.close_reason or "reader_exited"

    def _wait_for_response(self) -> tuple[Exchange, bytes | OSError] | None:
        """Block reading the socket until a response starts, or decide that
        the idle connection is over (R3, R11)."""
        transport = self._transport
        idle_timeout = transport._pool.limits.idle_timeout
        wait = NO_TIMEOUT if idle_timeout is None else idle_timeout
        while True:
            data: bytes | OSError
            try:
                data = self._recv_head(wait)
            except TimeoutError:
                remaining = self._idle_time_left()
                if remaining is None:
                    return None
                wait = remaining
                continue
            except OSError as exc:
                data = exc
            with transport._lock:
                exchange, over = transport._book.arrived_locked(self, data)
            if self.close_reason == "unsolicited_response":
                self._log_unsolicited(data)
            elif self.close_reason == "bytes_after_body":
                with self._proto_lock:
                    self._proto.direct_extra_bytes()  # its owner raises for them (R10)
            if not over:
                assert exchange is not None
                return exchange, data
            if exchange is not None:
                self._body_released(exchange)
            return None

    def _recv_head(self, wait: float) -> bytes:
        """The reader's next bytes, waiting up to ``wait`` seconds for them
        (raises TimeoutError) while holding no buffer: a blocked ``recv()``
        holds its size in bytes, resident once reused, per idle connection
        (S7). Wakes the caller first if a delivered head left that to now."""
        self._wake_caller()
        self._head_wait = wait
        poller = self._poller
        if poller is None:  # TLS: the stream's own timeout
            self._set_rsock_timeout(wait)
            return self._rsock.recv(HEAD_RECV_SIZE)
        while True:
            if not poller.poll(math.ceil(wait * 1000)):
                raise TimeoutError("timed out")
            try:
                return READ_BUFFERS.read(self._rfd)
            except BlockingIOError:
                continue  # woken for nothing: wait again

    def _wake_caller(self) -> None:
        """Wake the caller whose head was delivered, if that is pending."""
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.release()

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

    def _log_unsolicited(self, data: bytes | OSError) -> None:
        if isinstance(data, bytes):
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
        told_100 = False
        received = 0
        while True:
            if isinstance(data, OSError) or not data:
                self._fail_exchange(exchange, no_response_error(exchange, data, first))
                self._wake = exchange.head_ready  # after the close
                return False
            received += len(data)
            if first:
                exchange.response_started = True
                exchange.marks["first_byte"] = time.monotonic()
                self._transport._emit("got_first_response_byte", self, exchange)
                first = False
            try:
                with self._proto_lock:
                    head = proto.receive_head(exchange, data, received)
            except RemoteProtocolError as error:
                self._fail_exchange(exchange, error)
                self._wake = exchange.head_ready  # after the close
                return False
            if not told_100 and "got_100" in exchange.marks:
                # As it arrives: the writer sends the body meanwhile (R15).
                self._transport._emit("got_100_continue", self, exchange)
                told_100 = True
            if head is not None:
                return self._deliver_head(exchange, head)
            try:
                data = self._recv_head(self._head_wait)
            except OSError as exc:
                data = exc

    def _deliver_head(self, exchange: Exchange, head: Head) -> bool:
        transport = self._transport
        try:
            with self._proto_lock:
                no_body = self._proto.check_head(exchange, head)
        except RemoteProtocolError as error:
            self._fail_exchange(exchange, error)
            self._wake = exchange.head_ready  # after the close
            return False
        if head.status_code == 101:
            return self._hand_over(exchange, head)
        exchange.head = head  # before the go-ahead, which reads it
        _release_once(exchange.go_ahead)
        if not no_body:
            with self._proto_lock:
                exchange.body_buffered = self._proto.take_buffered_body()
        with transport._lock:
            if exchange.state != WAITING:
                return False  # the caller gave up (response-header timeout)
            exchange.marks["head"] = time.monotonic()
            transport._book.delivered_locked(exchange)
        if no_body:
            # R7: back in the pool before the caller sees the response.
            self.finish_body(exchange, "no_body")
        if no_body or exchange.body_buffered:
            # The caller is woken just before the reader next blocks (see
            # _recv_head), or exits.
            self._wake = exchange.head_ready
            if exchange.body_buffered:
                return True  # nothing left to read for it: back to the socket
        else:
            exchange.head_ready.release()
        parked = exchange.reader_parked
        if not parked.is_set():
            self._wake_caller()  # never park with the caller asleep
            parked.acquire()
            parked.done()
        return self._body_released(exchange)

    def _hand_over(self, exchange: Exchange, head: Head) -> bool:
        """A ``101 Switching Protocols`` to a request that asked to upgrade:
        as Go's transport does, the connection leaves the pool (closed for
        it, reason ``protocol_switched``; the response counts as without a
        body, R7) and its workers exit, leaving the socket open for the
        response's :attr:`~poolwatch.Response.upgraded` stream."""
        if not exchange.has_written_all(WRITE_WAIT_BEFORE_REUSE):
            error = self._error(
                exchange,
                RemoteProtocolError,
                "101 Switching Protocols before the request was sent",
            )
            self._fail_exchange(exchange, error)
            self._wake = exchange.head_ready  # after the close
            return False
        with self._proto_lock:
            first = self._proto.switched_bytes()
        tls = self.tls
        stream = UpgradedStream(
            self._sock if tls is None else TLSSocket(tls, tls.sock),
            self._sock,
            None if tls is None else tls.tls,
            first,
            method=exchange.request.method,
            url=exchange.request.url,
        )
        exchange.head = head
        _release_once(exchange.go_ahead)
        transport = self._transport
        with transport._lock:
            if exchange.state != WAITING or self.closing:
                return False  # the caller gave up, or the transport closed
            exchange.marks["head"] = time.monotonic()
            transport._book.delivered_locked(exchange)
            self.upgraded = stream  # before the close, which then leaves the socket
        self.finish_body(exchange, "no_body", reuse=False, reason="protocol_switched")
        self._wake = exchange.head_ready
        return False

    def leaked_while_buffered(self, exchange: Exchange) -> None:
        """A body that arrived whole leaked while its reader is back on the
        socket (any thread, no lock): wake the reader by shutting the socket,
        and queue the leak for the transport in case the reader has already
        gone because the server hung up first (R6)."""
        try:
            self._rsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._transport._late_leaks.put((self, exchange))

    def _body_released(self, exchange: Exchange) -> bool:
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

    def _fail_exchange(self, exchange: Exchange, error: BaseException) -> None:
        """Record ``error`` for a caller still waiting for the head, without
        waking it: the failing worker closes the connection first, then wakes
        it (so that the caller never sees the connection still open), which
        it must do even if another thread failed the exchange meanwhile."""
        exchange.hold_wake = True
        with self._transport._lock:
            exchange.fail_locked(error)

    def _error(
        self, exchange: Exchange, kind: type[PoolwatchError], message: str
    ) -> PoolwatchError:
        return request_error(exchange.request, kind, message)


def _recv_exactly(sock: socket.socket, size: int, prefix: bytes) -> bytes:
    """``prefix`` and then ``size`` bytes read from ``sock`` (fewer at EOF).
    Up to :data:`MAX_READ_AHEAD`, read by the kernel straight into the one
    ``bytes`` object returned; a larger size is read in pieces, each as large
    as what has arrived so far, then joined, so that memory is taken only as
    bytes come (a Content-Length may be huge, or a lie)."""
    if size <= MAX_READ_AHEAD:
        return _recv_into_one(sock, size, prefix)
    first = _recv_into_one(sock, MAX_READ_AHEAD, prefix)
    got = len(first) - len(prefix)
    pieces = [first]
    want = MAX_READ_AHEAD
    while got == want and got < size:  # not at EOF, not at the end yet
        piece = _recv_into_one(sock, min(got, size - got), b"")
        pieces.append(piece)
        want = got + min(got, size - got)
        got += len(piece)
    return first if len(pieces) == 1 else b"".join(pieces)


def _recv_into_one(sock: socket.socket, size: int, prefix: bytes) -> bytes:
    """``prefix`` and then ``size`` bytes read from ``sock`` (fewer at EOF),
    read by the kernel straight into the one ``bytes`` object returned. A
    list of chunks and a join, or a ``bytearray`` and a conversion, would
    each allocate and copy the whole body once more."""
    with io.BufferedReader(_PrefixedSocketReader(sock, prefix), buffer_size=1) as reader:
        # With a one-byte buffer, read() hands every read the caller's
        # buffer: it never reads past ``size``.
        return reader.read(len(prefix) + size)


def _readable_now(sock: socket.socket) -> bool:
    """Whether bytes (or EOF) are waiting on ``sock``; never waits. With
    ``poll()`` where there is one: ``select()`` fails on descriptors past
    1023, which a process with many connections has. A socket closed
    meanwhile (the transport closing) has nothing waiting."""
    if sock.fileno() < 0:
        return False
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except ValueError:  # closed between the check and the call
        return False


class _PrefixedSocketReader(io.RawIOBase):
    """``prefix``, then the socket's bytes, as a raw binary stream."""

    def __init__(self, sock: socket.socket, prefix: bytes) -> None:
        super().__init__()
        self._sock = sock
        self._prefix = memoryview(prefix)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        prefix = self._prefix
        if prefix:
            n = min(len(buffer), len(prefix))
            buffer[:n] = prefix[:n]
            self._prefix = prefix[n:]
            return n
        return self._sock.recv_into(buffer)


def _release_once(lock: threading.Lock) -> None:
    """Release a one-shot lock; harmless if already released."""
    try:
        lock.release()
    except RuntimeError:
        pass


def _locked() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock
