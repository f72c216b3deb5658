"""Byte streams for a connection's two workers: plain TCP and TLS.

The reader and the writer each get a stream. For plain TCP both use the
socket itself where ``poll()`` exists (the connection keeps the writer's
timeout apart), else two duplicates of it, so that each can carry its own
timeout. For TLS they share one ``ssl.SSLObject`` driven through memory BIOs
(OpenSSL does not allow one ``SSL`` to be used from two threads at once):
the record layer runs under a lock, the socket I/O outside it.

Ordering rule: encrypted bytes leave the outgoing BIO only while the send
lock is held, and are sent before it is released, so TLS records go out in
the order they were made even when the reader has to answer the server
(a TLS 1.3 key update) while the writer uploads.
"""

from __future__ import annotations

import math
import os
import select
import socket
import ssl
import threading
from typing import Protocol, cast

from .._core.socks import SocksError, SocksHandshake
from .._core.tls import offer_http11
from .._core.tunnel import TunnelHandshake, TunnelRefused
from .._models import Proxy

__all__ = [
    "READ_BUFFERS",
    "READ_SIZE",
    "RawSocket",
    "ReadBuffers",
    "ReadStream",
    "TLSSession",
    "TLSSocket",
    "TunnelRefused",
    "WriteStream",
    "open_plain",
    "open_socks",
    "open_tls",
    "open_tls_socket",
    "open_tunnel",
]

# Enough for a TLS record plus headroom; the reader asks for more at once.
_RECV_SIZE = 256 * 1024


class ReadBuffers:
    """Buffers to read into, lent for one read each and given back at once;
    the bytes that came are copied out.

    ``os.read(fd, n)``, ``socket.recv(n)`` and ``SSLObject.read(n)`` make an
    ``n``-byte object and shrink it to what came, which leaves the C
    allocator a hole per read. Worker threads live on from one connection
    to the next, and their heaps grew by about 1 MiB per 2 000 responses
    under a mixed load, all of it free space never given back. A lent
    buffer is allocated once. A pool keeps as many as were ever in use at
    once (at most ``max_spare``), and none is held by an idle connection
    (S7). The pop and append it uses are atomic, so it takes no lock and
    stays usable in a child process after ``fork()``.
    """

    __slots__ = ("_free", "_max_spare", "size")

    def __init__(self, size: int, max_spare: int = 64) -> None:
        self.size = size
        self._max_spare = max_spare
        self._free: list[bytearray] = []  # list.pop() and append() need no lock

    def take(self) -> bytearray:
        """A buffer of :attr:`size` bytes, to :meth:`give` back."""
        try:
            return self._free.pop()
        except IndexError:
            return bytearray(self.size)

    def give(self, buffer: bytearray) -> None:
        """Keep ``buffer`` for the next read, if there is room."""
        if len(self._free) < self._max_spare:
            self._free.append(buffer)

    def read(self, fd: int) -> bytes:
        """One read from the non-blocking ``fd``: up to :attr:`size` bytes,
        ``b""`` at EOF; raises as :func:`os.read` does."""
        buffer = self.take()
        try:
            with memoryview(buffer) as view:
                got = os.readv(fd, (view,))
                return view[:got].tobytes()
        finally:
            self.give(buffer)


# What readers read into, every transport's: a response head's first
# bytes on plain TCP, and decrypted bytes over TLS (OpenSSL hands out at
# most one record, 16 KiB, per read).
READ_SIZE = 16 * 1024
READ_BUFFERS = ReadBuffers(READ_SIZE)
# What TLS readers read the socket's encrypted bytes into: many records
# at once. Each is lent only once the socket is readable, for one read.
_RECORD_BUFFERS = ReadBuffers(_RECV_SIZE, max_spare=8)


class ReadStream(Protocol):
    """What the reader (and the body owner) use."""

    def recv(self, size: int, /) -> bytes: ...
    def settimeout(self, value: float | None, /) -> None: ...
    def shutdown(self, how: int, /) -> None: ...
    def close(self) -> None: ...


class WriteStream(Protocol):
    """What the writer uses."""

    def sendall(self, data: bytes, /) -> None: ...
    def settimeout(self, value: float | None, /) -> None: ...
    def close(self) -> None: ...


