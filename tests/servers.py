"""Loopback servers for the tests: a well-behaved HTTP/1.1 server and a
scripted raw-socket server for faults.

Both listen on 127.0.0.1 port 0, run one thread per connection, count what
they see, and stop completely (every socket closed, every thread joined) in
``stop()``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import h11

__all__ = ["HTTPServer", "RawServer", "ServerConnection", "http_server", "raw_server"]


@dataclass
class ServerConnection:
    """One accepted connection, as a handler sees it."""

    sock: socket.socket
    server: RawServer
    index: int
    closed_by_peer: threading.Event = field(default_factory=threading.Event)

    def recv_until(self, marker: bytes, limit: int = 1 << 20) -> bytes:
        """Read until ``marker`` has arrived (or EOF); return all read."""
        data = b""
        while marker not in data and len(data) < limit:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data

    def recv_request_head(self) -> bytes:
        """Read a request's head (up to the blank line)."""
        return self.recv_until(b"\r\n\r\n")

    def wait_for_close(self, timeout: float = 10.0) -> bool:
        """Block until the client closes (EOF or reset). Returns whether it did."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except TimeoutError:
            return False
        except OSError:
            pass
        self.closed_by_peer.set()
        return True


class RawServer:
    """Accepts connections and runs ``handler(conn)`` for each in a thread.

    The handler scripts the bytes exchanged; when it returns, the socket is
    closed. ``accepted`` counts connections; ``connection_closed`` is set
    each time a handler finishes.
    """

    def __init__(self, handler: Callable[[ServerConnection], None], host: str = "127.0.0.1"):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(128)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self._handler = handler
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._stopping = False
        self.accepted = 0
        self.handlers_done = 0
        self.handler_done = threading.Condition(self._lock)
        self._acceptor = threading.Thread(target=self._accept_loop, name="test-server-accept")
        self._acceptor.start()

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.origin + path

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            # Replies go out in several writes: without this, Nagle's algorithm
            # holds the later ones for the client's delayed ACK (40 ms).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._stopping:
                    sock.close()
                    return
                self.accepted += 1
                conn = ServerConnection(sock, self, self.accepted)
                self._socks.append(sock)
                thread = threading.Thread(
                    target=self._run, args=(conn,), name=f"test-server-conn-{self.accepted}"
                )
                self._threads.append(thread)
            thread.start()

    def _run(self, conn: ServerConnection) -> None:
        try:
            self._handler(conn)
        except OSError:
            pass
        finally:
            try:
                conn.sock.close()
            finally:
                with self._lock:
                    self.handlers_done += 1
                    self.handler_done.notify_all()

    def wait_handlers_done(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until ``count`` connection handlers have finished."""
        with self._lock:
            return self.handler_done.wait_for(lambda: self.handlers_done >= count, timeout)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            socks = list(self._socks)
        try:
            # Wake the accept loop: shutdown does it on Linux.
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._acceptor.join()
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in list(self._threads):
            thread.join(10)


