"""A connection after ``101 Switching Protocols``, for asyncio: see
:mod:`poolwatch._sync.upgraded`."""

from __future__ import annotations

import asyncio
import errno
from types import TracebackType
from typing import Any

from typing_extensions import Self

from .._core.netinfo import socket_info
from .._core.switched import SwitchedStream
from .exchange import within

__all__ = ["AsyncUpgradedStream"]


class AsyncUpgradedStream(SwitchedStream):
    """The connection a ``101`` response came on, as a byte stream for the
    protocol it switched to: :meth:`read`, :meth:`write`, :meth:`aclose`
    (``async with`` closes it), and :meth:`get_extra_info` as on the
    response. Errors are poolwatch's, naming the request that switched."""

    _timeouts = (TimeoutError, asyncio.TimeoutError)  # distinct on Python 3.10

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        first: bytes,
        *,
        method: str,
        url: str,
    ) -> None:
        super().__init__(first, method=method, url=url)
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int = 65536, timeout: float | None = None) -> bytes:
        """Up to ``max_bytes`` bytes, waiting up to ``timeout`` seconds
        (``None``: for ever) for some; ``b""`` once the server has closed.
        Raises :class:`~poolwatch.ReadError` once closed here, as the sync
        stream does (asyncio's reader would say end of stream)."""
        if self._first:
            return self._take_first(max_bytes)
        if self._closed:
            raise self._error(False, OSError(errno.EBADF, "the stream is closed"), timeout)
        try:
            return await within(timeout, self._reader.read(max_bytes))
        except (OSError, asyncio.TimeoutError) as exc:
            raise self._error(False, exc, timeout) from exc

    async def write(self, data: bytes, timeout: float | None = None) -> None:
        """Send all of ``data``, within ``timeout`` seconds (``None``: no limit)."""
        try:
            self._writer.write(data)
            await within(timeout, self._writer.drain())
        except (OSError, RuntimeError, asyncio.TimeoutError) as exc:  # RuntimeError: closed
            raise self._error(True, exc, timeout) from exc

    def close(self) -> None:
        """Close the connection at once, without waiting (again: nothing)."""
        if not self._closed:
            self._closed = True
            self._writer.transport.abort()

    async def aclose(self) -> None:
        """Close the connection (again: nothing)."""
        self.close()
        await asyncio.sleep(0)  # let the loop drop the socket

    def get_extra_info(self, name: str) -> Any:
        """As :meth:`poolwatch.AsyncResponse.get_extra_info`."""
        writer = self._writer
        sock = None if self._closed else writer.get_extra_info("socket")
        return socket_info(name, sock, writer.get_extra_info("ssl_object"))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
