"""The fault server for the stress and soak runs: a small asyncio HTTP/1.1
server that misbehaves on request, run as a process of its own so that its
work never shares the client's GIL.

Run as ``python -m benchmarks.faultserver [--seed S] [--hangup P]
[--stall SECONDS] [--cert FILE --key FILE]``. It listens on 127.0.0.1,
port 0, prints ``PORT <n>``, and exits on SIGTERM or when its standard
input closes. With a certificate and its key it speaks TLS (https), and
every fault happens inside the TLS session.

Every response body is built from the request's ``X-Request-Id`` header
(:func:`body_for`), so a client can tell a response meant for another
request from its own. Paths (``N`` is a body size in bytes):

* ``GET|HEAD /cl/N``: N bytes with Content-Length; ``GET /chunked/N``: N
  bytes chunked, in two chunks; ``GET /empty``: 204.
* ``POST /post``: reads the body (Content-Length or chunked), answers with
  :func:`body_for` of the id and the body's length.
* ``POST /early413``: answers ``413`` with ``Connection: close`` as soon as
  the head arrives, without reading the upload, and closes.
* ``GET /stall-head``: sends nothing for ``--stall`` seconds, then closes.
* ``GET /stall-body/N``: sends the head and half the body, stalls, closes.
* ``GET /cut/N``: sends the head and half the body, then closes.
* ``GET /hangup``: closes without a byte. ``GET /reset``: sends half a
  status line, then resets the connection.
* ``GET /stats``: JSON ``{"accepted", "requests", "posts": {id: count}}``.

After any complete keep-alive response the server hangs up at random with
probability ``--hangup`` (seeded), so clients meet stale pooled
connections. Every POST head is counted by its ``X-Request-Id`` as it
arrives, before its body is read: the count is how many times the request
reached the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import ssl
import struct
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .servers import fetch, run_server_process, serve_until_stopped
from .spec import HOST

__all__ = [
    "FaultServer",
    "TLSFiles",
    "body_for",
    "main",
    "start_fault_server",
]

MAX_HEAD = 64 * 1024  # a longer request head is not from the harness


def body_for(request_id: str, size: int) -> bytes:
    """The body the server sends for ``request_id``: the id and a dot,
    repeated, cut to ``size`` bytes."""
    unit = (request_id or "-").encode() + b"."
    return (unit * (size // len(unit) + 1))[:size]


@dataclass
class _State:
    rng: random.Random
    hangup: float
    stall: float
    accepted: int = 0
    requests: int = 0
    posts: Counter[str] = field(default_factory=Counter)
    ports: list[int] = field(default_factory=list)  # one per origin


@dataclass
class _Head:
    method: str
    path: str
    fields: dict[str, str]

    @property
    def request_id(self) -> str:
        return self.fields.get("x-request-id", "")

    def wants_close(self) -> bool:
        return self.fields.get("connection", "").lower() == "close"


def _parse_head(raw: bytes) -> _Head:
    lines = raw.decode("latin-1").split("\r\n")
    method, path, *_ = [*lines[0].split(" "), "", ""]
    if "://" in path:  # absolute form, through a proxy
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    path = path.partition("?")[0]  # a query only tags the request
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            fields[name.strip().lower()] = value.strip()
    return _Head(method.upper(), path, fields)


def _response(
    status: str, body: bytes, *, close: bool = False, length: int | None = None
) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body) if length is None else length}\r\n"
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


def _chunked(body: bytes) -> bytes:
    half = len(body) // 2
    out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    for part in (body[:half], body[half:]):
        if part:
            out += b"%x\r\n%s\r\n" % (len(part), part)
    return out + b"0\r\n\r\n"


async def _read_body(reader: asyncio.StreamReader, head: _Head) -> int:
    """Read and drop the request body; its length."""
    if head.fields.get("transfer-encoding", "").lower() == "chunked":
        total = 0
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers from the harness
                return total
            await reader.readexactly(size + 2)
            total += size
    length = int(head.fields.get("content-length", "0"))
    if length:
        await reader.readexactly(length)
    return length


def _size(path: str) -> int:
    return int(path.rsplit("/", 1)[1])


async def _answer(
    state: _State, head: _Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> bool:
    """Answer one request; whether the connection may carry another."""
    rid, path = head.request_id, head.path
    if head.method == "POST":
        state.posts[rid] += 1
        if path == "/early413":
            writer.write(_response("413 Content Too Large", b"too large", close=True))
            await writer.drain()
            return False
        length = await _read_body(reader, head)
        writer.write(_response("200 OK", body_for(rid, length)))
    elif path.startswith("/cl/"):
        body = body_for(rid, _size(path))
        if head.method == "HEAD":
            writer.write(_response("200 OK", b"", length=len(body)))
        else:
            writer.write(_response("200 OK", body))
    elif path.startswith("/chunked/"):
        writer.write(_chunked(body_for(rid, _size(path))))
    elif path == "/empty":
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    elif path == "/stats":
        stats = {
            "accepted": state.accepted,
            "requests": state.requests,
            "posts": state.posts,
            "ports": state.ports,
        }
        writer.write(_response("200 OK", json.dumps(stats).encode(), close=True))
        await writer.drain()
        return False
    else:
        await _misbehave(state, head, writer)
        return False
    await writer.drain()
    return not head.wants_close() and state.rng.random() >= state.hangup


async def _misbehave(state: _State, head: _Head, writer: asyncio.StreamWriter) -> None:
    path = head.path
    if path in ("/hangup", "/stall-head"):
        if path == "/stall-head":
            await asyncio.sleep(state.stall)
        return
    if path == "/reset":
        writer.write(b"HTTP/1.1 2")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        # SO_LINGER with a zero timeout: close() sends a reset, not a FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        return
    if path.startswith(("/stall-body/", "/cut/")):
        body = body_for(head.request_id, _size(path))
        writer.write(_response("200 OK", body[: len(body) // 2], length=len(body)))
        await writer.drain()
        if path.startswith("/stall-body/"):
            await asyncio.sleep(state.stall)
        return
    writer.write(_response("404 Not Found", b"", close=True))
    await writer.drain()


async def _serve_connection(
    state: _State, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    state.accepted += 1
    try:
        # In the try: a client that gave up at once (a cancelled dial) may
        # have had its connection closed under us already.
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            raw = await reader.readuntil(b"\r\n\r\n")
            state.requests += 1
            if not await _answer(state, _parse_head(raw[:-4]), reader, writer):
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ValueError):
        pass
    except asyncio.CancelledError:
        pass  # the server is stopping: a stall ends here, quietly
    finally:
        writer.close()


async def serve(
    seed: int,
    hangup: float,
    stall: float,
    cert: Path | None = None,
    key: Path | None = None,
    origins: int = 1,
) -> None:
    """Listen, print the port, and serve until SIGTERM or EOF on stdin;
    over TLS with ``cert`` and ``key``. With ``origins`` above 1, also on
    ``origins - 1`` more ports, each an origin of its own to a client,
    all with the one state (``/stats`` on any of them lists the ports)."""
    state = _State(random.Random(seed), hangup, stall)
    context = None
    if cert is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
    servers = [
        await asyncio.start_server(
            lambda r, w: _serve_connection(state, r, w),
            HOST,
            0,
            limit=MAX_HEAD,
            backlog=4096,
            ssl=context,
        )
        for _ in range(origins)
    ]
    state.ports = [server.sockets[0].getsockname()[1] for server in servers]
    try:
        await serve_until_stopped(servers[0])
    finally:
        for server in servers[1:]:
            server.close()


@dataclass(frozen=True)
class TLSFiles:
    """A server certificate for 127.0.0.1, its key, and the certificate
    authority that issued it (PEM files)."""

    cert: Path
    key: Path
    ca: Path

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts :attr:`ca`."""
        return ssl.create_default_context(cafile=str(self.ca))


