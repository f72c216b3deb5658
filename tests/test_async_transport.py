"""BEHAVIOUR.md's seed experiment and public scenarios on the asyncio
transport, against real loopback servers (started outside the loop)."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme

import poolwatch
from tests.async_support import assert_at_rest, event_seen, run, run_bare, worker_tasks
from tests.servers import HTTPServer, Reply, ServerConnection, raw_server
from tests.tls_support import client_context, server_context, tls_server

pytestmark = pytest.mark.usefixtures("event_loop_kind")


@pytest.mark.parametrize(
    ("read", "close", "expected"),
    [(False, False, 11), (False, True, 1), (True, False, 3), (True, True, 3)],
)
def test_seed_experiment(server: HTTPServer, read: bool, close: bool, expected: int) -> None:
    """The seed experiment: worker tasks plus one, as Go counts goroutines."""

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:
            kept = []
            for _ in range(5):
                resp = await t.request("GET", server.url())
                if read:
                    await resp.read()
                if close:
                    await resp.aclose()
                kept.append(resp)
            stats = await assert_at_rest(t)
            assert stats.workers_alive + 1 == expected
            assert worker_tasks() + 1 == expected
            for resp in kept:
                await resp.aclose()
        assert worker_tasks() == 0
        assert t.stats().workers_alive == 0

    run(main)


def test_scenario_1_and_2_reuse_and_connection_close(server: HTTPServer) -> None:
    """Scenarios 1 and 2 (R4, R8): two GETs read to the end share one
    connection; without keep-alive, or when the server says close, each
    gets its own and none is left open."""

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:
            for _ in range(2):
                assert await (await t.request("GET", server.url())).read() == b"hello world!\n"
            assert (await assert_at_rest(t)).connections_opened == 1
        async with poolwatch.AsyncTransport(keep_alive=False) as t:
            for _ in range(2):
                await (await t.request("GET", server.url())).read()
            assert (await assert_at_rest(t)).connections_opened == 2
        async with poolwatch.AsyncTransport() as t:
            for _ in range(2):
                assert await (await t.request("GET", server.url("/close"))).read() == b"bye\n"
            await t.close_idle_connections()
            stats = await assert_at_rest(t)
            assert stats.connections_opened == 2
            assert stats.open_connections == 0

    run(main)


@pytest.mark.parametrize("path", ["/bytes/5000", "/chunked/5000"])
def test_scenario_3_read_but_never_closed(server: HTTPServer, path: str) -> None:
    """Scenario 3 (R4): bodies read to EOF but never closed: one connection;
    read(n) reaching the last byte counts as the end (R18)."""

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:
            for _ in range(3):
                resp = await t.request("GET", server.url(path))
                assert len(await resp.read(5000 if "bytes" in path else None)) == 5000
                assert resp.outcome == "drained"
            stats = await assert_at_rest(t)
            assert stats.connections_opened == 1
            assert stats.bodies_drained == 3

    run(main)


def test_scenario_4_endless_body_closed_early() -> None:
    """Scenario 4 (R5): an endless body read partly then closed: the server
    sees the connection go away."""
    saw_close = threading.Event()

    def endless(conn: ServerConnection) -> None:
        conn.recv_request_head()
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            while True:
                conn.sock.sendall(b"400\r\n" + b"z" * 1024 + b"\r\n")
        except OSError:
            saw_close.set()

    async def main(url: str) -> None:
        async with poolwatch.AsyncTransport() as t:
            resp = await t.request("GET", url)
            assert len(await resp.read(10000)) == 10000
            await resp.aclose()
            assert resp.outcome == "closed_early"
            stats = await assert_at_rest(t)
            assert stats.bodies_closed_early == 1
            assert stats.open_connections == 0

    with raw_server(endless) as srv:
        run(lambda: main(srv.url()))
        assert saw_close.wait(10)


def test_scenario_5_one_connection_per_host(server: HTTPServer) -> None:
    """Scenario 5 (R12): max_connections_per_host=1, ten concurrent GETs."""

    async def main() -> None:
        async with poolwatch.AsyncTransport(max_connections_per_host=1) as t:

            async def get() -> bytes:
                return await (await t.request("GET", server.url())).read()

            assert await asyncio.gather(*(get() for _ in range(10))) == [b"hello world!\n"] * 10
            stats = await assert_at_rest(t)
            assert stats.connections_opened == 1
            assert stats.pool_waits >= 1

    run(main)
    assert server.accepted == 1


def test_scenario_6_idle_timeout(server: HTTPServer) -> None:
    """Scenario 6 (R11): after the idle timeout the pool closes the
    connection with no request made, and the next request dials anew."""

    async def main() -> None:
        async with poolwatch.AsyncTransport(idle_timeout=0.2) as t:
            expired = event_seen(t, "conn_closed")
            await (await t.request("GET", server.url())).read()
            await (await t.request("GET", server.url())).read()
            assert t.stats().connections_opened == 1
            await asyncio.wait_for(expired.wait(), 10)
            stats = await assert_at_rest(t)
            assert stats.idle_expired == 1
            await (await t.request("GET", server.url())).read()
            assert (await assert_at_rest(t)).connections_opened == 2

    run(main)


def test_scenario_7_server_drops_idle_connection() -> None:
    """Scenario 7 (R3): the reader task notices the server's close at once."""
    idle = threading.Event()

    def one_request(conn: ServerConnection) -> None:
        conn.recv_request_head()
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        idle.wait(10)  # the body read: the connection is idle in the pool

    async def main(url: str) -> None:
        async with poolwatch.AsyncTransport() as t:
            closed = event_seen(t, "conn_closed")
            assert await (await t.request("GET", url)).read() == b"ok"
            idle.set()
            await asyncio.wait_for(closed.wait(), 10)
            stats = await assert_at_rest(t)
            assert stats.idle_connections == 0
            assert stats.idle_closed_by_server == 1
            assert await (await t.request("GET", url)).read() == b"ok"
            assert (await assert_at_rest(t)).connections_opened == 2

    with raw_server(one_request) as srv:
        run(lambda: main(srv.url()))


