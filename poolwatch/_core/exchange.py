"""One request and its response on a connection, with no I/O: the exchange's
state and time marks, and the HTTP/1.1 client protocol that both the thread
and the asyncio connections drive (R7-R10, R15).

Theory of operation
-------------------

A connection feeds the bytes it reads to a :class:`ClientProtocol` and sends
the bytes it returns. Plain exchanges, the common case, skip h11: a request
whose headers need no normalisation goes out as prepared by
:class:`~poolwatch._models.Request`, and a plain response head (HTTP/1.1, a
final status, a ``Content-Length``, see :mod:`.wire`) is read without h11.
Everything else goes through an ``h11.Connection``. On top of both, the
protocol adds what poolwatch decides:

* the response head: interim 1xx responses are skipped (a ``100`` is the
  writer's go-ahead, R15; a ``101`` to a plain request is an error), the head
  may be at most :data:`MAX_HEAD_SIZE` bytes, and a head with both
  ``Content-Length`` and ``Transfer-Encoding`` is refused (RFC 9112 section
  6.3: a sign of response splitting, R10);
* which responses have no body (RFC 9112 section 6.3, R7), and bytes after a
  response's end (R10);
* whether the connection can carry another request once both sides are done
  (R8, R9), including an HTTP/1.0 server that promised keep-alive;
* a ``Content-Length`` body is framed here, not by h11: a body that arrived
  whole with the head is sliced from what was read, and the rest of a larger
  one may be read by the I/O layer straight from its connection
  (:meth:`ClientProtocol.direct_body_left`); bytes after the body still
  count (R10), and a fresh h11 state takes the next request if h11 read the
  head;
* so is a chunked body (:mod:`.chunked`), a chunk at a time as it arrives,
  or, for reads that want bytes rather than chunks, every chunk received
  in one piece.

An :class:`Exchange` holds what every connection kind records about one
request: its state, outcome, time marks and the writer's report. The I/O
layers subclass it to add how a waiting caller or worker is woken (a lock for
threads, a future for tasks), through :meth:`Exchange.head_delivered` and
:meth:`Exchange.continue_received`.

Errors are poolwatch's own exceptions, naming the request's method and URL.
Times are plain floats from the caller's clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

import h11

from .._events import Listener
from .._exceptions import PoolwatchError, RemoteProtocolError
from .._leaks import CallSite
from .._models import Request, Timeout
from .chunked import ChunkedBody
from .wire import Head, closes_connection, parse_plain_head

if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "ABANDONED",
    "BODY",
    "DONE",
    "FAILED",
    "MAX_HEAD_SIZE",
    "RECV_SIZE",
    "WAITING",
    "ClientProtocol",
    "Exchange",
    "has_no_body",
    "request_error",
    "says_close",
]

# Large enough for a typical response in one read; h11 copies what it
# receives, so much larger buys nothing for small responses.
RECV_SIZE = 256 * 1024
# Limit on the status line plus headers (h11's default is 16 KiB; browsers
# and Go allow more). A larger head is a protocol error (R10).
# Larger than httpcore's 100 KiB and http.client's 64 KiB per line, so that
# what they read is read here too; bounded, as a head is held whole.
MAX_HEAD_SIZE = 256 * 1024

# Exchange states.
WAITING = "waiting"  # for the response head
BODY = "body"  # head delivered, body checked out
DONE = "done"  # body finished (see outcome)
FAILED = "failed"  # an error was delivered instead of a head
ABANDONED = "abandoned"  # the caller stopped waiting for the head

BodyEvent = h11.Data | h11.EndOfMessage
_END = h11.EndOfMessage()  # immutable: one serves every body


def request_error(request: Request, kind: type[PoolwatchError], message: str) -> PoolwatchError:
    """A poolwatch error of ``kind`` naming the request's method and URL."""
    return kind(message, method=request.method, url=request.url)


