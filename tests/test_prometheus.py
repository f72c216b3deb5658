"""Prometheus export, scraped from a real prometheus_client exposition on
loopback and parsed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import fields

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

import poolwatch
from poolwatch.prometheus import register
from tests.servers import HTTPServer


@pytest.fixture
def exposition() -> Iterator[tuple[CollectorRegistry, int]]:
    """A registry served over HTTP on 127.0.0.1; stopped after the test."""
    registry = CollectorRegistry()
    httpd, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield registry, httpd.server_port
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """GET /metrics with poolwatch itself; samples by name and labels."""
    with poolwatch.Transport() as t:
        text = t.request("GET", f"http://127.0.0.1:{port}/metrics").read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = (
                sample.value
            )
    return samples


def test_scrape_shows_stats_per_origin(
    exposition: tuple[CollectorRegistry, int], server: HTTPServer
) -> None:
    """Counters, gauges and histograms appear under the origin label with the
    values stats() reports."""
    registry, port = exposition
    closed = threading.Event()
    with poolwatch.Transport(keep_alive=False) as t:
        collector = register(t, registry)
        t.add_listener(lambda e: closed.set() if e.name == "conn_closed" else None)
        for _ in range(2):
            t.request("GET", server.url()).read()
        open_body = t.request("GET", server.url("/stream"))
        assert closed.wait(10)
        samples = _scrape(port)
        origin = (("origin", server.origin),)
        assert samples["poolwatch_requests_total"][origin] == 3
        assert samples["poolwatch_bodies_drained_total"][origin] == 2
        assert samples["poolwatch_open_bodies"][origin] == 1
        assert samples["poolwatch_connections_opened_total"][origin] == 3
        assert samples["poolwatch_pool_wait_seconds_count"][origin] == 3
        assert samples["poolwatch_connection_requests_count"][origin] >= 1
        assert samples["poolwatch_connection_lifetime_seconds_count"][origin] >= 1
        # Every field of a snapshot, gauge or counter.
        exported = {name.removesuffix("_total") for name in samples}
        assert {f"poolwatch_{f.name}" for f in fields(poolwatch.OriginStats)} <= exported
        open_body.close()
        registry.unregister(collector)
        collector.close()
    assert "poolwatch_requests_total" not in _scrape(port)


def test_several_transports_in_one_registry(
    exposition: tuple[CollectorRegistry, int], server: HTTPServer
) -> None:
    """Transports given by name are told apart by a ``transport`` label in
    one collector (a registry takes each metric name once); after
    ``close()`` the collector hears no more events."""
    registry, port = exposition
    with poolwatch.Transport() as api, poolwatch.Transport() as auth:
        collector = register({"api": api, "auth": auth}, registry)
        for transport, count in ((api, 3), (auth, 1)):
            for _ in range(count):
                transport.request("GET", server.url()).read()
        samples = _scrape(port)
        for name, count in (("api", 3), ("auth", 1)):
            labels = (("origin", server.origin), ("transport", name))
            assert samples["poolwatch_requests_total"][labels] == count
            assert samples["poolwatch_pool_wait_seconds_count"][labels] == count
        collector.close()
        api.request("GET", server.url()).read()
        labels = (("origin", server.origin), ("transport", "api"))
        after = _scrape(port)
        assert after["poolwatch_requests_total"][labels] == 4  # read from stats
        assert after["poolwatch_pool_wait_seconds_count"][labels] == 3  # not heard
        registry.unregister(collector)
