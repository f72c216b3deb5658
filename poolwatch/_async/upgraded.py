"""A connection after ``101 Switching Protocols``, for asyncio: see
:mod:`poolwatch._sync.upgraded`."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

from .._core.netinfo import socket_info
from .._exceptions import ReadError, ReadTimeout, WriteError, WriteTimeout
from .exchange import within

__all__ = ["AsyncUpgradedStream"]


class AsyncUpgradedStream:
    """The connection a ``101`` response came on, as a byte stream for the
    protocol it switched to: :meth:`read`, :meth:`write`, :meth:`aclose`
    (``async with`` closes it), and :meth:`get_extra_info` as on the
    response. Errors are poolwatch's, naming the request that switched."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        first: bytes,
        *,
        method: str,
        url: str,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._first = first  # what came with the 101 head: the new protocol's
        self._closed = False
        self.method = method
        self.url = url

    async def read(self, max_bytes: int = 65536, timeout: float | None = None) -> bytes:
        """Up to ``max_bytes`` bytes, waiting up to ``timeout`` seconds
        (``None``: for ever) for some; ``b""`` once the server has closed."""
        if self._first:
            data, self._first = self._first[:max_bytes], self._first[max_bytes:]
            return data
        try:
            return await within(timeout, self._reader.read(max_bytes))
        except (TimeoutError, asyncio.TimeoutError) as exc:  # distinct on 3.10
            raise ReadTimeout(
                f"nothing to read within {timeout}s", method=self.method, url=self.url
            ) from exc
        except OSError as exc:
            raise ReadError(
                f"reading the switched connection failed: {exc}", method=self.method, url=self.url
            ) from exc

    async def write(self, data: bytes, timeout: float | None = None) -> None:
        """Send all of ``data``, within ``timeout`` seconds (``None``: no limit)."""
        try:
            self._writer.write(data)
            await within(timeout, self._writer.drain())
        except (TimeoutError, asyncio.TimeoutError) as exc:
            raise WriteTimeout(
                f"could not write within {timeout}s", method=self.method, url=self.url
            ) from exc
        except (OSError, RuntimeError) as exc:  # RuntimeError: written after close
            raise WriteError(
                f"writing the switched connection failed: {exc}", method=self.method, url=self.url
            ) from exc

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

    async def __aenter__(self) -> AsyncUpgradedStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<AsyncUpgradedStream {state} {self.method} {self.url}>"
