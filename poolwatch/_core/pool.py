"""Pool bookkeeping with no I/O: which connection a request gets, which
connections to close, which waiter to wake.

Theory of operation
-------------------

Every connection the pool knows about holds a *slot* from the moment it is
decided to dial it until it is discarded: dialling, active, idle and leaked
connections all count against ``max_connections_per_host`` and
``max_connections`` (R12). Idle connections are kept per origin in insertion
order, and reused newest first (R11); a second, global insertion-ordered map
gives the least recently used idle connection across all origins, for
``max_idle`` eviction and for making room for another origin's dial.

A request that cannot get a connection or a slot becomes a *waiter* in one
FIFO queue. A released connection goes to the first waiter for its origin; a
freed slot goes to the first waiter whose origin has room (R12).

The caller holds a lock around every method here. Methods never block and
never close anything: they return what to close and whom to wake, and the
I/O layer does that after releasing the lock ("decide under the lock, act
after it").

Times are plain floats from a clock the caller passes in.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeGuard, TypeVar

__all__ = ["Decision", "Limits", "PoolState", "Waiter"]


class PooledConnection(Protocol):
    """What the pool needs to know of a connection."""

    @property
    def origin(self) -> Hashable: ...

    idle_since: float
    holds_slot: bool  # whether it still counts against the limits


C = TypeVar("C", bound=PooledConnection)


@dataclass(frozen=True)
class Limits:
    """Pool limits; ``None`` means no limit."""

    max_connections: int | None = None
    max_connections_per_host: int | None = None
    max_idle: int | None = 100
    max_idle_per_host: int | None = 10
    idle_timeout: float | None = 90.0

    def __post_init__(self) -> None:
        for name, least in _LEAST.items():
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int or None, not {value!r}")
            if value < least:
                raise ValueError(f"{name} must be at least {least} or None, not {value!r}")
        check_duration(self.idle_timeout, "idle_timeout", "None: no limit")


def check_duration(value: object, what: str, none_means: str) -> None:
    """Refuse a number of seconds a timer cannot wait for, naming ``what``:
    ``TypeError`` for one that is not a number (``True`` is not one here),
    ``ValueError`` for one not finite and above zero. ``None`` is let
    through (``none_means`` says what it stands for)."""
    if value is None or is_duration(value):
        return
    message = (
        f"{what} must be a finite number of seconds > 0 or None ({none_means}), not {value!r}"
    )
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(message)
    raise ValueError(message)


def is_duration(value: object) -> TypeGuard[float]:
    """Whether ``value`` is a number of seconds a timer can wait for: finite
    and above zero (``True`` is not a number here, and ``inf`` is refused
    by the sockets and locks it would reach)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf


# The least value of each count limit.
_LEAST = {
    "max_connections": 1,
    "max_connections_per_host": 1,
    "max_idle": 0,
    "max_idle_per_host": 0,
}


class Waiter(Generic[C]):
    """A request queued for a connection (R12).

    When the pool serves it, exactly one of ``connection`` (reuse this idle
    connection) or ``may_dial`` (a slot is reserved: dial) is set, and the
    I/O layer wakes whoever waits on it.
    """

    __slots__ = ("connection", "may_dial", "origin", "seq")

    def __init__(self, origin: Hashable) -> None:
        self.origin = origin
        self.connection: C | None = None
        self.may_dial = False
        self.seq = 0  # its place in the queue, across origins

    def is_served(self) -> bool:
        """Whether the pool has given this waiter a connection or a slot."""
        return self.may_dial or self.connection is not None


@dataclass
class Decision(Generic[C]):
    """What the I/O layer must do after a pool call, once the lock is released.

    ``connection``: reuse it. ``dial``: a slot is reserved for a new
    connection. ``waiter``: queued, wait for it. ``close``: connections to
    close (expired or evicted). ``wake``: waiters now served.
    """

    connection: C | None = None
    dial: bool = False
    waiter: Waiter[C] | None = None
    close: list[C] = field(default_factory=list)
    wake: list[Waiter[C]] = field(default_factory=list)


