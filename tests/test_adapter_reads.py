"""How the requests adapter reads bodies: small reads of a large body, the
read that reaches the end (R4), an early close (R5), and bodies whose
length the head does not give."""

from __future__ import annotations

import gc
import gzip
import io
import os
import socket
import threading
import warnings
from collections.abc import Iterator

import h11
import pytest
import requests
import requests.adapters
from urllib3.exceptions import ProtocolError

import poolwatch
from tests.servers import HTTPServer, Reply, ServerConnection, http_server, raw_server

# Not a multiple of any read size below, and no two pieces alike, so that a
# byte served twice or skipped changes the result.
BODY = bytes(range(256)) * 1171 + b"end"
WAIT = 10.0  # generous for a loopback round trip; a test fails at it


def _body(request: h11.Request, received: bytes) -> Reply:
    return Reply(body=BODY)


def _chunked(request: h11.Request, received: bytes) -> Reply:
    return Reply(body=iter([BODY[:1000], BODY[1000:200_000], BODY[200_000:]]), chunked=True)


def _gzipped(request: h11.Request, received: bytes) -> Reply:
    return Reply(body=gzip.compress(BODY), headers=[("Content-Encoding", "gzip")])


def _gzip_label(request: h11.Request, received: bytes) -> Reply:
    # Labelled with an encoding urllib3 does not decode: passed through as is.
    return Reply(body=BODY, headers=[("Content-Encoding", "x-unknown")])


@pytest.fixture
def body_server() -> Iterator[HTTPServer]:
    routes = {
        "/gzip": _gzipped,
        "/body": _body,
        "/chunked-body": _chunked,
        "/labelled": _gzip_label,
    }
    with http_server(routes) as srv:
        yield srv


@pytest.fixture
def adapter() -> Iterator[poolwatch.RequestsAdapter]:
    adapter = poolwatch.RequestsAdapter()
    yield adapter
    adapter.close()


def _session(adapter: poolwatch.RequestsAdapter) -> requests.Session:
    session = requests.Session()
    session.mount("http://", adapter)
    return session


@pytest.mark.parametrize("size", [997, 4096, 10_240, 65_537])
@pytest.mark.parametrize("path", ["/body", "/chunked-body", "/labelled"])
def test_raw_reads_of_any_size_give_the_body_once(
    body_server: HTTPServer, adapter: poolwatch.RequestsAdapter, path: str, size: int
) -> None:
    """``raw.read(n)`` in pieces gives every byte once, in order, and the
    last piece releases the connection (R4)."""
    with _session(adapter) as session:
        resp = session.get(body_server.url(path), stream=True)
        pieces = []
        while piece := resp.raw.read(size):
            assert len(piece) <= size
            pieces.append(piece)
        assert b"".join(pieces) == BODY
        assert resp.raw.tell() == len(BODY)
        assert adapter.stats().bodies_drained == 1
        assert session.get(body_server.url(path)).content == BODY
    stats = adapter.stats()
    assert (stats.connections_opened, stats.reused_requests) == (1, 1)


@pytest.mark.parametrize("path", ["/body", "/chunked-body"])
def test_iter_content_and_read1_give_the_body(
    body_server: HTTPServer, adapter: poolwatch.RequestsAdapter, path: str
) -> None:
    """``iter_content`` with and without a chunk size, and ``raw.read1``."""
    with _session(adapter) as session:
        with session.get(body_server.url(path), stream=True) as resp:
            assert b"".join(resp.iter_content(3000)) == BODY
        with session.get(body_server.url(path), stream=True) as resp:
            assert b"".join(resp.iter_content(None)) == BODY
        with session.get(body_server.url(path), stream=True) as resp:
            first = resp.raw.read1(5)
            assert len(first) == 5
            rest = b"".join(iter(lambda: resp.raw.read1(70_000), b""))
            assert first + rest == BODY
    assert adapter.stats().bodies_drained == 3


@pytest.mark.parametrize("size", [1, 7, 512])
def test_small_reads_of_a_chunked_body_take_pieces_from_the_transport(
    body_server: HTTPServer,
    adapter: poolwatch.RequestsAdapter,
    monkeypatch: pytest.MonkeyPatch,
    size: int,
) -> None:
    """``iter_content()`` (requests' default: one byte at a time) and other
    small sizes over a chunked body: the adapter takes what the transport
    holds in one go and serves the small reads from it, instead of one trip
    through urllib3's decoder and the transport per read (which made it
    six times slower than requests' own adapter)."""
    calls = 0
    read1 = poolwatch.Response.read1

    def counted(self: poolwatch.Response, amt: int | None = None) -> bytes:
        nonlocal calls
        calls += 1
        return read1(self, amt)

    monkeypatch.setattr(poolwatch.Response, "read1", counted)
    with _session(adapter) as session:
        resp = session.get(body_server.url("/chunked-body"), stream=True)
        pieces = list(resp.iter_content(size))
        assert all(len(piece) <= size for piece in pieces)
        assert b"".join(pieces) == BODY
        assert adapter.stats().bodies_drained == 1
        assert session.get(body_server.url("/chunked-body")).content == BODY
    # Two trips per piece the transport took from the socket, and one for
    # the last byte, however small the reads.
    assert calls < 100
    stats = adapter.stats()
    assert (stats.connections_opened, stats.reused_requests) == (1, 1)


