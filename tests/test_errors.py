"""Errors: bad input and misbehaving servers raise a documented exception
that names the method and URL, the connection it happened on is closed, and
the pool keeps working (R9, R10, R13, R16, R17)."""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import pytest

import poolwatch
from poolwatch._core.exchange import MAX_HEAD_SIZE
from tests import async_support
from tests.conftest import assert_at_rest
from tests.eventlog import EventLog
from tests.servers import (
    HTTPServer,
    RawServer,
    Reply,
    ServerConnection,
    answering,
    http_server,
    raw_server,
)

OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
OK = OK_HEAD + b"ok"
HEAD_LIMIT = MAX_HEAD_SIZE  # poolwatch's limit on a response head
# Generous for a loopback round trip, short enough to keep the suite fast.
WAIT = 10.0


# -- helpers -----------------------------------------------------------------


@contextmanager
def watched_transport(**options: Any) -> Iterator[tuple[poolwatch.Transport, EventLog]]:
    """A transport with an :class:`EventLog`, closed at the end."""
    log = EventLog()
    with poolwatch.Transport(**options) as transport:
        transport.add_listener(log)
        yield transport, log


@dataclass
class Script:
    """What a :class:`RawServer` does: the first connection runs ``fault``;
    every later one answers each request with ``200 ok`` (so the test can
    show the pool still works). Records each connection and request head."""

    fault: Callable[[Script, ServerConnection], None]
    conns: list[ServerConnection] = field(default_factory=list)
    heads: list[bytes] = field(default_factory=list)
    finished: threading.Event = field(default_factory=threading.Event)

    def __call__(self, conn: ServerConnection) -> None:
        self.conns.append(conn)
        if conn.index == 1:
            self.fault(self, conn)
        else:
            self.serve_ok(conn)

    def read_head(self, conn: ServerConnection) -> bytes:
        head = conn.recv_request_head()
        if head:
            self.heads.append(head)
        return head

    def serve_ok(self, conn: ServerConnection, count: int | None = None) -> None:
        """Answer ``count`` requests (all of them if ``None``) with 200 ok."""
        served = 0
        while (count is None or served < count) and (head := self.read_head(conn)):
            conn.sock.sendall(OK_HEAD if head.startswith(b"HEAD ") else OK)
            served += 1

    def count(self, method: bytes) -> int:
        """How many request heads with ``method`` the server received."""
        return sum(1 for head in self.heads if head.startswith(method + b" "))


@contextmanager
def scripted(
    fault: Callable[[Script, ServerConnection], None],
) -> Iterator[tuple[RawServer, Script]]:
    """A :class:`RawServer` running a :class:`Script` with ``fault``."""
    script = Script(fault)
    with raw_server(script) as server:
        try:
            yield server, script
        finally:
            script.finished.set()  # before stop(), which joins the handlers


def reply_then_wait(data: bytes) -> Callable[[Script, ServerConnection], None]:
    """Read the request head, send ``data``, then keep the connection open
    until the client closes it."""

    def fault(script: Script, conn: ServerConnection) -> None:
        script.read_head(conn)
        conn.sock.sendall(data)
        conn.wait_for_close(WAIT)

    return fault


def reply_then_hang_up(data: bytes) -> Callable[[Script, ServerConnection], None]:
    """Read the request head, send ``data`` and close the connection."""

    def fault(script: Script, conn: ServerConnection) -> None:
        script.read_head(conn)
        conn.sock.sendall(data)

    return fault


def reply_then_stall(data: bytes) -> Callable[[Script, ServerConnection], None]:
    """Read the request head, send ``data``, then send nothing more until
    the test ends (never reading the rest of the request)."""

    def fault(script: Script, conn: ServerConnection) -> None:
        script.read_head(conn)
        conn.sock.sendall(data)
        script.finished.wait(WAIT)

    return fault


