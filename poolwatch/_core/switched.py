"""What the sync and async streams of a switched connection (after ``101
Switching Protocols``) share: the bytes that came with the head, the
errors, and how they read."""

from __future__ import annotations

from .._exceptions import PoolwatchError, ReadError, ReadTimeout, WriteError, WriteTimeout

__all__ = ["SwitchedStream"]


class SwitchedStream:
    """The state both kinds of switched stream keep, and their errors."""

    # What a timed-out read or write raises (Python 3.10's asyncio has its own).
    _timeouts: tuple[type[BaseException], ...] = (TimeoutError,)

    def __init__(self, first: bytes, *, method: str, url: str) -> None:
        # What came with the 101 head, the new protocol's first bytes, from
        # ``_first_at`` on: an offset, so that small reads copy each byte once.
        self._first = first
        self._first_at = 0
        self._closed = False
        #: The request that switched the connection.
        self.method = method
        self.url = url

    def _take_first(self, max_bytes: int) -> bytes:
        """Bytes that came with the head, if any are left (else ``b""``)."""
        first, start = self._first, self._first_at
        end = start + max(max_bytes, 0)
        if end >= len(first):
            self._first, self._first_at = b"", 0
            return first if start == 0 else first[start:]
        self._first_at = end
        return first[start:end]

    def _error(self, writing: bool, exc: BaseException, timeout: float | None) -> PoolwatchError:
        """poolwatch's error for ``exc``, a timeout or a socket error."""
        if isinstance(exc, self._timeouts):
            kind: type[PoolwatchError] = WriteTimeout if writing else ReadTimeout
            what = "could not write" if writing else "nothing to read"
            return kind(f"{what} within {timeout}s", method=self.method, url=self.url)
        kind = WriteError if writing else ReadError
        what = "writing" if writing else "reading"
        message = f"{what} the switched connection failed: {exc}"
        return kind(message, method=self.method, url=self.url)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {state} {self.method} {self.url}>"