def test_the_last_byte_of_a_chunked_body_is_left_to_the_read_that_ends_it(
    adapter: poolwatch.RequestsAdapter,
) -> None:
    """Pieces taken ahead of small reads stop short of the body's last
    byte: the body stays open until a read takes it (R4). (The whole body,
    its last chunk included, in one send: a chunked body's end is known
    only once its last chunk has come.)"""
    body = BODY[:5000]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:10], body[10:]))

    def whole(conn: ServerConnection) -> None:
        conn.recv_request_head()
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        conn.sock.sendall(head + chunks + b"0\r\n\r\n")
        conn.recv_request_head()  # until the client closes

    with raw_server(whole) as srv, _session(adapter) as session:
        resp = session.get(srv.url("/"), stream=True)
        assert resp.raw.read(len(body) - 1) == body[:-1]
        assert adapter.stats().open_bodies == 1
        assert resp.raw.read(1) == body[-1:]
        stats = adapter.stats()
        assert (stats.open_bodies, stats.bodies_drained) == (0, 1)


def test_an_early_close_of_a_chunked_body_read_in_small_pieces_tears_it_down(
    body_server: HTTPServer, adapter: poolwatch.RequestsAdapter
) -> None:
    """Pieces taken ahead of small reads never include the body's end: a
    close after all but the last few bytes is still an early close (R5)."""
    with _session(adapter) as session:
        with session.get(body_server.url("/chunked-body"), stream=True) as resp:
            taken = 0
            for piece in resp.iter_content(1000):
                taken += len(piece)
                if taken >= len(BODY) - 1000:
                    break
        stats = adapter.stats()
        assert (stats.bodies_closed_early, stats.bodies_drained) == (1, 0)
        assert stats.connections_closed == 1


def test_the_read_that_reaches_the_end_releases_the_connection(
    server: HTTPServer, adapter: poolwatch.RequestsAdapter
) -> None:
    """A 13-byte body arrives in one piece, but the connection stays checked
    out until a read takes its last byte (R4)."""
    with _session(adapter) as session:
        resp = session.get(server.url(), stream=True)
        assert resp.raw.read(12) == b"hello world!"
        assert adapter.stats().open_bodies == 1
        assert resp.raw.read(1) == b"\n"
        stats = adapter.stats()
        assert (stats.open_bodies, stats.bodies_drained) == (0, 1)
        assert resp.raw.read(1) == b""


def test_an_early_close_tears_down_even_a_buffered_body(
    server: HTTPServer, adapter: poolwatch.RequestsAdapter
) -> None:
    """All 13 bytes are in memory, 5 read, then close: closed early (R5)."""
    with _session(adapter) as session:
        with session.get(server.url(), stream=True) as resp:
            assert resp.raw.read(5) == b"hello"
        stats = adapter.stats()
        assert (stats.bodies_closed_early, stats.bodies_drained) == (1, 0)
        assert stats.connections_closed == 1
        assert session.get(server.url()).text == "hello world!\n"
    assert adapter.stats().connections_opened == 2


def test_reading_after_close_raises_as_http_adapter_does(
    server: HTTPServer, adapter: poolwatch.RequestsAdapter
) -> None:
    """A read after ``close()`` is a broken body, as urllib3 says for
    ``HTTPAdapter``: 3 bytes read, 10 more expected."""
    with _session(adapter) as session:
        resp = session.get(server.url(), stream=True)
        assert resp.raw.read(3) == b"hel"
        resp.close()
        with pytest.raises(ProtocolError, match=r"3 bytes read, 10 more expected"):
            resp.raw.read(3)
    assert adapter.stats().bodies_closed_early == 1


def test_an_encoded_body_still_goes_through_urllib3s_decoder(
    body_server: HTTPServer, adapter: poolwatch.RequestsAdapter
) -> None:
    """With a Content-Encoding urllib3 knows, reads decode as before, and
    ``decode_content=False`` gives the bytes as sent."""
    with _session(adapter) as session:
        assert session.get(body_server.url("/gzip")).content == BODY
        with session.get(body_server.url("/gzip"), stream=True) as resp:
            assert b"".join(iter(lambda: resp.raw.read(4096, decode_content=True), b"")) == BODY
        with session.get(body_server.url("/gzip"), stream=True) as resp:
            sent = b"".join(iter(lambda: resp.raw.read(999, decode_content=False), b""))
            assert gzip.decompress(sent) == BODY
    assert adapter.stats().bodies_drained == 3


