"""What the parity suites share: loopback servers with the routes both
suites request, a TLS server, and the case-table machinery that runs each
case through a stock client and through poolwatch and compares what a user
of each one sees.

A case is a function that drives a client (a ``requests.Session`` or an
``httpx.Client``) and writes what it observed into a dict: status, headers,
bytes, chunk sizes, cookies, or the type of the exception raised. The
machinery runs it twice, each time against a fresh server of the kind the
case names, adds what the server saw (request heads and bodies, connections
accepted) and the warnings emitted, and asserts both observations equal.
Where poolwatch must differ, the case says on which key, what poolwatch
gives instead, and why.
"""

from __future__ import annotations

import datetime
import gc
import gzip
import hashlib
import importlib.util
import json
import re
import socket
import ssl
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import parse_qsl
from urllib.request import parse_http_list, parse_keqv_list

import h11
import pytest
import trustme

from tests.servers import HTTPServer, RawServer, Reply, ServerConnection

__all__ = [
    "BAD_CHUNK_SIZE",
    "BYTES_AFTER_BODY",
    "CUSTOM_REASON",
    "ENCODINGS",
    "GARBAGE",
    "HEADER_WITHOUT_COLON",
    "HTTP10_KEEP_ALIVE",
    "HTTP10_TO_CLOSE",
    "HTTP11_TO_CLOSE",
    "INTERIM_100",
    "INTERIM_103",
    "LATIN_1_HEADER",
    "LINES",
    "LINE_CHUNKS",
    "MISSING",
    "NO_REASON",
    "OK",
    "PASSWORD",
    "POOLWATCH",
    "SHORT",
    "STOCK",
    "TEXT",
    "TRUNCATED_CHUNKED",
    "TRUNCATED_LENGTH",
    "TRUNCATED_STREAM",
    "USER",
    "Case",
    "Certs",
    "Differs",
    "Env",
    "Observation",
    "Run",
    "ScriptedServer",
    "assert_parity",
    "differs",
    "inspected",
    "observe_both",
    "reply_and_close",
    "reply_and_wait",
    "reply_each",
    "serve_backlog",
    "serve_http",
    "serve_raw",
    "serve_refused",
    "serve_silent_tls",
    "serve_tls",
    "table",
    "visible_headers",
]

STOCK = "stock"
POOLWATCH = "poolwatch"
FLAVOURS = (STOCK, POOLWATCH)
# An upper bound on any wait in a server thread: the test's teardown ends
# every wait long before this, which only stops a broken test from hanging.
WAIT = 10.0
# Response headers that carry the time or the software, not the response.
INVISIBLE_HEADERS = frozenset({"date", "server"})

USER = "user"
PASSWORD = "passwd"
REALM = "parity@127.0.0.1"
NONCE = "dcd98b7102dd2f0e8b11d0f600bfb0c093"
OPAQUE = "5ccc069c403ebaf9f0171e9517f40e41"

# A body that compresses well, with lines and a non-ASCII character.
TEXT = ("parity line \u00e9\n" * 300).encode("utf-8")
# Chunks that split lines, \r\n and a blank line across chunk boundaries.
LINE_CHUNKS = (b"alpha\nbe", b"ta\r\ngam", b"ma\n\n", b"delta")

# Lines of LINE_CHUNKS as iter_lines() gives them.
LINES = [b"alpha", b"beta", b"gamma", b"", b"delta"]
# Short, since the server never answers; long enough for a loopback reply.
SHORT = 0.2