@dataclass
class Reply:
    """A response the HTTP server sends."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | Iterator[bytes] = b""
    chunked: bool = False
    close: bool = False


Route = Callable[[h11.Request, bytes], Reply]


class HTTPServer(RawServer):
    """A well-behaved HTTP/1.1 keep-alive server (h11 on the server side).

    Built-in paths:

    * ``/bytes/N``: N bytes with Content-Length; ``/chunked/N``: N bytes chunked
    * ``/stream``: an endless chunked body
    * ``/close``: ``Connection: close``; ``/empty``: 204; ``/zero``: Content-Length 0
    * ``/echo``: the request body back; ``/wait/NAME``: blocks until the test
      calls ``release(NAME)``
    * anything else: ``hello world!\\n``

    ``routes`` maps extra paths to functions. ``requests`` records
    ``(connection index, method, path, body)`` for each request.
    """

    def __init__(self, routes: dict[str, Route] | None = None, host: str = "127.0.0.1"):
        self.routes = routes or {}
        self.requests: list[tuple[int, str, str, bytes]] = []
        self.gates: dict[str, threading.Event] = {}
        self.gates_lock = threading.Lock()
        super().__init__(self._serve, host)

    def gate(self, name: str) -> threading.Event:
        with self.gates_lock:
            return self.gates.setdefault(name, threading.Event())

    def release(self, name: str) -> None:
        self.gate(name).set()

    def stop(self) -> None:
        with self.gates_lock:
            for gate in self.gates.values():
                gate.set()
        super().stop()

    def connections_seen(self) -> set[int]:
        return {index for index, *_ in self.requests}

    def _serve(self, conn: ServerConnection) -> None:
        proto = h11.Connection(h11.SERVER)
        while True:
            request, body = self._read_request(conn, proto)
            if request is None:
                return
            path = request.target.decode()
            with self._lock:
                self.requests.append((conn.index, request.method.decode(), path, body))
            reply = self._reply(request, body, path)
            if reply is None:
                return
            if not self._send(conn, proto, reply):
                return
            if proto.our_state is not h11.DONE or proto.their_state is not h11.DONE:
                return
            proto.start_next_cycle()

    def _read_request(
        self, conn: ServerConnection, proto: h11.Connection
    ) -> tuple[h11.Request | None, bytes]:
        request = None
        body = b""
        while True:
            event = proto.next_event()
            if event is h11.NEED_DATA:
                data = conn.sock.recv(65536)
                proto.receive_data(data)
                if not data and proto.their_state is h11.IDLE:
                    return None, b""
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return request, body
            elif isinstance(event, h11.ConnectionClosed):
                return None, b""

    def _reply(self, request: h11.Request, body: bytes, path: str) -> Reply | None:
        base = path.split("?", 1)[0]
        if base in self.routes:
            return self.routes[base](request, body)
        parts = base.strip("/").split("/")
        if parts[0] == "bytes":
            return Reply(body=b"x" * int(parts[1]))
        if parts[0] == "chunked":
            size = int(parts[1])
            return Reply(body=iter([b"x" * (size // 2), b"x" * (size - size // 2)]), chunked=True)
        if parts[0] == "stream":
            return Reply(body=_endless(), chunked=True)
        if parts[0] == "close":
            return Reply(body=b"bye\n", close=True)
        if parts[0] == "empty":
            return Reply(status=204)
        if parts[0] == "zero":
            return Reply(body=b"")
        if parts[0] == "echo":
            return Reply(body=body)
        if parts[0] == "wait":
            if not self.gate(parts[1]).wait(30):
                return None
            return Reply(body=b"released\n")
        return Reply(body=b"hello world!\n", headers=[("Content-Type", "text/plain")])

    def _send(self, conn: ServerConnection, proto: h11.Connection, reply: Reply) -> bool:
        headers = list(reply.headers)
        if reply.chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        elif isinstance(reply.body, bytes) and reply.status not in (204, 304):
            headers.append(("Content-Length", str(len(reply.body))))
        if reply.close:
            headers.append(("Connection", "close"))
        try:
            data = proto.send(h11.Response(status_code=reply.status, headers=headers))
            conn.sock.sendall(data)
            chunks = [reply.body] if isinstance(reply.body, bytes) else reply.body
            for chunk in chunks:
                if chunk:
                    conn.sock.sendall(proto.send(h11.Data(data=chunk)))
            conn.sock.sendall(proto.send(h11.EndOfMessage()))
        except OSError:
            return False
        return True


def _endless() -> Iterator[bytes]:
    while True:
        yield b"y" * 1024


@contextmanager
def http_server(
    routes: dict[str, Route] | None = None, host: str = "127.0.0.1"
) -> Iterator[HTTPServer]:
    server = HTTPServer(routes, host)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def raw_server(
    handler: Callable[[ServerConnection], None], host: str = "127.0.0.1"
) -> Iterator[RawServer]:
    server = RawServer(handler, host)
    try:
        yield server
    finally:
        server.stop()


def answering(data: bytes) -> Callable[[ServerConnection], None]:
    """A raw server handler: read one request head, send ``data``, hang up."""

    def handler(conn: ServerConnection) -> None:
        conn.recv_request_head()
        conn.sock.sendall(data)

    return handler
