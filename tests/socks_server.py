"""A small threaded SOCKS server for the tests: SOCKS5 (RFC 1928) with
optional username/password authentication (RFC 1929), and SOCKS4/4a, the
CONNECT command only, on 127.0.0.1.

Each client gets a thread that does the handshake, connects to the target
and relays bytes both ways until either side closes. ``requests`` records
``(version, address type, host, port)`` for each CONNECT, so tests can tell
a name the proxy resolved from an address the client resolved.
"""

from __future__ import annotations

import ipaddress
import selectors
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from tests.servers import RawServer, ServerConnection

__all__ = ["SocksServer", "socks_server"]

_RELAY_SIZE = 65536


class SocksServer(RawServer):
    """SOCKS on loopback; ``credentials`` (user, password) makes SOCKS5
    require them. Only loopback targets are ever connected to."""

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.credentials = credentials
        self.requests: list[tuple[int, str, str, int]] = []
        self._outbound: list[socket.socket] = []
        super().__init__(self._serve)

    def url(self, path: str = "", scheme: str = "socks5", auth: str | None = None) -> str:
        """The proxy URL, e.g. ``socks5h://user:pw@127.0.0.1:PORT``."""
        userinfo = f"{auth}@" if auth else ""
        return f"{scheme}://{userinfo}127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        with self._lock:
            outbound = list(self._outbound)
        for sock in outbound:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        super().stop()

    # -- one client ------------------------------------------------------------

    def _serve(self, conn: ServerConnection) -> None:
        sock = conn.sock
        version = _recv_exactly(sock, 1)
        if version == b"\x05":
            target = self._socks5(sock)
        elif version == b"\x04":
            target = self._socks4(sock)
        else:
            return
        if target is not None:
            upstream, reply = target
            try:
                sock.sendall(reply)
                _relay(sock, upstream)
            finally:
                upstream.close()

    def _socks5(self, sock: socket.socket) -> tuple[socket.socket, bytes] | None:
        count = _recv_exactly(sock, 1)[0]
        methods = _recv_exactly(sock, count)
        wanted = 0x02 if self.credentials else 0x00
        if wanted not in methods:
            sock.sendall(b"\x05\xff")
            return None
        sock.sendall(bytes([5, wanted]))
        if self.credentials and not self._authenticated(sock):
            return None
        _, command, _, kind = _recv_exactly(sock, 4)
        if kind == 0x01:
            host = str(ipaddress.IPv4Address(_recv_exactly(sock, 4)))
        elif kind == 0x04:
            host = str(ipaddress.IPv6Address(_recv_exactly(sock, 16)))
        elif kind == 0x03:
            host = _recv_exactly(sock, _recv_exactly(sock, 1)[0]).decode("idna")
        else:
            sock.sendall(b"\x05\x08\x00\x01" + bytes(6))
            return None
        port = int.from_bytes(_recv_exactly(sock, 2), "big")
        with self._lock:
            self.requests.append((5, {1: "ipv4", 3: "domain", 4: "ipv6"}[kind], host, port))
        if command != 0x01:
            sock.sendall(b"\x05\x07\x00\x01" + bytes(6))
            return None
        upstream = self._connect(host, port)
        if upstream is None:
            sock.sendall(b"\x05\x05\x00\x01" + bytes(6))  # connection refused
            return None
        bound_host, bound_port = upstream.getsockname()[:2]
        bound = ipaddress.ip_address(bound_host)
        kind_byte = b"\x01" if bound.version == 4 else b"\x04"
        return upstream, b"\x05\x00\x00" + kind_byte + bound.packed + bound_port.to_bytes(2, "big")

    def _authenticated(self, sock: socket.socket) -> bool:
        assert self.credentials is not None
        _, length = _recv_exactly(sock, 2)
        user = _recv_exactly(sock, length).decode()
        password = _recv_exactly(sock, _recv_exactly(sock, 1)[0]).decode()
        ok = (user, password) == self.credentials
        sock.sendall(b"\x01\x00" if ok else b"\x01\x01")
        return ok

    def _socks4(self, sock: socket.socket) -> tuple[socket.socket, bytes] | None:
        command, port_hi, port_lo = _recv_exactly(sock, 3)
        address = _recv_exactly(sock, 4)
        _recv_until_nul(sock)  # the user id
        if address[:3] == b"\0\0\0" and address[3]:
            kind, host = "domain", _recv_until_nul(sock).decode("idna")
        else:
            kind, host = "ipv4", str(ipaddress.IPv4Address(address))
        port = port_hi << 8 | port_lo
        with self._lock:
            self.requests.append((4, kind, host, port))
        upstream = self._connect(host, port) if command == 0x01 else None
        if upstream is None:
            sock.sendall(b"\x00\x5b" + bytes(6))
            return None
        return upstream, b"\x00\x5a" + bytes(6)

    def _connect(self, host: str, port: int) -> socket.socket | None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            return None  # never leave loopback
        try:
            upstream = socket.create_connection((host, port), timeout=5)
        except OSError:
            return None
        upstream.settimeout(None)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._outbound.append(upstream)
        return upstream


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("client went away during the SOCKS handshake")
        data += chunk
    return data


def _recv_until_nul(sock: socket.socket) -> bytes:
    data = b""
    while (byte := _recv_exactly(sock, 1)) != b"\0":
        data += byte
    return data


def _relay(client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways until one side closes."""
    peers = {client: upstream, upstream: client}
    with selectors.DefaultSelector() as selector:
        for sock in peers:
            selector.register(sock, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = source.recv(_RELAY_SIZE)
                    if not data:
                        return
                    peers[source].sendall(data)
                except OSError:
                    return


@contextmanager
def socks_server(credentials: tuple[str, str] | None = None) -> Iterator[SocksServer]:
    server = SocksServer(credentials)
    try:
        yield server
    finally:
        server.stop()
