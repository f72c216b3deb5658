"""How the httpx transports hand bodies over: ``read()`` and ``aread()``
take the whole body from poolwatch in one piece, streaming reads still
get pieces as they arrive, and errors during a whole read are httpx's."""

from __future__ import annotations

import gc
import gzip
import pickle
import warnings
import weakref
from collections.abc import Iterator

import httpx
import pytest

import poolwatch
from poolwatch.adapters.httpx import AsyncHTTPXTransport, HTTPXTransport
from tests.async_support import assert_at_rest, run
from tests.servers import HTTPServer, Reply, ServerConnection, http_server, raw_server

# No two pieces alike, so that a byte served twice or skipped changes the result.
BODY = bytes(range(256)) * 1171 + b"end"


def _pieces(server: HTTPServer) -> Iterator[bytes]:
    yield BODY[:1000]
    server.gate("rest").wait(10)
    yield BODY[1000:]


@pytest.fixture
def body_server() -> Iterator[HTTPServer]:
    with http_server() as srv:
        srv.routes.update(
            {
                "/body": lambda request, received: Reply(body=BODY),
                "/chunked-body": lambda request, received: Reply(
                    body=iter([BODY[:5000], BODY[5000:]]), chunked=True
                ),
                "/gzip": lambda request, received: Reply(
                    body=gzip.compress(BODY), headers=[("Content-Encoding", "gzip")]
                ),
                "/gated": lambda request, received: Reply(body=_pieces(srv), chunked=True),
            }
        )
        yield srv


def _truncated(conn: ServerConnection) -> None:
    conn.recv_request_head()
    conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")


def _stalled(conn: ServerConnection) -> None:
    conn.recv_request_head()
    conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    conn.wait_for_close()


@pytest.mark.parametrize("path", ["/body", "/chunked-body", "/gzip"])
def test_read_gives_the_whole_body_and_releases_the_connection(
    body_server: HTTPServer, path: str
) -> None:
    """``client.get`` reads the body whole (R4): the same connection serves
    the next request, and every body is counted drained."""
    with HTTPXTransport() as transport, httpx.Client(transport=transport) as client:
        for _ in range(2):
            resp = client.get(body_server.url(path))
            assert resp.content == BODY
            sent = len(gzip.compress(BODY)) if path == "/gzip" else len(BODY)
            assert resp.num_bytes_downloaded == sent
        stats = transport.stats()
    assert stats.connections_opened == 1
    assert stats.bodies_drained == 2
    assert len(body_server.connections_seen()) == 1


def test_streamed_reads_still_come_as_the_body_arrives(body_server: HTTPServer) -> None:
    """Under ``client.stream`` the first piece is handed over before the
    server has sent the rest: nothing waits for the whole body."""
    with HTTPXTransport() as transport, httpx.Client(transport=transport) as client:
        with client.stream("GET", body_server.url("/gated")) as resp:
            pieces = resp.iter_raw()
            assert next(pieces) == BODY[:1000]
            body_server.release("rest")
            assert b"".join(pieces) == BODY[1000:]
        assert transport.stats().bodies_drained == 1


def test_read_after_streaming_part_raises_as_httpx_does(body_server: HTTPServer) -> None:
    """``read()`` on a response whose stream has started raises httpx's
    ``StreamConsumed``, as with httpx's own transport."""
    with HTTPXTransport() as transport, httpx.Client(transport=transport) as client:
        with client.stream("GET", body_server.url("/body")) as resp:
            next(resp.iter_raw())
            with pytest.raises(httpx.StreamConsumed):
                resp.read()
        assert transport.stats().bodies_closed_early == 1


