"""The floor: a raw socket loop with prebuilt request bytes, parsing only
the status and Content-Length of each response. No client can spend less.
"""

from __future__ import annotations

import socket
import threading

from .registry import ClientOptions, check_status
from .spec import HOST, ONE_MIB

__all__ = ["RawSocketClient"]


class RawSocketClient:
    """Prebuilt request bytes on plain sockets, the response head parsed only
    for its status and Content-Length: what any client must at least spend.

    Idle sockets wait on a free list, so threads share them as a pool
    would; with keep-alive off each request has a socket of its own.
    """

    def __init__(self, opts: ClientOptions) -> None:
        self.port = int(opts.base_url.rsplit(":", 1)[1])
        self.keep_alive = opts.keep_alive
        self.lock = threading.Lock()
        self.idle: list[tuple[socket.socket, memoryview]] = []  # under lock
        self.socks: list[socket.socket] = []  # under lock: every kept socket
        self.requests: dict[tuple[str, str, int], bytes] = {}

    def _request_bytes(self, method: str, path: str, length: int) -> bytes:
        key = (method, path, length)
        data = self.requests.get(key)
        if data is None:
            head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            if method == "POST":
                head += f"Content-Length: {length}\r\n"
            if not self.keep_alive:
                head += "Connection: close\r\n"
            data = self.requests[key] = (head + "\r\n").encode()
        return data

    def _checkout(self) -> tuple[socket.socket, memoryview]:
        with self.lock:
            if self.idle:
                return self.idle.pop()
        sock = socket.create_connection((HOST, self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.keep_alive:
            with self.lock:
                self.socks.append(sock)
        return sock, memoryview(bytearray(ONE_MIB))  # a whole body per recv, at best

    def exchange(self, method: str, path: str, body: bytes = b"") -> int:
        """Send one request, read its response; the body length."""
        sock, buf = self._checkout()
        if not self.keep_alive:
            with sock:
                sock.sendall(self._request_bytes(method, path, len(body)) + body)
                return _read_response(sock, path, buf)
        sock.sendall(self._request_bytes(method, path, len(body)) + body)
        length = _read_response(sock, path, buf)
        with self.lock:
            self.idle.append((sock, buf))
        return length

    def close(self) -> None:
        """Close every socket."""
        with self.lock:
            socks, self.socks, self.idle = self.socks, [], []
        for sock in socks:
            sock.close()


def _read_response(sock: socket.socket, path: str, buf: memoryview) -> int:
    data = b""
    end = -1
    while end < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError(f"{path}: the server closed the connection")
        data += chunk
        end = data.find(b"\r\n\r\n")
    head = data[:end].lower()
    check_status(int(head[9:12]), path)
    start = head.find(b"\r\ncontent-length:")
    if start < 0:
        raise ValueError(f"{path}: no Content-Length in {head!r}")
    stop = head.find(b"\r\n", start + 17)
    length = int(head[start + 17 : stop if stop >= 0 else len(head)])
    left = length - (len(data) - end - 4)
    while left > 0:
        n = sock.recv_into(buf, min(left, len(buf)))
        if not n:
            raise ConnectionResetError(f"{path}: the body ended early")
        left -= n
    return length