def unused_port() -> int:
    """A loopback port nobody listens on: bound, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def assert_names_request(exc: BaseException, method: str, url: str) -> None:
    """The message says which request failed (STYLE.md, Errors)."""
    assert f"{method} {url}" in str(exc), str(exc)
    assert isinstance(exc, poolwatch.PoolwatchError)
    assert (exc.method, exc.url) == (method, url)


def assert_pool_still_works(transport: poolwatch.Transport, url: str) -> poolwatch.Response:
    """The next request on the same transport succeeds, on a new connection."""
    with transport.request("GET", url) as resp:
        assert resp.status == 200
        assert resp.read() == b"ok"
        assert not resp.reused_connection
    return resp


# -- bad URLs and headers: rejected before anything is sent ------------------


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("127.0.0.1/path", id="no-scheme"),
        pytest.param("ftp://127.0.0.1/file", id="ftp"),
        pytest.param("http:///path", id="no-host"),
        pytest.param("http://:80/path", id="empty-host-with-port"),
        pytest.param("http://127.0.0.1:99999/", id="port-out-of-range"),
        pytest.param("http://127.0.0.1:http/", id="port-not-a-number"),
        pytest.param("http://127.0.0.1/caf\u00e9", id="non-ascii-path"),
        pytest.param("http://b\u00fccher.test/", id="non-ascii-host"),
    ],
)
def test_invalid_url_is_rejected(
    transport: poolwatch.Transport, server: HTTPServer, url: str
) -> None:
    """Error tree (STYLE.md Errors; no R number covers URLs): a URL that
    cannot be requested raises InvalidURL (also a ValueError) naming method
    and URL, opens no connection, and the transport keeps working."""
    with pytest.raises(poolwatch.InvalidURL) as info:
        transport.request("GET", url)
    assert isinstance(info.value, ValueError)
    assert_names_request(info.value, "GET", url)
    assert transport.stats().connections_opened == 0
    assert transport.request("GET", server.url()).read() == b"hello world!\n"
    assert server.accepted == 1


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        pytest.param("POST", {"X-Note": "a\r\nX-Injected: 1"}, id="crlf-in-value"),
        pytest.param("POST", {"X-Note": "a\nb"}, id="lf-in-value"),
        pytest.param("POST", {"X-Note": "a\rb"}, id="cr-in-value"),
        pytest.param("POST", {"X-Note": "a\x00b"}, id="nul-in-value"),
        pytest.param("POST", {"X-Bad Name": "a"}, id="space-in-name"),
        pytest.param("POST", {"X-Note\r\nX-Injected": "a"}, id="crlf-in-name"),
        pytest.param(
            "POST", [(b"X-Note", b"a\r\n\r\nGET /smuggled HTTP/1.1")], id="smuggling-bytes"
        ),
        pytest.param("POST", {"X-Note": "snow \u2603"}, id="value-not-latin-1"),
        pytest.param("POST", {"Content-Length": "abc"}, id="bad-content-length"),
        pytest.param("POST", {"Content-Length": "5"}, id="content-length-not-the-body-length"),
        pytest.param("POST", {"Transfer-Encoding": "gzip"}, id="unsupported-transfer-encoding"),
        pytest.param("GET /x", {}, id="space-in-method"),
        pytest.param("G\u00c9T", {}, id="non-ascii-method"),
    ],
)
def test_bad_request_rejected_before_sending(
    transport: poolwatch.Transport, server: HTTPServer, method: str, headers: Any
) -> None:
    """Request writing (R15-R16 section; R10's "never an unknown state"): a
    header with CR, LF or NUL in it, an invalid name, a value that cannot be
    encoded, bad framing headers or a bad method raise LocalProtocolError
    naming method and URL in the caller, before any connection is made: the
    server sees only the next, valid request."""
    url = server.url("/injected")
    with pytest.raises(poolwatch.LocalProtocolError) as info:
        transport.request(method, url, headers=headers, body=b"x")
    assert_names_request(info.value, method.upper(), url)
    assert transport.stats().connections_opened == 0
    assert transport.request("GET", server.url("/after")).read() == b"hello world!\n"
    assert server.accepted == 1
    assert [path for _, _, path, _ in server.requests] == ["/after"]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"X-Count": 5}, id="int-value"),
        pytest.param({"X-Note": None}, id="none-value"),
        pytest.param({5: "x"}, id="int-name"),
        pytest.param([("X-Note",)], id="not-a-pair"),
        pytest.param([("X-Note", "a", "b")], id="a-triple"),
        pytest.param("X-Note: a", id="a-string"),
        pytest.param(5, id="an-int"),
    ],
)
def test_headers_of_the_wrong_kind_are_a_type_error(
    transport: poolwatch.Transport, server: HTTPServer, headers: Any
) -> None:
    """Headers that are not str or bytes names and values, in a mapping or
    pairs, raise TypeError saying what was given, before any connection is
    made."""
    with pytest.raises(TypeError, match=r"str or bytes|mapping or \(name, value\) pairs"):
        transport.request("GET", server.url(), headers=headers)
    assert transport.stats().connections_opened == 0
    assert transport.request("GET", server.url()).read() == b"hello world!\n"


@pytest.mark.parametrize(
    ("method", "url", "body", "match"),
    [
        pytest.param(b"GET", "server", None, "method must be str, not bytes", id="bytes-method"),
        pytest.param(
            "GET", b"http://127.0.0.1/", None, "url must be str, not bytes", id="bytes-url"
        ),
        pytest.param("GET", None, None, "url must be str, not NoneType", id="no-url"),
        pytest.param("POST", "server", {"a": "1"}, "encode a form or JSON yourself", id="dict"),
        pytest.param("POST", "server", 5, "request body must be", id="int-body"),
    ],
)
def test_request_arguments_of_the_wrong_kind_are_a_type_error(
    transport: poolwatch.Transport,
    server: HTTPServer,
    method: Any,
    url: Any,
    body: Any,
    match: str,
) -> None:
    """A method or URL that is not a str, or a body that is not one (a
    dict is not form-encoded: that is the caller's choice), raises
    TypeError saying what was given, before any connection is made."""
    with pytest.raises(TypeError, match=match):
        transport.request(method, server.url() if url == "server" else url, body=body)
    assert transport.stats().connections_opened == 0
    assert transport.request("GET", server.url()).read() == b"hello world!\n"


@pytest.mark.parametrize("size", ["5", 5.0])
def test_a_read_size_of_the_wrong_kind_leaves_the_body_alone(
    transport: poolwatch.Transport, server: HTTPServer, size: Any
) -> None:
    """``read()``, ``read1()`` and ``iter_bytes()`` given a size that is not
    an int raise TypeError naming it, and the body is still there to read:
    the connection is not torn down as for an interrupted read."""
    with transport.request("GET", server.url()) as resp:
        for call in (resp.read, resp.read1, lambda size: next(resp.iter_bytes(size))):
            with pytest.raises(TypeError, match="must be an int or None, not"):
                call(size)
        assert resp.read() == b"hello world!\n"
        assert resp.outcome == "drained"
    assert transport.stats().idle_connections == 1


def test_async_read_size_of_the_wrong_kind_leaves_the_body_alone(server: HTTPServer) -> None:
    async def main() -> None:
        async with poolwatch.AsyncTransport() as t, await t.request("GET", server.url()) as resp:
            for call in (resp.read, resp.read1):
                with pytest.raises(TypeError, match="amt must be an int or None, not str"):
                    await call("5")  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="chunk_size must be an int or None"):
                await anext(resp.aiter_bytes("5"))  # type: ignore[arg-type]
            assert await resp.read() == b"hello world!\n"
            assert resp.outcome == "drained"

    async_support.run(main)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        pytest.param({"ssl_context": "x"}, "ssl_context must be", id="context"),
        pytest.param({"proxy": 5}, "proxy must be", id="proxy"),
        pytest.param({"listener": 5}, "listener must be callable", id="listener"),
    ],
)
def test_request_options_of_the_wrong_kind_are_a_type_error(
    transport: poolwatch.Transport, server: HTTPServer, options: dict[str, Any], match: str
) -> None:
    """A request's TLS context, proxy or listener of the wrong kind raises
    TypeError naming it before any connection is made (a context was
    ignored for http, a listener failed only at its first event)."""
    with pytest.raises(TypeError, match=match):
        transport.request("GET", server.url(), **options)
    assert transport.stats().connections_opened == 0
    assert transport.request("GET", server.url()).read() == b"hello world!\n"


@pytest.mark.parametrize("cls", [poolwatch.Transport, poolwatch.AsyncTransport])
def test_a_listener_that_cannot_be_called_is_refused(cls: type[Any]) -> None:
    """``add_listener`` refuses what cannot be called with each event."""
    transport = cls()
    with pytest.raises(TypeError, match="listener must be callable"):
        transport.add_listener(5)
    assert transport._listeners == ()
    if isinstance(transport, poolwatch.Transport):
        transport.close()  # the asyncio one has opened nothing: no loop to close it on


def test_socket_options_from_an_iterator_are_kept(server: HTTPServer) -> None:
    """Socket options given as a generator are all applied to the
    connection's socket (checking them does not use them up)."""
    options = (option for option in [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)])
    with poolwatch.Transport(socket_options=options) as t, t.request("GET", server.url()) as resp:
        sock = resp.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert resp.read() == b"hello world!\n"


def test_headers_as_an_iterator_are_all_sent(transport: poolwatch.Transport) -> None:
    """Headers given as a generator of pairs are sent, every one (a
    generator can be read only once, and is not taken for a repeated
    request)."""

    def echo_headers(request: h11.Request, received: bytes) -> Reply:
        sent = dict(request.headers)
        return Reply(body=sent.get(b"x-one", b"-") + sent.get(b"x-two", b"-"))

    with http_server({"/h": echo_headers}) as echo:
        for _ in range(2):
            pairs = ((name, value) for name, value in [("X-One", "1"), ("X-Two", "2")])
            assert transport.request("GET", echo.url("/h"), headers=pairs).read() == b"12"


@pytest.mark.parametrize("cls", [poolwatch.Transport, poolwatch.AsyncTransport])
@pytest.mark.parametrize(
    ("options", "error", "names"),
    [
        pytest.param({"max_connections": 0}, ValueError, "max_connections", id="no-connections"),
        pytest.param({"max_idle_per_host": 1.5}, TypeError, "max_idle_per_host", id="float-count"),
        pytest.param({"max_idle": True}, TypeError, "max_idle", id="bool-count"),
        pytest.param({"idle_timeout": "90"}, TypeError, "idle_timeout", id="str-timeout"),
        pytest.param({"read_timeout": "10"}, TypeError, "read timeout", id="str-read-timeout"),
        pytest.param({"idle_timeout": float("inf")}, ValueError, "idle_timeout", id="inf-idle"),
        pytest.param({"connect_timeout": True}, TypeError, "connect timeout", id="bool-timeout"),
        pytest.param({"read_timeout": float("inf")}, ValueError, "read timeout", id="inf-timeout"),
        pytest.param({"call_site_depth": -1}, ValueError, "call_site_depth", id="negative-depth"),
        pytest.param({"call_site_depth": "2"}, TypeError, "call_site_depth", id="str-depth"),
        pytest.param(
            {"expect_continue_timeout": "1"}, TypeError, "expect_continue_timeout", id="str-wait"
        ),
        pytest.param(
            {"expect_continue_timeout": float("nan")},
            ValueError,
            "expect_continue_timeout",
            id="nan-wait",
        ),
        pytest.param(
            {"expect_continue_timeout": float("inf")},
            ValueError,
            "expect_continue_timeout",
            id="inf-wait",
        ),
        pytest.param({"uds": 5}, TypeError, "uds", id="uds-not-a-path"),
        pytest.param({"ssl_context": "x"}, TypeError, "ssl_context", id="context-not-a-context"),
        pytest.param({"local_address": 5}, TypeError, "local_address", id="address-not-a-str"),
        pytest.param({"socket_options": [(1,)]}, TypeError, "socket_options", id="short-option"),
        pytest.param({"socket_options": 5}, TypeError, "socket_options", id="options-not-a-list"),
    ],
)
def test_bad_transport_arguments_are_refused_at_once(
    cls: type[Any], options: dict[str, Any], error: type[Exception], names: str
) -> None:
    """A transport's arguments of the wrong kind or out of range raise in the
    constructor, naming the argument (not at first use)."""
    with pytest.raises(error, match=names):
        cls(**options)


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), True, 0, -1.0])
def test_bad_request_timeout_is_refused_before_dialling(
    transport: poolwatch.Transport, server: HTTPServer, timeout: Any
) -> None:
    """A request's timeout that no socket or lock could wait for (infinite,
    NaN, not above zero) or that is not a number raises at once, naming the
    value, and no connection is made; ``None`` is how to ask for no limit."""
    error = TypeError if timeout is True else ValueError
    with pytest.raises(error, match="timeout must be"):
        transport.request("GET", server.url(), timeout=timeout)
    assert transport.stats().connections_opened == 0
    assert transport.request("GET", server.url()).read() == b"hello world!\n"


