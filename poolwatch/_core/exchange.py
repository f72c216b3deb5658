"""One request and its response on a connection, with no I/O: the exchange's
state and time marks, and the HTTP/1.1 client protocol that both the thread
and the asyncio connections drive (R7-R10, R15).

Theory of operation
-------------------

A connection feeds the bytes it reads to a :class:`ClientProtocol` and sends
the bytes it returns; the protocol wraps an ``h11.Connection`` and adds what
poolwatch decides on top of h11:

* the response head: interim 1xx responses are skipped (a ``100`` is the
  writer's go-ahead, R15; a ``101`` to a plain request is an error), the head
  may be at most :data:`MAX_HEAD_SIZE` bytes, and a head with both
  ``Content-Length`` and ``Transfer-Encoding`` is refused (RFC 9112 section
  6.3: a sign of response splitting, R10);
* which responses have no body (RFC 9112 section 6.3, R7), and bytes after a
  response's end (R10);
* whether the connection can carry another request once both sides are done
  (R8, R9), including an HTTP/1.0 server that promised keep-alive;
* when h11 can be skipped for a Content-Length body: one that arrived whole
  with the head is sliced from h11's buffer, and the rest of a larger one
  may be read by the I/O layer straight from its connection
  (:meth:`ClientProtocol.direct_body_left`); a fresh h11 state then takes
  the next request, and bytes after the body still count (R10).

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
MAX_HEAD_SIZE = 64 * 1024

# Exchange states.
WAITING = "waiting"  # for the response head
BODY = "body"  # head delivered, body checked out
DONE = "done"  # body finished (see outcome)
FAILED = "failed"  # an error was delivered instead of a head
ABANDONED = "abandoned"  # the caller stopped waiting for the head

BodyEvent = h11.Data | h11.EndOfMessage


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
        self.head: h11.Response | None = None  # set by the reader, then read-only
        self.error: BaseException | None = None  # set before the head is delivered
        self.write_finished = False  # set by the writer
        self.write_error: BaseException | None = None  # set by the writer
        self.written_at: float | None = None  # set by the writer
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

    def fail_locked(self, error: BaseException) -> bool:
        """Deliver ``error`` instead of a head to a caller still waiting;
        whether it was (pool lock held)."""
        if self.state != WAITING:
            return False
        self.state = FAILED
        self.error = error
        self.head_delivered()
        return True

    def timings_data(self) -> dict[str, Any]:
        """The ``body_done`` event's details."""
        head = self.head
        return {
            "bytes": self.bytes_read,
            "method": self.request.method,
            "status": head.status_code if head is not None else 0,
            "elapsed": self.marks["body_done"] - self.marks["start"],
        }