# -- scripted responses (for the raw-socket server) ----------------------------
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
CUSTOM_REASON = b"HTTP/1.1 299 Very Custom\r\nContent-Length: 2\r\n\r\nok"
NO_REASON = b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok"
LATIN_1_HEADER = b"HTTP/1.1 200 OK\r\nX-Latin: caf\xe9\r\nContent-Length: 2\r\n\r\nok"
HTTP10_TO_CLOSE = b"HTTP/1.0 200 OK\r\n\r\nuntil the end"
HTTP11_TO_CLOSE = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"
HTTP10_KEEP_ALIVE = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
INTERIM_100 = b"HTTP/1.1 100 Continue\r\n\r\n" + OK
INTERIM_103 = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + OK
# More than the kernel's socket buffers take: an upload still going out
# when a server that read only the head hangs up.
BIG_UPLOAD = b"u" * 64_000_000
GARBAGE = b"HELLO WORLD\r\n\r\n"
TRUNCATED_LENGTH = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
TRUNCATED_CHUNKED = CHUNKED_HEAD + b"5\r\nab"
BAD_CHUNK_SIZE = CHUNKED_HEAD + b"zz\r\nab\r\n0\r\n\r\n"
TRUNCATED_STREAM = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabcdefgh"
BYTES_AFTER_BODY = OK + b"EXTRA"
HEADER_WITHOUT_COLON = b"HTTP/1.1 200 OK\r\nNo colon here\r\nContent-Length: 2\r\n\r\nok"

HAS_BROTLI = any(importlib.util.find_spec(m) for m in ("brotli", "brotlicffi"))
HAS_ZSTD = importlib.util.find_spec("zstandard") is not None

# Content codings the server offers: brotli and zstd only where a package
# to decode them is installed (as requests, urllib3 and httpx decide).
ENCODINGS = ["gzip", "deflate", "deflate-raw", "gzip, deflate"]
ENCODINGS += ["br"] if HAS_BROTLI else []
ENCODINGS += ["zstd"] if HAS_ZSTD else []

Observation = dict[str, Any]
C = TypeVar("C")


# -- certificates --------------------------------------------------------------


class Certs:
    """A CA made at test time, the server certificates of each TLS case,
    and the CA bundle and client certificate files clients are given."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = trustme.CA()
        self.other_ca = trustme.CA()

    @cached_property
    def bundle(self) -> str:
        """The CA's certificate as a PEM file (requests' ``verify=``)."""
        path = self.directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(path))
        return str(path)

    @cached_property
    def client_cert(self) -> tuple[str, str]:
        """A client certificate and its key, issued by the CA."""
        leaf = self.ca.issue_cert("client@parity.test")
        cert, key = self.directory / "client.pem", self.directory / "client.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        return str(cert), str(key)

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting the CA (httpx's ``verify=``)."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def server_context(self, kind: str) -> ssl.SSLContext:
        """A server context for ``kind``: ``good``, ``untrusted`` (another
        CA), ``wrong-host`` (a certificate for another name), ``expired``
        or ``client-cert`` (good, and requires a client certificate)."""
        ca = self.other_ca if kind == "untrusted" else self.ca
        host = "other.parity.test" if kind == "wrong-host" else "127.0.0.1"
        if kind == "expired":
            past = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
            leaf = ca.issue_cert(host, not_after=past)
        else:
            leaf = ca.issue_cert(host)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(context)
        if kind == "client-cert":
            context.verify_mode = ssl.CERT_REQUIRED
            ca.configure_trust(context)
        return context


# -- servers -------------------------------------------------------------------


class Server(Protocol):
    """What the machinery needs of a server."""

    @property
    def port(self) -> int: ...

    def url(self, path: str = "/") -> str: ...

    def observation(self) -> Observation:
        """What the server saw, for comparison."""
        ...


@dataclass
class Env:
    """One run of a case: the server, the certificates, a directory, and
    the event that ends every server-side wait when the run is over."""

    certs: Certs
    tmp_path: Path
    finished: threading.Event
    server: Server | None = None

    def url(self, path: str = "/") -> str:
        """``path`` on this run's server."""
        assert self.server is not None
        return self.server.url(path)


Serve = Callable[[Env], AbstractContextManager[Server]]
Q = dict[str, str]  # a request's query
Route = Callable[["ParityServer", h11.Request, bytes, Q], Reply | None]


