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

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ._async.transport import AsyncTransport
from ._core.book import MAX_QUIET_ORIGINS, OTHER_ORIGINS
from ._events import Event
from ._sync.transport import Transport

__all__ = ["PoolwatchCollector", "register"]

_GAUGES = {
    "workers_alive": "Reader and writer workers alive.",
    "open_connections": "Open connections (idle and active).",
    "idle_connections": "Connections idle in the pool.",
    "active_connections": "Connections checked out (including those held by open bodies).",
    "open_bodies": "Response bodies not yet read to the end, closed, errored or leaked.",
    "waiting_requests": "Requests queued for a connection.",
    "connecting_requests": "Requests making their connection (connect, proxy and TLS handshakes).",
}
_COUNTERS = {
    "connections_opened": "Connections opened (a dial that failed is not counted).",
    "connections_closed": "Connections closed.",
    "requests": "Responses handed to callers.",
    "reused_requests": "Responses handed to callers that came on a reused connection.",
    "bodies_drained": "Bodies read to the end (their connection reused if keep-alive allows).",
    "bodies_closed_early": "Bodies closed before the end (their connection closed, unless"
    " drain_on_close kept it).",
    "bodies_drained_on_close": "Bodies closed early whose connection drain_on_close kept"
    " (counted in bodies_closed_early too).",
    "bodies_leaked": "Bodies neither read to the end nor closed: garbage-collected, or"
    " left open as their event loop shut down.",
    "bodies_errored": "Bodies ended by an error.",
    "bodies_without_content": "Responses without a body.",
    "retries": "Requests retried after a stale reused connection.",
    "request_errors": "Calls that raised an error before a response.",
    "idle_closed_by_server": "Idle connections the server closed.",
    "idle_expired": "Idle connections closed by the idle timeout.",
    "pool_waits": "Requests that had to wait for a connection.",
}
# Pool waits are short when healthy and long when starved: 0.1 ms to 10 s.
_WAIT_BUCKETS = (0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
_LIFETIME_BUCKETS = (0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 900.0, 3600.0)
_REQUEST_BUCKETS = (1, 2, 5, 10, 50, 100, 500, 1000, 10000)


Transports = Transport | AsyncTransport | Mapping[str, Transport | AsyncTransport]


class PoolwatchCollector(Collector):
    """Collects transports' stats, labelled by ``origin``; several
    transports, given as a mapping of names to transports, are told apart by
    a ``transport`` label too (a registry takes each metric name once, so
    one collector covers them all)."""

    def __init__(self, transports: Transports, prefix: str = "poolwatch") -> None:
        if isinstance(transports, Mapping):
            self.transports = dict(transports)
            self._labels = ["transport", "origin"]
        else:
            self.transports = {"": transports}
            self._labels = ["origin"]
        self.prefix = prefix
        private = CollectorRegistry(auto_describe=True)
        self.pool_wait = Histogram(
            f"{prefix}_pool_wait_seconds",
            "Time from asking for a connection to getting one.",
            self._labels,
            buckets=_WAIT_BUCKETS,
            registry=private,
        )
        self.lifetime = Histogram(
            f"{prefix}_connection_lifetime_seconds",
            "How long closed connections lived.",
            self._labels,
            buckets=_LIFETIME_BUCKETS,
            registry=private,
        )
        self.requests_per_connection = Histogram(
            f"{prefix}_connection_requests",
            "Requests served by each closed connection.",
            self._labels,
            buckets=_REQUEST_BUCKETS,
            registry=private,
        )
        self._observers = {name: self._observer(name) for name in self.transports}
        for name, transport in self.transports.items():
            transport.add_listener(self._observers[name])

    @property
    def transport(self) -> Transport | AsyncTransport:
        """The transport, when there is one (the first otherwise)."""
        return next(iter(self.transports.values()))

    def _observer(self, name: str) -> Callable[[Event], None]:
        head = [name] if self._labels[0] == "transport" else []
        labelled: set[str] = set()  # origins with histograms of their own

        def origin_label(origin: str) -> str:
            # As stats().per_origin: a bounded number of origins by name,
            # the rest together (a label value per origin ever seen would
            # grow every scrape, and the registry, without end).
            if origin in labelled:
                return origin
            if len(labelled) >= MAX_QUIET_ORIGINS:
                return OTHER_ORIGINS
            labelled.add(origin)
            return origin

        def observe(event: Event) -> None:
            if event.name == "got_conn":
                origin = origin_label(event.origin)
                self.pool_wait.labels(*head, origin).observe(event.data["wait"])
            elif event.name == "conn_closed":
                labels = (*head, origin_label(event.origin))
                self.lifetime.labels(*labels).observe(event.data["age"])
                self.requests_per_connection.labels(*labels).observe(event.data["requests"])

        return observe

    def collect(self) -> Iterator[Metric]:
        """The metric families, read from a fresh stats snapshot of each
        transport."""
        snapshots = [(name, t.stats().per_origin) for name, t in self.transports.items()]
        for kind, fields in ((GaugeMetricFamily, _GAUGES), (CounterMetricFamily, _COUNTERS)):
            for field, doc in fields.items():
                family = kind(f"{self.prefix}_{field}", doc, labels=self._labels)
                for name, per_origin in snapshots:
                    head = [name] if self._labels[0] == "transport" else []
                    for origin, stats in per_origin.items():
                        family.add_metric([*head, origin], getattr(stats, field))
                yield family
        for histogram in (self.pool_wait, self.lifetime, self.requests_per_connection):
            yield from histogram.collect()

    def close(self) -> None:
        """Stop observing the transports."""
        for name, transport in self.transports.items():
            transport.remove_listener(self._observers[name])


def register(
    transports: Transports, registry: CollectorRegistry = REGISTRY, prefix: str = "poolwatch"
) -> PoolwatchCollector:
    """Register a collector for a transport, or for several given as a
    mapping of names to transports (each name becomes the ``transport``
    label), in ``registry``; returns it (unregister it with
    ``registry.unregister(collector)``)."""
    collector = PoolwatchCollector(transports, prefix)
    registry.register(collector)
    return collector