def test_connection_refused(transport: poolwatch.Transport, server: HTTPServer) -> None:
    """R1 (dial): a refused dial raises ConnectError naming method and URL,
    opens nothing, and the transport stays usable."""
    url = f"http://127.0.0.1:{unused_port()}/nobody"
    with pytest.raises(poolwatch.ConnectError) as info:
        transport.request("DELETE", url)
    assert_names_request(info.value, "DELETE", url)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    stats = transport.stats()
    assert (stats.connections_opened, stats.open_connections, stats.workers_alive) == (0, 0, 0)
    assert transport.request("GET", server.url()).read() == b"hello world!\n"


def test_connection_refused_frees_the_per_host_slot(server: HTTPServer) -> None:
    """R12: a failed dial gives its slot back, so with one connection per
    host allowed, repeated refusals never turn into a pool timeout."""
    url = f"http://127.0.0.1:{unused_port()}/"
    with poolwatch.Transport(max_connections_per_host=1, pool_timeout=1.0) as t:
        for _ in range(3):
            with pytest.raises(poolwatch.ConnectError):
                t.request("GET", url)
        assert t.stats().waiting_requests == 0


# -- R10 framing errors --------------------------------------------------------

BIG_HEADERS = b"".join(b"X-Filler-%05d: %s\r\n" % (i, b"f" * 100) for i in range(2400))
assert len(BIG_HEADERS) > HEAD_LIMIT


