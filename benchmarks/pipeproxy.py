"""A forward proxy for the stress and soak runs: it relays bytes and adds
no faults of its own, so that the fault server's faults reach the client
through a proxy connection (and, for https, through a CONNECT tunnel).

Run as ``python -m benchmarks.pipeproxy``. It listens on 127.0.0.1, port 0,
prints ``PORT <n>``, and exits on SIGTERM or when its standard input
closes.

Each client connection starts with a request head or a SOCKS handshake.
``CONNECT host:port`` connects there, answers ``200`` and relays both ways.
Any other request is in absolute form (``GET http://host:port/path``): the
proxy connects to that host and port, sends the head on as it came, and
relays both ways. A proxy connection carries requests for one origin only
(a client pools its proxy connections per origin), so one upstream
connection serves it for good. A connection whose first byte is 5 or 4 is
a SOCKS5 (RFC 1928: no authentication, or any username and password) or
SOCKS4/4a CONNECT, then relayed both ways like a CONNECT tunnel. When
either side closes, the proxy closes the other, and a reset is passed on
as a reset; when the server stops reading an upload, its answer still
reaches the client.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from urllib.parse import urlsplit

from .servers import serve_until_stopped
from .spec import HOST

__all__ = ["main"]

MAX_HEAD = 64 * 1024
RELAY_SIZE = 256 * 1024
BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def _target(head: bytes) -> tuple[bool, str, int]:
    """Whether the head is a CONNECT, and the host and port it names."""
    method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
    if method == "CONNECT":
        host, _, port = target.rpartition(":")
        return True, host.strip("[]"), int(port)
    parts = urlsplit(target)
    if parts.hostname is None:
        raise ValueError(f"not a proxy request: {target!r}")
    return False, parts.hostname, parts.port or 80


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close ``writer``'s connection with a reset (SO_LINGER of zero);
    one that a reset from its peer closed already is just let go."""
    sock = writer.get_extra_info("socket")
    if sock is not None and not writer.transport.is_closing():
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass  # gone meanwhile
    writer.transport.abort()


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
    """Copy ``reader`` to ``writer`` until one of them ends: ``"closed"``
    (the reader's end), ``"reset"`` (reading failed) or ``"stuck"`` (the
    writer's side stopped taking bytes)."""
    while True:
        try:
            data = await reader.read(RELAY_SIZE)
        except OSError:
            return "reset"
        if not data:
            return "closed"
        writer.write(data)
        try:
            await writer.drain()
        except OSError:
            return "stuck"


async def _socks_target(
    version: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[str, int]:
    """Take a SOCKS CONNECT request (after its version byte), answering a
    SOCKS5 client's choice of method on the way: the host and the port."""
    if version == 4:  # command, port, IPv4 address, user id; 4a: then a name
        command, port, address = struct.unpack("!BH4s", await reader.readexactly(7))
        await reader.readuntil(b"\0")
        host = socket.inet_ntoa(address)
        if address.startswith(b"\0\0\0") and address != b"\0\0\0\0":
            host = (await reader.readuntil(b"\0"))[:-1].decode("idna")
        if command != 1:
            raise ValueError(f"SOCKS4 command {command}")
        return host, port
    methods = await reader.readexactly((await reader.readexactly(1))[0])
    if 0 in methods:
        writer.write(b"\x05\x00")  # no authentication
    elif 2 in methods:  # RFC 1929: any username and password will do
        writer.write(b"\x05\x02")
        await reader.readexactly(1)
        await reader.readexactly((await reader.readexactly(1))[0])
        await reader.readexactly((await reader.readexactly(1))[0])
        writer.write(b"\x01\x00")
    else:
        writer.write(b"\x05\xff")
        raise ValueError(f"SOCKS5 methods {methods!r}")
    version, command, _, kind = await reader.readexactly(4)
    if version != 5 or command != 1:
        raise ValueError(f"SOCKS5 request version {version}, command {command}")
    if kind == 1:
        host = socket.inet_ntoa(await reader.readexactly(4))
    elif kind == 4:
        host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
    elif kind == 3:
        host = (await reader.readexactly((await reader.readexactly(1))[0])).decode("idna")
    else:
        raise ValueError(f"SOCKS5 address type {kind}")
    (port,) = struct.unpack("!H", await reader.readexactly(2))
    return host, port


# A SOCKS proxy's answer to a CONNECT, per version: done, or the target
# unreachable (the bound address after it is left zero).
SOCKS_GRANTED = {4: b"\0\x5a" + bytes(6), 5: b"\x05\x00\x00\x01" + bytes(6)}
SOCKS_FAILED = {4: b"\0\x5b" + bytes(6), 5: b"\x05\x05\x00\x01" + bytes(6)}


async def _serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
    try:
        first = await client_r.readexactly(1)
        socks = first[0] if first[0] in (4, 5) else None
        if socks is None:
            head = first + await client_r.readuntil(b"\r\n\r\n")
            connect, host, port = _target(head)
        else:
            host, port = await _socks_target(socks, client_r, client_w)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ValueError):
        client_w.close()
        return
    try:
        up_r, up_w = await asyncio.open_connection(host, port)
    except OSError:
        client_w.write(BAD_GATEWAY if socks is None else SOCKS_FAILED[socks])
        client_w.close()
        return
    up_w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if socks is not None:
        client_w.write(SOCKS_GRANTED[socks])
    elif connect:
        client_w.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    else:
        up_w.write(head)
    upload = asyncio.ensure_future(_relay(client_r, up_w))
    download = asyncio.ensure_future(_relay(up_r, client_w))
    try:
        await asyncio.wait([upload, download], return_when=asyncio.FIRST_COMPLETED)
        if not download.done() and upload.result() == "stuck":
            # The server stopped reading the upload (an early answer): what
            # it sends still goes to the client, as from a direct server.
            await download
        ending = download.result() if download.done() else upload.result()
    finally:
        for way in (upload, download):
            way.cancel()
        await asyncio.gather(upload, download, return_exceptions=True)
    for writer in (client_w, up_w):
        if ending == "reset":
            _reset(writer)
        else:
            writer.close()


async def serve() -> None:
    """Listen, print the port, and relay until SIGTERM or EOF on stdin."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await _serve(reader, writer)
        except asyncio.CancelledError:
            writer.transport.abort()  # the proxy is stopping

    server = await asyncio.start_server(handle, HOST, 0, limit=MAX_HEAD, backlog=4096)
    await serve_until_stopped(server)


def main() -> None:
    """Relay until stopped."""
    asyncio.run(serve())


if __name__ == "__main__":
    main()