@pytest.mark.parametrize(
    ("method", "headers", "retried"),
    [("GET", {}, True), ("POST", {}, False), ("POST", {"Idempotency-Key": "k"}, True)],
)
def test_scenario_8_stale_reuse(method: str, headers: dict[str, str], retried: bool) -> None:
    """Scenario 8 (R13): a reused connection the server dropped unseen: a
    GET is retried on a new connection; a POST without a key is not."""
    gate = threading.Event()

    def handler(conn: ServerConnection) -> None:
        conn.recv_request_head()
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        if conn.index == 0:
            gate.wait(10)
            conn.recv_request_head()  # the second request, then a silent close
            return
        conn.recv_request_head()

    async def main(url: str) -> None:
        async with poolwatch.AsyncTransport() as t:
            assert await (await t.request(method, url, headers=headers)).read() == b"ok"
            gate.set()
            if retried:
                assert await (await t.request(method, url, headers=headers)).read() == b"ok"
                assert t.stats().retries == 1
            else:
                with pytest.raises(poolwatch.RemoteDisconnected, match=url):
                    await t.request(method, url, headers=headers)
                assert t.stats().retries == 0
            await assert_at_rest(t)

    with raw_server(handler) as srv:
        run(lambda: main(srv.url()))


def _upload(size: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
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
            # Keep-alive, but far more than the socket buffers hold.
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo large",
            lambda: _upload(64 * 1024 * 1024),
            id="keep-alive-upload-unfinished",
        ),
    ],
)
def test_scenario_9_early_answer_to_upload(answer: bytes, body: Callable[[], Any]) -> None:
    """Scenario 9 (R9): a large POST answered 413 by a server that reads only
    the head: the caller gets the 413, the connection is closed rather than
    pooled, and the next request uses a new connection."""
    done = threading.Event()

    def handler(conn: ServerConnection) -> None:
        head = conn.recv_request_head()
        if b"POST" in head:
            conn.sock.sendall(answer)
            done.wait(10)  # stall without reading the upload
            return
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        conn.wait_for_close()

    async def main(url: str) -> None:
        async with poolwatch.AsyncTransport() as t:
            async with await t.request("POST", url, body=body()) as resp:
                assert resp.status == 413
                assert await resp.read() == b"too large"
            next_resp = await t.request("GET", url)
            assert await next_resp.read() == b"ok"
            assert next_resp.connection_id != resp.connection_id
            stats = await assert_at_rest(t)
            assert (stats.connections_opened, stats.connections_closed) == (2, 1)
            assert stats.retries == 0
        done.set()

    with raw_server(handler) as srv:
        run(lambda: main(srv.url()))


