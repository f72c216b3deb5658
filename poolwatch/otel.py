"""OpenTelemetry metrics for a transport, under the HTTP client semantic
conventions' names and attributes.

Needs ``opentelemetry-api`` (the ``otel`` extra) and a ``MeterProvider``::

    from poolwatch.otel import instrument
    instrumentation = instrument(transport, meter_provider)

Recorded: ``http.client.request.duration`` (from the call to the end of the
body; with ``error.type``, the exception's name, for a request or body that
raised, or the status code for a 4xx or 5xx answer),
``http.client.connection.duration`` (each closed connection's life),
``http.client.open_connections`` (by ``http.connection.state``, ``idle`` or
``active``), ``http.client.active_requests`` (requests on a connection,
making theirs, or queued for one), and ``poolwatch.pool.wait_duration``
(asking for a connection to getting one, dial included).

The histograms name the first 256 origins they record (``server.address``
and ``server.port``); later ones are recorded without those two, so that a
transport used for ever more origins does not grow the meter's memory
without end, as the Prometheus histograms do.

The observable instruments' callbacks stay with the meter for as long as it
lives (the API cannot take them back), so they hold the transport only
weakly: instrumenting a transport does not keep it alive, and a transport
garbage-collected (and so closed) or an :class:`Instrumentation` closed
leaves them reporting nothing.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from ._async.transport import AsyncTransport
from ._core.book import MAX_QUIET_ORIGINS, OTHER_ORIGINS
from ._core.stats import OriginStats
from ._events import Event
from ._sync.transport import Transport

__all__ = ["Instrumentation", "instrument"]


def _server_attributes(origin: str) -> dict[str, Any]:
    """``server.address``, ``server.port`` and ``url.scheme`` of an origin
    key such as ``"https://api:443 via http://proxy:3128"``."""
    parts = urlsplit(origin.split(" ", 1)[0])
    return {
        "server.address": parts.hostname,
        "server.port": parts.port,
        "url.scheme": parts.scheme,
    }


class Instrumentation:
    """The instruments recording one transport; :meth:`close` stops them.
    The transport is held weakly (see the module's documentation)."""

    _transport: weakref.ref[Transport | AsyncTransport] | None

    def __init__(
        self, transport: Transport | AsyncTransport, meter_provider: MeterProvider
    ) -> None:
        from . import __version__

        # None once closed: the meter keeps the callbacks, and so this
        # object, for its own life, which must not keep the transport's.
        self._transport = weakref.ref(transport)
        # The histograms' attributes of the origins named so far.
        self._named: dict[str, dict[str, Any]] = {}
        # The snapshot the first gauge of a collection took, for the other.
        self._snapshot: list[tuple[str, OriginStats]] | None = None
        meter = meter_provider.get_meter("poolwatch", __version__)
        self.request_duration = meter.create_histogram(
            "http.client.request.duration", unit="s", description="Duration of HTTP requests."
        )
        self.connection_duration = meter.create_histogram(
            "http.client.connection.duration",
            unit="s",
            description="Duration of closed connections.",
        )
        self.pool_wait = meter.create_histogram(
            "poolwatch.pool.wait_duration",
            unit="s",
            description="Time from asking for a connection to getting one.",
        )
        meter.create_observable_up_down_counter(
            "http.client.open_connections",
            callbacks=[self._open_connections],
            unit="{connection}",
            description="Open connections, idle or active.",
        )
        meter.create_observable_up_down_counter(
            "http.client.active_requests",
            callbacks=[self._active_requests],
            unit="{request}",
            description="Requests in flight (on a connection: waiting for the head or"
            " with a body open; making their connection) or waiting for a connection.",
        )
        transport.add_listener(self._observe)

    @property
    def transport(self) -> Transport | AsyncTransport | None:
        """The transport recorded; ``None`` once :meth:`close` has run or the
        transport has been garbage-collected."""
        ref = self._transport
        return None if ref is None else ref()

    def _attributes(self, origin: str) -> dict[str, Any]:
        """The histograms' attributes of ``origin`` (a fresh dict): its
        server's, for the first :data:`MAX_QUIET_ORIGINS` origins; the scheme
        alone after them."""
        named = self._named.get(origin)
        if named is None:
            named = _server_attributes(origin)
            if len(self._named) < MAX_QUIET_ORIGINS:
                self._named[origin] = named
            else:
                named = {"url.scheme": named["url.scheme"]}
        return dict(named)

    def _observe(self, event: Event) -> None:
        if self._transport is None:  # closed (a transport collected first still calls)
            return
        name = event.name
        if name == "body_done":
            attributes = self._attributes(event.origin)
            attributes["http.request.method"] = event.data["method"]
            status = event.data["status"]
            attributes["http.response.status_code"] = status
            error = event.data.get("error")
            if error is not None:  # the body ended in an error
                attributes["error.type"] = type(error).__name__
            elif status >= 400:  # the conventions' error for a client
                attributes["error.type"] = str(status)
            self.request_duration.record(event.data["elapsed"], attributes)
        elif name == "request_failed":
            # Raised before a response (connect, timeouts, a bad head): the
            # conventions' error.type, the exception's name.
            attributes = self._attributes(event.origin)
            attributes["http.request.method"] = event.data["method"]
            attributes["error.type"] = type(event.data["error"]).__name__
            self.request_duration.record(event.data["elapsed"], attributes)
        elif name == "conn_closed":
            self.connection_duration.record(event.data["age"], self._attributes(event.origin))
        elif name == "got_conn":
            self.pool_wait.record(event.data["wait"], self._attributes(event.origin))

    def _open_connections(self, options: CallbackOptions) -> Iterable[Observation]:
        self._snapshot = origins = self._origins()
        for origin, stats in origins:
            attributes = _server_attributes(origin)
            for state, value in (
                ("idle", stats.idle_connections),
                ("active", stats.active_connections),
            ):
                yield Observation(value, {**attributes, "http.connection.state": state})

    def _active_requests(self, options: CallbackOptions) -> Iterable[Observation]:
        # The snapshot the other gauge took in this collection (one
        # snapshot, not two: it is taken under the pool's lock).
        origins, self._snapshot = self._snapshot, None
        if origins is None:
            origins = self._origins()
        for origin, stats in origins:
            active = stats.active_connections + stats.waiting_requests + stats.connecting_requests
            yield Observation(active, _server_attributes(origin))

    def _origins(self) -> list[tuple[str, OriginStats]]:
        """Each origin's stats, without the entry that adds up origins long
        unused (it has no server address, and no connection open); none
        once closed, or once the transport is gone."""
        transport = self.transport
        if transport is None:
            return []
        per_origin = transport.stats().per_origin
        return [(origin, stats) for origin, stats in per_origin.items() if origin != OTHER_ORIGINS]

    def close(self) -> None:
        """Stop recording: no more histogram records, and no more
        observations from the observable instruments (they report no data
        points from then on). Closing twice does nothing more."""
        transport = self.transport
        self._transport = None
        if transport is not None:
            transport.remove_listener(self._observe)


def instrument(
    transport: Transport | AsyncTransport, meter_provider: MeterProvider
) -> Instrumentation:
    """Record ``transport``'s metrics with ``meter_provider``."""
    return Instrumentation(transport, meter_provider)