class RawSocket(Protocol):
    """What TLS and a CONNECT run over: a socket, or a TLS session to a
    proxy seen as one (TLS inside TLS)."""

    def recv(self, size: int, /) -> bytes: ...
    def sendall(self, data: bytes, /) -> None: ...
    def settimeout(self, value: float | None, /) -> None: ...
    def shutdown(self, how: int, /) -> None: ...
    def close(self) -> None: ...
    def dup(self) -> RawSocket: ...


def open_tunnel(sock: RawSocket, host: str, port: int, proxy: Proxy) -> None:
    """Ask the http(s) ``proxy`` on ``sock`` for a tunnel to ``host:port``
    (RFC 9110 section 9.3.6); on return the socket speaks to the origin."""
    handshake = TunnelHandshake(host, port, proxy.authorization, proxy.headers)
    sock.sendall(handshake.request)
    while not handshake.receive(sock.recv(_RECV_SIZE)):
        pass


def open_socks(sock: socket.socket, proxy: Proxy, host: str, port: int) -> None:
    """Ask the SOCKS proxy on ``sock`` to connect to ``host:port``; on
    return the socket speaks to the target. Raises :class:`SocksError`."""
    if not proxy.resolves_names():
        host = _resolve(host, ipv4_only=proxy.scheme == "socks4")
    handshake = SocksHandshake.for_proxy(proxy, host, port)
    try:
        sock.sendall(handshake.data_to_send())
        while not handshake.done:
            handshake.receive_data(sock.recv(_RECV_SIZE))
            data = handshake.data_to_send()
            if data:
                sock.sendall(data)
    except TimeoutError:
        raise
    except OSError as exc:  # a reset: the proxy's doing, like a refusal
        raise SocksError(f"the connection to the proxy failed: {exc}") from exc


def _resolve(host: str, ipv4_only: bool) -> str:
    """``host``'s first address, resolved here for a proxy that takes
    addresses only."""
    family = socket.AF_INET if ipv4_only else socket.AF_UNSPEC
    try:
        infos = socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)
    except OSError as exc:
        raise SocksError(f"could not resolve {host} locally: {exc}") from exc
    return str(infos[0][4][0])


def open_plain(sock: socket.socket) -> tuple[ReadStream, WriteStream]:
    """Reader and writer streams over a plain TCP socket: the socket itself
    for both where the connection can wait on it with ``poll()`` (it keeps
    the writer's timeout apart), else a duplicate for the writer."""
    if hasattr(select, "poll"):
        return sock, sock
    return sock, sock.dup()


class TLSSession:
    """One TLS session shared by a reader and a writer stream."""

    def __init__(self, sock: RawSocket, context: ssl.SSLContext, server_hostname: str) -> None:
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        offer_http11(context)
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)
        self.lock = threading.Lock()  # guards tls and both BIOs
        self.send_lock = threading.Lock()  # held from draining outgoing until sent

    def handshake(self) -> None:
        """Complete the handshake on the caller's thread (before the workers
        start); the socket's timeout bounds each wait."""
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush(self.sock)
                if not _pull_into(self, self.sock, _poller_for(self.sock)):
                    raise ConnectionResetError(
                        "the server closed the connection during the TLS handshake"
                    ) from None
        self.flush(self.sock)

    def flush(self, sock: RawSocket) -> None:
        """Send whatever TLS produced (send lock not held by the caller)."""
        with self.send_lock:
            with self.lock:
                data = self.outgoing.read()
            if data:
                sock.sendall(data)

    @property
    def version(self) -> str | None:
        """The negotiated protocol version, e.g. ``"TLSv1.3"``."""
        return self.tls.version()

    def getpeercert(self) -> dict[str, object] | None:
        """The verified peer certificate."""
        return self.tls.getpeercert()  # type: ignore[return-value]


class _TLSReader:
    def __init__(self, session: TLSSession, sock: RawSocket | None = None) -> None:
        self._session = session
        self._sock = session.sock if sock is None else sock
        self._poller = _poller_for(self._sock)

    def recv(self, size: int, /) -> bytes:
        session = self._session
        while True:
            buffer = READ_BUFFERS.take()
            try:
                with session.lock, memoryview(buffer) as view:
                    try:
                        # With a buffer, read() fills it and returns a count.
                        got = cast(int, session.tls.read(min(size, len(buffer)), buffer))
                        data: bytes | None = view[:got].tobytes()
                    except ssl.SSLWantReadError:
                        data = None
                    except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                        # close_notify, or (commonly) a bare TCP close: the end.
                        data = b""
                    answer = session.outgoing.pending
            finally:
                READ_BUFFERS.give(buffer)
            if answer:
                session.flush(self._sock)
            if data is not None:
                return data
            self._pull()

    def _pull(self) -> None:
        """Feed the TLS session the socket's next bytes (or its EOF)."""
        _pull_into(self._session, self._sock, self._poller)

    def settimeout(self, value: float | None, /) -> None:
        self._sock.settimeout(value)

    def shutdown(self, how: int, /) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()


