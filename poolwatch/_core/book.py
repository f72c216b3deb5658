"""The transport's bookkeeping with no I/O: open connections, checked-out
bodies, counters, retry eligibility, snapshots and events (R6, R13, R18, R19).

Both transports keep one :class:`Book` next to their :class:`PoolState` and
call its ``_locked`` methods with their pool lock held (the asyncio transport
runs them on its loop, under a lock only so that a snapshot taken from
another thread is consistent). Nothing here blocks, sleeps or reads a clock:
times come in as arguments.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, Protocol, TypeVar

from .._events import Event, Listener, dispatch
from .._exceptions import LocalProtocolError, ReadError
from .._leaks import OpenBody
from .._models import Origin
from .exchange import BODY, DONE, WAITING, Exchange, has_no_body
from .failures import idle_end_reason
from .pool import Decision, PoolState
from .stats import Counters, OriginStats, PoolStats

__all__ = ["Book", "BookConnection", "ConnectionInfo", "can_retry", "emit"]

_BODY_COUNTERS = {
    "drained": "bodies_drained",
    "closed_early": "bodies_closed_early",
    "leaked": "bodies_leaked",
    "errored": "bodies_errored",
    "no_body": "bodies_without_content",
}


@dataclass(frozen=True)
class ConnectionInfo:
    """One open connection, as :meth:`Transport.connections` reports it.
    Times are in seconds; ``idle_time`` is 0 for an active connection."""

    id: int
    origin: str
    state: str
    requests_served: int
    age: float
    idle_time: float


class BookConnection(Protocol):
    """What the bookkeeping needs to know of a connection."""

    id: int
    closing: bool
    close_reason: str
    exchange: Any  # the I/O layer's Exchange subclass, or None
    requests_served: int
    created_at: float
    idle_since: float
    holds_slot: bool
    counters: Counters

    @property
    def origin(self) -> Origin: ...


C = TypeVar("C", bound=BookConnection)

# Origins whose totals ``stats().per_origin`` keeps by name once nothing
# uses them; the older ones are added up under OTHER_ORIGINS.
MAX_QUIET_ORIGINS = 256
OTHER_ORIGINS = "(other origins)"
_FIRST_SWEEP = 16  # origins counted before the first look for quiet ones


def can_retry(exchange: Exchange, error: BaseException) -> bool:
    """R13: only a reused connection, only before any response byte, only a
    request that may be sent again."""
    if not exchange.reused or exchange.response_started:
        return False
    if isinstance(error, LocalProtocolError):
        return False
    return exchange.request.is_replayable()


def emit(
    listeners: tuple[Listener, ...],
    name: str,
    conn: BookConnection | None,
    exchange: Exchange | None = None,
    **data: Any,
) -> None:
    """Tell ``listeners``, and the request's own listener, about an event.
    Never called with a lock held."""
    own = None if exchange is None else exchange.listener
    if own is not None:
        listeners = (*listeners, own)
    if not listeners:
        return
    if conn is not None:
        origin = str(conn.origin)
    else:
        origin = str(exchange.request.origin) if exchange is not None else ""
    url = None if exchange is None else exchange.request.url
    # Read-only: every listener gets the same details.
    event = Event(name, origin, None if conn is None else conn.id, url, MappingProxyType(data))
    dispatch(listeners, event)


class Book(Generic[C]):
    """Open connections, checked-out bodies and counters, per origin. Not
    thread-safe: hold the pool lock around every ``_locked`` method."""

    def __init__(self, pool: PoolState[C]) -> None:
        self.pool = pool
        self.counters: dict[Origin, Counters] = {}  # origins that may be in use
        # The totals of origins nothing uses any more, by their text form
        # (which drops their TLS context: a context made per request is not
        # kept alive here), most recently retired last; past
        # MAX_QUIET_ORIGINS the oldest are added up under OTHER_ORIGINS.
        self.quiet: dict[str, Counters] = {}
        self._sweep_at = _FIRST_SWEEP
        self.live: dict[C, None] = {}  # open connections
        self.unsettled: dict[C, None] = {}  # connections whose workers run
        self.open: dict[Exchange, None] = {}  # bodies checked out

    def counters_for(self, origin: Origin) -> Counters:
        """The counters of ``origin``, made on first use (pool lock held)."""
        counters = self.counters.get(origin)
        if counters is None:
            if len(self.counters) >= self._sweep_at:
                self._retire_quiet_locked()
            counters = self.counters[origin] = Counters()
        return counters

    def _retire_quiet_locked(self) -> None:
        """Move the counters of origins nothing refers to any more (no
        connection, slot, waiter or open body) to :attr:`quiet`, so that a
        transport used for many origins over its life, or given a new TLS
        context per request, does not keep them all. Run when the origins
        counted have doubled since the last time: amortised, O(1) a request."""
        pool = self.pool
        in_use: set[Hashable] = {c.origin for c in self.live}
        in_use.update(c.origin for c in self.unsettled)
        in_use.update(e.request.origin for e in self.open)
        in_use.update(pool.origins_in_use())
        quiet = self.quiet
        for origin in [o for o in self.counters if o not in in_use]:
            key = str(origin)
            total = quiet.pop(key, None) or Counters()  # to the end: most recent
            total.add(self.counters.pop(origin))
            quiet[key] = total
            pool.forget_origin_locked(origin)
        while len(quiet) > MAX_QUIET_ORIGINS:
            oldest = next(iter(quiet))
            others = quiet.pop(OTHER_ORIGINS, None) or Counters()
            others.add(quiet.pop(oldest))
            quiet[OTHER_ORIGINS] = others
        self._sweep_at = max(_FIRST_SWEEP, 2 * len(self.counters))

    # -- connections ---------------------------------------------------------

    def opened_locked(self, conn: C) -> None:
        """A new connection is open and its two workers start (R1)."""
        conn.counters = self.counters_for(conn.origin)  # its slot keeps it in use
        self.live[conn] = None
        self.unsettled[conn] = None
        conn.counters.connections_opened += 1
        conn.counters.workers_alive += 2

    def assign_locked(self, exchange: Exchange, conn: C, was_idle: bool) -> None:
        """``exchange`` goes out on ``conn``."""
        exchange.connection = conn
        exchange.reused = conn.requests_served > 0
        exchange.was_idle = was_idle  # from the idle pool, not handed over
        conn.exchange = exchange

    def closed_locked(self, conn: C) -> Decision[C]:
        """``conn`` is closing (``close_reason`` set): free its slot, fail a
        caller still waiting for its head, and end a body that cannot be read
        any more as errored. Returns the pool's decision to act on."""
        decision = self.pool.forget_locked(conn)
        del self.live[conn]
        counters = conn.counters
        counters.connections_closed += 1
        if conn.close_reason == "idle_timeout":
            counters.idle_expired += 1
        exchange = conn.exchange
        if exchange is not None:
            if exchange.state == WAITING:
                request = exchange.request
                exchange.fail_locked(
                    ReadError(
                        f"connection closed before the response ({conn.close_reason})",
                        method=request.method,
                        url=request.url,
                    )
                )
            elif exchange.state == BODY and conn.close_reason == "loop_shutdown":
                # The event loop is going away under a body nobody drained or
                # closed: its owner left it open, a leak (R6).
                self.end_body_locked(exchange, "leaked")
            elif (
                exchange.state == BODY
                and not exchange.leaked  # counted by whoever it was handed to (R6)
                and (not exchange.body_buffered or conn.close_reason == "transport_closed")
            ):
                # A body that arrived whole outlives a server's close (its
                # owner decides its outcome), not the transport's (R14); a
                # response without a body has none to cut (R7).
                head = exchange.head
                empty = head is not None and has_no_body(exchange.request.method, head)
                self.end_body_locked(exchange, "no_body" if empty else "errored")
        return decision

    def settling_locked(self) -> list[C]:
        """The connections ``settle()`` waits for: those closing, and those
        whose response was garbage-collected unclosed (R6), which their
        workers are about to count and tear down."""
        return [
            conn
            for conn in self.unsettled
            if conn.closing or (conn.exchange is not None and conn.exchange.leaked)
        ]

    def worker_exited_locked(self, conn: C, last: bool) -> None:
        """One of ``conn``'s workers exited; ``last`` if it was the second
        and ``conn`` is settled with it (see :meth:`settled_locked`)."""
        conn.counters.workers_alive -= 1
        if last:
            self.settled_locked(conn)

    def settled_locked(self, conn: C) -> None:
        """Nothing of ``conn`` runs any more: ``settle()`` need not wait for
        it. The sync transport calls this once the last worker has also
        announced the close (``conn_closed``), so that a listener has heard
        of it when ``settle()`` returns."""
        self.unsettled.pop(conn, None)

    def arrived_locked(self, conn: C, data: bytes | OSError) -> tuple[Any, bool]:
        """The reader of ``conn`` got ``data`` (bytes, ``b""`` for EOF, or
        the read's error). Returns the exchange waiting for it, if any, and
        whether the connection is over (the exchange is ``conn.exchange``, of
        the I/O layer's type). With no request waiting, bytes or an
        EOF end the connection (R3): see ``conn.close_reason``. A body that
        arrived whole may still be checked out: returned with ``True``, for
        :meth:`released_locked`."""
        exchange = conn.exchange
        if exchange is not None and exchange.state != WAITING and not conn.closing:
            if exchange.leaked:
                conn.close_reason = "leaked"
            elif exchange.state == BODY:
                # Its owner still holds the body: what follows it is the
                # server's doing (R10), not the end of an idle connection (R3).
                more = isinstance(data, bytes) and data
                conn.close_reason = "bytes_after_body" if more else "server_closed"
            else:
                self.idle_ended_locked(conn, data)
            return exchange, True
        if exchange is not None and exchange.state == BODY and exchange.leaked:
            # Dropped unclosed as its connection was closing, which left the
            # count to whoever it was handed to: its reader, here (R6).
            return exchange, True
        if exchange is None or conn.closing:
            self.idle_ended_locked(conn, data)
            return None, True
        return exchange, False

    def idle_ended_locked(self, conn: C, data: bytes | OSError) -> None:
        """Something arrived while no request was outstanding: the
        connection is over (R3); its close reason says why."""
        if conn.closing:
            return
        self.pool.remove_idle_locked(conn)
        conn.close_reason = idle_end_reason(data)
        if conn.close_reason == "server_closed_idle":
            conn.counters.idle_closed_by_server += 1

    def released_locked(self, conn: C, exchange: Exchange) -> tuple[bool, bool]:
        """The body owner let go of ``exchange``: whether it was leaked (the
        garbage collector found it open: counted now, R6) and whether the
        connection lives on."""
        leaked = exchange.leaked and exchange.state == BODY
        if leaked:
            self.end_body_locked(exchange, "leaked")
            conn.close_reason = conn.close_reason or "leaked"
        return leaked, not conn.closing and not leaked

    # -- bodies ----------------------------------------------------------------

    def delivered_locked(self, exchange: Exchange) -> None:
        """The response head goes to the caller: its body is checked out."""
        conn = exchange.connection
        exchange.state = BODY
        conn.requests_served += 1
        counters: Counters = conn.counters
        counters.requests += 1
        if exchange.reused:
            counters.reused_requests += 1
        self.open[exchange] = None

    def end_body_locked(self, exchange: Exchange, outcome: str) -> None:
        """The body ended with ``outcome`` (R4-R7)."""
        exchange.state = DONE
        exchange.outcome = outcome
        counters: Counters = exchange.connection.counters
        name = _BODY_COUNTERS[outcome]
        setattr(counters, name, getattr(counters, name) + 1)
        del self.open[exchange]

    # -- snapshots ---------------------------------------------------------------

    def stats_locked(self) -> list[tuple[str, OriginStats]]:
        """Each origin's snapshot, keyed by its string form (see :meth:`stats`);
        the quiet ones' totals too."""
        snapshots = [(key, OriginStats(**c.as_dict())) for key, c in self.quiet.items()]
        # The gauges of every origin, from one pass over the connections and
        # one over the open bodies (not one of each per origin).
        pool = self.pool
        conns: Counter[Hashable] = Counter()
        idle: Counter[Hashable] = Counter()
        for conn in self.live:
            conns[conn.origin] += 1
            if pool.is_idle(conn):
                idle[conn.origin] += 1
        bodies: Counter[Hashable] = Counter(exchange.request.origin for exchange in self.open)
        gauges = (conns, idle, bodies)
        snapshots.extend(
            (str(origin), self._origin_stats_locked(origin, counters, gauges))
            for origin, counters in self.counters.items()
        )
        # Origins not counted yet: a first connection being made, or a first
        # request queued (their gauges only).
        snapshots.extend(
            (str(origin), self._origin_stats_locked(origin, Counters(), gauges))
            for origin in pool.origins_in_use()
            if origin not in self.counters
        )
        return snapshots

    @staticmethod
    def merge(snapshots: list[tuple[str, OriginStats]]) -> PoolStats:
        """The :class:`PoolStats` of per-origin snapshots; origins that differ
        only in their TLS settings are added up."""
        per_origin: dict[str, OriginStats] = {}
        for key, snapshot in snapshots:
            per_origin[key] = snapshot + per_origin[key] if key in per_origin else snapshot
        return PoolStats.build(per_origin)

    def _origin_stats_locked(
        self,
        origin: Hashable,
        counters: Counters,
        gauges: tuple[Counter[Hashable], Counter[Hashable], Counter[Hashable]],
    ) -> OriginStats:
        """``origin``'s snapshot, its gauges taken from ``gauges``: its open
        connections, those of them idle, and its open bodies."""
        pool = self.pool
        conns, idle, bodies = gauges
        count = conns[origin]
        return OriginStats(
            **counters.as_dict(),
            open_connections=count,
            idle_connections=pool.idle_count(origin),
            active_connections=count - idle[origin],
            open_bodies=bodies[origin],
            waiting_requests=pool.waiting(origin),
            # A slot is taken as a dial starts; the connection is open once made.
            connecting_requests=max(pool.slots(origin) - count, 0),
        )

    def connections_locked(self, now: float) -> list[ConnectionInfo]:
        """Every open connection (see ``Transport.connections``)."""
        pool = self.pool
        return [
            ConnectionInfo(
                id=c.id,
                origin=str(c.origin),
                state="idle" if pool.is_idle(c) else "active",
                requests_served=c.requests_served,
                age=now - c.created_at,
                idle_time=now - c.idle_since if pool.is_idle(c) else 0.0,
            )
            for c in self.live
        ]

    @staticmethod
    def open_bodies(exchanges: list[Exchange], now: float) -> list[OpenBody]:
        """The open bodies of ``exchanges`` (a copy of :attr:`open`), with
        their call sites (R6)."""
        return [
            OpenBody(
                method=e.request.method,
                url=e.request.url,
                status=e.head.status_code if e.head else 0,
                age=now - e.marks.get("head", now),
                call_site=e.call_site,
                connection_id=e.connection.id if e.connection else 0,
            )
            for e in exchanges
        ]

    def summary_locked(self) -> str:
        """The ``[Requests ... | Connections ... | Workers ...]`` part of a
        transport's repr."""
        idle = self.pool.idle_count()
        # In flight: a connection dialled or checked out for it (waiting for
        # the head, or its body open), as httpcore counts them.
        active = self.pool.slots() - idle
        queued = self.pool.waiting()
        conns = len(self.live)
        workers = sum(c.workers_alive for c in self.counters.values())
        return (
            f"[Requests: {active} active, {queued} queued | "
            f"Connections: {conns - idle} active, {idle} idle | Workers: {workers}]"
        )
