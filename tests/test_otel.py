"""OpenTelemetry metrics, read with the SDK's in-memory reader."""

from __future__ import annotations

import contextlib
import gc
import logging
import socket
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import poolwatch
from poolwatch._core.book import MAX_QUIET_ORIGINS
from poolwatch.otel import instrument
from tests.servers import (
    HTTPServer,
    Reply,
    ServerConnection,
    answering,
    http_server,
    raw_server,
)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: every connect is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


CUT_SHORT = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"  # then a hang-up


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def test_semantic_convention_metrics(server: HTTPServer) -> None:
    """Names and attributes of the HTTP client conventions, with values that
    match what the transport did."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        with poolwatch.Transport() as t:
            instrumentation = instrument(t, provider)
            for _ in range(3):
                t.request("GET", server.url()).read()
            points = _points(reader)
            duration = points["http.client.request.duration"]
            assert sum(p.count for p in duration) == 3
            attributes = dict(duration[0].attributes)
            assert attributes["http.request.method"] == "GET"
            assert attributes["http.response.status_code"] == 200
            assert attributes["server.address"] == "127.0.0.1"
            assert attributes["server.port"] == server.port
            states = {
                p.attributes["http.connection.state"]: p.value
                for p in points["http.client.open_connections"]
            }
            assert states == {"idle": 1, "active": 0}
            assert sum(p.count for p in points["poolwatch.pool.wait_duration"]) == 3
            instrumentation.close()
    finally:
        provider.shutdown()


def test_connection_duration_recorded_on_close(server: HTTPServer) -> None:
    """Each closed connection records its life in http.client.connection.duration."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        with poolwatch.Transport(keep_alive=False) as t:
            instrument(t, provider)
            t.request("GET", server.url()).read()
            t.settle()
        points = _points(reader)
        assert sum(p.count for p in points["http.client.connection.duration"]) == 1
    finally:
        provider.shutdown()


def test_requests_waiting_for_their_heads_are_active() -> None:
    """A request waiting for its head is in flight: counted in
    ``http.client.active_requests`` and in the repr's active requests."""
    release = threading.Event()

    def slow(request: object, body: bytes) -> Reply:
        release.wait(10)
        return Reply(body=b"late")

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    written = threading.Semaphore(0)
    try:
        with http_server({"/slow": slow}) as server, poolwatch.Transport() as t:
            instrumentation = instrument(t, provider)
            t.add_listener(lambda e: written.release() if e.name == "wrote_request" else None)
            bodies: list[bytes] = []
            callers = [
                threading.Thread(
                    target=lambda: bodies.append(t.request("GET", server.url("/slow")).read())
                )
                for _ in range(2)
            ]
            for caller in callers:
                caller.start()
            for _ in callers:
                assert written.acquire(timeout=10)
            assert "Requests: 2 active" in repr(t)
            active = _points(reader)["http.client.active_requests"]
            assert sum(p.value for p in active) == 2
            release.set()
            for caller in callers:
                caller.join()
            assert bodies == [b"late", b"late"]
            assert "Requests: 0 active" in repr(t)
            instrumentation.close()
    finally:
        release.set()
        provider.shutdown()


