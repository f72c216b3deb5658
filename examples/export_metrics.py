"""Export a pool's metrics to Prometheus and OpenTelemetry.
Needs prometheus-client and the OpenTelemetry SDK (its in-memory reader
stands in for an exporter): pip install -e ".[prometheus,otel]" opentelemetry-sdk
Run: python examples/export_metrics.py"""

from __future__ import annotations

from _server import local_server
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest

import poolwatch
from poolwatch.otel import instrument
from poolwatch.prometheus import register


def main() -> None:
    registry = CollectorRegistry()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with local_server() as base, poolwatch.Transport() as transport:
        register(transport, registry)
        instrument(transport, provider)
        for _ in range(3):
            transport.request("GET", base + "/").read()
        for line in generate_latest(registry).decode().splitlines():
            if line.startswith(("poolwatch_requests_total", "poolwatch_idle_connections")):
                print(line)
        data = reader.get_metrics_data()
        names = sorted(
            metric.name
            for resource in (data.resource_metrics if data else [])
            for scope in resource.scope_metrics
            for metric in scope.metrics
        )
        print("otel:", ", ".join(names))
    provider.shutdown()


if __name__ == "__main__":
    main()