@dataclass
class FaultServer:
    """A running fault server: its port and process id, its TLS files if
    it speaks https, and the proxy to reach it through, if any."""

    port: int
    pid: int
    tls: TLSFiles | None = None
    proxy: str | None = None  # the proxy every request goes through
    ports: list[int] = field(default_factory=list)  # one per origin; port first

    def url(self, path: str, origin: int = 0) -> str:
        """``http://127.0.0.1:<port><path>`` (``https://`` with TLS), on
        the port of origin number ``origin``."""
        scheme = "http" if self.tls is None else "https"
        port = self.ports[origin] if self.ports else self.port
        return f"{scheme}://{HOST}:{port}{path}"

    def client_context(self) -> ssl.SSLContext | None:
        """With TLS, a client context that trusts the server's certificate."""
        return None if self.tls is None else self.tls.client_context()

    def ca_file(self) -> str | None:
        """With TLS, the file of the authority that issued its certificate."""
        return None if self.tls is None else str(self.tls.ca)

    def stats(self) -> dict[str, object]:
        """What the server has seen (``GET /stats`` on a fresh connection)."""
        result: dict[str, object] = json.loads(fetch(self.port, "/stats", self.client_context()))
        return result

    def post_counts(self) -> dict[str, int]:
        """How many times each POST request id reached the server."""
        posts = self.stats()["posts"]
        assert isinstance(posts, dict)
        return {str(k): int(v) for k, v in posts.items()}