def _framing_case(case_id: str, response: bytes, phase: str, *, hangs_up: bool = False) -> Any:
    """One row: what the server sends, whether it then hangs up (otherwise
    it waits for the client to close), and where the error shows."""
    return pytest.param(response, hangs_up, phase, id=case_id)


@pytest.mark.parametrize(
    ("response", "hangs_up", "phase"),
    [
        _framing_case(
            "body-shorter-than-content-length",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
            "body",
            hangs_up=True,
        ),
        _framing_case(
            "bad-chunk-size",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
            "body",
        ),
        _framing_case(
            "chunk-longer-than-its-size",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
            "body",
        ),
        _framing_case(
            "chunked-body-cut-off",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
            "body",
            hangs_up=True,
        ),
        _framing_case(
            "signed-content-length",
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
            "head",
        ),
        _framing_case(
            "negative-content-length", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "head"
        ),
        _framing_case(
            "non-numeric-content-length",
            b"HTTP/1.1 200 OK\r\nContent-Length: five\r\n\r\nhello",
            "head",
        ),
        _framing_case(
            "conflicting-content-length",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            "head",
        ),
        _framing_case(
            "headers-over-the-limit",
            b"HTTP/1.1 200 OK\r\n" + BIG_HEADERS + b"Content-Length: 2\r\n\r\nok",
            "head",
        ),
        _framing_case(
            "unterminated-head-over-the-limit",
            b"HTTP/1.1 200 OK\r\n" + BIG_HEADERS,
            "head",
        ),
        _framing_case("garbage-status-line", b"garbage instead of a status line\r\n\r\n", "head"),
        _framing_case(
            "non-numeric-status", b"HTTP/1.1 abc Nope\r\nContent-Length: 0\r\n\r\n", "head"
        ),
        _framing_case(
            "bytes-after-content-length-body",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
            "body",
        ),
        _framing_case(
            "bytes-after-chunked-body",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nEXTRA",
            "body",
        ),
        _framing_case("bytes-after-204", b"HTTP/1.1 204 No Content\r\n\r\nEXTRA", "head"),
        _framing_case("http-0.9-body-without-head", b"<html>hello</html>\r\n\r\n", "head"),
        _framing_case(
            "101-to-a-plain-request",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            "head",
        ),
        _framing_case(
            "content-length-and-transfer-encoding",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nok\r\n0\r\n\r\n",
            "head",
        ),
    ],
)
def test_framing_error_closes_connection(response: bytes, hangs_up: bool, phase: str) -> None:
    """R10: a malformed response raises RemoteProtocolError naming method
    and URL (from request() if the head is bad, from read() if the body
    is); the body outcome is errored; poolwatch closes the connection (the
    server sees it go) and never pools it; the next request succeeds on a
    new connection."""
    fault = reply_then_hang_up(response) if hangs_up else reply_then_wait(response)
    with scripted(fault) as (server, script), watched_transport() as (t, log):
        url = server.url("/framing")
        with pytest.raises(poolwatch.RemoteProtocolError) as info:
            resp = t.request("GET", url)
            assert phase == "body", f"the bad head was accepted: {resp!r}"
            try:
                resp.read()
            finally:
                assert resp.outcome == "errored"
        assert_names_request(info.value, "GET", url)
        closed = log.wait_for("conn_closed")
        if not hangs_up:
            assert server.wait_handlers_done(1)
            assert script.conns[0].closed_by_peer.is_set()
        stats = assert_at_rest(t)
        assert (stats.connections_closed, stats.idle_connections, stats.retries) == (1, 0, 0)
        assert stats.bodies_errored == (1 if phase == "body" else 0)
        resp = assert_pool_still_works(t, server.url("/next"))
        assert resp.connection_id != closed[0].connection_id
        assert server.accepted == 2


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"zz\r\nabc\r\n0\r\n\r\n", "illegal chunk header"),
        (b"3\r\nabcdef\r\n0\r\n\r\n", "malformed chunk footer"),
        (b"2\r\nok\r\n0\r\nNoColon\r\n\r\n", "illegal header line"),
    ],
    ids=["chunk-size", "chunk-longer-than-its-size", "trailer-line"],
)
def test_a_chunked_framing_error_says_what_was_wrong(body: bytes, reason: str) -> None:
    """The error names what h11 found wrong with the body (it tells it once:
    found while the head's reader took what came with it, it is kept for
    the read), on both transports."""
    response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body

    async def read_async(url: str) -> None:
        async with poolwatch.AsyncTransport() as t:
            resp = await t.request("GET", url)
            with pytest.raises(poolwatch.RemoteProtocolError, match=f"bad body: {reason}"):
                await resp.read()

    with raw_server(answering(response)) as server:
        with poolwatch.Transport() as t:
            resp = t.request("GET", server.url())
            with pytest.raises(poolwatch.RemoteProtocolError, match=f"bad body: {reason}"):
                resp.read()
        async_support.run(lambda: read_async(server.url()))


