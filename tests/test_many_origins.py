"""A transport used for many origins over its life, or given a new TLS
context per request: what it keeps of origins nothing uses any more is
bounded, and its totals stay exact (R18)."""

from __future__ import annotations

import gc
import socket
import ssl
import weakref
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from prometheus_client import CollectorRegistry

import poolwatch
from poolwatch._core.book import MAX_QUIET_ORIGINS, OTHER_ORIGINS
from poolwatch.prometheus import register
from tests.conftest import CountedIteration, assert_at_rest
from tests.servers import http_server


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: every connect is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_origins_long_unused_are_added_up(closed_port: int) -> None:
    """Calls to more origins than are kept by name (each on its own loopback
    address, refused): ``per_origin`` holds the most recent by name and the
    rest under one entry; the totals count every call."""
    count = MAX_QUIET_ORIGINS + 200
    with poolwatch.Transport(connect_timeout=5) as t:
        for i in range(count):
            host = f"127.0.{1 + i // 250}.{1 + i % 250}"
            with pytest.raises(poolwatch.ConnectError):
                t.request("GET", f"http://{host}:{closed_port}/")
        stats = assert_at_rest(t)
        assert stats.request_errors == count
        assert len(stats.per_origin) <= MAX_QUIET_ORIGINS + 64
        assert stats.per_origin[OTHER_ORIGINS].request_errors >= 100  # the oldest
        last = f"http://127.0.{1 + (count - 1) // 250}.{1 + (count - 1) % 250}:{closed_port}"
        assert stats.per_origin[last].request_errors == 1
        assert len(t._book.counters) < 64


@pytest.mark.parametrize("cls", [poolwatch.Transport, poolwatch.AsyncTransport])
def test_a_tls_context_per_request_is_not_kept(closed_port: int, cls: type) -> None:
    """Each TLS context holds its CA store (most of a megabyte): a new one
    per request must not stay alive as long as the transport."""
    contexts: list[weakref.ref[ssl.SSLContext]] = []
    url = f"https://127.0.0.1:{closed_port}/"

    def fresh() -> ssl.SSLContext:
        context = ssl.create_default_context()
        contexts.append(weakref.ref(context))
        return context

    if cls is poolwatch.Transport:
        with poolwatch.Transport() as t:
            for _ in range(100):
                with pytest.raises(poolwatch.ConnectError):
                    t.request("GET", url, ssl_context=fresh())
            gc.collect()
            alive = sum(1 for ref in contexts if ref() is not None)
    else:
        from tests.async_support import run

        async def main() -> int:
            async with poolwatch.AsyncTransport() as t:
                for _ in range(100):
                    with pytest.raises(poolwatch.ConnectError):
                        await t.request("GET", url, ssl_context=fresh())
                gc.collect()
                return sum(1 for ref in contexts if ref() is not None)

        alive = run(main)
    assert alive <= 40, f"{alive} of 100 contexts kept alive"


def test_prometheus_histograms_label_a_bounded_number_of_origins() -> None:
    """The histograms' origin labels stop at the same bound, the rest going
    to one label, so that neither scrapes nor the registry grow without end."""
    with poolwatch.Transport() as t:
        collector = register(t, CollectorRegistry())
        observe = collector._observers[""]
        for i in range(MAX_QUIET_ORIGINS + 50):
            origin = f"http://10.0.{i // 250}.{i % 250}:80"  # never contacted: labels only
            observe(poolwatch.Event("conn_closed", origin, 1, None, {"age": 1.0, "requests": 1}))
        [family] = [f for f in collector.lifetime.collect()]
        origins = {s.labels["origin"] for s in family.samples}
        assert len(origins) == MAX_QUIET_ORIGINS + 1
        assert OTHER_ORIGINS in origins
        collector.close()


def test_stats_of_many_origins_take_one_pass_over_connections_and_bodies() -> None:
    """``stats()`` with many origins in use: each origin's gauges are exact
    (idle and active connections, open bodies), and they come from one pass
    over the connections and one over the open bodies, not one of each per
    origin (at 2 000 origins a snapshot took most of a second, holding
    the pool's lock)."""
    count = 12
    with ExitStack() as stack:
        servers = [stack.enter_context(http_server()) for _ in range(count)]
        t = stack.enter_context(poolwatch.Transport())
        held = []
        for i, server in enumerate(servers):
            if i % 2:
                held.append(t.request("GET", server.url("/")))  # an open body
            t.request("GET", server.url("/")).read()  # and one idle connection each
        book = t._book
        book.live = CountedIteration(book.live)
        book.open = CountedIteration(book.open)
        stats = t.stats()
        assert (book.live.passes, book.open.passes) == (1, 1)
        for i, server in enumerate(servers):
            per = stats.per_origin[server.url("/").rstrip("/")]
            expected = (2, 1, 1, 1) if i % 2 else (1, 1, 0, 0)
            assert (
                per.open_connections,
                per.idle_connections,
                per.active_connections,
                per.open_bodies,
            ) == expected
        for response in held:
            response.close()
        assert_at_rest(t)