@pytest.mark.parametrize("answer", ["continue", "close"])
def test_scenario_10_expect_continue(answer: str) -> None:
    """Scenario 10 (R15): after a 100 the body is sent; after a final
    Connection: close response it is not."""
    seen: list[bytes] = []

    def handler(conn: ServerConnection) -> None:
        conn.recv_request_head()
        if answer == "continue":
            conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            seen.append(conn.recv_until(b"body"))
            conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        else:
            conn.sock.sendall(
                b"HTTP/1.1 417 Expectation Failed\r\nConnection: close\r\n"
                b"Content-Length: 0\r\n\r\n"
            )
            seen.append(b"")
        conn.wait_for_close()

    async def main(url: str) -> int:
        async with poolwatch.AsyncTransport(expect_continue_timeout=30) as t:
            got_100 = event_seen(t, "got_100_continue")
            resp = await t.request("POST", url, headers={"Expect": "100-continue"}, body=b"body")
            await resp.read()
            assert got_100.is_set() == (answer == "continue")
            await assert_at_rest(t)
            return resp.status

    with raw_server(handler) as srv:
        status = run(lambda: main(srv.url()))
    assert status == (200 if answer == "continue" else 417)
    assert seen == ([b"body"] if answer == "continue" else [b""])


def test_scenario_11_response_header_timeout(server: HTTPServer) -> None:
    """Scenario 11 (R17): a slow path times out, closing its connection, and
    the next request to a fast path succeeds."""

    async def main() -> None:
        async with poolwatch.AsyncTransport(response_header_timeout=0.2) as t:
            with pytest.raises(poolwatch.ResponseHeaderTimeout, match="/wait/slow"):
                await t.request("GET", server.url("/wait/slow"))
            assert await (await t.request("GET", server.url())).read() == b"hello world!\n"
            stats = await assert_at_rest(t)
            assert stats.connections_opened == 2
            server.release("slow")

    run(main)


def test_scenario_12_many_204s_then_close_idle(server: HTTPServer) -> None:
    """Scenario 12 (R7, R14): 25 concurrent 204s, then close_idle_connections():
    no worker task left."""

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:

            async def get() -> str | None:
                async with await t.request("GET", server.url("/empty")) as resp:
                    return resp.outcome

            assert await asyncio.gather(*(get() for _ in range(25))) == ["no_body"] * 25
            await t.close_idle_connections()
            stats = await assert_at_rest(t)
            assert stats.workers_alive == 0
            assert worker_tasks() == 0

    run(main)


def test_leak_warning_on_gc_tears_down(server: HTTPServer) -> None:
    """R6: an unclosed response garbage-collected emits the LeakWarning with
    its call site; the connection is torn down on the loop."""

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:
            closed = event_seen(t, "conn_closed")
            resp = await t.request("GET", server.url("/stream"))
            assert t.open_bodies()[0].call_site.frames[0][2] == "main"
            with pytest.warns(poolwatch.LeakWarning, match="test_async_transport.py"):
                del resp
                gc.collect()
            await asyncio.wait_for(closed.wait(), 10)
            stats = await assert_at_rest(t)
            assert stats.bodies_leaked == 1
            assert stats.open_connections == 0

    run(main)


def test_errors_close_the_connection_and_pool_stays_usable() -> None:
    """R10: a short body and a bad Content-Length raise protocol errors
    naming the URL; the connection closes; the next request works."""

    def handler(conn: ServerConnection) -> None:
        while head := conn.recv_request_head():
            if b"/short" in head:
                conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                return
            if b"/bad" in head:
                conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n")
                return
            conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async def main(url: str) -> None:
        async with poolwatch.AsyncTransport() as t:
            resp = await t.request("GET", url + "short")
            with pytest.raises(poolwatch.RemoteProtocolError, match="short"):
                await resp.read()
            assert resp.outcome == "errored"
            with pytest.raises(poolwatch.RemoteProtocolError, match="bad"):
                await t.request("GET", url + "bad")
            assert await (await t.request("GET", url)).read() == b"ok"
            stats = await assert_at_rest(t)
            assert stats.bodies_errored == 1
            assert stats.open_connections == 1

    with raw_server(handler) as srv:
        run(lambda: main(srv.url()))


def test_connect_error_and_pool_closed() -> None:
    """A refused connect is a ConnectError naming the URL; after aclose()
    requests fail with PoolClosed."""

    async def main() -> None:
        t = poolwatch.AsyncTransport()
        with pytest.raises(poolwatch.ConnectError, match=r"127\.0\.0\.1:1"):
            await t.request("GET", "http://127.0.0.1:1/")
        await t.aclose()
        with pytest.raises(poolwatch.PoolClosed):
            await t.request("GET", "http://127.0.0.1:1/")
        assert (await assert_at_rest(t)).connections_opened == 0

    run(main)


