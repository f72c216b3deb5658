"""Pool statistics: mutable counters kept under the pool lock, and the
immutable snapshots handed to users (R18).

At rest (no request in flight, no worker mid-exit) every snapshot satisfies::

    open_connections == connections_opened - connections_closed
    open_connections == idle_connections + active_connections
    workers_alive == 2 * open_connections
    requests == bodies_drained + bodies_closed_early + bodies_leaked
                + bodies_errored + bodies_without_content + open_bodies

:meth:`OriginStats.invariant_violations` checks them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

__all__ = ["Counters", "OriginStats", "PoolStats"]


@dataclass(slots=True)
class Counters:
    """Cumulative counters for one origin (mutated under the pool lock)."""

    workers_alive: int = 0
    connections_opened: int = 0
    connections_closed: int = 0
    requests: int = 0
    reused_requests: int = 0
    bodies_drained: int = 0
    bodies_closed_early: int = 0
    bodies_drained_on_close: int = 0
    bodies_leaked: int = 0
    bodies_errored: int = 0
    bodies_without_content: int = 0
    retries: int = 0
    request_errors: int = 0
    idle_closed_by_server: int = 0
    idle_expired: int = 0
    pool_waits: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def add(self, other: Counters) -> None:
        """Add ``other``'s counts to these."""
        for name, value in other.as_dict().items():
            setattr(self, name, getattr(self, name) + value)


@dataclass(frozen=True)
class OriginStats:
    """A snapshot of one origin's pool (or of all origins, in
    :class:`PoolStats`).

    Gauges (``open_connections``, ``idle_connections``,
    ``active_connections``, ``open_bodies``, ``workers_alive``,
    ``waiting_requests``, ``connecting_requests``) are values at the time
    of the snapshot; the rest are totals since the transport was created.
    ``connecting_requests`` counts the requests making a connection for
    themselves (its TCP connect, proxy and TLS handshakes): in flight, on
    no open connection yet.
    """

    workers_alive: int = 0
    connections_opened: int = 0
    connections_closed: int = 0
    open_connections: int = 0
    idle_connections: int = 0
    active_connections: int = 0
    requests: int = 0
    reused_requests: int = 0
    bodies_drained: int = 0
    bodies_closed_early: int = 0
    bodies_drained_on_close: int = 0
    bodies_leaked: int = 0
    bodies_errored: int = 0
    bodies_without_content: int = 0
    open_bodies: int = 0
    retries: int = 0
    request_errors: int = 0
    idle_closed_by_server: int = 0
    idle_expired: int = 0
    pool_waits: int = 0
    waiting_requests: int = 0
    connecting_requests: int = 0

    def invariant_violations(self) -> list[str]:
        """The R18 invariants this snapshot breaks (empty when it is
        consistent). Meaningful only when the transport is at rest."""
        problems = []
        if self.open_connections != self.connections_opened - self.connections_closed:
            problems.append(
                f"open_connections={self.open_connections} but opened-closed="
                f"{self.connections_opened - self.connections_closed}"
            )
        if self.open_connections != self.idle_connections + self.active_connections:
            problems.append(
                f"open_connections={self.open_connections} but idle+active="
                f"{self.idle_connections + self.active_connections}"
            )
        if self.workers_alive != 2 * self.open_connections:
            problems.append(
                f"workers_alive={self.workers_alive} but 2*open={2 * self.open_connections}"
            )
        outcomes = (
            self.bodies_drained
            + self.bodies_closed_early
            + self.bodies_leaked
            + self.bodies_errored
            + self.bodies_without_content
            + self.open_bodies
        )
        if self.requests != outcomes:
            problems.append(f"requests={self.requests} but body outcomes={outcomes}")
        return problems

    def __add__(self, other: OriginStats) -> OriginStats:
        mine, theirs = self.as_dict(), other.as_dict()
        return OriginStats(**{name: mine[name] + theirs[name] for name in mine})

    def as_dict(self) -> dict[str, int]:
        """The fields by name (without ``per_origin``)."""
        return {f.name: getattr(self, f.name) for f in fields(OriginStats)}


@dataclass(frozen=True)
class PoolStats(OriginStats):
    """An immutable snapshot of a transport: totals over all origins, and
    ``per_origin`` keyed like ``"http://127.0.0.1:8080"``."""

    per_origin: Mapping[str, OriginStats] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def build(cls, per_origin: dict[str, OriginStats]) -> PoolStats:
        """Sum per-origin snapshots into a total."""
        totals = dict.fromkeys(OriginStats.__dataclass_fields__, 0)
        for stats in per_origin.values():
            for name, value in stats.as_dict().items():
                totals[name] += value
        return cls(**totals, per_origin=MappingProxyType(per_origin))

    def __reduce__(self) -> tuple[Any, ...]:
        # A read-only mapping cannot be pickled or deep-copied: the snapshot
        # is rebuilt from its origins' (to send it to another process).
        return (PoolStats.build, (dict(self.per_origin),))
