"""The client side of a SOCKS handshake, without I/O.

SOCKS5 is RFC 1928, with the username/password method of RFC 1929;
SOCKS4 and its 4a extension (a host name for the proxy to resolve) are the
de facto protocol. Only the CONNECT command is spoken: on success the
connection carries bytes to and from the target as if connected to it.

Theory of operation (h11's shape): the caller sends what
:meth:`SocksHandshake.data_to_send` returns, feeds whatever it receives to
:meth:`SocksHandshake.receive_data` (``b""`` for EOF), and repeats until
:attr:`SocksHandshake.done`. A refusal raises :class:`SocksError` saying
why. The steps are written as a generator that yields how many bytes it
needs next; the bytes arrive however the network splits them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Generator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._models import Proxy

__all__ = ["SOCKS_SCHEMES", "SocksError", "SocksHandshake"]

# The proxy URL schemes understood; "h" and "a" mean the proxy resolves names.
SOCKS_SCHEMES = frozenset({"socks5", "socks5h", "socks4", "socks4a"})

_NO_AUTH, _USER_PASSWORD, _NO_METHOD = 0x00, 0x02, 0xFF
_CONNECT = 0x01
_IPV4, _DOMAIN, _IPV6 = 0x01, 0x03, 0x04
_SOCKS5_REPLIES = {
    0x01: "general SOCKS server failure",
    0x02: "connection not allowed by ruleset",
    0x03: "network unreachable",
    0x04: "host unreachable",
    0x05: "connection refused by the target",
    0x06: "TTL expired",
    0x07: "command not supported",
    0x08: "address type not supported",
}
_SOCKS4_GRANTED = 0x5A
_SOCKS4_REPLIES = {
    0x5B: "request rejected or failed",
    0x5C: "request rejected: the proxy cannot reach the client's identd",
    0x5D: "request rejected: identd reports a different user id",
}

Steps = Generator[int, bytes, None]


class SocksError(Exception):
    """The proxy refused the handshake or broke the protocol."""


class SocksHandshake:
    """One CONNECT handshake with a SOCKS proxy.

    ``version`` is ``"socks5"`` or ``"socks4"``. ``host`` is what the proxy
    is asked to connect to: an IP address, or a name it resolves itself
    (SOCKS5 and SOCKS4a; plain SOCKS4 takes IPv4 addresses only).
    ``username``/``password`` are offered to a SOCKS5 proxy (RFC 1929); for
    SOCKS4 the username is the user id.
    """

    def __init__(
        self,
        version: str,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._outgoing = bytearray()
        self._incoming = bytearray()
        self.done = False
        if version == "socks5":
            steps = self._socks5(host, port, username, password)
        elif version == "socks4":
            steps = self._socks4(host, port, username or "")
        else:
            raise ValueError(f"unknown SOCKS version {version!r}")
        self._steps = steps
        self._wanted = next(steps)

    @classmethod
    def for_proxy(cls, proxy: Proxy, host: str, port: int) -> SocksHandshake:
        """The handshake ``proxy`` (a ``socks4``, ``socks4a``, ``socks5`` or
        ``socks5h`` proxy) expects for a connection to ``host:port``."""
        version = "socks4" if proxy.scheme.startswith("socks4") else "socks5"
        return cls(version, host, port, username=proxy.username, password=proxy.password)

    def data_to_send(self) -> bytes:
        """The bytes to send now (possibly none)."""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the proxy; ``b""`` means it closed the connection."""
        if not data:
            raise SocksError("the proxy closed the connection during the SOCKS handshake")
        self._incoming += data
        while not self.done and len(self._incoming) >= self._wanted:
            chunk = bytes(self._incoming[: self._wanted])
            del self._incoming[: self._wanted]
            try:
                self._wanted = self._steps.send(chunk)
            except StopIteration:
                self.done = True
        if self.done and self._incoming:
            raise SocksError("the proxy sent bytes after the SOCKS reply")

    # -- SOCKS5 (RFC 1928, RFC 1929) ------------------------------------------

    def _socks5(self, host: str, port: int, username: str | None, password: str | None) -> Steps:
        methods = bytes([_NO_AUTH, _USER_PASSWORD]) if username is not None else bytes([_NO_AUTH])
        self._outgoing += bytes([5, len(methods)]) + methods
        version, method = yield 2
        if version != 5:
            raise SocksError(f"not a SOCKS5 proxy (it answered version {version})")
        if method == _USER_PASSWORD and username is not None:
            yield from self._authenticate(username, password or "")
        elif method == _NO_METHOD:
            what = "no credentials" if username is None else "username/password"
            raise SocksError(f"the proxy accepts no offered authentication method ({what})")
        elif method != _NO_AUTH:
            raise SocksError(f"the proxy chose an authentication method not offered ({method})")
        self._outgoing += bytes([5, _CONNECT, 0]) + _socks5_address(host) + _port(port)
        version, reply, _, kind = yield 4
        if version != 5:
            raise SocksError(f"malformed SOCKS5 reply (version {version})")
        if reply != 0:
            reason = _SOCKS5_REPLIES.get(reply, f"unknown reply {reply}")
            raise SocksError(f"the proxy could not connect: {reason}")
        if kind == _DOMAIN:
            (length,) = yield 1
            yield length + 2
        elif kind in (_IPV4, _IPV6):
            yield (4 if kind == _IPV4 else 16) + 2
        else:
            raise SocksError(f"malformed SOCKS5 reply (address type {kind})")

    def _authenticate(self, username: str, password: str) -> Steps:
        user, secret = username.encode("utf-8"), password.encode("utf-8")
        if not 0 < len(user) < 256 or len(secret) > 255:
            raise SocksError("SOCKS5 username and password must be 1-255 and 0-255 bytes")
        self._outgoing += bytes([1, len(user)]) + user + bytes([len(secret)]) + secret
        _, status = yield 2
        if status != 0:
            raise SocksError("the proxy rejected the username and password")

    # -- SOCKS4 and 4a ----------------------------------------------------------

    def _socks4(self, host: str, port: int, user_id: str) -> Steps:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        user = user_id.encode("utf-8") + b"\0"
        if address is None:  # 4a: an invalid address 0.0.0.x, then the name
            request = _port(port) + bytes([0, 0, 0, 1]) + user + host.encode("idna") + b"\0"
        elif address.version == 4:
            request = _port(port) + address.packed + user
        else:
            raise SocksError("SOCKS4 cannot connect to an IPv6 address")
        self._outgoing += bytes([4, _CONNECT]) + request
        _, status, *_ = yield 8
        if status != _SOCKS4_GRANTED:
            reason = _SOCKS4_REPLIES.get(status, f"unknown reply {status}")
            raise SocksError(f"the proxy could not connect: {reason}")


def _socks5_address(host: str) -> bytes:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("idna")
        if len(name) > 255:
            raise SocksError("host name too long for SOCKS5") from None
        return bytes([_DOMAIN, len(name)]) + name
    return bytes([_IPV4 if address.version == 4 else _IPV6]) + address.packed


def _port(port: int) -> bytes:
    return port.to_bytes(2, "big")