def test_head_cut_off_is_a_read_error() -> None:
    """R10/R13: a server that hangs up in the middle of the response head
    causes a RemoteDisconnected (a ReadError, as when nothing came) naming
    method and URL (a network failure, not retried since response bytes
    arrived); the pool stays usable."""
    fault = reply_then_hang_up(b"HTTP/1.1 200 OK\r\nContent-Le")
    with scripted(fault) as (server, _), watched_transport() as (t, log):
        url = server.url("/cut")
        with pytest.raises(
            poolwatch.RemoteDisconnected, match="middle of the response head"
        ) as info:
            t.request("GET", url)
        assert_names_request(info.value, "GET", url)
        log.wait_for("conn_closed")
        assert assert_at_rest(t).connections_closed == 1
        assert_pool_still_works(t, server.url("/next"))


@pytest.mark.parametrize("size", [16 * 1024 + 1, 80 * 1024, HEAD_LIMIT - 1024])
def test_large_head_within_limit_is_accepted(size: int) -> None:
    """R10 boundary: a response head larger than h11's default 16 KiB (and
    than http.client's 64 KiB per line) but under poolwatch's 256 KiB limit
    is a normal response; the connection is reused."""
    filler = b"X-Filler: " + b"f" * (size - 64) + b"\r\n"
    response = b"HTTP/1.1 200 OK\r\n" + filler + b"Content-Length: 2\r\n\r\nok"

    def fault(script: Script, conn: ServerConnection) -> None:
        while script.read_head(conn):
            conn.sock.sendall(response)

    with scripted(fault) as (server, _), watched_transport() as (t, _):
        for _ in range(2):
            with t.request("GET", server.url()) as resp:
                assert len(resp.headers["x-filler"]) == size - 64
                assert resp.read() == b"ok"
        assert t.stats().connections_opened == 1


@pytest.mark.parametrize("end", [b"Content-Length: 2\r\n\r\nok", b""], ids=["whole", "unended"])
def test_head_over_the_limit_says_so(end: bytes) -> None:
    """R10: a head over the limit is refused in those words, whether it
    ends or not (h11 has its own words for the second)."""
    response = b"HTTP/1.1 200 OK\r\n" + BIG_HEADERS + end
    with (
        scripted(reply_then_wait(response)) as (server, _),
        watched_transport() as (t, _),
        pytest.raises(poolwatch.RemoteProtocolError, match="response head larger than"),
    ):
        t.request("GET", server.url())


# -- R9 / scenario 9: an early answer to an upload -----------------------------


def upload(size: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """A streamed (chunked) upload of ``size`` bytes."""
    for _ in range(size // chunk):
        yield b"u" * chunk


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        pytest.param(
            b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n"
            b"Content-Length: 9\r\n\r\ntoo large",
            lambda: b"u" * (256 * 1024),
            id="scenario-9-connection-close",
        ),
        pytest.param(
            # Keep-alive, but far more than the socket buffers can hold
            # (tcp_wmem max is a few MiB): the upload cannot finish.
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo large",
            lambda: upload(64 * 1024 * 1024),
            id="keep-alive-upload-unfinished",
        ),
    ],
)
def test_early_answer_to_upload(answer: bytes, body: Callable[[], Any]) -> None:
    """R9, scenario 9: a large POST answered 413 by a server that reads
    only the head: the caller gets the 413 and its body (no write error
    instead), the connection is closed rather than pooled, and the next
    request uses a new connection."""
    with scripted(reply_then_stall(answer)) as (server, script), watched_transport() as (t, log):
        url = server.url("/upload")
        with t.request("POST", url, body=body()) as resp:
            assert resp.status == 413
            assert resp.read() == b"too large"
        closed = log.wait_for("conn_closed")
        assert closed[0].connection_id == resp.connection_id
        assert log.named("put_idle_conn") == []
        assert assert_pool_still_works(t, server.url("/next")).connection_id != resp.connection_id
        stats = assert_at_rest(t)
        assert (stats.connections_opened, stats.connections_closed) == (2, 1)
        assert (stats.requests, stats.bodies_drained, stats.retries) == (2, 2, 0)
        assert script.count(b"POST") == 1


# -- R16 request bodies ---------------------------------------------------------


def _inspect(request: h11.Request, body: bytes) -> Reply:
    """Echo the request's framing headers and body as JSON."""
    headers = {name.decode(): value.decode() for name, value in request.headers}
    seen = {
        "content-length": headers.get("content-length"),
        "transfer-encoding": headers.get("transfer-encoding"),
        "body": body.decode(),
    }
    return Reply(body=json.dumps(seen).encode())


