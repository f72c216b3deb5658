"""Prometheus export: a collector exposing a transport's stats per origin.

Needs the ``prometheus-client`` package (the ``prometheus`` extra)::

    from poolwatch.prometheus import register
    register(transport)                      # into the default registry

Counters and gauges come from :meth:`Transport.stats` at scrape time, so
they cost nothing between scrapes. Three histograms are fed by a listener:
``poolwatch_pool_wait_seconds`` (from asking for a connection to getting
one, dial included, as Go's GetConn to GotConn), and, for each closed
connection, ``poolwatch_connection_lifetime_seconds`` and
``poolwatch_connection_requests``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ._core.stats import OriginStats
from ._events import Event
from ._sync.transport import Transport

__all__ = ["PoolwatchCollector", "register"]

_GAUGES = {
    "workers_alive": "Reader and writer workers alive.",
    "open_connections": "Open connections (idle and active).",
    "idle_connections": "Connections idle in the pool.",
    "active_connections": "Connections checked out (including leaked bodies').",
    "open_bodies": "Response bodies neither read to the end nor closed.",
    "waiting_requests": "Requests queued for a connection.",
}
_COUNTERS = {
    "connections_opened": "Connections dialled.",
    "connections_closed": "Connections closed.",
    "requests": "Responses handed to callers.",
    "reused_requests": "Requests sent on a reused connection.",
    "bodies_drained": "Bodies read to the end (connection reused).",
    "bodies_closed_early": "Bodies closed before the end (connection torn down).",
    "bodies_drained_on_close": "Early closes saved by drain_on_close.",
    "bodies_leaked": "Bodies garbage-collected unclosed.",
    "bodies_errored": "Bodies ended by an error.",
    "bodies_without_content": "Responses without a body.",
    "retries": "Requests retried after a stale reused connection.",
    "idle_closed_by_server": "Idle connections the server closed.",
    "idle_expired": "Idle connections closed by the idle timeout.",
    "pool_waits": "Requests that had to wait for a connection.",
}
# Pool waits are short when healthy and long when starved: 0.1 ms to 10 s.
_WAIT_BUCKETS = (0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
_LIFETIME_BUCKETS = (0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 900.0, 3600.0)
_REQUEST_BUCKETS = (1, 2, 5, 10, 50, 100, 500, 1000, 10000)


class PoolwatchCollector(Collector):
    """Collects one transport's stats, labelled by ``origin``."""

    def __init__(self, transport: Transport, prefix: str = "poolwatch") -> None:
        self.transport = transport
        self.prefix = prefix
        private = CollectorRegistry(auto_describe=True)
        self.pool_wait = Histogram(
            f"{prefix}_pool_wait_seconds",
            "Time from asking for a connection to getting one.",
            ["origin"],
            buckets=_WAIT_BUCKETS,
            registry=private,
        )
        self.lifetime = Histogram(
            f"{prefix}_connection_lifetime_seconds",
            "How long closed connections lived.",
            ["origin"],
            buckets=_LIFETIME_BUCKETS,
            registry=private,
        )
        self.requests_per_connection = Histogram(
            f"{prefix}_connection_requests",
            "Requests served by each closed connection.",
            ["origin"],
            buckets=_REQUEST_BUCKETS,
            registry=private,
        )
        transport.add_listener(self._observe)

    def _observe(self, event: Event) -> None:
        if event.name == "got_conn":
            self.pool_wait.labels(event.origin).observe(event.data["wait"])
        elif event.name == "conn_closed":
            self.lifetime.labels(event.origin).observe(event.data["age"])
            self.requests_per_connection.labels(event.origin).observe(event.data["requests"])

    def collect(self) -> Iterator[Metric]:
        """The metric families, read from a fresh stats snapshot."""
        per_origin = self.transport.stats().per_origin
        for name, doc in _GAUGES.items():
            gauge = GaugeMetricFamily(f"{self.prefix}_{name}", doc, labels=["origin"])
            _add_samples(gauge, per_origin, name)
            yield gauge
        for name, doc in _COUNTERS.items():
            counter = CounterMetricFamily(f"{self.prefix}_{name}", doc, labels=["origin"])
            _add_samples(counter, per_origin, name)
            yield counter
        for histogram in (self.pool_wait, self.lifetime, self.requests_per_connection):
            yield from histogram.collect()

    def close(self) -> None:
        """Stop observing the transport."""
        self.transport.remove_listener(self._observe)


def _add_samples(
    family: GaugeMetricFamily | CounterMetricFamily,
    per_origin: Mapping[str, OriginStats],
    name: str,
) -> None:
    for origin, stats in per_origin.items():
        family.add_metric([origin], getattr(stats, name))


def register(
    transport: Transport, registry: CollectorRegistry = REGISTRY, prefix: str = "poolwatch"
) -> PoolwatchCollector:
    """Register a collector for ``transport`` in ``registry``; returns it
    (unregister it with ``registry.unregister(collector)``)."""
    collector = PoolwatchCollector(transport, prefix)
    registry.register(collector)
    return collector