class PoolState(Generic[C]):
    """The pool's state for all origins. Not thread-safe: hold a lock."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._idle: dict[Hashable, dict[C, None]] = {}  # per origin, oldest first
        self._idle_lru: dict[C, None] = {}  # all origins, least recently used first
        self._slots: dict[Hashable, int] = {}  # dialling + active + idle + leaked
        self._total_slots = 0
        # Queued requests, first come first, in ordered dicts: one that
        # leaves (timed out, cancelled) goes in constant time, and so does
        # the first. Each origin's too, so that no question about an origin
        # walks the whole queue.
        self._waiters: OrderedDict[Waiter[C], None] = OrderedDict()
        self._queued: dict[Hashable, OrderedDict[Waiter[C], None]] = {}
        self._arrivals = 0  # waiters queued so far
        # The first waiter of each origin that may have room, by its place
        # in the queue (a heap of (seq, origin)): a freed slot goes to the
        # earliest of them. An entry whose waiter is no longer first, or
        # whose origin is at its own host's limit, is dropped when it comes
        # up; an origin is put back when it frees a slot or its first
        # waiter leaves.
        self._ready: list[tuple[int, Hashable]] = []
        # In use when the pool was told to let them go: closed on release.
        self._retired: set[C] = set()
        # How many times it was told: a connection dialled for a request
        # made before the last time is retired as it is opened.
        self.retirements = 0

    # -- queries ---------------------------------------------------------

    def idle_count(self, origin: Hashable | None = None) -> int:
        """Idle connections for ``origin``, or for all origins."""
        if origin is None:
            return len(self._idle_lru)
        return len(self._idle.get(origin, ()))

    def is_idle(self, conn: C) -> bool:
        """Whether ``conn`` sits in the idle pool."""
        return conn in self._idle_lru

    def waiting(self, origin: Hashable | None = None) -> int:
        """Requests queued for a connection, for one or all origins."""
        if origin is None:
            return len(self._waiters)
        return len(self._queued.get(origin, ()))

    def origins_in_use(self) -> set[Hashable]:
        """Origins with a slot taken (a connection dialled, in use, idle or
        leaked) or a request waiting."""
        return set(self._slots).union(self._queued)

    def forget_origin_locked(self, origin: Hashable) -> None:
        """``origin`` has no connection left: drop its empty idle pool."""
        if not self._idle.get(origin, True):
            del self._idle[origin]

    def slots(self, origin: Hashable | None = None) -> int:
        """Connections counted against the limits, for one or all origins."""
        return self._total_slots if origin is None else self._slots.get(origin, 0)

    # -- checkout ----------------------------------------------------------

    def checkout_locked(self, origin: Hashable, now: float) -> Decision[C]:
        """Give a request for ``origin`` an idle connection, a slot, or a place
        in the queue."""
        decision: Decision[C] = Decision()
        decision.close = self._expire_idle(origin, now)
        idle = self._idle.get(origin)
        if idle:
            conn, _ = idle.popitem()  # newest first (R11)
            del self._idle_lru[conn]
            decision.connection = conn
        elif not self._is_queued(origin) and self._take_slot(origin, decision.close):
            decision.dial = True
        else:
            decision.waiter = Waiter(origin)
            self._enqueue(decision.waiter)
        return decision

    def cancel_wait_locked(self, waiter: Waiter[C], now: float) -> Decision[C]:
        """Withdraw a waiter (timed out or cancelled). If the pool served it in
        the meantime, what it was given is passed on."""
        decision: Decision[C] = Decision()
        if waiter.connection is not None:
            conn, waiter.connection = waiter.connection, None
            if conn.holds_slot:  # not closed since it was handed over
                return self.release_locked(conn, reusable=True, now=now)
            return decision
        if waiter.may_dial:
            waiter.may_dial = False
            return self.discard_locked(waiter.origin)
        self._dequeue(waiter)
        # Leaving the queue may unblock a waiter behind this one.
        self._serve_waiters(decision)
        return decision

    # -- return ------------------------------------------------------------

    def release_locked(self, conn: C, reusable: bool, now: float) -> Decision[C]:
        """Take back a checked-out connection: keep it idle if ``reusable``
        (or give it to a waiter), otherwise close it and free its slot."""
        decision: Decision[C] = Decision()
        if not reusable or (self._retired and conn in self._retired):
            self._retired.discard(conn)
            self._evict(conn, decision)
            return decision
        queue = self._queued.get(conn.origin)
        if queue:
            waiter = next(iter(queue))
            self._dequeue(waiter)
            waiter.connection = conn
            decision.wake.append(waiter)
            return decision
        limits = self.limits
        idle = self._idle.setdefault(conn.origin, {})
        if limits.max_idle_per_host is not None and len(idle) >= limits.max_idle_per_host:
            self._evict(conn, decision)
            return decision
        conn.idle_since = now
        idle[conn] = None
        self._idle_lru[conn] = None
        if limits.max_idle is not None and len(self._idle_lru) > limits.max_idle:
            self._evict(next(iter(self._idle_lru)), decision)
        if self._waiters:
            # Another origin waits for a slot that only an idle connection
            # holds: evicting one lets it dial (R12).
            self._serve_waiters(decision)
        return decision

    def discard_locked(self, origin: Hashable) -> Decision[C]:
        """A reserved slot for ``origin`` was not used (the dial failed, or
        its waiter left): free it."""
        decision: Decision[C] = Decision()
        self._free_slot(origin)
        self._serve_waiters(decision)
        return decision

    def forget_locked(self, conn: C) -> Decision[C]:
        """``conn`` is closed: drop it from the idle pool and free its slot
        (if the pool has not already), serving waiters."""
        decision: Decision[C] = Decision()
        self.remove_idle_locked(conn)
        self._retired.discard(conn)
        if conn.holds_slot:
            conn.holds_slot = False
            self._free_slot(conn.origin)
            self._serve_waiters(decision)
        return decision

    def remove_idle_locked(self, conn: C) -> bool:
        """Take ``conn`` out of the idle pool (the server closed it, say)
        without freeing its slot. Returns whether it was idle."""
        if conn not in self._idle_lru:
            return False
        del self._idle_lru[conn]
        del self._idle[conn.origin][conn]
        return True

    def retire_locked(self, conns: Iterable[C]) -> None:
        """Close each of ``conns`` that is in use when it is released,
        instead of keeping it idle."""
        self.retirements += 1
        self._retired.update(conn for conn in conns if conn not in self._idle_lru)

    def opened_locked(self, conn: C, retirements: int) -> None:
        """``conn`` was dialled for a request made when :attr:`retirements`
        was ``retirements``: retire it if the pool was told to since."""
        if retirements != self.retirements:
            self._retired.add(conn)

    def take_all_idle_locked(self) -> list[C]:
        """Empty the idle pool; the caller closes and discards what it gets."""
        conns = list(self._idle_lru)
        self._idle_lru.clear()
        for idle in self._idle.values():
            idle.clear()
        return conns

    def expired_locked(self, now: float) -> list[C]:
        """Take the idle connections older than ``idle_timeout`` out of the
        pool (R11), for every origin."""
        expired: list[C] = []
        for origin in list(self._idle):
            expired += self._expire_idle(origin, now)
        return expired

    def time_left_idle(self, conn: C, now: float) -> float | None:
        """Seconds until an idle connection expires (``None``: never)."""
        timeout = self.limits.idle_timeout
        return None if timeout is None else conn.idle_since + timeout - now

    def has_expired(self, conn: C, now: float) -> bool:
        """Whether an idle connection is past the idle timeout."""
        timeout = self.limits.idle_timeout
        return timeout is not None and now - conn.idle_since >= timeout

    def drain_waiters_locked(self) -> list[Waiter[C]]:
        """Remove and return every waiter (the pool is closing)."""
        waiters = list(self._waiters)
        self._waiters.clear()
        self._queued.clear()
        self._ready.clear()
        return waiters

    # -- internals -----------------------------------------------------------

    def _expire_idle(self, origin: Hashable, now: float) -> list[C]:
        """Idle connections of ``origin`` past the idle timeout, taken out of
        the pool. Their slots stay taken until they are discarded."""
        idle = self._idle.get(origin)
        expired: list[C] = []
        if not idle or self.limits.idle_timeout is None:
            return expired
        for conn in idle:  # oldest first: stop at the first fresh one
            if not self.has_expired(conn, now):
                break
            expired.append(conn)
        for conn in expired:
            del idle[conn]
            del self._idle_lru[conn]
        return expired

    def _is_queued(self, origin: Hashable) -> bool:
        return origin in self._queued

    def _enqueue(self, waiter: Waiter[C]) -> None:
        self._arrivals += 1
        waiter.seq = self._arrivals
        self._waiters[waiter] = None
        queue = self._queued.get(waiter.origin)
        if queue is None:
            queue = self._queued[waiter.origin] = OrderedDict()
            self._put_ready(waiter.origin, waiter)
        queue[waiter] = None

    def _dequeue(self, waiter: Waiter[C]) -> None:
        """Take ``waiter`` out of the queue, if it is there."""
        if waiter not in self._waiters:
            return  # served, or the pool closed
        del self._waiters[waiter]
        origin = waiter.origin
        queue = self._queued[origin]
        first = next(iter(queue)) is waiter
        del queue[waiter]
        if not queue:
            del self._queued[origin]
        elif first:
            self._put_ready(origin, next(iter(queue)))

    def _put_ready(self, origin: Hashable, first: Waiter[C]) -> None:
        """``first``, the first waiter of ``origin``, may have room."""
        ready = self._ready
        if len(ready) > 2 * len(self._queued) + 64:
            # Mostly entries that will be dropped: start afresh.
            ready[:] = [(next(iter(q)).seq, o) for o, q in self._queued.items()]
            heapq.heapify(ready)
        heapq.heappush(ready, (first.seq, origin))

    def _has_room(self, origin: Hashable) -> bool:
        limits = self.limits
        per_host = limits.max_connections_per_host
        if per_host is not None and self._slots.get(origin, 0) >= per_host:
            return False
        total = limits.max_connections
        return total is None or self._total_slots < total

    def _take_slot(self, origin: Hashable, close: list[C]) -> bool:
        """Reserve a slot for a dial to ``origin``, evicting another origin's
        least recently used idle connection if only the global limit is in
        the way."""
        if not self._has_room(origin):
            per_host = self.limits.max_connections_per_host
            if per_host is not None and self._slots.get(origin, 0) >= per_host:
                return False
            if not self._idle_lru:
                return False
            evicted = next(iter(self._idle_lru))
            self.remove_idle_locked(evicted)
            evicted.holds_slot = False
            self._free_slot(evicted.origin)
            close.append(evicted)
        self._slots[origin] = self._slots.get(origin, 0) + 1
        self._total_slots += 1
        return True

    def _evict(self, conn: C, decision: Decision[C]) -> None:
        """Close ``conn`` (it must not stay), freeing its slot for waiters."""
        self.remove_idle_locked(conn)
        decision.close.append(conn)
        if conn.holds_slot:
            conn.holds_slot = False
            self._free_slot(conn.origin)
            self._serve_waiters(decision)

    def _free_slot(self, origin: Hashable) -> None:
        count = self._slots[origin] - 1
        if count:
            self._slots[origin] = count
        else:
            del self._slots[origin]
        self._total_slots -= 1
        queue = self._queued.get(origin)
        if queue:  # below its host's limit again
            self._put_ready(origin, next(iter(queue)))

    def _serve_waiters(self, decision: Decision[C]) -> None:
        """Give free slots to queued requests, first come first served."""
        ready = self._ready
        total = self.limits.max_connections
        while ready:
            seq, origin = ready[0]
            queue = self._queued.get(origin)
            waiter = next(iter(queue)) if queue else None
            if waiter is None or waiter.seq != seq:
                heapq.heappop(ready)  # it left, or was served
                continue
            if self._take_slot(origin, decision.close):
                heapq.heappop(ready)
                waiter.may_dial = True
                decision.wake.append(waiter)
                self._dequeue(waiter)  # its origin's next waiter is ready
                continue
            if total is not None and self._total_slots >= total and not self._idle_lru:
                return  # the pool is full: no one behind can dial either
            # Held back by its own host's limit, until that origin frees a
            # slot: the waiters behind it, for other origins, may still dial.
            heapq.heappop(ready)