def _file_at(tmp_path: Path, offset: int) -> io.BufferedReader:
    path = tmp_path / "body.bin"
    path.write_bytes(b"hello, file")
    file = path.open("rb")
    file.seek(offset)
    return file


def _empty_file(tmp_path: Path) -> io.BufferedReader:
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    return path.open("rb")


BodyFactory = Callable[[Path], Any]


@pytest.mark.parametrize(
    ("make_body", "headers", "expected"),
    [
        pytest.param(lambda _: b"hello", {}, ("5", None, "hello"), id="bytes"),
        pytest.param(lambda _: bytearray(b"hello"), {}, ("5", None, "hello"), id="bytearray"),
        pytest.param(lambda _: "h\u00e9llo", {}, ("6", None, "h\u00e9llo"), id="str-as-utf8"),
        pytest.param(lambda _: b"", {}, ("0", None, ""), id="empty-bytes"),
        pytest.param(
            lambda _: [b"he", b"", b"llo"], {}, (None, "chunked", "hello"), id="list-chunked"
        ),
        pytest.param(
            lambda _: (c for c in (b"he", b"llo")), {}, (None, "chunked", "hello"), id="generator"
        ),
        pytest.param(
            lambda _: ["h\u00e9", bytearray(b"l"), memoryview(b"lo")],
            {},
            (None, "chunked", "h\u00e9llo"),
            id="str-and-bytes-like-pieces",
        ),
        pytest.param(
            lambda _: io.StringIO("h\u00e9llo"),
            {},
            (None, "chunked", "h\u00e9llo"),
            id="text-file-chunked-as-utf8",
        ),
        pytest.param(
            lambda _: iter([b"he", b"llo"]),
            {"Content-Length": "5"},
            ("5", None, "hello"),
            id="iterator-with-declared-length",
        ),
        pytest.param(
            lambda _: io.BytesIO(b"hello"), {}, ("5", None, "hello"), id="bytesio-length"
        ),
        pytest.param(
            lambda tmp: _file_at(tmp, 0), {}, ("11", None, "hello, file"), id="file-length"
        ),
        pytest.param(
            lambda tmp: _file_at(tmp, 7), {}, ("4", None, "file"), id="file-from-position"
        ),
        pytest.param(lambda tmp: _file_at(tmp, 20), {}, ("0", None, ""), id="file-past-its-end"),
        pytest.param(_empty_file, {}, ("0", None, ""), id="empty-file"),
        pytest.param(
            lambda _: open("/proc/self/cmdline", "rb"),  # noqa: SIM115
            {},
            (None, "chunked", Path("/proc/self/cmdline").read_text("latin-1")),
            id="file-sized-0-made-as-read",
            marks=pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="no /proc"),
        ),
    ],
)
def test_request_body_framing(
    transport: poolwatch.Transport,
    tmp_path: Path,
    make_body: BodyFactory,
    headers: dict[str, str],
    expected: tuple[str | None, str | None, str],
) -> None:
    """R16: bytes and files are sent with a Content-Length (a file's from
    its size and position; none left past its end; 0 for an empty one),
    iterables, text files and files the system sizes as 0 that have bytes
    (``/proc``) chunked unless the caller declared a length; ``str`` is
    sent UTF-8 encoded, whole or in pieces; the server receives exactly
    the body."""
    body = make_body(tmp_path)
    with http_server({"/inspect": _inspect}) as server:
        try:
            with transport.request("POST", server.url("/inspect"), headers, body) as resp:
                seen = json.loads(resp.read())
        finally:
            if hasattr(body, "close"):
                body.close()
        assert (seen["content-length"], seen["transfer-encoding"], seen["body"]) == expected
        # The connection went back to the pool: the body was framed right.
        assert transport.stats().idle_connections == 1


@pytest.mark.parametrize(
    "pieces",
    [pytest.param([b"ok", 5], id="int"), pytest.param([b"ok", None], id="none")],
)
def test_a_body_piece_of_the_wrong_kind_is_a_type_error(
    transport: poolwatch.Transport, server: HTTPServer, pieces: list[Any]
) -> None:
    """A streamed body's piece that is neither bytes-like nor str raises
    TypeError naming its kind (an int is not sent as that many zero bytes);
    the connection it was going out on is closed and the pool works on."""

    def until_closed(conn: ServerConnection) -> None:
        conn.recv_request_head()
        conn.wait_for_close(WAIT)

    with (
        raw_server(until_closed) as upload_server,
        pytest.raises(TypeError, match="pieces must be bytes or str, not"),
    ):
        transport.request("POST", upload_server.url(), body=iter(pieces))
    stats = assert_at_rest(transport)
    assert stats.open_connections == 0
    assert transport.request("GET", server.url()).read() == b"hello world!\n"


def test_unsupported_body_type_is_rejected(transport: poolwatch.Transport) -> None:
    """R16: a body that is neither bytes, str, an iterable nor a file is a
    TypeError in the caller, before any connection."""
    with pytest.raises(TypeError, match="request body"):
        transport.request("POST", "http://127.0.0.1:1/", body=12345)  # type: ignore[arg-type]
    assert transport.stats().connections_opened == 0


def _read_head_then_wait(script: Script, conn: ServerConnection) -> None:
    script.read_head(conn)
    conn.wait_for_close(WAIT)


