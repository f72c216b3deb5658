"""The CONNECT handshake with an HTTP proxy, with no I/O (RFC 9110 section
9.3.6): the request's bytes, then the proxy's answer fed in until it is
complete. Both transports drive it over their own sockets."""

from __future__ import annotations

import h11

__all__ = ["TunnelHandshake", "TunnelRefused"]


_HTTP = b"HTTP/"


class TunnelRefused(Exception):
    """The proxy answered CONNECT with something other than 2xx."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"the proxy answered CONNECT with {status} {reason}")
        self.status = status


class TunnelHandshake:
    """Asks a proxy for a tunnel to ``host:port``."""

    def __init__(
        self,
        host: str,
        port: int,
        authorization: bytes | None,
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        headers = [(b"Host", authority.encode("ascii"))]
        if authorization:
            headers.append((b"Proxy-Authorization", authorization))
        headers.extend(extra)  # the proxy's own headers (Proxy.headers)
        self._proto = h11.Connection(h11.CLIENT)
        request = h11.Request(method=b"CONNECT", target=authority.encode("ascii"), headers=headers)
        #: The bytes to send to the proxy first.
        self.request = self._proto.send(request) + self._proto.send(h11.EndOfMessage())
        self._start: bytes | None = b""  # the answer's first bytes, until shown HTTP

    def receive(self, data: bytes) -> bool:
        """Feed the proxy's bytes (``b""``: EOF); whether the tunnel is open.
        Raises :class:`TunnelRefused` for a non-2xx answer and
        ``h11.RemoteProtocolError`` for a bad one."""
        proto = self._proto
        if not data and proto.their_state is h11.SEND_RESPONSE:
            raise h11.RemoteProtocolError("the proxy closed the connection without an answer")
        if self._start is not None:
            # h11 waits for a whole head: something else (a proxy that
            # speaks another protocol) is told at once.
            start = self._start = (self._start + data)[:5]
            if not _HTTP.startswith(start):
                raise h11.RemoteProtocolError(f"the proxy answered {start!r}..., not HTTP")
            if start == _HTTP:
                self._start = None
        proto.receive_data(data)
        while True:
            event = proto.next_event()
            if event is h11.NEED_DATA:
                return False
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                if not 200 <= event.status_code < 300:
                    raise TunnelRefused(event.status_code, event.reason.decode("latin-1"))
                return True
            raise h11.RemoteProtocolError(f"unexpected {event!r} in answer to CONNECT")