def test_a_body_cut_short_during_read_raises_httpx_error() -> None:
    """3 of 10 bytes, then the server hangs up: the whole read raises
    httpx's ``RemoteProtocolError`` and the body is counted errored (R10)."""
    with (
        raw_server(_truncated) as srv,
        HTTPXTransport() as transport,
        httpx.Client(transport=transport) as client,
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(srv.url())
        stats = transport.stats()
    assert stats.bodies_errored == 1
    assert stats.open_connections == 0


def test_a_stalled_body_during_read_times_out_as_httpx_does() -> None:
    """The read limit applies between body bytes during a whole read (R17)."""
    timeout = httpx.Timeout(5.0, read=0.2)
    with (
        raw_server(_stalled) as srv,
        HTTPXTransport() as transport,
        httpx.Client(transport=transport, timeout=timeout) as client,
    ):
        with pytest.raises(httpx.ReadTimeout):
            client.get(srv.url())
        assert transport.stats().open_connections == 0


def test_async_read_gives_the_whole_body_and_streams_still_stream(
    body_server: HTTPServer,
) -> None:
    """The same through ``AsyncClient``: ``aread`` in one piece, R4, and a
    streamed body handed over as it arrives."""

    async def main() -> poolwatch.PoolStats:
        async with (
            AsyncHTTPXTransport() as transport,
            httpx.AsyncClient(transport=transport) as client,
        ):
            for path in ("/body", "/chunked-body", "/gzip"):
                resp = await client.get(body_server.url(path))
                assert resp.content == BODY
            async with client.stream("GET", body_server.url("/gated")) as resp:
                pieces = resp.aiter_raw()
                assert await pieces.__anext__() == BODY[:1000]
                body_server.release("rest")
                assert b"".join([piece async for piece in pieces]) == BODY[1000:]
            return await assert_at_rest(transport.transport)

    stats = run(main)
    assert stats.connections_opened == 1
    assert stats.bodies_drained == 4


def test_async_body_cut_short_during_aread_raises_httpx_error() -> None:
    """As in the sync case: httpx's ``RemoteProtocolError``, counted errored."""

    async def main() -> poolwatch.PoolStats:
        async with (
            AsyncHTTPXTransport() as transport,
            httpx.AsyncClient(transport=transport) as client,
        ):
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(srv.url())
            return await assert_at_rest(transport.transport)

    with raw_server(_truncated) as srv:
        stats = run(main)
    assert stats.bodies_errored == 1


def test_a_closed_response_is_freed_once_dropped(body_server: HTTPServer) -> None:
    """With the garbage collector off, a response read whole (and one
    streamed and closed) is freed as soon as the caller drops it, so a large
    body does not linger; ``elapsed`` is still set when it closes."""
    gc.disable()
    try:
        with HTTPXTransport() as transport, httpx.Client(transport=transport) as client:
            resp = client.get(body_server.url("/body"))
            assert resp.elapsed.total_seconds() >= 0
            gone = weakref.ref(resp)
            del resp
            assert gone() is None
            with client.stream("GET", body_server.url("/chunked-body")) as resp:
                assert b"".join(resp.iter_bytes()) == BODY
            resp.stream.close()  # type: ignore[union-attr]  # closing again works
            gone = weakref.ref(resp)
            del resp
            assert gone() is None
    finally:
        gc.enable()


def test_an_async_response_is_freed_once_dropped(body_server: HTTPServer) -> None:
    """The same through ``AsyncClient``."""

    async def main() -> None:
        async with (
            AsyncHTTPXTransport() as transport,
            httpx.AsyncClient(transport=transport) as client,
        ):
            resp = await client.get(body_server.url("/body"))
            assert resp.content == BODY
            gone = weakref.ref(resp)
            del resp
            assert gone() is None

    gc.disable()
    try:
        run(main)
    finally:
        gc.enable()


def test_a_response_dropped_unclosed_is_a_leak_at_once(body_server: HTTPServer) -> None:
    """R6 through httpx: with the garbage collector off, a streamed response
    dropped unread is freed at once, so its leak is reported and its
    connection let go; httpx's stream no longer holds it in a cycle."""
    gc.disable()
    try:
        with HTTPXTransport() as transport, httpx.Client(transport=transport) as client:
            resp = client.send(client.build_request("GET", body_server.url("/body")), stream=True)
            with pytest.warns(poolwatch.LeakWarning):
                del resp
            transport.transport.settle()
            stats = transport.stats()
            assert (stats.bodies_leaked, stats.open_bodies, stats.open_connections) == (1, 0, 0)
    finally:
        gc.enable()


def test_an_async_response_dropped_unclosed_is_a_leak_at_once(body_server: HTTPServer) -> None:
    """The same through ``AsyncClient``."""

    async def main() -> poolwatch.PoolStats:
        async with (
            AsyncHTTPXTransport() as transport,
            httpx.AsyncClient(transport=transport) as client,
        ):
            request = client.build_request("GET", body_server.url("/body"))
            resp = await client.send(request, stream=True)
            with pytest.warns(poolwatch.LeakWarning):
                del resp
            return await assert_at_rest(transport.transport)

    gc.disable()
    try:
        stats = run(main)
    finally:
        gc.enable()
    assert (stats.bodies_leaked, stats.open_bodies, stats.open_connections) == (1, 0, 0)


def test_a_read_response_pickles_as_httpx_does(body_server: HTTPServer) -> None:
    """A response read to the end pickles without its stream, as httpx's
    own do; the copy has the body, and its stream is httpx's closed one."""
    with HTTPXTransport() as transport, httpx.Client(transport=transport) as client:
        resp = client.get(body_server.url("/body"))
        copy = pickle.loads(pickle.dumps(resp))
    assert isinstance(copy, httpx.Response)
    assert copy.status_code == 200
    assert copy.content == BODY
    assert copy.read() == BODY
    with pytest.raises(httpx.StreamClosed):
        list(copy.stream)  # type: ignore[arg-type]


def test_each_timeout_extension_gives_its_own_limits() -> None:
    """The limits built from a request's ``timeout`` extension are
    remembered per set of values: the same values give the same limits,
    other values their own, and a value that is no number of seconds is
    still refused."""
    from poolwatch.adapters.httpx import request_timeout

    default = poolwatch.Timeout()

    def limits(**timeout: object) -> poolwatch.Timeout:
        request = httpx.Request("GET", "http://127.0.0.1/", extensions={"timeout": timeout})
        return request_timeout(request, default)

    first = limits(connect=1.0, read=2.0, write=3.0, pool=4.0)
    assert first == poolwatch.Timeout(
        connect=1.0, write=3.0, response_header=2.0, read=2.0, pool=4.0
    )
    assert limits(connect=1.0, read=2.0, write=3.0, pool=4.0) is first
    other = limits(connect=1.0, read=7.0, write=3.0, pool=None)
    assert (other.read, other.response_header, other.pool) == (7.0, 7.0, None)
    # As httpx's transports take them: zero or less is a limit already
    # reached, infinity none.
    reached = limits(connect=0, read=-1.0, write=float("inf"), pool=0.0)
    assert (reached.connect, reached.read, reached.write, reached.pool) == (1e-9, 1e-9, None, 1e-9)
    for bad, error in ((float("nan"), ValueError), ([1.0], TypeError)):
        with pytest.raises(error, match="timeout must be a finite number of seconds > 0"):
            limits(connect=1.0, read=bad, write=None, pool=None)
    assert request_timeout(httpx.Request("GET", "http://127.0.0.1/"), default) is default


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_trace_that_raises_reaches_the_caller(body_server: HTTPServer, kind: str) -> None:
    """A ``trace`` raising on ``send_request_headers.complete``: the caller
    gets its exception (the request has gone out by then: the writer's
    events are passed on from the caller's thread), and the response it
    never gets is closed, not leaked."""
    url = body_server.url("/body")

    def trace(name: str, info: dict[str, object]) -> None:
        if name == "http11.send_request_headers.complete":
            raise LookupError("from the trace")

    async def async_trace(name: str, info: dict[str, object]) -> None:
        trace(name, info)

    with warnings.catch_warnings():
        warnings.simplefilter("error", poolwatch.LeakWarning)
        if kind == "sync":
            with HTTPXTransport() as transport, httpx.Client(transport=transport) as client:
                with pytest.raises(LookupError, match="from the trace"):
                    client.get(url, extensions={"trace": trace})
                transport.transport.settle()
                stats = transport.stats()
        else:

            async def main() -> poolwatch.PoolStats:
                async with AsyncHTTPXTransport() as transport:
                    async with httpx.AsyncClient(transport=transport) as client:
                        with pytest.raises(LookupError, match="from the trace"):
                            await client.get(url, extensions={"trace": async_trace})
                    await transport.transport.settle()
                    return transport.stats()

            stats = run(main)
    assert (stats.requests, stats.bodies_leaked, stats.open_bodies) == (1, 0, 0)


def test_trace_events_keep_httpcores_order(body_server: HTTPServer) -> None:
    """The writer reports the request written after its last byte went
    out, and the server may answer first: the trace still hears
    ``send_request_body.complete`` before ``receive_response_headers.complete``,
    request after request."""
    wrong = 0
    with HTTPXTransport() as transport, httpx.Client(transport=transport) as client:
        for _ in range(500):
            names: list[str] = []
            trace = {"trace": lambda name, info, names=names: names.append(name)}
            client.get(body_server.url("/body"), extensions=trace).read()
            written = names.index("http11.send_request_body.complete")
            wrong += written > names.index("http11.receive_response_headers.complete")
    assert wrong == 0