@pytest.mark.parametrize(
    ("declared", "chunks"),
    [
        pytest.param(10, [b"abc"], id="fewer-bytes-than-declared"),
        pytest.param(10, [], id="no-bytes-at-all"),
        pytest.param(2, [b"abc"], id="more-bytes-than-declared"),
        pytest.param(4, [b"ab", b"cd", b"e"], id="more-in-a-later-chunk"),
    ],
)
def test_body_length_mismatch(declared: int, chunks: list[bytes]) -> None:
    """R16: an iterable body that yields fewer or more bytes than its
    declared Content-Length raises LocalProtocolError naming method and
    URL, the connection is closed (the server sees it go), and the next
    request works."""
    with scripted(_read_head_then_wait) as (server, script), watched_transport() as (t, log):
        url = server.url("/upload")
        headers = {"Content-Length": str(declared)}
        with pytest.raises(poolwatch.LocalProtocolError) as info:
            t.request("PUT", url, headers, iter(chunks))
        assert_names_request(info.value, "PUT", url)
        log.wait_for("conn_closed")
        assert server.wait_handlers_done(1)
        assert script.conns[0].closed_by_peer.is_set()
        assert assert_at_rest(t).connections_closed == 1
        assert_pool_still_works(t, server.url("/next"))
        assert script.count(b"PUT") == 1


class BodyFailed(Exception):
    """Raised by a test's request body."""


def _failing_body(after: list[bytes], error: BodyFailed) -> Iterator[bytes]:
    yield from after
    raise error


@pytest.mark.parametrize(
    ("headers", "sent_first"),
    [
        pytest.param({}, [], id="chunked-fails-at-once"),
        pytest.param({}, [b"part"], id="chunked-fails-midway"),
        pytest.param({"Content-Length": "100"}, [b"part"], id="sized-fails-midway"),
    ],
)
def test_body_iterator_exception_reaches_caller(
    headers: dict[str, str], sent_first: list[bytes]
) -> None:
    """R16: an exception raised by the request body's own iterator reaches
    the caller unchanged (not retried, not wrapped), the half-sent request's
    connection is closed, and the next request works."""
    error = BodyFailed("disk on fire")
    body: Iterable[bytes] = _failing_body(sent_first, error)
    with scripted(_read_head_then_wait) as (server, script), watched_transport() as (t, log):
        with pytest.raises(BodyFailed) as info:
            t.request("POST", server.url("/upload"), headers, body)
        assert info.value is error
        log.wait_for("conn_closed")
        assert server.wait_handlers_done(1)
        assert script.conns[0].closed_by_peer.is_set()
        stats = assert_at_rest(t)
        assert (stats.connections_closed, stats.retries, stats.requests) == (1, 0, 0)
        assert_pool_still_works(t, server.url("/next"))


# -- R17 timeouts ------------------------------------------------------------


def test_response_header_timeout_then_fast_path(server: HTTPServer) -> None:
    """R17, scenario 11: a slow path times out with ResponseHeaderTimeout (a
    ReadTimeout) naming method and URL; that connection is closed; the next
    request, to a fast path, succeeds on a new connection."""
    url = server.url("/wait/slow")
    with watched_transport(response_header_timeout=0.2) as (t, log):
        try:
            with pytest.raises(poolwatch.ResponseHeaderTimeout) as info:
                t.request("GET", url)
            assert isinstance(info.value, poolwatch.ReadTimeout)
            assert_names_request(info.value, "GET", url)
            closed = log.wait_for("conn_closed")
            assert closed[0]["reason"] == "response_header_timeout"
            with t.request("GET", server.url("/fast")) as resp:
                assert resp.read() == b"hello world!\n"
                assert not resp.reused_connection
            stats = assert_at_rest(t)
            assert (stats.connections_opened, stats.connections_closed) == (2, 1)
            assert (stats.requests, stats.bodies_drained) == (1, 1)
        finally:
            server.release("slow")


def test_response_header_timeout_per_request(server: HTTPServer) -> None:
    """R17: a per-request Timeout overrides the transport's (none here)."""
    url = server.url("/wait/slow2")
    limits = poolwatch.Timeout(response_header=0.2)
    with poolwatch.Transport() as t:
        try:
            with pytest.raises(poolwatch.ResponseHeaderTimeout):
                t.request("GET", url, timeout=limits)
        finally:
            server.release("slow2")
        assert t.request("GET", server.url()).read() == b"hello world!\n"


def test_write_timeout_on_unread_upload() -> None:
    """R17: an upload the server never reads raises WriteTimeout naming
    method and URL once the write limit passes; the connection is closed
    and the pool stays usable."""
    stall = reply_then_stall(b"")
    with scripted(stall) as (server, _), watched_transport(write_timeout=0.2) as (t, log):
        url = server.url("/upload")
        with pytest.raises(poolwatch.WriteTimeout) as info:
            t.request("POST", url, body=upload(64 * 1024 * 1024))
        assert_names_request(info.value, "POST", url)
        assert log.wait_for("conn_closed")[0]["reason"] == "write_error"
        stats = assert_at_rest(t)
        assert (stats.connections_closed, stats.requests, stats.retries) == (1, 0, 0)
        assert_pool_still_works(t, server.url("/next"))


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", id="content-length"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", id="chunked"
        ),
    ],
)
def test_read_timeout_between_body_bytes(head: bytes) -> None:
    """R17: a body that stalls mid-way raises ReadTimeout (not a
    response-header timeout) from read(), naming method and URL; the body
    is errored, the connection closed, and the pool stays usable."""
    fault = reply_then_stall(head)
    with scripted(fault) as (server, _), watched_transport(read_timeout=0.2) as (t, log):
        url = server.url("/trickle")
        resp = t.request("GET", url)
        assert resp.read(3) == b"abc"
        with pytest.raises(poolwatch.ReadTimeout) as info:
            resp.read()
        assert not isinstance(info.value, poolwatch.ResponseHeaderTimeout)
        assert_names_request(info.value, "GET", url)
        assert resp.outcome == "errored"
        assert log.wait_for("conn_closed")[0].connection_id == resp.connection_id
        with pytest.raises(poolwatch.ReadError, match="closed"):
            resp.read()
        assert assert_at_rest(t).bodies_errored == 1
        assert_pool_still_works(t, server.url("/next"))


