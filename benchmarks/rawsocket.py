"""The floor: a raw socket loop with prebuilt request bytes, parsing only
the status and Content-Length of each response. No client can spend less.
"""

from __future__ import annotations

import os
import socket
import threading
from queue import SimpleQueue
from typing import Generic, TypeVar

from .registry import ClientOptions, check_status
from .spec import HOST, ONE_MIB

__all__ = ["RawSocketClient", "ThreadedRawSocketClient"]


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


class ThreadedRawSocketClient:
    """The raw socket loop on one kept connection, split across threads as
    poolwatch splits a request: the caller hands the request to a writer
    thread, which sends it and wakes a reader thread, which reads the
    response and wakes the caller. Each hand-off is an ``eventfd`` (a
    queue where there is none), as in poolwatch. What it costs over
    :class:`RawSocketClient` is the price of the design itself, with none
    of poolwatch's Python work. Sequential use only (one request at a
    time)."""

    def __init__(self, opts: ClientOptions) -> None:
        self.raw = RawSocketClient(opts)
        self.sock, self.buf = self.raw._checkout()
        self.to_writer: _Signal[tuple[bytes, str] | None] = _Signal()
        self.to_reader: _Signal[str | None] = _Signal()
        self.to_caller: _Signal[int | BaseException] = _Signal()
        self.threads = [
            threading.Thread(target=self._write_loop, name="raw-writer", daemon=True),
            threading.Thread(target=self._read_loop, name="raw-reader", daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def exchange(self, method: str, path: str, body: bytes = b"") -> int:
        """Send one request, read its response; the body length."""
        self.to_writer.put((self.raw._request_bytes(method, path, len(body)) + body, path))
        result = self.to_caller.get()
        if isinstance(result, BaseException):
            raise result
        return result

    def _write_loop(self) -> None:
        while (job := self.to_writer.get()) is not None:
            data, path = job
            try:
                self.sock.sendall(data)
            except OSError as exc:
                self.to_caller.put(exc)
                continue
            self.to_reader.put(path)
        self.to_reader.put(None)

    def _read_loop(self) -> None:
        while (path := self.to_reader.get()) is not None:
            try:
                result: int | BaseException = _read_response(self.sock, path, self.buf)
            except (OSError, ValueError) as exc:
                result = exc
            self.to_caller.put(result)

    def close(self) -> None:
        """Stop both threads, then close the socket."""
        self.to_writer.put(None)
        for thread in self.threads:
            thread.join()
        for signal in (self.to_writer, self.to_reader, self.to_caller):
            signal.close()
        self.raw.close()


T = TypeVar("T")


class _Signal(Generic[T]):
    """A one-slot hand-off between two threads: an ``eventfd`` to wake the
    taker (written without the GIL, as poolwatch's are), or a queue."""

    def __init__(self) -> None:
        self.item: T | None = None
        self.queue: SimpleQueue[T] | None = None
        self.fd = -1
        if hasattr(os, "eventfd"):
            self.fd = os.eventfd(0, os.EFD_CLOEXEC)
        else:
            self.queue = SimpleQueue()

    def put(self, item: T) -> None:
        if self.queue is not None:
            self.queue.put(item)
            return
        self.item = item
        os.eventfd_write(self.fd, 1)

    def get(self) -> T:
        if self.queue is not None:
            return self.queue.get()
        os.eventfd_read(self.fd)
        item, self.item = self.item, None
        return item  # type: ignore[return-value]  # put() stored it

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
