"""What the sync and async responses share: the head as received, and the
state of the body (outcome, timings, the connection it came on)."""

from __future__ import annotations

import warnings
from typing import Any

from urllib3 import HTTPHeaderDict

from ._core.exchange import BODY, Exchange
from ._core.timings import Timings
from ._exceptions import LeakWarning

__all__ = ["ResponseHead", "check_size"]


class ResponseHead:
    """The head of a response and the state of its body. The transports'
    response classes add the reading, closing and leak reporting."""

    __slots__ = (
        "__weakref__",
        "_buffer",
        "_connection",
        "_drain_on_close",
        "_end_seen",
        "_exchange",
        "_headers",
        "_offset",
        "_owner",
        "http_version",
        "method",
        "raw_headers",
        "reason",
        "status",
        "url",
    )

    def __init__(self, exchange: Exchange, drain_on_close: bool, owner: object) -> None:
        head = exchange.head
        assert head is not None and exchange.connection is not None
        self._exchange = exchange
        # The transport's handle, kept alive while the response is, as
        # urllib3's and httpcore's responses keep their pool.
        self._owner = owner
        self._connection: Any = exchange.connection
        self._drain_on_close = drain_on_close
        # Body bytes taken from the connection and not yet handed over: those
        # of ``_buffer`` from ``_offset`` on. An offset, not a new ``bytes``
        # per read, so that small reads of a large piece copy each byte once.
        self._buffer = b""
        self._offset = 0
        # Ended before the caller got it: only a response without a body
        # (R7). One the transport's close ended meanwhile is not read as
        # empty: reading it raises (R14).
        self._end_seen = exchange.state != BODY and exchange.outcome == "no_body"
        self.status: int = head.status_code
        self.reason: str = head.reason.decode("latin-1")
        self.http_version: str = "HTTP/" + head.http_version.decode("ascii")
        #: The header lines as received: name and value bytes, in order.
        self.raw_headers: list[tuple[bytes, bytes]] = head.raw_headers
        self._headers: HTTPHeaderDict | None = None  # made on first use
        self.method: str = exchange.request.method
        self.url: str = exchange.request.url

    def _take(self, amt: int | None = None) -> bytes:
        """Up to ``amt`` of the bytes buffered (all of them by default),
        never waiting."""
        buffer, offset = self._buffer, self._offset
        end = len(buffer) if amt is None or amt < 0 else min(len(buffer), offset + amt)
        data = buffer if offset == 0 and end == len(buffer) else buffer[offset:end]
        if end == len(buffer):
            self._buffer, self._offset = b"", 0
        else:
            self._offset = end
        return data

    def _buffered(self) -> int:
        """How many bytes :meth:`_take` could hand over now."""
        return len(self._buffer) - self._offset

    def _keep(self, pieces: list[bytes]) -> None:
        """Buffer ``pieces`` (what was buffered first), as one piece."""
        self._buffer, self._offset = b"".join(pieces), 0

    def _drop_buffer(self) -> None:
        self._buffer, self._offset = b"", 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} [{self.status} {self.reason}] {self.method} {self.url}>"

    @property
    def headers(self) -> HTTPHeaderDict:
        """The headers: case-insensitive, multi-valued (urllib3's
        ``HTTPHeaderDict``), decoded as Latin-1."""
        headers = self._headers
        if headers is None:
            headers = self._headers = HTTPHeaderDict()
            for name, value in self.raw_headers:
                headers.add(name.decode("latin-1"), value.decode("latin-1"))
        return headers

    @property
    def outcome(self) -> str | None:
        """How the body ended (``"drained"``, ``"closed_early"``, ``"leaked"``,
        ``"errored"``, ``"no_body"``), or ``None`` while it is open."""
        return self._exchange.outcome

    @property
    def is_closed(self) -> bool:
        """Whether the body has ended, one way or another."""
        return self._exchange.state != BODY

    @property
    def reused_connection(self) -> bool:
        """Whether the request went out on a connection used before."""
        return self._exchange.reused

    @property
    def timings(self) -> Timings:
        """When each phase of this request ended, in seconds from the call."""
        exchange = self._exchange
        return Timings.from_marks(exchange.marks, exchange.reused)

    @property
    def connection_id(self) -> int:
        """The id of the connection the response came on."""
        return int(self._connection.id)

    def get_extra_info(self, name: str) -> Any:
        """What the connection this response came on tells, by the names
        of httpcore's network streams: ``"server_addr"`` and
        ``"client_addr"`` (the socket's addresses: the proxy's, through a
        proxy), ``"socket"``, ``"ssl_object"`` (the TLS session, ``None``
        over plain TCP) and ``"is_readable"``. Once the connection is
        closed, each is ``None`` (``"is_readable"``: ``True``, the end), as
        is any other name. Reading or writing the socket yourself would
        disturb the connection's workers."""
        return self._connection.extra_info(name)

    def __del__(self) -> None:
        self.report_leak(stacklevel=3)

    def report_leak(self, stacklevel: int = 2) -> None:
        """Called when the object that owns this response is being
        garbage-collected: if the body is still open, emit the
        :class:`~poolwatch.LeakWarning` and let the connection go (R6). Safe
        on any thread, inside the pool lock, and after an event loop closed:
        it takes no lock and leaves the bookkeeping to the connection."""
        exchange = self._exchange
        if exchange.state != BODY or exchange.leaked:
            return
        try:
            warnings.warn(
                LeakWarning(
                    f"poolwatch: response to {self.method} {self.url} "
                    f"(status {self.status}) was garbage-collected with its body "
                    f"neither read to the end nor closed; request made at "
                    f"{exchange.call_site}"
                ),
                stacklevel=stacklevel,
            )
        finally:
            exchange.leaked = True
            self._let_go()

    def _let_go(self) -> None:
        """Hand a leaked body to its connection (each transport's way)."""
        raise NotImplementedError


def check_size(name: str, value: object, *, positive: bool = False) -> None:
    """Refuse a read size that is not an int (or ``None``) with a
    TypeError, before the body is touched; with ``positive``, one below 1
    with a ValueError."""
    if value is None:
        return
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, not {type(value).__name__}: {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be positive, not {value!r}")
