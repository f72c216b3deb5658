"""OpenTelemetry metrics, read with the SDK's in-memory reader."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import poolwatch
from poolwatch.otel import instrument
from tests.servers import HTTPServer


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