def test_a_call_that_raises_is_recorded_with_its_error_type() -> None:
    """A refused connect is a request duration with ``error.type``, so an
    error rate can be read off the conventions' metric."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}/"
    try:
        with poolwatch.Transport() as t:
            instrumentation = instrument(t, provider)
            with pytest.raises(poolwatch.ConnectError):
                t.request("GET", url)
            [point] = _points(reader)["http.client.request.duration"]
            assert point.count == 1
            assert point.attributes["error.type"] == "ConnectError"
            assert point.attributes["http.request.method"] == "GET"
            assert "http.response.status_code" not in point.attributes
            instrumentation.close()
    finally:
        provider.shutdown()


def test_an_errored_body_and_an_error_status_carry_error_type(server: HTTPServer) -> None:
    """A body cut short is recorded with its status and the exception's name
    as ``error.type``; a 404 with ``"404"``; a 200 read whole with none."""

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        with raw_server(answering(CUT_SHORT)) as srv, poolwatch.Transport() as t:
            instrumentation = instrument(t, provider)
            resp = t.request("GET", f"http://127.0.0.1:{srv.port}/")
            with pytest.raises(poolwatch.RemoteProtocolError):
                resp.read()
            missing = Reply(status=404, body=b"no")
            with http_server({"/missing": lambda request, body: missing}) as other:
                t.request("GET", other.url("/missing")).read()
                t.request("GET", other.url("/")).read()
            instrumentation.close()
        points = _points(reader)["http.client.request.duration"]
        by_error = {
            (p.attributes.get("error.type"), p.attributes["http.response.status_code"]): p.count
            for p in points
        }
        assert by_error == {("RemoteProtocolError", 200): 1, ("404", 404): 1, (None, 200): 1}
    finally:
        provider.shutdown()


OBSERVED = ("http.client.open_connections", "http.client.active_requests")


def test_close_stops_the_observable_instruments(server: HTTPServer) -> None:
    """After ``close()`` the gauges report no data points (they no longer
    read the transport's stats) and the histograms record nothing more."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        with poolwatch.Transport() as t:
            instrumentation = instrument(t, provider)
            t.request("GET", server.url()).read()
            before = _points(reader)
            assert all(name in before for name in OBSERVED)
            instrumentation.close()
            held = [t.request("GET", server.url("/stream")) for _ in range(3)]
            t.request("GET", server.url()).read()
            assert t.stats().active_connections == 3
            after = _points(reader)
            for body in held:
                body.close()
            instrumentation.close()  # a second close does nothing more
        assert not any(name in after for name in OBSERVED), after
        for name in ("http.client.request.duration", "poolwatch.pool.wait_duration"):
            assert sum(p.count for p in after[name]) == 1
        assert instrumentation.transport is None
    finally:
        provider.shutdown()


@pytest.mark.parametrize("close_first", [True, False], ids=["closed", "left-open"])
def test_instrumentation_does_not_keep_its_transport_alive(
    server: HTTPServer, close_first: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A transport dropped while instrumented, with an idle connection open,
    is garbage-collected and so closed, whether or not the instrumentation
    was closed first; the gauges' callbacks then report nothing, without
    failing."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    conn_closed = threading.Event()
    try:
        t = poolwatch.Transport()
        instrumentation = instrument(t, provider)
        t.add_listener(lambda e: conn_closed.set() if e.name == "conn_closed" else None)
        t.request("GET", server.url()).read()
        assert t.stats().idle_connections == 1
        if close_first:
            instrumentation.close()
        dropped = weakref.ref(t)
        del t
        gc.collect()
        assert dropped() is None
        assert conn_closed.wait(10)  # the dropped transport closed its connection
        assert instrumentation.transport is None
        with caplog.at_level(logging.WARNING):
            points = _points(reader)
        assert not any(name in points for name in OBSERVED), points
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        # Until closed, the instrumentation records the connection's end.
        lifetimes = points.get("http.client.connection.duration", [])
        assert sum(p.count for p in lifetimes) == (0 if close_first else 1)
        instrumentation.close()
    finally:
        provider.shutdown()


def test_a_request_making_its_connection_is_an_active_request() -> None:
    """``http.client.active_requests`` counts a request whose connection is
    still being made (a TLS handshake the server never answers)."""
    handshaking = threading.Event()
    release = threading.Event()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])

    def silent(conn: ServerConnection) -> None:
        release.wait(10)

    try:
        with raw_server(silent) as srv, poolwatch.Transport() as t:
            instrument(t, provider)
            t.add_listener(
                lambda e: handshaking.set() if e.name == "tls_handshake_start" else None
            )

            def call() -> None:
                with contextlib.suppress(poolwatch.PoolwatchError):
                    t.request("GET", f"https://127.0.0.1:{srv.port}/")

            caller = threading.Thread(target=call)
            caller.start()
            try:
                assert handshaking.wait(10)
                points = _points(reader)
            finally:
                release.set()
                caller.join(10)
        assert [p.value for p in points["http.client.active_requests"]] == [1]
    finally:
        provider.shutdown()


def test_one_snapshot_per_collection(server: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both gauges of a collection come from one stats() snapshot (it holds
    the pool's lock while it is taken), and agree with it."""
    taken = 0
    stats = poolwatch.Transport.stats

    def counted(self: poolwatch.Transport) -> poolwatch.PoolStats:
        nonlocal taken
        taken += 1
        return stats(self)

    monkeypatch.setattr(poolwatch.Transport, "stats", counted)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        with poolwatch.Transport() as t:
            instrument(t, provider)
            t.request("GET", server.url()).read()
            with t.request("GET", server.url()):
                for _ in range(3):
                    taken = 0
                    points = _points(reader)
                    assert taken == 1
                    (active,) = points["http.client.active_requests"]
                    assert active.value == 1
    finally:
        provider.shutdown()


def test_histograms_name_a_bounded_number_of_origins(closed_port: int) -> None:
    """Calls to more origins than are named (each refused, on its own
    loopback address): the first 256 carry their server's address, the
    rest are recorded without it, and every call is counted."""
    count = MAX_QUIET_ORIGINS + 30
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        with poolwatch.Transport(connect_timeout=5) as t:
            instrument(t, provider)
            for i in range(count):
                host = f"127.0.{1 + i // 250}.{1 + i % 250}"
                with pytest.raises(poolwatch.ConnectError):
                    t.request("GET", f"http://{host}:{closed_port}/")
        duration = _points(reader)["http.client.request.duration"]
    finally:
        provider.shutdown()
    assert sum(p.count for p in duration) == count
    named = {p.attributes["server.address"] for p in duration if "server.address" in p.attributes}
    assert len(named) == MAX_QUIET_ORIGINS
    unnamed = [p for p in duration if "server.address" not in p.attributes]
    assert sum(p.count for p in unnamed) == count - MAX_QUIET_ORIGINS
    assert all(p.attributes["url.scheme"] == "http" for p in unnamed)
