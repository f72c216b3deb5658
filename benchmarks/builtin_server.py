"""The built-in benchmark server: a small asyncio HTTP/1.1 server (on uvloop
when it is installed), run as its own process so it never shares the
client's GIL.

Run as ``python -m benchmarks.builtin_server [--cpu N]``. It listens on
127.0.0.1, port 0, prints ``PORT <n>`` once it accepts connections, and
exits on SIGTERM or when its standard input closes (so it cannot outlive
the harness that started it).

Paths: ``GET /tiny`` (13 bytes), ``GET /1m`` (1 MiB), ``POST /post`` (any
Content-Length body, replies ``ok``), ``GET /stats`` (JSON with the number
of connections accepted so far, this one included). ``Connection: close``
in a request closes the connection after the response. Request bodies are
counted and dropped, never buffered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
from typing import cast

from .servers import serve_until_stopped
from .spec import HOST, ONE_MIB, POST_REPLY, TINY_BODY

__all__ = ["HTTPProtocol", "ServerState", "main"]

# A request head larger than this is not from the harness: drop the client.
MAX_HEAD = 64 * 1024


def _response(body: bytes, *, close: bool, content_type: bytes = b"text/plain") -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
        content_type,
        len(body),
    )
    if close:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + body


# Responses are prebuilt: the server should cost as little as possible.
_CANNED = {
    (b"GET", b"/tiny"): TINY_BODY,
    (b"GET", b"/1m"): b"x" * ONE_MIB,
    (b"POST", b"/post"): POST_REPLY,
}
_PREBUILT = {
    (key, close): _response(body, close=close)
    for key, body in _CANNED.items()
    for close in (False, True)
}
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_UNSUPPORTED = b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class ServerState:
    """What the server has seen, shared by every connection."""

    def __init__(self) -> None:
        self.accepted = 0
        self.requests = 0
        self.transports: set[asyncio.BaseTransport] = set()


class HTTPProtocol(asyncio.Protocol):
    """One connection: parses heads, skips bodies, answers in order."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.pending: tuple[bytes, bytes, bool] | None = None  # method, path, close
        self.body_left = 0  # bytes of the pending request's body not yet seen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count the connection."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.state.accepted += 1
        self.state.transports.add(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection."""
        if self.transport is not None:
            self.state.transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        """Parse as many requests as ``data`` completes, and answer them."""
        self.buffer += data
        while self.transport is not None and not self.transport.is_closing():
            if self.pending is None and not self._parse_head():
                return
            if self.body_left:
                taken = min(self.body_left, len(self.buffer))
                del self.buffer[:taken]
                self.body_left -= taken
                if self.body_left:
                    return
            assert self.pending is not None
            method, path, close = self.pending
            self.pending = None
            self._answer(method, path, close)

    def _parse_head(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD and self.transport is not None:
                self.transport.close()
            return False
        head = bytes(self.buffer[:end]).lower()
        del self.buffer[: end + 4]
        request_line, _, fields = head.partition(b"\r\n")
        parts = request_line.split(b" ")
        method, path = parts[0].upper(), parts[1] if len(parts) > 1 else b"/"
        close = b"connection: close" in fields or request_line.endswith(b"http/1.0")
        if b"transfer-encoding:" in fields:
            method = b"CHUNKED"  # not needed by the harness: refuse it
        self.pending = (method, path, close)
        self.body_left = _content_length(fields)
        return True

    def _answer(self, method: bytes, path: bytes, close: bool) -> None:
        transport = self.transport
        assert transport is not None
        self.state.requests += 1
        response = _PREBUILT.get(((method, path), close))
        if response is None:
            if method == b"GET" and path == b"/stats":
                body = json.dumps(
                    {"accepted": self.state.accepted, "requests": self.state.requests}
                ).encode()
                response = _response(body, close=close, content_type=b"application/json")
            else:
                close = True
                response = _UNSUPPORTED if method == b"CHUNKED" else _NOT_FOUND
        transport.write(response)
        if close:
            transport.close()


def _content_length(fields: bytes) -> int:
    start = fields.find(b"content-length:")
    if start < 0:
        return 0
    end = fields.find(b"\r\n", start)
    return int(fields[start + 15 : end if end >= 0 else None])


async def serve(cpu: int | None) -> None:
    """Listen, print the port, and serve until SIGTERM or EOF on stdin."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    loop = asyncio.get_running_loop()
    state = ServerState()
    server = await loop.create_server(lambda: HTTPProtocol(state), HOST, 0, backlog=4096)
    await serve_until_stopped(server)
    for transport in list(state.transports):
        transport.close()
    await server.wait_closed()


def main(argv: list[str] | None = None) -> None:
    """Parse ``--cpu`` and serve, on uvloop when it is installed."""
    parser = argparse.ArgumentParser(description="the poolwatch benchmark server")
    parser.add_argument("--cpu", type=int, default=None, help="pin the server to this core")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.cpu))
    else:
        uvloop.run(serve(args.cpu))


if __name__ == "__main__":
    main()