# -- R13 stale reused connections ----------------------------------------------


def _serve_one_then_drop_next(script: Script, conn: ServerConnection) -> None:
    """Answer the first request, keep the connection alive, then close it
    as soon as the next request arrives, without a response byte."""
    script.serve_ok(conn, count=1)
    script.read_head(conn)


@pytest.mark.parametrize(
    ("method", "headers", "replayable"),
    [
        pytest.param("GET", {}, True, id="GET"),
        pytest.param("HEAD", {}, True, id="HEAD"),
        pytest.param("POST", {}, False, id="POST"),
        pytest.param("PATCH", {}, False, id="PATCH"),
        pytest.param("POST", {"Idempotency-Key": "k1"}, True, id="POST-idempotency-key"),
        pytest.param("POST", {"X-Idempotency-Key": "k2"}, True, id="POST-x-idempotency-key"),
    ],
)
def test_stale_reused_connection(method: str, headers: dict[str, str], replayable: bool) -> None:
    """R13, scenario 8: the server closes a reused connection just as the
    request arrives. A replayable request is retried once on a new
    connection (stats.retries == 1); any other raises a NetworkError naming
    method and URL, and the server saw it exactly once."""
    method_bytes = method.encode()
    body = None if method in ("GET", "HEAD") else b"data"
    with scripted(_serve_one_then_drop_next) as (server, script), watched_transport() as (t, log):
        url = server.url("/stale")
        assert t.request("GET", server.url("/first")).read() == b"ok"
        before = script.count(method_bytes)
        if replayable:
            with t.request(method, url, headers, body) as resp:
                assert resp.status == 200
                assert not resp.reused_connection
                resp.read()
            assert len(log.named("retry")) == 1
            assert script.count(method_bytes) == before + 2
        else:
            with pytest.raises(poolwatch.NetworkError) as info:
                t.request(method, url, headers, body)
            assert_names_request(info.value, method, url)
            assert log.named("retry") == []
            assert script.count(method_bytes) == before + 1
            assert_pool_still_works(t, server.url("/next"))
        stats = assert_at_rest(t)
        assert stats.retries == (1 if replayable else 0)
        assert (stats.connections_opened, stats.connections_closed) == (2, 1)
        assert server.accepted == 2


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_retried_call_is_timed_from_the_call(kind: str) -> None:
    """R13: the time a request spent on the stale connection before its
    retry counts in its durations: ``Timings`` and ``body_done``'s
    ``elapsed`` run from the call, not from the retry."""

    def slow_hang_up(script: Script, conn: ServerConnection) -> None:
        script.serve_ok(conn, count=1)
        script.read_head(conn)
        script.finished.wait(0.3)  # a stale connection slow to fail, then closed

    log = EventLog()
    with scripted(slow_hang_up) as (server, _):
        if kind == "sync":
            with poolwatch.Transport() as t:
                t.add_listener(log)
                assert t.request("GET", server.url("/first")).read() == b"ok"
                with t.request("GET", server.url("/stale")) as resp:
                    resp.read()
                timings = resp.timings
                assert assert_at_rest(t).retries == 1
        else:

            async def main() -> poolwatch.Timings:
                async with poolwatch.AsyncTransport() as t:
                    t.add_listener(log)
                    assert await (await t.request("GET", server.url("/first"))).read() == b"ok"
                    resp = await t.request("GET", server.url("/stale"))
                    await resp.read()
                    assert (await async_support.assert_at_rest(t)).retries == 1
                    return resp.timings

            timings = async_support.run(main)
    assert timings.body_done is not None and timings.body_done >= 0.3
    assert log.named("body_done")[-1].data["elapsed"] >= 0.3


def test_fresh_connection_is_never_retried() -> None:
    """R13: a GET failing on a freshly dialled connection is not retried,
    even though GET is replayable: the failure is raised at once."""

    def hang_up(script: Script, conn: ServerConnection) -> None:
        script.read_head(conn)

    with scripted(hang_up) as (server, script), watched_transport() as (t, _):
        url = server.url("/fresh")
        with pytest.raises(poolwatch.ReadError) as info:
            t.request("GET", url)
        assert_names_request(info.value, "GET", url)
        assert t.stats().retries == 0
        assert script.count(b"GET") == 1
        assert_pool_still_works(t, server.url("/next"))


def test_retry_does_not_replay_a_one_shot_body() -> None:
    """R13: a request with an idempotency key but a body that cannot be
    rewound (an iterator) is not retried after a stale reuse."""
    with scripted(_serve_one_then_drop_next) as (server, script), watched_transport() as (t, _):
        assert t.request("GET", server.url("/first")).read() == b"ok"
        # A read or a write error, depending on which worker notices first.
        with pytest.raises(poolwatch.NetworkError):
            t.request("PUT", server.url("/stale"), {"Idempotency-Key": "k"}, iter([b"once"]))
        assert t.stats().retries == 0
        assert script.count(b"PUT") == 1
