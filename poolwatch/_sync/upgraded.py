"""A connection after ``101 Switching Protocols``: no longer HTTP, no longer
the pool's, and no longer read and written by its workers, but by whoever
holds the response (a WebSocket client, say), as Go's transport hands such
a connection to its caller as a writable response body."""

from __future__ import annotations

import socket
import ssl
from types import TracebackType
from typing import Any

from typing_extensions import Self

from .._core.netinfo import socket_info
from .._core.switched import SwitchedStream
from .streams import RawSocket

__all__ = ["UpgradedStream"]


class UpgradedStream(SwitchedStream):
    """The connection a ``101`` response came on, as a byte stream for the
    protocol it switched to: :meth:`read`, :meth:`write`, :meth:`close`
    (``with`` closes it), and :meth:`get_extra_info` as on the response.

    Errors are poolwatch's, naming the request that switched: ``ReadError``,
    ``ReadTimeout``, ``WriteError``, ``WriteTimeout``. Reading and writing
    may happen on two threads at once; a timeout applies to the socket, so
    two calls at once should pass the same one.
    """

    def __init__(
        self,
        stream: RawSocket,
        sock: socket.socket,
        ssl_object: ssl.SSLObject | None,
        first: bytes,
        *,
        method: str,
        url: str,
    ) -> None:
        super().__init__(first, method=method, url=url)
        self._stream = stream  # the socket, or its TLS session seen as one
        self._sock = sock
        self._ssl_object = ssl_object

    def read(self, max_bytes: int = 65536, timeout: float | None = None) -> bytes:
        """Up to ``max_bytes`` bytes, waiting up to ``timeout`` seconds
        (``None``: for ever) for some; ``b""`` once the server has closed."""
        if self._first:
            return self._take_first(max_bytes)
        try:
            self._stream.settimeout(timeout)
            return self._stream.recv(max_bytes)
        except OSError as exc:  # TimeoutError among them
            raise self._error(False, exc, timeout) from exc

    def write(self, data: bytes, timeout: float | None = None) -> None:
        """Send all of ``data``, within ``timeout`` seconds (``None``: no limit)."""
        try:
            self._stream.settimeout(timeout)
            self._stream.sendall(data)
        except OSError as exc:
            raise self._error(True, exc, timeout) from exc

    def close(self) -> None:
        """Close the connection (again: nothing)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._stream.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already reset or closed by the server
        self._stream.close()
        self._sock.close()

    def get_extra_info(self, name: str) -> Any:
        """As :meth:`poolwatch.Response.get_extra_info`."""
        return socket_info(name, None if self._closed else self._sock, self._ssl_object)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