def test_each_timeout_applies_to_its_own_request(
    server: HTTPServer, adapter: poolwatch.RequestsAdapter
) -> None:
    """Timeouts are remembered per value: a short one after a long one, and
    a long one again, each applies as given."""
    with _session(adapter) as session:
        assert session.get(server.url(), timeout=30).status_code == 200
        with pytest.raises(requests.exceptions.ReadTimeout):
            session.get(server.url("/wait/first"), timeout=(30, 0.2))
        server.release("first")
        assert session.get(server.url(), timeout=(30, 0.2)).status_code == 200
        assert session.get(server.url(), timeout=30).status_code == 200


def test_the_read_timeout_bounds_sending_the_request_too(
    adapter: poolwatch.RequestsAdapter,
) -> None:
    """A server that takes the head and never reads the body: the upload
    stops at the read timeout (urllib3's socket timeout bounds each send),
    with the error ``HTTPAdapter`` raises then, instead of waiting for ever."""
    stop = threading.Event()
    gave_up: list[bool] = []

    def never_reads(conn: ServerConnection) -> None:
        conn.recv_request_head()
        gave_up.append(not stop.wait(WAIT))  # the client never stopped sending

    body = b"u" * (64 << 20)  # far more than the socket buffers hold
    with raw_server(never_reads) as srv, _session(adapter) as session:
        try:
            with pytest.raises(requests.exceptions.ConnectionError, match="aborted"):
                session.post(srv.url(), data=body, timeout=(5, 0.5))
        finally:
            stop.set()
    assert gave_up == [False]
    assert adapter.stats().request_errors == 1


def _truncated(conn: ServerConnection) -> None:
    conn.recv_request_head()
    conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")


@pytest.mark.parametrize("stock", [True, False], ids=["HTTPAdapter", "RequestsAdapter"])
def test_a_body_cut_short_raises_what_urllib3_raises(stock: bool) -> None:
    """3 of 10 bytes, then the server hangs up: ``raw.read`` returns the
    bytes that arrived, then raises urllib3's ``ProtocolError``, decoding or
    not, and ``.content`` requests'
    ``ChunkedEncodingError``, through either adapter."""
    adapter = requests.adapters.HTTPAdapter() if stock else poolwatch.RequestsAdapter()
    with raw_server(_truncated) as srv, requests.Session() as session:
        session.mount("http://", adapter)
        with session.get(srv.url(), stream=True) as resp:
            assert resp.raw.read(2) == b"ab"
            assert resp.raw.read(8) == b"c"  # what arrived comes first
            with pytest.raises(ProtocolError, match=r"IncompleteRead"):
                resp.raw.read(8)
        with (
            session.get(srv.url(), stream=True) as resp,
            pytest.raises(ProtocolError, match=r"IncompleteRead"),
        ):
            resp.raw.read(8, decode_content=True)  # reads on to the end
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            session.get(srv.url())


def _interleaved(request: h11.Request, received: bytes) -> Reply:
    # Repeated names apart from each other, and the request's X-Plain echoed.
    echoed = dict(request.headers).get(b"x-plain", b"")
    headers = [("Set-Cookie", "a=1"), ("X-Between", "1"), ("Set-Cookie", "b=2")]
    return Reply(body=echoed, headers=headers)


@pytest.mark.parametrize("path", ["/", "/chunked-body"])
def test_a_body_read_to_the_end_leaves_raw_closed_as_http_adapter_does(
    body_server: HTTPServer, server: HTTPServer, path: str
) -> None:
    """``.content`` ends with the file closed, through either adapter."""
    url = body_server.url(path) if path != "/" else server.url()
    seen = []
    for adapter in (requests.adapters.HTTPAdapter(), poolwatch.RequestsAdapter()):
        with requests.Session() as session:
            session.mount("http://", adapter)
            resp = session.get(url)
            seen.append((len(resp.content), resp.raw.closed, resp.raw.isclosed()))
    assert seen[0] == seen[1]
    assert seen[1][1] is True