class Exchange:
    """One request and its response on a connection: the state shared by the
    caller, the writer and the reader. Fields say who owns them; "pool lock"
    means the transport's lock (or, for tasks, the event loop)."""

    __slots__ = (
        "__weakref__",
        "body_buffered",
        "bytes_read",
        "call_site",
        "connection",
        "error",
        "head",
        "leaked",
        "listener",
        "marks",
        "outcome",
        "request",
        "response_started",
        "reused",
        "state",
        "timeout",
        "was_idle",
        "write_error",
        "write_finished",
        "written_at",
    )

    def __init__(
        self,
        request: Request,
        timeout: Timeout,
        call_site: CallSite,
        listener: Listener | None,
        now: float,
    ) -> None:
        self.listener = listener
        # When each phase ended (the caller's clock), for Response.timings.
        self.marks: dict[str, float] = {"start": now}
        self.connection: Any = None  # pool lock: set at checkout
        self.reused = False  # pool lock: set at checkout
        self.was_idle = False  # pool lock: set at checkout
        self.response_started = False  # set by the reader
        self.request = request
        self.timeout = timeout
        self.call_site = call_site
        self.state = WAITING  # pool lock
        self.outcome: str | None = None  # pool lock
        self.head: Head | None = None  # set by the reader, then read-only
        # Set before the head is delivered, or by the body owner as the body
        # errors (for the body_done event).
        self.error: BaseException | None = None
        self.write_finished = False  # set by the writer
        self.write_error: BaseException | None = None  # set by the writer
        # Set by the writer; moved on by the reader at each interim response.
        self.written_at: float | None = None
        self.leaked = False  # set by the garbage collector's finaliser
        self.bytes_read = 0  # owned by the body owner
        # Set by the reader: the whole body arrived with the head, so the
        # reader went back to reading instead of parking.
        self.body_buffered = False

    def head_delivered(self) -> None:
        """Wake the caller waiting for the head or an error (pool lock held).
        Each I/O layer says how."""
        raise NotImplementedError

    def continue_received(self) -> None:
        """A ``100 Continue`` arrived: mark the time and let the writer send
        the body (R15). Each I/O layer says how."""
        raise NotImplementedError

    def interim_received(self) -> None:
        """An interim response (``1xx`` but ``101``) arrived after the request
        was written: the response-header limit starts again from now (R17),
        as a ``102 Processing`` is sent to keep a client waiting. Each I/O
        layer says how."""
        raise NotImplementedError

    def fail_locked(self, error: BaseException) -> bool:
        """Deliver ``error`` instead of a head to a caller still waiting;
        whether it was (pool lock held)."""
        if self.state != WAITING:
            return False
        self.state = FAILED
        self.error = error
        self.head_delivered()
        return True

    def body_left(self) -> int | None:
        """Bytes of the body not yet received, when its Content-Length says;
        ``None`` if it does not (chunked, or read until the server closes)."""
        head = self.head
        if head is None or head.content_length is None:
            return None
        return head.content_length - self.bytes_read

    def body_done_data(self, outcome: str, reused: bool) -> dict[str, Any]:
        """The ``body_done`` event's details; an errored body's carry the
        exception it raised."""
        head = self.head
        data = {
            "outcome": outcome,
            "reused": reused,
            "bytes": self.bytes_read,
            "method": self.request.method,
            "status": head.status_code if head is not None else 0,
            "elapsed": self.marks["body_done"] - self.marks["start"],
        }
        if outcome == "errored" and self.error is not None:
            data["error"] = self.error
        return data


