"""What a response can tell about the connection it came on, by the names
httpcore's network streams answer to in ``get_extra_info()`` (and asyncio's
transports to some of them), so that code written against httpx's
``network_stream`` extension works unchanged; and what ``connect_done``
says of a new connection."""

from __future__ import annotations

import select
import ssl
from typing import Any

__all__ = ["dialed", "socket_info"]


def socket_info(name: str, sock: Any, ssl_object: ssl.SSLObject | None) -> Any:
    """``get_extra_info(name)`` for a connection on ``sock`` (a socket, or
    asyncio's stand-in for one; ``None`` once the connection is closed),
    with TLS session ``ssl_object``: ``"client_addr"``, ``"server_addr"``,
    ``"socket"``, ``"ssl_object"``, ``"is_readable"``. Any other name
    gives ``None``, as with httpcore."""
    if name == "socket":
        return sock
    if name == "ssl_object":
        return ssl_object
    if sock is None:
        return True if name == "is_readable" else None  # closed: at its end
    try:
        if name == "client_addr":
            return sock.getsockname()
        if name == "server_addr":
            return sock.getpeername()
        if name == "is_readable":
            return _is_readable(sock.fileno())
    except OSError:
        return None  # closed: the descriptor is gone
    return None


def _is_readable(fd: int) -> bool:
    """Whether a read would return at once: bytes waiting, or the end (as
    httpcore reads it, a closed socket is readable)."""
    if fd < 0:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])  # pragma: no cover - not Linux


def dialed(sock: Any) -> dict[str, Any]:
    """The ``connect_done`` event's details for a socket just connected:
    ``address`` (the peer's) and ``local_address``, as ``getpeername()``
    and ``getsockname()`` give them (``None`` if the socket cannot say)."""
    try:
        return {"address": sock.getpeername(), "local_address": sock.getsockname()}
    except OSError:
        return {"address": None, "local_address": None}