def _header(request: h11.Request, name: bytes) -> str:
    for key, value in request.headers:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def _text(body: bytes, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(
        status=status, headers=[("Content-Type", "text/plain"), *(headers or [])], body=body
    )


def _status(server: ParityServer, request: h11.Request, body: bytes, query: Q) -> Reply:
    code = int(request.target.decode().split("?")[0].rsplit("/", 1)[1])
    return _text(b"" if code in (204, 304) else f"status {code}\n".encode(), status=code)


def _headers(server: ParityServer, request: h11.Request, body: bytes, query: Q) -> Reply:
    """Repeated and interleaved names, and names in several cases."""
    pairs = [("X-Multi", "a"), ("X-Other", "1"), ("X-Multi", "b"), ("X-Case", "MiXeD")]
    return _text(b"headers\n", headers=[*pairs, ("x-lower", "v"), ("X-MULTI", "c")])


def _encoded(encoding: str, data: bytes) -> bytes:
    if encoding == "gzip":
        return gzip.compress(data, mtime=0)
    if encoding == "deflate":
        return zlib.compress(data)
    if encoding == "deflate-raw":
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return compressor.compress(data) + compressor.flush()
    if encoding == "br":
        brotli = importlib.import_module(
            "brotli" if importlib.util.find_spec("brotli") else "brotlicffi"
        )
        return bytes(brotli.compress(data))
    if encoding == "zstd":
        zstandard = importlib.import_module("zstandard")
        return bytes(zstandard.ZstdCompressor().compress(data))
    if encoding == "gzip, deflate":  # gzip first, then deflate (RFC 9110 8.4)
        return zlib.compress(gzip.compress(data, mtime=0))
    if encoding == "corrupt":
        return b"\x1f\x8b\x08\x00 this is not gzip"
    return data


def _encoding(server: ParityServer, request: h11.Request, body: bytes, query: Q) -> Reply:
    """``/encoded?as=gzip[&chunked=1]``: TEXT with that Content-Encoding."""
    name = query.get("as", "gzip")
    data = _encoded(name, TEXT)
    header = {"deflate-raw": "deflate", "corrupt": "gzip"}.get(name, name)
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Encoding", header)]
    if query.get("chunked"):
        third = len(data) // 3
        parts = [data[:third], data[third : 2 * third], data[2 * third :]]
        return Reply(headers=headers, body=iter(parts), chunked=True)
    return Reply(headers=headers, body=data)


def _cookies_set(server: ParityServer, request: h11.Request, body: bytes, query: Q) -> Reply:
    """``/cookies/set?name=value&...``; ``path`` and ``secure`` as
    attributes of every cookie; ``next`` redirects there."""
    attributes = f"; Path={query.pop('path', '/')}"
    if query.pop("secure", None):
        attributes += "; Secure"
    target = query.pop("next", None)
    headers = [("Set-Cookie", f"{name}={value}{attributes}") for name, value in query.items()]
    if target:
        return Reply(status=302, headers=[*headers, ("Location", target)], body=b"moved\n")
    return _text(b"cookies set\n", headers=headers)


def _cookies_delete(server: ParityServer, request: h11.Request, body: bytes, query: Q) -> Reply:
    headers = [("Set-Cookie", f"{name}=; Max-Age=0; Path=/") for name in query]
    return _text(b"cookies deleted\n", headers=headers)


def _cookies(server: ParityServer, request: h11.Request, body: bytes, query: Q) -> Reply:
    """The Cookie header the request carried."""
    return _text(_header(request, b"cookie").encode("latin-1"))


def _redirect(server: ParityServer, request: h11.Request, body: bytes, query: Q) -> Reply:
    """``/redirect/CODE?to=PATH[&absolute=1][&size=N]``."""
    code = int(request.target.decode().split("?")[0].rsplit("/", 1)[1])
    target = query.get("to", "/inspect")
    if query.get("absolute"):
        target = server.url(target)
    size = int(query.get("size", "6"))
    return Reply(status=code, headers=[("Location", target)], body=b"m" * size)


def _chain(server: ParityServer, request: h11.Request, body: bytes, query: Q) -> Reply:
    """``/chain/N``: N redirects, then 200."""
    left = int(request.target.decode().split("?")[0].rsplit("/", 1)[1])
    if left == 0:
        return _text(b"end of chain\n")
    return Reply(status=302, headers=[("Location", f"/chain/{left - 1}")], body=b"")


def _loop(server: ParityServer, request: h11.Request, body: bytes, query: Q) -> Reply:
    return Reply(status=302, headers=[("Location", "/loop")], body=b"again\n")


def _inspect(server: ParityServer, request: h11.Request, body: bytes, query: Q) -> Reply:
    """The method, target and body, as JSON."""
    seen = {"method": request.method.decode(), "target": request.target.decode()}
    seen["body"] = body.decode("latin-1")
    return Reply(headers=[("Content-Type", "application/json")], body=json.dumps(seen).encode())


def inspected(method: str, body: str = "", target: str = "/inspect") -> bytes:
    """What ``/inspect`` answers to a request."""
    return json.dumps({"method": method, "target": target, "body": body}).encode()


def _digest_ok(request: h11.Request) -> bool:
    """Check a Digest Authorization (RFC 7616, MD5, qop=auth)."""
    value = _header(request, b"authorization")
    if not value.startswith("Digest "):
        return False
    fields = parse_keqv_list(parse_http_list(value[len("Digest ") :]))

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{fields.get('username')}:{REALM}:{PASSWORD}")
    ha2 = md5(f"{request.method.decode()}:{fields.get('uri')}")
    parts = (ha1, NONCE, fields.get("nc"), fields.get("cnonce"), fields.get("qop"), ha2)
    return fields.get("nonce") == NONCE and fields.get("response") == md5(
        ":".join(map(str, parts))
    )


def _digest(server: ParityServer, request: h11.Request, body: bytes, query: Q) -> Reply:
    if _digest_ok(request):
        return _text(b"digest: welcome\n")
    challenge = (
        f'Digest realm="{REALM}", qop="auth", nonce="{NONCE}", opaque="{OPAQUE}", algorithm=MD5'
    )
    return _text(b"unauthorized\n", status=401, headers=[("WWW-Authenticate", challenge)])


def _basic(server: ParityServer, request: h11.Request, body: bytes, query: Q) -> Reply:
    expected = "Basic dXNlcjpwYXNzd2Q="  # user:passwd
    if _header(request, b"authorization") == expected:
        return _text(b"basic: welcome\n")
    return _text(b"unauthorized\n", 401, [("WWW-Authenticate", 'Basic realm="parity"')])


def _etag(server: ParityServer, request: h11.Request, body: bytes, query: Q) -> Reply:
    tag = '"v1"'
    if _header(request, b"if-none-match") == tag:
        return Reply(status=304, headers=[("ETag", tag)])
    return _text(b"tagged\n", headers=[("ETag", tag)])


def _lines(server: ParityServer, request: h11.Request, body: bytes, query: Q) -> Reply:
    headers = [("Content-Type", "text/plain; charset=utf-8")]
    return Reply(headers=headers, body=iter(LINE_CHUNKS), chunked=True)


def _stall(server: ParityServer, request: h11.Request, body: bytes, query: Q) -> Reply | None:
    """No response until the run is over, then hang up."""
    server.finished.wait(WAIT)
    return None


def _then_stall(server: ParityServer, first: bytes) -> Iterator[bytes]:
    yield first
    server.finished.wait(WAIT)
    yield b"never read\n"


def _stall_body(server: ParityServer, request: h11.Request, body: bytes, query: Q) -> Reply:
    """A Content-Length body of which only the first bytes come in time."""
    headers = [("Content-Length", "14")]
    return Reply(headers=headers, body=_then_stall(server, b"abc"))


def _trickle(server: ParityServer, request: h11.Request, body: bytes, query: Q) -> Reply:
    """A chunked body whose first line comes now and the rest never."""
    headers = [("Content-Type", "text/plain")]
    return Reply(headers=headers, body=_then_stall(server, b"first\n"), chunked=True)


ROUTES: dict[str, Route] = {
    "status": _status,
    "headers": _headers,
    "encoded": _encoding,
    "cookies": _cookies,
    "cookies/set": _cookies_set,
    "cookies/delete": _cookies_delete,
    "redirect": _redirect,
    "chain": _chain,
    "loop": _loop,
    "inspect": _inspect,
    "digest": _digest,
    "basic": _basic,
    "etag": _etag,
    "lines": _lines,
    "stall": _stall,
    "stall-body": _stall_body,
    "trickle": _trickle,
}


@dataclass(frozen=True)
class Seen:
    """A request as the server received it."""

    connection: int
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


# What a Digest client chooses at random, and what depends on it.
_DIGEST_RANDOM = re.compile(r'((?:cnonce|response)=)"[^"]*"')


def _without_randomness(headers: list[tuple[str, str]], body: bytes) -> tuple[Any, bytes]:
    """Multipart boundaries and digest cnonces are random: replace them with
    constants."""
    headers = [(n, _DIGEST_RANDOM.sub(r'\1"RANDOM"', v)) for n, v in headers]
    for name, value in headers:
        match = re.search(r"boundary=([^;\s]+)", value) if name.lower() == "content-type" else None
        if match:
            boundary = match.group(1)
            headers = [(n, v.replace(boundary, "BOUNDARY")) for n, v in headers]
            return headers, body.replace(boundary.encode(), b"BOUNDARY")
    return headers, body


def _without_body(reply: Reply | None) -> Reply | None:
    """The reply to a HEAD: the GET's head, framing included, and no body
    (h11 refuses to send one)."""
    if reply is None:
        return None
    headers = list(reply.headers)
    if isinstance(reply.body, bytes) and not reply.chunked and reply.status not in (204, 304):
        headers.append(("Content-Length", str(len(reply.body))))
    return Reply(reply.status, headers, iter(()), reply.chunked, reply.close)


class ParityServer(HTTPServer):
    """The well-behaved server with the parity routes, recording every
    request with its headers."""

    def __init__(self, finished: threading.Event) -> None:
        self.finished = finished
        self.seen: list[Seen] = []
        self._index = threading.local()
        super().__init__()

    def _serve(self, conn: ServerConnection) -> None:
        self._index.value = conn.index
        try:
            super()._serve(conn)
        except h11.RemoteProtocolError:
            # The client gave up in the middle of a request. Not recorded:
            # whether its close arrives as an EOF (seen here) or as a reset
            # (an OSError, ended quietly by RawServer) is a race.
            pass

    def _reply(self, request: h11.Request, body: bytes, path: str) -> Reply | None:
        raw = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in request.headers.raw_items()]
        headers, recorded = _without_randomness(raw, body)
        seen = Seen(self._index.value, request.method.decode(), path, tuple(headers), recorded)
        with self._lock:
            self.seen.append(seen)
        base, _, query = path.partition("?")
        name = base.strip("/")
        route = ROUTES.get(name) or ROUTES.get(name.rsplit("/", 1)[0])
        if route is not None:
            reply = route(self, request, body, dict(parse_qsl(query, keep_blank_values=True)))
        else:
            reply = super()._reply(request, body, path)
        return _without_body(reply) if request.method == b"HEAD" else reply

    def observation(self) -> Observation:
        """Every request (connections numbered from 1) and the connection count."""
        with self._lock:
            seen = list(self.seen)
        requests = [(s.connection, s.method, s.target, s.headers, s.body) for s in seen]
        return {"server_saw": requests, "connections": self.accepted}


