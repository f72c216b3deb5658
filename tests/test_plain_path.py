"""Plain exchanges, which skip h11: the request head poolwatch writes itself
and the response heads it reads itself must be exactly what h11 would write
and read; anything else must go through h11, also midway through a
connection's life."""

from __future__ import annotations

import h11
import pytest
from h11._headers import get_comma_header
from hypothesis import given, settings
from hypothesis import strategies as st

import poolwatch
from poolwatch._core import wire
from poolwatch._core.exchange import MAX_HEAD_SIZE, ClientProtocol, Exchange
from poolwatch._core.wire import Head, parse_plain_head
from poolwatch._leaks import CallSite
from poolwatch._models import Request, Timeout
from tests.conftest import assert_at_rest
from tests.servers import ServerConnection, raw_server


class _Exchange(Exchange):
    def head_delivered(self) -> None:
        pass

    def continue_received(self) -> None:
        pass


def _exchange(request: Request) -> _Exchange:
    return _Exchange(request, Timeout(), CallSite(()), None, 0.0)


def _h11_response(data: bytes) -> h11.Response:
    """What h11 reads from ``data`` as the answer to a GET."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=b"GET", target=b"/", headers=[(b"Host", b"x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    event = client.next_event()
    assert isinstance(event, h11.Response), event
    return event


# -- response heads ------------------------------------------------------------

_names = st.sampled_from(
    [b"Content-Length", b"content-type", b"Connection", b"X-A", b"Set-Cookie", b"ETag", b"Date"]
)
_values = st.one_of(
    st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from(
        [b"close", b"Close", b"keep-alive", b"keep-alive, close", b"x-close", b" ,close"]
    ),
)


@settings(max_examples=400, deadline=None)
@given(
    status=st.integers(100, 599),
    reason=st.sampled_from([b"OK", b"", b"Not  Found", b"caf\xe9", b"a\tb", b"x\x00"]),
    space_before_reason=st.booleans(),
    headers=st.lists(st.tuples(_names, _values), max_size=6),
    length=st.one_of(st.none(), st.integers(0, 99)),
)
def test_a_head_read_without_h11_reads_as_h11_reads_it(
    status: int,
    reason: bytes,
    space_before_reason: bool,
    headers: list[tuple[bytes, bytes]],
    length: int | None,
) -> None:
    lines = [b"HTTP/1.1 %d%s%s" % (status, b" " if space_before_reason else b"", reason)]
    lines += [name + b": " + value for name, value in headers]
    if length is not None:
        lines.append(b"Content-Length: %d" % length)
    data = b"\r\n".join(lines) + b"\r\n\r\nbody"
    found = parse_plain_head(data, MAX_HEAD_SIZE)
    # Lines seen before are judged from memory: the same answer again.
    again = parse_plain_head(data, MAX_HEAD_SIZE)
    if found is None:
        assert again is None
        return  # declined: h11 reads it, as before
    assert again is not None and _fields(again[0]) == _fields(found[0]) and again[1] == found[1]
    head, end = found
    assert data[end:] == b"body"
    expected = _h11_response(data)  # raises if h11 would refuse what was accepted
    assert head.status_code == expected.status_code
    assert head.reason == expected.reason
    assert head.http_version == expected.http_version
    assert head.raw_headers == expected.headers.raw_items()
    declared = [v for n, v in expected.headers if n == b"content-length"]
    assert head.content_length == (int(declared[0]) if declared else None)
    assert head.closes == (b"close" in get_comma_header(expected.headers, b"connection"))


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",  # HTTP/1.0: h11's keep-alive rules
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\nread until close",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n  folded\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n",  # not complete yet
        b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX A: a\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_heads_that_are_not_plain_are_left_to_h11(data: bytes) -> None:
    assert parse_plain_head(data, MAX_HEAD_SIZE) is None
    assert parse_plain_head(data, MAX_HEAD_SIZE) is None  # its lines now remembered


def _fields(head: Head) -> tuple[object, ...]:
    return (
        head.status_code,
        head.reason,
        head.http_version,
        head.raw_headers,
        head.content_length,
    )


def test_remembered_lines_still_count_as_lines_of_this_head() -> None:
    one = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    found = parse_plain_head(one, MAX_HEAD_SIZE)
    assert found is not None and found[0].content_length == 5
    # The same remembered line twice is still two lengths: h11 judges.
    twice = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"
    assert parse_plain_head(twice, MAX_HEAD_SIZE) is None


def test_cookies_are_not_remembered() -> None:
    data = b"HTTP/1.1 200 OK\r\nSet-Cookie: session=s3cret\r\nContent-Length: 0\r\n\r\n"
    found = parse_plain_head(data, MAX_HEAD_SIZE)
    assert found is not None and found[0].raw_headers[0] == (b"Set-Cookie", b"session=s3cret")
    assert not [line for line in wire._LINES if b"s3cret" in line]


def test_the_memory_of_lines_is_bounded() -> None:
    for n in range(3 * wire._CACHE_MAX):
        data = b"HTTP/1.1 200 OK\r\nX-N: %d\r\nContent-Length: 0\r\n\r\n" % n
        found = parse_plain_head(data, MAX_HEAD_SIZE)
        assert found is not None and found[0].raw_headers[0] == (b"X-N", b"%d" % n)
    long_line = b"X-Long: " + b"a" * (2 * wire._CACHED_LINE_MAX)
    assert parse_plain_head(b"HTTP/1.1 204 No Content\r\n" + long_line + b"\r\n\r\n", 10**6)
    assert len(wire._LINES) <= wire._CACHE_MAX
    assert long_line not in wire._LINES


def test_a_head_over_the_limit_is_left_to_h11() -> None:
    data = b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 100 + b"\r\nContent-Length: 0\r\n\r\n"
    assert parse_plain_head(data, 100) is None
    assert parse_plain_head(data, len(data)) is not None


def test_a_body_less_status_needs_no_length() -> None:
    found = parse_plain_head(b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n", MAX_HEAD_SIZE)
    assert found is not None and found[0].content_length is None


# -- request heads --------------------------------------------------------------

_header = st.tuples(
    st.sampled_from(
        ["Host", "host", "Content-Length", "Transfer-Encoding", "X-A", "Accept", "Connection"]
    ),
    st.sampled_from(
        ["1", "3", "x.example", "chunked", "a b", " a", "b\t", "\xe9", "005", "close", "x, Close"]
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "put", "HEAD", "M-SEARCH"]),
    path=st.sampled_from(["/", "/a?b=c", "/%20x"]),
    headers=st.lists(_header, max_size=4),
    body=st.one_of(st.none(), st.binary(max_size=5)),
)
def test_a_request_written_without_h11_is_what_h11_writes(
    method: str, path: str, headers: list[tuple[str, str]], body: bytes | None
) -> None:
    try:
        request = Request(method, "http://127.0.0.1:8080" + path, headers, body)
    except poolwatch.LocalProtocolError:
        return  # refused before any byte, as before
    if request.plain_head is None:
        return  # written by h11, as before
    client = h11.Connection(h11.CLIENT)
    expected = client.send(request.event)  # raises if h11 would refuse it
    if body:
        expected += client.send(h11.Data(data=body))
    expected += client.send(h11.EndOfMessage())
    data, rest, more = ClientProtocol().start_request(request)
    assert not more
    assert data + rest == expected


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Content-Length": "3"}, b"abcd"),  # h11 refuses to send a wrong length
        ({"Transfer-Encoding": "chunked"}, b"abc"),
        ({"Expect": "100-continue"}, b"abc"),
        ({"Host": "a", "host": "b"}, None),
        ({}, iter([b"streamed"])),
    ],
)
def test_requests_that_are_not_plain_go_through_h11(headers: dict[str, str], body: object) -> None:
    try:
        request = Request("POST", "http://127.0.0.1:8080/", headers, body)  # type: ignore[arg-type]
    except poolwatch.LocalProtocolError:
        return  # refused before any byte: h11 judged it
    assert request.plain_head is None


# -- mixing plain and h11 exchanges on one connection --------------------------


def test_a_head_split_across_reads_goes_through_h11() -> None:
    proto = ClientProtocol()
    request = Request("GET", "http://127.0.0.1:8080/")
    exchange = _exchange(request)
    proto.start_request(request)
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert proto.receive_head(exchange, response[:10], 10) is None
    head = proto.receive_head(exchange, response[10:], len(response))
    assert head is not None and head.status_code == 200
    exchange.head = head
    assert not proto.check_head(exchange, head)
    assert proto.take_buffered_body()
    assert _body(proto, exchange) == b"ok"
    assert proto.can_reuse(exchange)
    # The next plain exchange on the same protocol skips h11 again.
    again = _exchange(request)
    proto.start_request(request)
    head = proto.receive_head(again, response, len(response))
    assert head is not None
    again.head = head
    proto.check_head(again, head)
    assert proto.take_buffered_body()
    assert _body(proto, again) == b"ok"
    assert proto.can_reuse(again)


def _body(proto: ClientProtocol, exchange: Exchange) -> bytes:
    data = b""
    while isinstance(event := proto.next_body_event(exchange), h11.Data):
        data += event.data
    assert isinstance(event, h11.EndOfMessage)
    return data


def _serve_mixed(conn: ServerConnection) -> None:
    replies = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\nchunked\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlast",
    ]
    for reply in replies:
        conn.recv_request_head()
        conn.sock.sendall(reply)
    conn.wait_for_close()


def test_plain_and_h11_exchanges_alternate_on_one_connection() -> None:
    with raw_server(_serve_mixed) as server, poolwatch.Transport() as transport:
        bodies = [transport.request("GET", server.url()).read() for _ in range(5)]
        assert bodies == [b"plain", b"chunked", b"plain", b"", b"last"]
        stats = assert_at_rest(transport)
        assert stats.connections_opened == 1
        assert stats.reused_requests == 4


def _serve_extra_bytes(conn: ServerConnection) -> None:
    conn.recv_request_head()
    conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
    conn.wait_for_close()


def test_bytes_after_a_plain_body_end_the_connection() -> None:
    with raw_server(_serve_extra_bytes) as server, poolwatch.Transport() as transport:
        with pytest.raises(poolwatch.RemoteProtocolError, match="bytes after the end"):
            transport.request("GET", server.url()).read()
        stats = assert_at_rest(transport)
        assert stats.idle_connections == 0


def test_a_plain_exchange_that_closes_is_not_reused() -> None:
    """Either side's ``Connection: close`` ends a plain exchange's
    connection, as it ends an h11 one's; a ``close`` inside another token
    does not (R8)."""
    proto = ClientProtocol()
    for request_headers, response_line, closes, reused in [
        ({}, b"Connection: close", True, False),
        ({"Connection": "close"}, b"Connection: keep-alive", False, False),
        ({"Connection": "x-close"}, b"Connection: x-close, keep-alive", False, True),
        ({}, b"Connection: Keep-Alive, CLOSE", True, False),
    ]:
        request = Request("GET", "http://127.0.0.1:8080/", request_headers)
        assert request.plain_head is not None
        exchange = _exchange(request)
        proto.start_request(request)
        response = b"HTTP/1.1 200 OK\r\n" + response_line + b"\r\nContent-Length: 2\r\n\r\nok"
        head = proto.receive_head(exchange, response, len(response))
        assert head is not None and head.closes is closes
        exchange.head = head
        proto.check_head(exchange, head)
        assert proto.take_buffered_body()
        assert _body(proto, exchange) == b"ok"
        assert proto.can_reuse(exchange) is reused
        if not reused:
            proto = ClientProtocol()  # the connection is closed: a new one


def _serve_closing(conn: ServerConnection) -> None:
    conn.recv_request_head()
    conn.sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbye\n")
    conn.sock.close()


@pytest.mark.parametrize("keep_alive", [True, False])
def test_connections_that_close_serve_one_plain_exchange_each(keep_alive: bool) -> None:
    with (
        raw_server(_serve_closing) as server,
        poolwatch.Transport(keep_alive=keep_alive) as transport,
    ):
        for _ in range(3):
            with transport.request("GET", server.url()) as response:
                assert response.read() == b"bye\n"
                assert response.outcome == "drained"
        stats = assert_at_rest(transport)
        assert stats.connections_opened == 3
        assert stats.reused_requests == 0
        assert stats.idle_connections == 0


@pytest.mark.parametrize(
    ("connection", "closes"),
    [(b"close", True), (b"Keep-Alive, Close", True), (b"x-close", False), (b"keep-alive", False)],
)
def test_heads_read_by_h11_note_a_close_the_same_way(connection: bytes, closes: bool) -> None:
    proto = ClientProtocol()
    request = Request("GET", "http://127.0.0.1:8080/")
    exchange = _exchange(request)
    proto.start_request(request)
    response = (
        b"HTTP/1.1 200 OK\r\nConnection: %s\r\nTransfer-Encoding: chunked\r\n\r\n" % connection
    )
    head = proto.receive_head(exchange, response, len(response))
    assert head is not None and head.content_length is None  # read by h11
    assert head.closes is closes


@pytest.mark.parametrize("plain", [True, False])
def test_a_large_body_goes_after_its_head_uncopied(plain: bool) -> None:
    """A small body is joined to its head (one write); a large one is sent
    after it as it is, not copied to join it (a 1 GiB upload held as bytes
    would need another 1 GiB for a moment), on the plain path and h11's."""
    small, large = b"s" * 1000, b"L" * (1024 * 1024)
    for body in (small, large):
        size = str(len(body))
        # Two equal Content-Length lines: h11 sends them as one, not plain.
        headers = {} if plain else {"Content-Length": size, "content-length": size}
        request = Request("POST", "http://127.0.0.1:8080/", headers, body)
        assert (request.plain_head is not None) == plain
        data, rest, more = ClientProtocol().start_request(request)
        assert not more
        if body is small:
            assert data.endswith(b"\r\n\r\n" + small) and rest == b""
        else:
            assert data.endswith(b"\r\n\r\n") and rest is large