def _poller_for(sock: RawSocket) -> select.poll | None:
    """A poll object watching ``sock`` for bytes, if it is a socket and
    ``poll()`` exists (``select()`` fails past descriptor 1023)."""
    if not isinstance(sock, socket.socket) or not hasattr(select, "poll"):
        return None
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return poller


def _pull_into(session: TLSSession, sock: RawSocket, poller: select.poll | None) -> bool:
    """Feed ``session`` the next encrypted bytes from ``sock``, or its EOF
    (then return False); raise TimeoutError after the socket's timeout.

    With a ``poller``, wait for the socket to be readable first and only
    then read into a lent buffer: the wait holds no buffer, and an idle
    connection's reader waits here. ``recv(n)`` would hold an ``n``-byte
    object through the wait (S7) and leave the allocator a hole when it
    shrinks to what came."""
    if poller is None:
        data = sock.recv(_RECV_SIZE)
        with session.lock:
            if data:
                session.incoming.write(data)
            else:
                session.incoming.write_eof()
        return bool(data)
    assert isinstance(sock, socket.socket)
    timeout = sock.gettimeout()
    wait = -1 if timeout is None else math.ceil(timeout * 1000)
    while True:
        if not poller.poll(wait):
            raise TimeoutError("timed out")
        buffer = _RECORD_BUFFERS.take()
        try:
            with memoryview(buffer) as view:
                try:
                    got = os.readv(sock.fileno(), (view,))
                except BlockingIOError:
                    continue  # woken for nothing: wait again
                with session.lock:
                    if got:
                        session.incoming.write(view[:got])
                    else:
                        session.incoming.write_eof()
                return bool(got)
        finally:
            _RECORD_BUFFERS.give(buffer)


class _TLSWriter:
    def __init__(self, session: TLSSession, sock: RawSocket) -> None:
        self._session = session
        self._sock = sock

    def sendall(self, data: bytes, /) -> None:
        session = self._session
        with session.send_lock:
            with session.lock:
                session.tls.write(data)
                encrypted = session.outgoing.read()
            self._sock.sendall(encrypted)

    def settimeout(self, value: float | None, /) -> None:
        self._sock.settimeout(value)

    def close(self) -> None:
        self._sock.close()


class TLSSocket:
    """A TLS session seen as a socket, to run a CONNECT and then TLS to the
    origin inside the TLS connection to an https proxy. Each copy made by
    :meth:`dup` has its own socket, so that the reader and the writer of
    the inner session keep their own timeouts."""

    def __init__(self, session: TLSSession, sock: RawSocket) -> None:
        self._sock = sock
        self._reader = _TLSReader(session, sock)
        self._writer = _TLSWriter(session, sock)
        self._session = session

    def recv(self, size: int, /) -> bytes:
        return self._reader.recv(size)

    def sendall(self, data: bytes, /) -> None:
        self._writer.sendall(data)

    def settimeout(self, value: float | None, /) -> None:
        self._sock.settimeout(value)

    def shutdown(self, how: int, /) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()

    def dup(self) -> TLSSocket:
        return TLSSocket(self._session, self._sock.dup())


def open_tls_socket(
    sock: socket.socket, context: ssl.SSLContext, server_hostname: str
) -> TLSSocket:
    """Handshake with an https proxy on ``sock``; the session as a socket."""
    session = TLSSession(sock, context, server_hostname)
    session.handshake()
    return TLSSocket(session, sock)


def open_tls(
    sock: RawSocket, context: ssl.SSLContext, server_hostname: str
) -> tuple[ReadStream, WriteStream, TLSSession]:
    """Handshake on ``sock``; return reader and writer streams over the session."""
    session = TLSSession(sock, context, server_hostname)
    session.handshake()
    return _TLSReader(session), _TLSWriter(session, sock.dup()), session