class ClientProtocol:
    """The HTTP/1.1 client side of one connection (h11 plus poolwatch's
    rules). Not thread-safe: the thread connection serialises calls with a
    lock; the asyncio connection runs them all on the loop."""

    __slots__ = ("_body_left", "_direct", "_extra_seen", "_h11", "pending")

    def __init__(self) -> None:
        self._h11 = _new_h11()
        # Body events already taken from h11, for the body owner: filled by
        # the reader before it hands the head over, then the owner's.
        self.pending: deque[BodyEvent] = deque()
        # Bytes of a Content-Length body that h11 has not yet delivered as
        # events (``None``: the body is not length-delimited).
        self._body_left: int | None = None
        # Whether the rest of the body is read past h11 (see direct_body_left).
        self._direct = False
        self._extra_seen = False  # bytes followed a body read past h11 (R10)

    # -- writing the request ---------------------------------------------

    def start_request(self, request: Request) -> tuple[bytes, bool]:
        """The bytes that start ``request``, and whether body chunks follow.
        A body held as bytes goes with the head, so the whole request is one
        write; with ``Expect: 100-continue`` only the head goes (R15)."""
        proto = self._h11
        data = proto.send(request.event)
        body = request.body
        if request.expects_continue:
            return data, True
        if body is None or isinstance(body, bytes):
            if body:
                data += proto.send(h11.Data(data=body))
            data += proto.send(h11.EndOfMessage())
            return data, False
        return data, True

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
        return (
            not closing
            and not says_close(head.headers)
            and not says_close(exchange.request.event.headers)
        )

    # -- reading the head --------------------------------------------------

    def receive_head(self, exchange: Exchange, data: bytes, received: int) -> h11.Response | None:
        """Feed ``data`` (``received`` bytes of head so far, these included);
        the response head once complete, else ``None``. Raises
        :class:`~poolwatch.RemoteProtocolError` for a bad head (R10)."""
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
            error = request_error(exchange.request, RemoteProtocolError, f"bad response: {exc}")
            raise error from exc
        if event is not None and _has_both_lengths(event):
            # RFC 9112 section 6.3: a sign of response splitting; the
            # connection is not trusted again (R10).
            raise request_error(
                exchange.request,
                RemoteProtocolError,
                "bad response: both Content-Length and Transfer-Encoding",
            )
        return event

    def _next_head_event(self, exchange: Exchange) -> h11.Response | None:
        while True:
            event = self._h11.next_event()
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    raise h11.RemoteProtocolError("101 Switching Protocols to a plain request")
                if event.status_code == 100 and exchange.request.expects_continue:
                    exchange.continue_received()
                continue
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.Response):
                return event
            raise h11.RemoteProtocolError(f"unexpected {event!r} before the response head")

    def check_head(self, exchange: Exchange, head: h11.Response) -> bool:
        """Whether ``head`` has no body (R7); for one without, checks that
        nothing follows it (R10) and raises if something does."""
        no_body = has_no_body(exchange.request.method, head)
        self._body_left = None if no_body else _content_length(head)
        if no_body:
            if not self.peek_end_of_body():
                raise AssertionError("h11 expects a body where poolwatch expects none")
            if self.extra_bytes_after_body():
                raise request_error(
                    exchange.request, RemoteProtocolError, "bytes after a body-less response"
                )
        return no_body

    def take_buffered_body(self) -> bool:
        """Move the body events h11 already has to :attr:`pending`; True if
        they reach the end of the body (the common small response).

        A whole Content-Length body is taken from h11's buffer as it is,
        without h11 turning it into events; as for a body read past h11
        (:meth:`direct_body_left`), a fresh h11 state takes the next
        request, and bytes after the body are kept for R10."""
        pending = self.pending
        if self._take_whole_body():
            return True
        while True:
            try:
                event = self._next_event()
            except h11.RemoteProtocolError:
                return False  # h11 raises it again for the body owner
            if isinstance(event, h11.Data | h11.EndOfMessage):
                pending.append(event)
                if isinstance(event, h11.EndOfMessage):
                    return True
            else:
                return False

    def _take_whole_body(self) -> bool:
        left = self._body_left
        proto = self._h11
        if left is None or pending_or_busy(self.pending, proto):
            return False
        buffered, closed = proto.trailing_data
        if closed or len(buffered) < left:
            return False
        self._direct = True
        self._body_left = 0
        if left:
            self.pending.append(h11.Data(data=buffered[:left]))
        self.pending.append(h11.EndOfMessage())
        self._extra_seen = len(buffered) > left
        return True

    # -- reading the body ----------------------------------------------------

    def next_body_event(self, exchange: Exchange) -> BodyEvent | None:
        """The next piece of the body, or ``None`` if more bytes are needed.
        Raises :class:`~poolwatch.RemoteProtocolError` for bad framing (R10)."""
        if self.pending:
            return self.pending.popleft()
        try:
            event = self._next_event()
        except h11.RemoteProtocolError as exc:
            error = request_error(exchange.request, RemoteProtocolError, f"bad body: {exc}")
            raise error from exc
        if event is h11.NEED_DATA:
            return None
        if isinstance(event, h11.Data | h11.EndOfMessage):
            return event
        raise request_error(exchange.request, RemoteProtocolError, f"unexpected {event!r}")

    def receive_data(self, data: bytes) -> None:
        """Feed body bytes read from the connection (``b""``: EOF)."""
        self._h11.receive_data(data)

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
        if self._direct:
            return self._body_left == 0
        proto = self._h11
        if proto.their_state is not h11.SEND_BODY:
            return proto.their_state is h11.DONE
        try:
            event = self._next_event()
        except h11.RemoteProtocolError:
            return False  # the next read raises it
        if isinstance(event, h11.EndOfMessage):
            return True
        if isinstance(event, h11.Data):
            pending.append(event)
        return False

    def extra_bytes_after_body(self) -> bool:
        """Whether bytes followed the end of the response (R10)."""
        if self._direct:
            return self._extra_seen
        return bool(self._h11.trailing_data[0])

    def _next_event(self) -> Any:
        """h11's next event, counting the body bytes it delivers."""
        event = self._h11.next_event()
        if type(event) is h11.Data and self._body_left is not None:
            self._body_left -= len(event.data)
        return event

    # -- reading a Content-Length body past h11 ----------------------------

    def direct_body_left(self) -> int:
        """How many bytes of the body the owner may read straight from the
        connection, past h11 (0: none, read through :meth:`next_body_event`).

        Only a Content-Length body qualifies, once every byte h11 holds has
        been taken as events and those events have been consumed; from the
        first non-zero answer on, the rest of the body is read that way and
        reported with :meth:`direct_body_received`. h11 never sees those
        bytes, so :meth:`can_reuse` starts a fresh h11 state for the next
        request; the framing rules still hold (R10): a short body is the
        owner's error to raise, a byte after the end is reported with
        :meth:`direct_extra_bytes`."""
        if self._direct:
            return self._body_left or 0
        left = self._body_left
        if not left or self.pending or self._h11.their_state is not h11.SEND_BODY:
            return 0
        buffered, closed = self._h11.trailing_data
        if buffered or closed:
            return 0
        self._direct = True
        return left

    def direct_body_received(self, size: int) -> None:
        """``size`` more body bytes were read past h11."""
        assert self._direct and self._body_left is not None and size <= self._body_left
        self._body_left -= size

    def direct_extra_bytes(self) -> None:
        """Bytes followed a body read past h11 (R10)."""
        self._extra_seen = True

    # -- reuse ---------------------------------------------------------------

    def can_reuse(self, exchange: Exchange) -> bool:
        """Whether both sides finished cleanly with keep-alive and nothing
        follows the response (R8, R10); if so, ready for the next request.
        The caller has checked that the whole request was written (R9)."""
        proto = self._h11
        if self._direct:
            return self._reuse_after_direct_body(exchange)
        if proto.trailing_data[0]:
            return False
        if proto.our_state is h11.DONE and proto.their_state is h11.DONE:
            proto.start_next_cycle()
            return True
        finished = (proto.our_state, proto.their_state) == (h11.MUST_CLOSE, h11.MUST_CLOSE)
        if finished and _is_http10_keep_alive(exchange):
            # h11 never reuses an HTTP/1.0 connection; a server that promised
            # keep-alive for a length-delimited body can be (R8).
            self._h11 = _new_h11()
            return True
        return False

    def _reuse_after_direct_body(self, exchange: Exchange) -> bool:
        """:meth:`can_reuse` for a body read past h11: h11's side of the
        server is still in its body, so a fresh h11 takes the next request.
        h11 has already turned the client's ``DONE`` into ``MUST_CLOSE`` if
        either head said ``Connection: close`` or the server is HTTP/1.0."""
        if self._body_left or self._extra_seen:
            return False
        our_state = self._h11.our_state
        if our_state is h11.DONE or (
            our_state is h11.MUST_CLOSE and _is_http10_keep_alive(exchange)
        ):
            self._h11 = _new_h11()
            self._direct = False
            self._body_left = None
            return True
        return False