class ClientProtocol:
    """The HTTP/1.1 client side of one connection (h11 plus poolwatch's
    rules). Not thread-safe: the thread connection serialises calls with a
    lock; the asyncio connection runs them all on the loop.

    Two kinds of exchange run on it. A *plain* one (a request with
    :attr:`Request.plain_head` and a response :func:`parse_plain_head`
    accepts) never touches h11: the request goes out as prepared, and the
    body is framed by its ``Content-Length`` here. Any other goes through
    h11; if a plain request meets a response that is not plain, h11 is told
    of the request first and reads the response from the start. A
    ``Content-Length`` or chunked body after a head read by h11 is framed
    here too."""

    __slots__ = (
        "_body_left",
        "_body_size",
        "_buffer",
        "_buffer_at",
        "_chunked",
        "_eof",
        "_extra_seen",
        "_h11",
        "_h11_idle",
        "_own_body",
        "_peeked_error",
        "_plain_request",
        "pending",
    )

    def __init__(self) -> None:
        self._h11 = _new_h11()
        # Whether h11 has seen nothing of the current exchange (a plain one).
        self._h11_idle = True
        # A plain request sent but not yet answered: h11 must learn of it if
        # the response turns out not to be plain.
        self._plain_request: Request | None = None
        # Body events already taken, for the body owner: filled by the
        # reader before it hands the head over, then the owner's.
        self.pending: deque[BodyEvent] = deque()
        # A Content-Length body framed here rather than by h11: its bytes
        # received but not yet taken, and whether the server hung up.
        self._own_body = False
        self._buffer = b""
        self._eof = False
        self._body_size = 0  # its declared length
        self._body_left = 0  # bytes of it not yet taken
        self._extra_seen = False  # bytes followed the body (R10)
        self._chunked: ChunkedBody | None = None  # a chunked body framed here
        self._buffer_at = 0  # where its decoder is in _buffer
        # h11's framing error found before the body owner's read (by the
        # reader taking what came with the head, or a peek at the end), for
        # that read to raise: h11 tells it once, then only that it is in error.
        self._peeked_error: h11.RemoteProtocolError | None = None

    # -- writing the request ---------------------------------------------

    def start_request(self, request: Request) -> tuple[bytes, bytes, bool]:
        """The bytes that start ``request``, the bytes to send after them,
        and whether body chunks follow. A body held as bytes goes with the
        head, so that a small request is one write; a large one is sent
        after it, not copied to join it (as urllib3 and httpcore send it).
        With ``Expect: 100-continue`` only the head goes (R15)."""
        body = request.body
        plain = request.plain_head
        if plain is not None and self._h11_idle:
            self._plain_request = request
            if not isinstance(body, bytes):
                return plain, b"", False
            return _joined(plain, body)
        self._h11_idle = False
        proto = self._h11
        data = proto.send(request.event)
        if request.expects_continue:
            return data, b"", True
        if body is None or isinstance(body, bytes):
            # h11 frames a body of known length as the body itself.
            after = proto.send(h11.Data(data=body)) if body else b""
            after += proto.send(h11.EndOfMessage())
            return _joined(data, after)
        return data, b"", True

    def body_chunk(self, chunk: bytes) -> bytes:
        """The bytes that send ``chunk`` of the body (raises
        ``h11.LocalProtocolError`` past the declared length)."""
        return self._h11.send(h11.Data(data=chunk))

    def end_request(self) -> bytes:
        """The bytes that end the request body (raises
        ``h11.LocalProtocolError`` short of the declared length)."""
        return self._h11.send(h11.EndOfMessage())

    def may_send_body(self, exchange: Exchange) -> bool:
        """After the writer's wait for ``100 Continue`` (R15): the body goes
        unless a final response came that closes the connection (then it is
        skipped); after any other final response it is sent so that the
        framing stays in step, as Go does."""
        head = exchange.head
        if head is None or head.status_code < 200:
            return True
        proto = self._h11
        closing = proto.our_state is h11.MUST_CLOSE or proto.their_state is h11.MUST_CLOSE
        return not closing and not head.closes and not exchange.request.wants_close

    # -- reading the head --------------------------------------------------

    def receive_head(self, exchange: Exchange, data: bytes, received: int) -> Head | None:
        """Feed ``data`` (``received`` bytes of head so far, these included);
        the response head once complete, else ``None``. Raises
        :class:`~poolwatch.RemoteProtocolError` for a bad head (R10)."""
        request = self._plain_request
        if request is not None:
            self._plain_request = None
            found = parse_plain_head(data, MAX_HEAD_SIZE)
            if found is not None:
                head, end = found
                self._own_body = True
                self._buffer = data[end:]
                return head
            self._tell_h11(request)
        proto = self._h11
        try:
            proto.receive_data(data)
            event = self._next_head_event(exchange)
            # h11 checks the size only of heads still incomplete.
            if (
                received > MAX_HEAD_SIZE
                and event is not None
                and received - len(proto.trailing_data[0]) > MAX_HEAD_SIZE
            ):
                raise h11.RemoteProtocolError(f"response head larger than {MAX_HEAD_SIZE} bytes")
        except h11.RemoteProtocolError as exc:
            # h11 says "Receive buffer too long" of a head still incomplete.
            reason = f"response head larger than {MAX_HEAD_SIZE} bytes"
            if received <= MAX_HEAD_SIZE:
                reason = str(exc)
            error = request_error(exchange.request, RemoteProtocolError, f"bad response: {reason}")
            raise error from exc
        if event is None:
            return None
        if _has_both_lengths(event):
            # RFC 9112 section 6.3: a sign of response splitting; the
            # connection is not trusted again (R10).
            raise request_error(
                exchange.request,
                RemoteProtocolError,
                "bad response: both Content-Length and Transfer-Encoding",
            )
        lowered = list(event.headers)
        return Head(
            event.status_code,
            event.reason,
            event.http_version,
            event.headers.raw_items(),
            _content_length(lowered),
            lowered,
            closes=says_close(lowered),
        )

    def _tell_h11(self, request: Request) -> None:
        """Bring h11 up to a plain request already sent, so that it reads
        the response."""
        proto = self._h11
        self._h11_idle = False
        proto.send(request.event)
        body = request.body
        if isinstance(body, bytes) and body:
            proto.send(h11.Data(data=body))
        proto.send(h11.EndOfMessage())

    def _next_head_event(
        self, exchange: Exchange
    ) -> h11.Response | h11.InformationalResponse | None:
        while True:
            event = self._h11.next_event()
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    if self._h11.our_state is h11.SWITCHED_PROTOCOL:  # Upgrade asked for
                        return event  # the head; what follows is the new protocol's
                    if self._h11.their_state is h11.SWITCHED_PROTOCOL:  # asked, body unsent
                        raise h11.RemoteProtocolError(
                            "101 Switching Protocols before the request was sent"
                        )
                    raise h11.RemoteProtocolError("101 Switching Protocols to a plain request")
                if event.status_code == 100 and exchange.request.expects_continue:
                    exchange.continue_received()
                if exchange.written_at is not None:
                    exchange.interim_received()
                continue
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.Response):
                return event
            raise h11.RemoteProtocolError(f"unexpected {event!r} before the response head")

    def check_head(self, exchange: Exchange, head: Head) -> bool:
        """Whether ``head`` has no body (R7); for one without, checks that
        nothing follows it (R10) and raises if something does. A
        ``Content-Length`` body is framed here from now on."""
        if head.status_code == 101:  # taken only when asked for: see _next_head_event
            return True
        if has_no_body(exchange.request.method, head):
            if self._h11_idle:  # a plain exchange
                self._begin_body(0)
                extra = bool(self._buffer)
            else:
                if not self.peek_end_of_body():
                    raise AssertionError("h11 expects a body where poolwatch expects none")
                extra = bool(self._h11.trailing_data[0])
            if extra:
                raise request_error(
                    exchange.request, RemoteProtocolError, "bytes after a body-less response"
                )
            return True
        length = head.content_length
        if not self._h11_idle and (length is not None or _is_chunked(head)):
            # h11 reads no more of this response (it has checked that a
            # Transfer-Encoding says chunked); it keeps the request side, and
            # a fresh h11 takes the next exchange.
            self._own_body = True
            self._buffer, self._eof = self._h11.trailing_data
            self._buffer_at = 0
            if length is None:
                self._chunked = ChunkedBody(MAX_HEAD_SIZE)
        if self._own_body:
            self._begin_body(length or 0)
        return False

    def switched_bytes(self) -> bytes:
        """After a 101 head: the bytes that came after it, the new
        protocol's first."""
        return bytes(self._h11.trailing_data[0])

    def _begin_body(self, length: int) -> None:
        self._body_size = self._body_left = length
        self._extra_seen = False

    def take_buffered_body(self) -> bool:
        """Move the body already received to :attr:`pending`; True if it
        reaches the end of the body (the common small response)."""
        pending = self.pending
        if self._chunked is not None:
            while (piece := self._peeked_chunk()) is not None:
                pending.append(piece)
                if piece is _END:
                    return True
            return False
        if self._own_body:
            left = self._body_left
            buffered = self._buffer
            if pending or len(buffered) < left:
                return False
            if left:
                pending.append(h11.Data(data=buffered[:left]))
            pending.append(_END)
            self._extra_seen = len(buffered) > left
            self._buffer = b""
            self._body_left = 0
            return True
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._peeked_error = exc  # for the body owner's read to raise
                return False
            if isinstance(event, h11.Data | h11.EndOfMessage):
                pending.append(event)
                if isinstance(event, h11.EndOfMessage):
                    return True
            else:
                return False

    def take_whole_body(self) -> bytes | None:
        """What is left of the body, when :attr:`pending` holds it as one
        piece and its end (see :meth:`take_buffered_body`); else ``None``,
        and nothing is taken. A body of several pieces (chunks) is read
        piece by piece, as it was sent."""
        pending = self.pending
        if not pending or not isinstance(pending[-1], h11.EndOfMessage) or len(pending) > 2:
            return None
        first = pending[0]
        pending.clear()
        return bytes(first.data) if isinstance(first, h11.Data) else b""

    # -- reading the body ----------------------------------------------------

    def next_body_event(self, exchange: Exchange, gather: bool = False) -> BodyEvent | None:
        """The next piece of the body, or ``None`` if more bytes are needed.
        With ``gather``, for a caller that wants bytes and not chunks (a
        read of the whole body, or of a size), the chunks of a chunked body
        already received come as one piece. Raises
        :class:`~poolwatch.RemoteProtocolError` for bad framing (R10)."""
        pending = self.pending
        if pending:
            first = pending.popleft()
            if gather and isinstance(first, h11.Data) and pending:
                return self._gathered(first)
            return first
        if self._own_body and self._chunked is None:
            return self._next_own_event(exchange)
        try:
            if self._peeked_error is not None:
                raise self._peeked_error
            event = self._next_chunk() if self._own_body else self._h11.next_event()
            if gather and isinstance(event, h11.Data) and self._chunked is not None:
                event = self._gathered(event)
        except h11.RemoteProtocolError as exc:
            error = request_error(exchange.request, RemoteProtocolError, f"bad body: {exc}")
            raise error from exc
        if event is h11.NEED_DATA or event is None:
            return None
        if isinstance(event, h11.Data | h11.EndOfMessage):
            return event
        raise request_error(exchange.request, RemoteProtocolError, f"unexpected {event!r}")

    def _next_chunk(self) -> BodyEvent | None:
        """The next piece of a chunked body framed here: what has arrived
        of its next chunk, as one ``Data``; ``None`` if more bytes are
        needed. Raises ``h11.RemoteProtocolError`` for bad framing, as h11
        does."""
        chunked = self._chunked
        assert chunked is not None
        data, at = chunked.take(self._buffer, self._buffer_at)
        if at == len(self._buffer):
            self._buffer, at = b"", 0
        self._buffer_at = at  # an offset: not a copy of the rest per chunk
        if data:
            return h11.Data(data=data)
        if chunked.done:
            self._extra_seen = bool(self._buffer)
            return _END
        if self._eof:
            raise h11.RemoteProtocolError(
                "peer closed connection without sending complete message body "
                "(incomplete chunked read)"
            )
        return None

    def _gathered(self, first: h11.Data) -> h11.Data:
        """``first`` and the chunks after it already received, in one piece
        (a framing error found on the way is kept for the next read)."""
        pieces = [first.data]
        pending = self.pending
        while pending and isinstance(next_piece := pending[0], h11.Data):
            pending.popleft()
            pieces.append(next_piece.data)
        if not pending and self._chunked is not None:
            while isinstance(piece := self._peeked_chunk(), h11.Data):
                pieces.append(piece.data)
        return first if len(pieces) == 1 else h11.Data(data=b"".join(pieces))

    def _peeked_chunk(self) -> BodyEvent | None:
        """:meth:`_next_chunk` ahead of the body owner's read, which raises
        a framing error found (``None`` then)."""
        try:
            return self._next_chunk()
        except h11.RemoteProtocolError as exc:
            self._peeked_error = exc
            return None

    def _next_own_event(self, exchange: Exchange) -> BodyEvent | None:
        left = self._body_left
        if not left:
            return _END
        buffered = self._buffer
        if buffered:
            if len(buffered) > left:
                self._extra_seen = True
                buffered = buffered[:left]
            self._buffer = b""
            self._body_left = left - len(buffered)
            return h11.Data(data=buffered)
        if self._eof:
            raise self.cut_short(exchange)
        return None

    def cut_short(self, exchange: Exchange) -> PoolwatchError:
        """The error for a ``Content-Length`` body the server ended early."""
        received = self._body_size - self._body_left
        return request_error(
            exchange.request,
            RemoteProtocolError,
            "bad body: peer closed connection without sending complete message body "
            f"(received {received} bytes, expected {self._body_size})",
        )

    def receive_data(self, data: bytes) -> None:
        """Feed body bytes read from the connection (``b""``: EOF)."""
        if not self._own_body:
            self._h11.receive_data(data)
        elif data:
            at = self._buffer_at
            self._buffer = (self._buffer[at:] if at else self._buffer) + data
            self._buffer_at = 0
        else:
            self._eof = True

    def peek_end_of_body(self) -> bool:
        """Whether the body's end is already buffered, so that a read that
        took the last byte can finish the body without another call (R4,
        R18). A Data event found is kept for the next read."""
        pending = self.pending
        if pending:
            if isinstance(pending[0], h11.EndOfMessage):
                pending.popleft()
                return True
            return False
        if self._chunked is not None:
            piece = self._peeked_chunk()
            if piece is not None and piece is not _END:
                pending.append(piece)
            return piece is _END
        if self._own_body:
            return not self._body_left
        proto = self._h11
        if proto.their_state is not h11.SEND_BODY:
            return proto.their_state is h11.DONE
        try:
            event = proto.next_event()
        except h11.RemoteProtocolError as exc:
            self._peeked_error = exc  # the next read raises it
            return False
        if isinstance(event, h11.EndOfMessage):
            return True
        if isinstance(event, h11.Data):
            pending.append(event)
        return False

    def extra_bytes_after_body(self) -> bool:
        """Whether bytes followed the end of the response (R10)."""
        if self._own_body:
            return self._extra_seen
        return bool(self._h11.trailing_data[0])

    # -- reading a Content-Length body straight from the connection --------

    def direct_body_left(self) -> int:
        """How many bytes of the body the owner may read straight from the
        connection into its own buffer (0: none, read through
        :meth:`next_body_event`): the rest of a ``Content-Length`` body,
        once everything already received has been taken. Those reads are
        reported with :meth:`direct_body_received`; the framing rules still
        hold (R10): a short body is the owner's error to raise (see
        :meth:`cut_short`), a byte after the end is reported with
        :meth:`direct_extra_bytes`."""
        if not self._own_body or self.pending or self._buffer or self._eof:
            return 0
        return self._body_left

    def direct_body_received(self, size: int) -> None:
        """``size`` more body bytes were read straight from the connection."""
        assert self._own_body and size <= self._body_left
        self._body_left -= size

    def direct_extra_bytes(self) -> None:
        """Bytes followed a body read straight from the connection (R10)."""
        self._extra_seen = True

    # -- reuse ---------------------------------------------------------------

    def can_reuse(self, exchange: Exchange) -> bool:
        """Whether both sides finished cleanly with keep-alive and nothing
        follows the response (R8, R10); if so, ready for the next request.
        The caller has checked that the whole request was written (R9)."""
        if self._own_body:
            unfinished = self._body_left or (self._chunked and not self._chunked.done)
            if unfinished or self._extra_seen or self._buffer or self._eof:
                return False
            if self._h11_idle:
                # A plain exchange: HTTP/1.1 on both sides; kept unless
                # either side said Connection: close.
                self._own_body = False
                head = exchange.head
                return not exchange.request.wants_close and not (head and head.closes)
            return self._reuse_after_own_body(exchange)
        proto = self._h11
        if proto.trailing_data[0]:
            return False
        if proto.our_state is h11.DONE and proto.their_state is h11.DONE:
            proto.start_next_cycle()
            self._h11_idle = True
            return True
        finished = (proto.our_state, proto.their_state) == (h11.MUST_CLOSE, h11.MUST_CLOSE)
        if finished and _is_http10_keep_alive(exchange):
            # h11 never reuses an HTTP/1.0 connection; a server that promised
            # keep-alive for a length-delimited body can be (R8).
            self._fresh_h11()
            return True
        return False

    def _reuse_after_own_body(self, exchange: Exchange) -> bool:
        """:meth:`can_reuse` for a body framed here after a head read by h11:
        h11's side of the server is still in its body, so a fresh h11 takes
        the next request. h11 has already turned the client's ``DONE`` into
        ``MUST_CLOSE`` if either head said ``Connection: close`` or the
        server is HTTP/1.0."""
        our_state = self._h11.our_state
        if our_state is h11.DONE or (
            our_state is h11.MUST_CLOSE and _is_http10_keep_alive(exchange)
        ):
            self._fresh_h11()
            return True
        return False

    def _fresh_h11(self) -> None:
        self._h11 = _new_h11()
        self._h11_idle = True
        self._own_body = False
        self._chunked = None