class TLSParityServer(ParityServer):
    """The parity server behind TLS: each accepted socket is wrapped in the
    handler with the server context."""

    def __init__(self, finished: threading.Event, context: ssl.SSLContext) -> None:
        self.context = context
        self.handshakes = 0
        super().__init__(finished)

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _serve(self, conn: ServerConnection) -> None:
        try:
            conn.sock = self.context.wrap_socket(conn.sock, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the client rejected the certificate, or hung up
        with self._lock:
            self.handshakes += 1
            self._socks.append(conn.sock)  # so that stop() shuts it down
        super()._serve(conn)

    def observation(self) -> Observation:
        return {**super().observation(), "handshakes": self.handshakes}


Script = Callable[["ScriptedServer", ServerConnection], None]


class ScriptedServer(RawServer):
    """A raw-socket server running ``script`` on each connection, recording
    each request head it reads."""

    def __init__(self, script: Script, finished: threading.Event) -> None:
        self.finished = finished
        self.heads: list[bytes] = []
        self._script = script
        super().__init__(lambda conn: script(self, conn))

    def read_head(self, conn: ServerConnection) -> bytes:
        """Read one request head (requests in raw cases have no body)."""
        head = conn.recv_request_head()
        if head:
            with self._lock:
                self.heads.append(head)
        return head

    def observation(self) -> Observation:
        with self._lock:
            return {"server_saw": list(self.heads), "connections": self.accepted}


def reply_and_close(data: bytes) -> Script:
    """Read a request head, send ``data`` and hang up."""

    def script(server: ScriptedServer, conn: ServerConnection) -> None:
        if server.read_head(conn):
            conn.sock.sendall(data)

    return script


def hang_up_after_head(server: ScriptedServer, conn: ServerConnection) -> None:
    """Read a request's head (recording it without the body bytes that came
    with it) and hang up, the rest of the request unread."""
    head = conn.recv_request_head()
    if head:
        with server._lock:
            server.heads.append(head[: head.index(b"\r\n\r\n") + 4])


def reply_and_wait(data: bytes) -> Script:
    """Read a request head, send ``data``, then nothing until the run ends."""

    def script(server: ScriptedServer, conn: ServerConnection) -> None:
        if server.read_head(conn):
            conn.sock.sendall(data)
            server.finished.wait(WAIT)

    return script


def reply_each(data: bytes) -> Script:
    """Answer every request on the connection with ``data``."""

    def script(server: ScriptedServer, conn: ServerConnection) -> None:
        while server.read_head(conn):
            conn.sock.sendall(data)

    return script


class SilentTLSServer(ScriptedServer):
    """An https origin that accepts connections and never says a word: a
    TLS handshake with it times out."""

    def __init__(self, finished: threading.Event) -> None:
        super().__init__(lambda server, conn: server.finished.wait(WAIT), finished)

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.port}"