def says_close(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether the headers carry ``Connection: close``."""
    return any(name == b"connection" and b"close" in value.lower() for name, value in headers)


def has_no_body(method: str, head: h11.Response) -> bool:
    """Whether a response cannot have a body (RFC 9112 section 6.3, R7)."""
    if method == "HEAD" or head.status_code in (204, 304) or head.status_code < 200:
        return True
    for name, value in head.headers:
        if name == b"content-length":
            return value == b"0"
        if name == b"transfer-encoding":
            return False
    return False


def pending_or_busy(pending: deque[BodyEvent], proto: h11.Connection) -> bool:
    """Whether body events are already pending, or h11 is not at the start
    of a response body with the request fully sent."""
    return (
        bool(pending) or proto.their_state is not h11.SEND_BODY or proto.our_state is not h11.DONE
    )


def _content_length(head: h11.Response) -> int | None:
    """The body length a response declares, if it is length-delimited (h11
    has checked the value and refused conflicting ones)."""
    length = None
    for name, value in head.headers:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            length = int(value)
    return length


def _has_both_lengths(head: h11.Response) -> bool:
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
    if says_close(exchange.request.event.headers):
        return False
    tokens: set[bytes] = set()
    length_known = has_no_body(exchange.request.method, head)
    for name, value in head.headers:
        if name == b"connection":
            tokens.update(token.strip().lower() for token in value.split(b","))
        elif name == b"content-length":
            length_known = True
    return b"keep-alive" in tokens and b"close" not in tokens and length_known
