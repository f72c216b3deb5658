"""R19 and R18 alike on both transports: the same requests give the same
events, in the same order, and the same stats on the thread transport and
the asyncio one; plus scenario 13 (a server hanging up at random) on the
asyncio transport."""

from __future__ import annotations

import asyncio
import random

import pytest

import poolwatch
from tests.async_support import assert_at_rest, run
from tests.conftest import assert_at_rest as assert_sync_at_rest
from tests.servers import HTTPServer, Reply, ServerConnection, answering, http_server, raw_server

pytestmark = pytest.mark.usefixtures("event_loop_kind")

# Counters that depend on nothing but the requests made.
COMPARED = (
    "connections_opened",
    "connections_closed",
    "requests",
    "reused_requests",
    "bodies_drained",
    "bodies_closed_early",
    "bodies_without_content",
    "open_connections",
    "idle_connections",
    "workers_alive",
)
PATHS = ["/bytes/10", "/bytes/10", "/empty", "/stream", "/close", "/chunked/100"]


def _sync_run(url: str) -> tuple[list[tuple[str, str]], dict[str, int]]:
    seen: list[tuple[str, str]] = []
    with poolwatch.Transport() as t:
        t.add_listener(lambda e: seen.append((e.name, str(e.data.get("outcome", "")))))
        for path in PATHS:
            resp = t.request("HEAD" if path == "/empty" else "GET", url + path)
            if path == "/stream":
                resp.read(100)
                resp.close()
            else:
                resp.read()
        stats = assert_sync_at_rest(t)
    return seen, {name: getattr(stats, name) for name in COMPARED}


async def _async_run(url: str) -> tuple[list[tuple[str, str]], dict[str, int]]:
    seen: list[tuple[str, str]] = []
    async with poolwatch.AsyncTransport() as t:
        t.add_listener(lambda e: seen.append((e.name, str(e.data.get("outcome", "")))))
        for path in PATHS:
            resp = await t.request("HEAD" if path == "/empty" else "GET", url + path)
            if path == "/stream":
                await resp.read(100)
                await resp.aclose()
            else:
                await resp.read()
        stats = await assert_at_rest(t)
    return seen, {name: getattr(stats, name) for name in COMPARED}


def _per_request(events: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The events split at each get_conn, each request's sorted."""
    requests: list[list[tuple[str, str]]] = []
    for event in events:
        if event[0] == "get_conn":
            requests.append([])
        requests[-1].append(event)
    return [sorted(request) for request in requests]


def test_same_events_and_stats_on_both_transports(server: HTTPServer) -> None:
    """The listener hears the same events (and body outcomes) for each
    request from both transports, and the stats agree. Within a request the
    thread transport's order is racy (its writer and reader threads both
    emit), so each request's events are compared as a set."""
    url = server.url("").rstrip("/")
    sync_events, sync_stats = _sync_run(url)
    async_events, async_stats = run(lambda: _async_run(url))
    assert _per_request(async_events) == _per_request(sync_events)
    assert async_stats == sync_stats
    assert ("body_done", "closed_early") in async_events
    assert sync_stats["connections_opened"] == 3


def test_http10_keep_alive_is_reused() -> None:
    """R8: an HTTP/1.0 server that promises keep-alive for a sized body is
    reused, as by the thread transport."""

    def handler(conn: ServerConnection) -> None:
        while conn.recv_request_head():
            conn.sock.sendall(
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
            )

    async def main(url: str) -> None:
        async with poolwatch.AsyncTransport() as t:
            for _ in range(3):
                assert await (await t.request("GET", url)).read() == b"ok"
            stats = await assert_at_rest(t)
            assert (stats.connections_opened, stats.reused_requests) == (1, 2)

    with raw_server(handler) as srv:
        run(lambda: main(srv.url()))


def test_scenario_13_server_hangs_up_at_random() -> None:
    """Scenario 13: the server closes after a random share of responses;
    32 tasks each make requests; every call gives a response or an error,
    none hangs, and R18 holds at the end."""
    rng = random.Random(13)

    def maybe_close(request: object, body: bytes) -> Reply:
        return Reply(body=b"x" * 100, close=rng.random() < 0.3)

    async def main(url: str) -> None:
        async with poolwatch.AsyncTransport(max_connections_per_host=8) as t:

            async def worker() -> list[str]:
                results = []
                for _ in range(10):
                    try:
                        resp = await t.request("GET", url)
                        results.append("ok" if len(await resp.read()) == 100 else "short")
                    except poolwatch.NetworkError as exc:
                        results.append(type(exc).__name__)
                return results

            results = [
                r for rs in await asyncio.gather(*(worker() for _ in range(32))) for r in rs
            ]
            assert len(results) == 320 and "short" not in results
            assert results.count("ok") >= 300
            stats = await assert_at_rest(t)
            assert stats.connections_closed >= 1

    with http_server({"/flaky": maybe_close}) as srv:
        run(lambda: main(srv.url("/flaky")))


def test_an_errored_body_done_carries_its_exception() -> None:
    """A body cut short ends ``errored``; its ``body_done`` holds the very
    exception the read raised, on both transports."""

    async def read_async(url: str) -> tuple[BaseException, list[poolwatch.Event]]:
        seen: list[poolwatch.Event] = []
        async with poolwatch.AsyncTransport() as t:
            t.add_listener(lambda e: seen.append(e) if e.name == "body_done" else None)
            resp = await t.request("GET", url)
            with pytest.raises(poolwatch.RemoteProtocolError) as raised:
                await resp.read()
            await assert_at_rest(t)
        return raised.value, seen

    with raw_server(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")) as srv:
        url = f"http://127.0.0.1:{srv.port}/"
        seen: list[poolwatch.Event] = []
        with poolwatch.Transport() as t:
            t.add_listener(lambda e: seen.append(e) if e.name == "body_done" else None)
            resp = t.request("GET", url)
            with pytest.raises(poolwatch.RemoteProtocolError) as raised:
                resp.read()
            assert_sync_at_rest(t)
        async_error, async_seen = run(lambda: read_async(url))
    for error, events in ((raised.value, seen), (async_error, async_seen)):
        [event] = events
        assert event.data["outcome"] == "errored"
        assert event.data["error"] is error
        assert event.data["bytes"] == 3
        assert event.data["status"] == 200


def test_a_drained_body_done_has_no_error(server: HTTPServer) -> None:
    seen: list[poolwatch.Event] = []
    with poolwatch.Transport() as t:
        t.add_listener(lambda e: seen.append(e) if e.name == "body_done" else None)
        t.request("GET", server.url("/bytes/10")).read()
    [event] = seen
    assert event.data["outcome"] == "drained"
    assert "error" not in event.data