class BacklogServer:
    """A listener whose accept queue is full, so that a connect to it
    times out (Linux drops the SYN), all on 127.0.0.1."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.port: int = self._listener.getsockname()[1]
        # Fills the one place in the queue; never accepted.
        self._filler = socket.create_connection(("127.0.0.1", self.port))

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def observation(self) -> Observation:
        return {}

    def stop(self) -> None:
        self._filler.close()
        self._listener.close()


class RefusedServer:
    """A loopback port nobody listens on: bound, then released."""

    def __init__(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            self.port: int = sock.getsockname()[1]

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def observation(self) -> Observation:
        return {}


@contextmanager
def serve_http(env: Env) -> Iterator[Server]:
    """The parity server over plain HTTP."""
    server = ParityServer(env.finished)
    try:
        yield server
    finally:
        server.stop()


def serve_tls(kind: str) -> Serve:
    """The parity server over TLS with a certificate of ``kind``
    (see :meth:`Certs.server_context`)."""

    @contextmanager
    def serve(env: Env) -> Iterator[Server]:
        server = TLSParityServer(env.finished, env.certs.server_context(kind))
        try:
            yield server
        finally:
            server.stop()

    return serve


def serve_raw(script: Script) -> Serve:
    """A scripted raw-socket server."""

    @contextmanager
    def serve(env: Env) -> Iterator[Server]:
        server = ScriptedServer(script, env.finished)
        try:
            yield server
        finally:
            server.stop()

    return serve


@contextmanager
def serve_silent_tls(env: Env) -> Iterator[Server]:
    """An https origin whose TLS handshakes time out."""
    server = SilentTLSServer(env.finished)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def serve_backlog(env: Env) -> Iterator[Server]:
    """A port whose connects time out."""
    server = BacklogServer()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def serve_refused(env: Env) -> Iterator[Server]:
    """A port whose connects are refused."""
    yield RefusedServer()


# -- the case table --------------------------------------------------------------


@dataclass(frozen=True)
class Differs:
    """Where poolwatch must differ on one observed key: what it gives
    instead, and why (the case also says why in a comment)."""

    poolwatch: Any
    why: str


Run = Callable[[C, Env, Observation], None]
Options = Callable[[Env], dict[str, Any]]


def differs(why: str, **poolwatch: Any) -> dict[str, Differs]:
    """Keys on which poolwatch must differ, all for the same reason."""
    return {key: Differs(value, why) for key, value in poolwatch.items()}


def no_options(env: Env) -> dict[str, Any]:
    """Construct the client, adapter or transport with no arguments."""
    return {}


@dataclass(frozen=True)
class Case(Generic[C]):
    """One row of a parity table.

    ``run`` drives the client and records what it saw; ``expect`` holds
    values both flavours must observe (so that a case that tests nothing
    fails); ``serve`` makes the server; ``options`` are the arguments of
    the stock adapter or transport and of poolwatch's; ``differs`` lists
    the keys on which poolwatch must differ.
    """

    name: str
    run: Run[C]
    expect: Mapping[str, Any]
    serve: Serve = serve_http
    options: Options = no_options
    differs: Mapping[str, Differs] = field(default_factory=dict)


def table(cases: list[Case[C]]) -> list[Any]:
    """The cases as pytest parameters, checking the ids are unique."""
    ids = [case.name for case in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"duplicate case ids: {duplicates}"
    return [pytest.param(case, id=case.name) for case in cases]


OpenClient = Callable[[str, dict[str, Any]], AbstractContextManager[C]]


def observe(
    case: Case[C], flavour: str, open_client: OpenClient[C], certs: Certs, tmp_path: Path
) -> Observation:
    """Run ``case`` once with the ``flavour`` client against a fresh server:
    what the client saw, the exception type it raised, the warnings, and
    what the server saw."""
    env = Env(certs, tmp_path / flavour, threading.Event())
    env.tmp_path.mkdir()
    observed: Observation = {}
    with case.serve(env) as server:
        env.server = server
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with open_client(flavour, case.options(env)) as client:
                    try:
                        case.run(client, env, observed)
                    except Exception as exc:
                        observed["error"] = type(exc)
        finally:
            env.finished.set()  # every server-side wait ends with the run
    if flavour == STOCK:
        # The stock client can leave a closed-early connection's socket in a
        # reference cycle (seen with requests on Python 3.10: a streamed
        # chunked body closed early), open until the cycle is collected.
        # poolwatch's run is not helped this way: its leftovers must show.
        gc.collect()
    observed.update(server.observation())
    if caught:
        observed["warnings"] = sorted({w.category.__name__ for w in caught})
    normalised: Observation = _normalised(observed, f"127.0.0.1:{server.port}")
    return normalised


def _normalised(value: Any, hostport: str) -> Any:
    """``value`` with this run's port replaced, so that runs compare."""
    if isinstance(value, str):
        return value.replace(hostport, "127.0.0.1:PORT")
    if isinstance(value, bytes):
        return value.replace(hostport.encode(), b"127.0.0.1:PORT")
    if isinstance(value, dict):
        return {key: _normalised(item, hostport) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_normalised(item, hostport) for item in value)
    return value