@contextmanager
def start_fault_server(
    seed: int = 0,
    hangup: float = 0.05,
    stall: float = 1.0,
    cpu: int | None = None,
    tls: bool = False,
    proxy: str | None = None,
    origins: int = 1,
) -> Iterator[FaultServer]:
    """Run a fault server in a child process for the ``with`` block; with
    ``tls``, speaking https with a certificate made for it; with ``proxy``
    (``"http"``, ``"socks5"``, ``"socks5h"``, ``"socks4"`` or
    ``"socks4a"``), reached through a relaying proxy
    (:mod:`benchmarks.pipeproxy`, which speaks them all) in a process of
    its own; listening on ``origins`` ports."""
    args = ["--seed", str(seed), "--hangup", str(hangup), "--stall", str(stall)]
    args += ["--origins", str(origins)]
    with contextlib.ExitStack() as stack:
        files = stack.enter_context(_made_tls_files()) if tls else None
        if files is not None:
            args += ["--cert", str(files.cert), "--key", str(files.key)]
        port, pid = stack.enter_context(
            run_server_process("benchmarks.faultserver", args, cpu, "the fault server")
        )
        proxy_url = None
        if proxy:
            proxy_port, _ = stack.enter_context(
                run_server_process("benchmarks.pipeproxy", [], cpu, "the proxy")
            )
            proxy_url = f"{proxy}://{HOST}:{proxy_port}"
        server = FaultServer(port, pid, files, proxy_url)
        ports = server.stats()["ports"]
        assert isinstance(ports, list)
        server.ports = [int(p) for p in ports]
        yield server


@contextmanager
def _made_tls_files() -> Iterator[TLSFiles]:
    """A certificate authority and a certificate for 127.0.0.1 from it,
    made now (with trustme) in a temporary directory."""
    try:
        import trustme
    except ImportError:
        raise SystemExit("TLS runs need trustme: pip install trustme") from None
    ca = trustme.CA()
    cert = ca.issue_cert(HOST)
    with tempfile.TemporaryDirectory(prefix="poolwatch-tls-") as directory:
        folder = Path(directory)
        files = TLSFiles(folder / "cert.pem", folder / "key.pem", folder / "ca.pem")
        cert.cert_chain_pems[0].write_to_path(str(files.cert))
        cert.private_key_pem.write_to_path(str(files.key))
        ca.cert_pem.write_to_path(str(files.ca))
        yield files


def main(argv: list[str] | None = None) -> None:
    """Parse the options and serve."""
    parser = argparse.ArgumentParser(description="the poolwatch fault server")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random hang-ups")
    parser.add_argument("--hangup", type=float, default=0.05, help="hang-up probability")
    parser.add_argument("--stall", type=float, default=1.0, help="seconds a stall lasts")
    parser.add_argument("--cert", type=Path, help="speak TLS with this certificate (PEM)")
    parser.add_argument("--key", type=Path, help="the certificate's private key (PEM)")
    parser.add_argument("--origins", type=int, default=1, help="ports to listen on (1)")
    args = parser.parse_args(argv)
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    if args.origins < 1:
        parser.error("--origins must be at least 1")
    asyncio.run(serve(args.seed, args.hangup, args.stall, args.cert, args.key, args.origins))


if __name__ == "__main__":
    main()