def test_tls_reuse_and_verification() -> None:
    """TLS: a verified server is reused; an untrusted one is a TLSError."""
    ca = trustme.CA()

    async def main(url: str) -> None:
        async with poolwatch.AsyncTransport(ssl_context=client_context(ca)) as t:
            for _ in range(2):
                resp = await t.request("GET", url)
                assert await resp.read() == b"hello world!\n"
            assert resp.reused_connection
            assert resp.timings.tls_done is None  # reused: no handshake
            assert (await assert_at_rest(t)).connections_opened == 1
        async with poolwatch.AsyncTransport() as t:
            with pytest.raises(poolwatch.TLSError, match="TLS handshake"):
                await t.request("GET", url)
            await assert_at_rest(t)

    with tls_server(server_context(ca, "localhost")) as srv:
        run(lambda: main(srv.url()))


def test_repr_stats_connections(server: HTTPServer) -> None:
    """stats(), connections(), open_bodies() and repr as the sync transport."""

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:
            resp = await t.request("GET", server.url("/stream"))
            assert [c.state for c in t.connections()] == ["active"]
            assert len(t.open_bodies()) == 1
            assert "Requests: 1 active" in repr(t) and "Workers: 2" in repr(t)
            await resp.aclose()
            await (await t.request("GET", server.url())).read()
            assert [c.state for c in t.connections()] == ["idle"]
            assert t.open_bodies() == []

    run(main)


def test_drain_on_close_keeps_the_connection() -> None:
    """R5 with drain_on_close: a small remainder is read and the connection
    reused; outcome closed_early, counted as drained on close."""
    routes = {"/big": lambda request, body: Reply(body=b"z" * 50_000)}

    async def main(url: str) -> None:
        async with poolwatch.AsyncTransport(drain_on_close=True) as t:
            resp = await t.request("GET", url + "big")
            assert len(await resp.read(10)) == 10
            await resp.aclose()
            assert resp.outcome == "closed_early"
            await (await t.request("GET", url)).read()
            stats = await assert_at_rest(t)
            assert stats.connections_opened == 1
            assert stats.bodies_drained_on_close == 1

    from tests.servers import http_server

    with http_server(routes) as srv:
        run(lambda: main(srv.url()))


def test_local_address_and_socket_options(server: HTTPServer) -> None:
    """local_address binds new sockets; socket_options are set on each."""
    import socket

    async def main() -> None:
        options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
        async with poolwatch.AsyncTransport(
            local_address="127.0.0.1", socket_options=options
        ) as t:
            resp = await t.request("GET", server.url())
            sock = resp._connection._writer.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockname()[0] == "127.0.0.1"
            assert await resp.read() == b"hello world!\n"

    run(main)


def test_expect_continue_timeout_sends_the_body() -> None:
    """R15: no 100 within expect_continue_timeout: the body goes anyway."""

    def handler(conn: ServerConnection) -> None:
        data = conn.recv_until(b"payload")
        status = b"200 OK" if data.endswith(b"payload") else b"400 Bad"
        conn.sock.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok")
        conn.wait_for_close()

    async def main(url: str) -> None:
        async with poolwatch.AsyncTransport(expect_continue_timeout=0.05) as t:
            got_100 = event_seen(t, "got_100_continue")
            resp = await t.request("PUT", url, headers={"Expect": "100-continue"}, body=b"payload")
            assert (resp.status, await resp.read()) == (200, b"ok")
            assert not got_100.is_set()

    with raw_server(handler) as srv:
        run(lambda: main(srv.url()))


def test_without_an_asyncio_loop_is_a_clear_error(server: HTTPServer) -> None:
    """Driven by something other than asyncio (trio, or a coroutine run by
    hand), a request says that it needs an asyncio loop, before any
    connection is made; the transport still works on a loop afterwards."""
    t = poolwatch.AsyncTransport()
    request = t.request("GET", server.url())
    with pytest.raises(RuntimeError, match="runs on an asyncio event loop"):
        request.send(None)
    request.close()

    async def get() -> bytes:
        async with t:
            assert t.stats().connections_opened == 0
            return await (await t.request("GET", server.url())).read()

    assert run_bare(get()) == b"hello world!\n"


def test_bound_to_its_event_loop(server: HTTPServer) -> None:
    """A transport belongs to the loop of its first request while that loop
    is open: another loop gets a clear RuntimeError."""
    t = poolwatch.AsyncTransport()
    first = asyncio.new_event_loop()
    try:

        async def get() -> bytes:
            return await (await t.request("GET", server.url())).read()

        assert first.run_until_complete(get()) == b"hello world!\n"
        with pytest.raises(RuntimeError, match="another event loop"):
            run_bare(get())
    finally:
        first.run_until_complete(t.aclose())
        first.close()