def observe_both(
    case: Case[C], open_client: OpenClient[C], certs: Certs, tmp_path: Path
) -> dict[str, Observation]:
    """Run ``case`` with the stock client, then with poolwatch."""
    return {flavour: observe(case, flavour, open_client, certs, tmp_path) for flavour in FLAVOURS}


MISSING = "<missing>"  # an observation without the key


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + "..."


def _mismatches(got: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    return [
        f"{key}: {_short(got.get(key, MISSING))} instead of {_short(value)}"
        for key, value in wanted.items()
        if got.get(key, MISSING) != value
    ]


def assert_parity(case: Case[Any], seen: Mapping[str, Observation]) -> None:
    """Both flavours saw what the case expects, and the same as each other,
    except on the keys where poolwatch must differ."""
    stock, ours = seen[STOCK], seen[POOLWATCH]
    wrong = _mismatches(stock, case.expect)
    assert not wrong, "the stock client did not see what the case expects: " + "; ".join(wrong)
    wanted = {key: value for key, value in case.expect.items() if key not in case.differs}
    wanted.update({key: difference.poolwatch for key, difference in case.differs.items()})
    wrong = _mismatches(ours, wanted)
    assert not wrong, "poolwatch did not see what the case expects: " + "; ".join(wrong)
    compared = sorted((set(stock) | set(ours)) - set(case.differs))
    wrong = _mismatches(ours, {key: stock.get(key, MISSING) for key in compared})
    assert not wrong, "poolwatch saw otherwise than stock: " + "; ".join(wrong)


def visible_headers(items: Any) -> list[tuple[str, str]]:
    """Response header pairs in order, without Date and Server."""
    return [(name, value) for name, value in items if name.lower() not in INVISIBLE_HEADERS]