def test_cookie_message_keeps_the_order_received_and_plain_dict_headers_go_out() -> None:
    """``_original_response.msg`` lists headers as received, as http.client
    does; a prepared request whose headers were replaced by a plain dict is
    sent with them."""
    with http_server({"/": _interleaved}) as srv:
        items = []
        for adapter in (requests.adapters.HTTPAdapter(), poolwatch.RequestsAdapter()):
            with requests.Session() as session:
                session.mount("http://", adapter)
                resp = session.get(srv.url())
                msg = resp.raw._original_response.msg
                items.append([(k, v) for k, v in msg.items() if k.lower() != "date"])
                assert resp.cookies.get_dict() == {"a": "1", "b": "2"}
                prepared = session.prepare_request(requests.Request("GET", srv.url()))
                prepared.headers = {"X-Plain": "yes", "Host": srv.url().split("/")[2]}  # type: ignore[assignment]
                assert adapter.send(prepared).content == b"yes"
        assert items[0] == items[1]
        names = [k for k, _ in items[1]]
        assert names.index("X-Between") == names.index("Set-Cookie") + 1


@pytest.mark.parametrize("stock", [True, False], ids=["HTTPAdapter", "RequestsAdapter"])
def test_raw_fileno_is_the_connection_socket_while_the_body_is_read(stock: bool) -> None:
    """``resp.raw.fileno()`` is the descriptor of the socket the body comes
    on (for ``select()``), as with ``HTTPAdapter``; once the body has ended
    poolwatch's connection may carry another request, so it raises."""
    client_addresses: list[tuple[str, int]] = []
    rest = threading.Event()

    def half_then_rest(conn: ServerConnection) -> None:
        client_addresses.append(conn.sock.getpeername())
        conn.recv_request_head()
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc")
        rest.wait(10)
        conn.sock.sendall(b"def")
        conn.wait_for_close()

    adapter = requests.adapters.HTTPAdapter() if stock else poolwatch.RequestsAdapter()
    with raw_server(half_then_rest) as srv, requests.Session() as session:
        session.mount("http://", adapter)
        with session.get(srv.url(), stream=True) as resp:
            fd = resp.raw.fileno()
            with socket.socket(fileno=os.dup(fd)) as alias:
                assert alias.getsockname() == client_addresses[0]
            rest.set()
            assert resp.content == b"abcdef"
            if not stock:
                with pytest.raises(OSError, match="ended"):
                    resp.raw.fileno()


@pytest.mark.parametrize("stock", [True, False], ids=["HTTPAdapter", "RequestsAdapter"])
def test_a_chunked_raw_reads_as_text_line_by_line(stock: bool) -> None:
    """``io.TextIOWrapper(resp.raw)`` over a chunked body: every line comes
    through. Without a Content-Length, ``raw.closed`` turns true only once a
    read came back empty, as http.client's, not with the last bytes (the
    wrapper checks it before each line it hands over)."""
    lines = [b"line %d\n" % i for i in range(2000)]

    def chunked(request: h11.Request, received: bytes) -> Reply:
        return Reply(body=iter([b"".join(lines[:1500]), b"".join(lines[1500:])]), chunked=True)

    adapter = requests.adapters.HTTPAdapter() if stock else poolwatch.RequestsAdapter()
    with http_server({"/text": chunked}) as srv, requests.Session() as session:
        session.mount("http://", adapter)
        with session.get(srv.url("/text"), stream=True) as resp:
            got = list(io.TextIOWrapper(resp.raw, encoding="ascii"))
            assert resp.raw.closed
    assert len(got) == 2000 and got[-1] == "line 1999\n"


def _mislabelled(request: h11.Request, received: bytes) -> Reply:
    # Said to be gzip, and not: larger than requests' 10 KiB content chunk,
    # so that its first chunk fails to decode with most of it unread.
    return Reply(body=BODY, headers=[("Content-Encoding", "gzip")])


@pytest.mark.parametrize("stream", [False, True])
def test_a_body_that_does_not_decode_is_closed_not_leaked(
    adapter: poolwatch.RequestsAdapter, stream: bool
) -> None:
    """requests raises ``ContentDecodingError`` from inside ``Session.send``
    (the caller never holds the response) or from ``iter_content``: the
    body is closed there, its connection torn down (R5), and nothing is
    reported as leaked (R6)."""
    routes = {"/bad": _mislabelled, "/body": _body}
    with http_server(routes) as srv:
        with _session(adapter) as session, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(requests.exceptions.ContentDecodingError):
                if stream:
                    session.get(srv.url("/bad"), stream=True).content  # noqa: B018
                else:
                    session.get(srv.url("/bad"))
            stats = adapter.stats()
            assert (stats.open_bodies, stats.bodies_closed_early) == (0, 1)
            gc.collect()
            adapter.transport.settle()
            assert session.get(srv.url("/body")).content == BODY
        assert [w.message for w in caught] == []
        stats = adapter.stats()
        assert (stats.bodies_leaked, stats.bodies_drained, stats.connections_opened) == (0, 1, 2)