def says_close(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether the headers (with lower-case names) carry ``Connection: close``,
    read as h11 reads it (a ``close`` token)."""
    return any(name == b"connection" and closes_connection(value) for name, value in headers)


def has_no_body(method: str, head: Head) -> bool:
    """Whether a response cannot have a body (RFC 9112 section 6.3, R7)."""
    status = head.status_code
    return method == "HEAD" or status in (204, 304) or status < 200 or head.content_length == 0


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The body length a response declares, if it is length-delimited (h11
    has checked the value and refused conflicting ones)."""
    length = None
    for name, value in headers:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            length = int(value)
    return length


# A body up to this size is sent in one write with its head.
_JOIN_MAX = 64 * 1024


def _joined(head: bytes, body: bytes) -> tuple[bytes, bytes, bool]:
    """What :meth:`ClientProtocol.start_request` returns for ``head`` and a
    whole ``body``."""
    if len(body) <= _JOIN_MAX:
        return head + body, b"", False
    return head, body, False


def _is_chunked(head: Head) -> bool:
    """Whether a response's body is chunked: it has a Transfer-Encoding
    (which h11, having read the head, has checked says ``chunked``)."""
    return any(name == b"transfer-encoding" for name, _ in head.headers)


def _has_both_lengths(head: h11.Response | h11.InformationalResponse) -> bool:
    names = {name for name, _ in head.headers}
    return b"content-length" in names and b"transfer-encoding" in names


def _new_h11() -> h11.Connection:
    return h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_SIZE)


def _is_http10_keep_alive(exchange: Exchange) -> bool:
    """An HTTP/1.0 response that says ``Connection: keep-alive`` and whose
    body had a length, to a request that did not ask to close."""
    head = exchange.head
    if head is None or head.http_version != b"1.0":
        return False
    if exchange.request.wants_close:
        return False
    tokens: set[bytes] = set()
    length_known = has_no_body(exchange.request.method, head)
    for name, value in head.headers:
        if name == b"connection":
            tokens.update(token.strip().lower() for token in value.split(b","))
        elif name == b"content-length":
            length_known = True
    return b"keep-alive" in tokens and b"close" not in tokens and length_known
