"""Unit tests of the sans-I/O pool bookkeeping (``poolwatch._core.pool``):
idle order and limits (R11), connection limits and the FIFO queue (R12),
with a fake clock (plain floats) and tiny fake connections. No socket, no
thread: every method is called directly, as the transports do under their
lock.
"""

from __future__ import annotations

import ast
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

import pytest

from poolwatch._core.pool import Decision, Limits, PoolState, Waiter
from tests.conftest import CountedIteration

CORE = Path(__file__).resolve().parent.parent / "poolwatch" / "_core"
A = ("http", "a.test", 80)
B = ("http", "b.test", 80)
C = ("http", "c.test", 80)
# Idle limits high enough to stay out of the way of tests about other rules.
NO_IDLE_LIMITS = {"max_idle": None, "max_idle_per_host": None, "idle_timeout": None}


@dataclass(eq=False)  # identity hashing, like the real connections
class FakeConn:
    """What the pool needs of a connection (``PooledConnection``)."""

    origin: Hashable
    name: str = ""
    idle_since: float = 0.0
    holds_slot: bool = True

    def __repr__(self) -> str:
        return f"<FakeConn {self.name or id(self)}>"


# -- helpers -----------------------------------------------------------------


def make_pool(**limits: int | float | None) -> PoolState[FakeConn]:
    """A pool with ``limits`` on top of :data:`NO_IDLE_LIMITS`."""
    return PoolState(Limits(**{**NO_IDLE_LIMITS, **limits}))  # type: ignore[arg-type]


def dial(pool: PoolState[FakeConn], origin: Hashable, name: str, now: float = 0.0) -> FakeConn:
    """Check out for ``origin``, expect a slot to dial in, return the new
    connection (which holds that slot)."""
    decision = pool.checkout_locked(origin, now)
    assert decision.dial, f"expected a dial for {name}, got {decision}"
    assert decision.connection is None and decision.waiter is None
    return FakeConn(origin, name, idle_since=now)


def park(pool: PoolState[FakeConn], *conns: FakeConn, start: float = 1.0) -> None:
    """Release ``conns`` as reusable, one per second from ``start``, and
    expect each to stay idle (nothing closed, nobody woken)."""
    for offset, conn in enumerate(conns):
        decision = pool.release_locked(conn, reusable=True, now=start + offset)
        assert decision.close == [] and decision.wake == [], decision
        assert pool.is_idle(conn)


def queue(pool: PoolState[FakeConn], origin: Hashable, now: float = 0.0) -> Waiter[FakeConn]:
    """Check out for ``origin``, expect to be queued, return the waiter."""
    decision = pool.checkout_locked(origin, now)
    assert decision.waiter is not None, f"expected a waiter, got {decision}"
    assert decision.connection is None and not decision.dial
    assert not decision.waiter.is_served()
    return decision.waiter


def reuse(pool: PoolState[FakeConn], origin: Hashable, now: float = 100.0) -> FakeConn:
    """Check out for ``origin``, expect an idle connection, return it."""
    decision = pool.checkout_locked(origin, now)
    assert decision.connection is not None, f"expected reuse, got {decision}"
    assert not decision.dial and decision.waiter is None
    return decision.connection


def assert_woken_to_dial(decision: Decision[FakeConn], waiter: Waiter[FakeConn]) -> None:
    """``decision`` wakes exactly ``waiter``, with a reserved slot (R12)."""
    assert decision.wake == [waiter]
    assert waiter.may_dial and waiter.connection is None


# -- R11: idle order ---------------------------------------------------------


def test_idle_connections_are_reused_newest_first() -> None:
    """R11: per origin, the most recently released idle connection is
    checked out first (LIFO), then the next newest."""
    pool = make_pool()
    conns = [dial(pool, A, name) for name in ("first", "second", "third")]
    park(pool, *conns)
    assert [reuse(pool, A) for _ in conns] == conns[::-1]
    assert pool.idle_count() == 0
    assert pool.slots(A) == 3  # checked out again, still counted (R12)


def test_reuse_is_per_origin() -> None:
    """R11: an idle connection serves only its own origin; another origin
    dials."""
    pool = make_pool()
    a1 = dial(pool, A, "a1")
    park(pool, a1)
    dial(pool, B, "b1")
    assert pool.idle_count(A) == 1 and pool.idle_count(B) == 0
    assert pool.slots(B) == 1
    assert reuse(pool, A) is a1


def test_release_above_max_idle_per_host_closes_the_released_connection() -> None:
    """R11: above ``max_idle_per_host`` the connection being released is
    closed (not an older idle one), and its slot is freed."""
    pool = make_pool(max_idle_per_host=2)
    conns = [dial(pool, A, name) for name in ("a1", "a2", "a3")]
    park(pool, conns[0], conns[1])
    decision = pool.release_locked(conns[2], reusable=True, now=10.0)
    assert decision.close == [conns[2]]
    assert not conns[2].holds_slot
    assert pool.idle_count(A) == 2 and not pool.is_idle(conns[2])
    assert pool.slots(A) == 2
    # The per-host limit does not touch other origins.
    park(pool, dial(pool, B, "b1"))
    assert pool.idle_count() == 3


def test_max_idle_per_host_zero_keeps_nothing() -> None:
    """R11: ``max_idle_per_host=0`` (keep-alive off) closes every released
    connection."""
    pool = make_pool(max_idle_per_host=0)
    a1 = dial(pool, A, "a1")
    decision = pool.release_locked(a1, reusable=True, now=1.0)
    assert decision.close == [a1]
    assert pool.idle_count() == 0 and pool.slots() == 0


def test_max_idle_evicts_least_recently_used_across_origins() -> None:
    """R11: above ``max_idle`` (all origins) the least recently used idle
    connection is evicted, whatever its origin."""
    pool = make_pool(max_idle=2)
    a1, b1, a2 = dial(pool, A, "a1"), dial(pool, B, "b1"), dial(pool, A, "a2")
    park(pool, a1, b1)
    decision = pool.release_locked(a2, reusable=True, now=5.0)
    assert decision.close == [a1]
    assert not a1.holds_slot
    assert pool.idle_count() == 2 and pool.idle_count(A) == 1
    assert pool.is_idle(b1) and pool.is_idle(a2)
    assert pool.slots() == 2


def test_reuse_refreshes_least_recently_used_order() -> None:
    """R11: a connection checked out and released again becomes the most
    recently used, so the next eviction takes the other one."""
    pool = make_pool(max_idle=2)
    a1, b1, c1 = dial(pool, A, "a1"), dial(pool, B, "b1"), dial(pool, C, "c1")
    park(pool, a1, b1)
    assert reuse(pool, A, now=3.0) is a1
    park(pool, a1, start=4.0)  # a1 is now newer than b1
    decision = pool.release_locked(c1, reusable=True, now=5.0)
    assert decision.close == [b1]
    assert pool.is_idle(a1) and pool.is_idle(c1)


def test_max_idle_eviction_serves_a_waiter() -> None:
    """R11 and R12: the slot freed by a ``max_idle`` eviction goes to the
    first waiter."""
    pool = make_pool(max_idle=0, max_connections=2)
    a1, b1 = dial(pool, A, "a1"), dial(pool, B, "b1")
    waiter = queue(pool, C)
    decision = pool.release_locked(b1, reusable=True, now=5.0)
    assert decision.close == [b1]
    assert_woken_to_dial(decision, waiter)
    assert pool.slots() == 2 and pool.slots(C) == 1 and a1.holds_slot


# -- R11: idle timeout -------------------------------------------------------


def test_checkout_closes_expired_idle_and_reuses_fresh() -> None:
    """R11: on checkout, idle connections older than ``idle_timeout`` are
    taken out and returned to close; a fresh one is reused."""
    pool = make_pool(idle_timeout=10.0)
    old, fresh = dial(pool, A, "old"), dial(pool, A, "fresh")
    park(pool, old, start=0.0)
    park(pool, fresh, start=5.0)
    decision = pool.checkout_locked(A, 12.0)
    assert decision.close == [old]
    assert decision.connection is fresh
    assert not pool.is_idle(old)
    # The expired connection keeps its slot until the I/O layer closes it.
    assert old.holds_slot and pool.slots(A) == 2
    pool.forget_locked(old)
    assert pool.slots(A) == 1


def test_checkout_with_every_idle_expired_dials() -> None:
    """R11: when every idle connection of the origin has expired, the
    request gets a new connection and the old ones are closed."""
    pool = make_pool(idle_timeout=10.0)
    old = dial(pool, A, "old")
    park(pool, old, start=0.0)
    decision = pool.checkout_locked(A, 10.0)  # exactly at the timeout: expired
    assert decision.close == [old]
    assert decision.dial and decision.connection is None
    assert pool.slots(A) == 2


def test_expiry_only_touches_the_checked_out_origin() -> None:
    """R11: checkout for one origin expires only that origin's idle
    connections; ``expired_locked`` sweeps every origin."""
    pool = make_pool(idle_timeout=10.0)
    a1, b1 = dial(pool, A, "a1"), dial(pool, B, "b1")
    park(pool, a1, b1, start=0.0)
    decision = pool.checkout_locked(A, 20.0)
    assert decision.close == [a1]
    assert pool.is_idle(b1)
    assert pool.expired_locked(20.0) == [b1]
    assert pool.idle_count() == 0


def test_time_left_and_has_expired_follow_the_clock() -> None:
    """R11: an idle connection expires ``idle_timeout`` seconds after it was
    released, and never without a timeout."""
    pool = make_pool(idle_timeout=10.0)
    a1 = dial(pool, A, "a1")
    park(pool, a1, start=3.0)
    assert pool.time_left_idle(a1, 5.0) == pytest.approx(8.0)
    assert not pool.has_expired(a1, 12.9)
    assert pool.has_expired(a1, 13.0)
    endless = make_pool()
    assert endless.time_left_idle(a1, 1e9) is None
    assert not endless.has_expired(a1, 1e9)


# -- R12: limits and the queue -----------------------------------------------


def test_max_connections_per_host_queues_only_that_host() -> None:
    """R12: at ``max_connections_per_host`` a request waits; another origin
    still dials."""
    pool = make_pool(max_connections_per_host=1)
    dial(pool, A, "a1")
    queue(pool, A)
    dial(pool, B, "b1")
    assert pool.waiting(A) == 1 and pool.waiting(B) == 0
    assert pool.slots() == 2


def test_limits_count_idle_connections() -> None:
    """R12: idle connections hold slots; a request that can reuse one takes
    it rather than dialling."""
    pool = make_pool(max_connections_per_host=1)
    a1 = dial(pool, A, "a1")
    park(pool, a1)
    assert pool.slots(A) == 1
    assert reuse(pool, A) is a1
    queue(pool, A)


def test_max_connections_queues_any_origin() -> None:
    """R12: at ``max_connections`` (with nothing idle) every origin waits."""
    pool = make_pool(max_connections=2)
    dial(pool, A, "a1")
    dial(pool, B, "b1")
    queue(pool, C)
    queue(pool, A)
    assert pool.waiting() == 2 and pool.slots() == 2


def test_global_limit_evicts_another_origins_idle_connection() -> None:
    """R11 and R12: at ``max_connections`` a request for a new origin
    evicts the least recently used idle connection instead of waiting."""
    pool = make_pool(max_connections=2)
    a1, b1 = dial(pool, A, "a1"), dial(pool, B, "b1")
    park(pool, a1, b1)
    decision = pool.checkout_locked(C, 10.0)
    assert decision.dial
    assert decision.close == [a1]
    assert not a1.holds_slot
    assert pool.slots() == 2 and pool.slots(A) == 0 and pool.slots(C) == 1


def test_release_goes_to_first_waiter_of_the_origin_in_order() -> None:
    """R12: a released connection goes to the first waiter for its origin,
    first come first served, and never into the idle pool meanwhile."""
    pool = make_pool(max_connections_per_host=1)
    a1 = dial(pool, A, "a1")
    first, second = queue(pool, A), queue(pool, A)
    decision = pool.release_locked(a1, reusable=True, now=1.0)
    assert decision.wake == [first] and first.connection is a1
    assert not second.is_served() and pool.waiting(A) == 1
    assert pool.idle_count() == 0
    decision = pool.release_locked(a1, reusable=True, now=2.0)
    assert decision.wake == [second] and second.connection is a1
    assert pool.waiting() == 0


def test_release_skips_waiters_of_other_origins() -> None:
    """R12: a released connection goes to the first waiter *for its
    origin*, even when another origin's waiter is ahead in the queue."""
    pool = make_pool(max_connections=1)
    a1 = dial(pool, A, "a1")
    for_b = queue(pool, B)
    for_a = queue(pool, A)
    decision = pool.release_locked(a1, reusable=True, now=1.0)
    assert decision.wake == [for_a] and for_a.connection is a1
    assert not for_b.is_served()


def test_freed_slot_goes_to_first_waiter_that_has_room() -> None:
    """R12: a slot freed by a closed connection goes to the first waiter
    (FIFO across origins under ``max_connections``)."""
    pool = make_pool(max_connections=1)
    a1 = dial(pool, A, "a1")
    for_b, for_c = queue(pool, B), queue(pool, C)
    decision = pool.release_locked(a1, reusable=False, now=1.0)
    assert decision.close == [a1]
    assert_woken_to_dial(decision, for_b)
    assert not for_c.is_served()
    assert pool.slots(B) == 1 and pool.slots(A) == 0 and pool.waiting() == 1


def test_freed_slot_skips_a_waiter_blocked_by_its_host_limit() -> None:
    """R12: a waiter blocked by ``max_connections_per_host`` does not keep a
    freed slot from a waiter of another origin behind it."""
    pool = make_pool(max_connections=2, max_connections_per_host=1)
    a1, b1 = dial(pool, A, "a1"), dial(pool, B, "b1")
    for_a, for_c = queue(pool, A), queue(pool, C)
    decision = pool.forget_locked(b1)
    assert_woken_to_dial(decision, for_c)
    assert not for_a.is_served()
    assert a1.holds_slot and pool.slots() == 2


def test_idle_connection_of_another_origin_yields_its_slot_to_a_waiter() -> None:
    """R12: "a released connection goes to the first waiter". Under
    ``max_connections``, releasing a connection no waiter of its origin can
    use must not park it idle while another origin waits for its slot: the
    idle connection is evicted and the waiter may dial (as a checkout at
    that moment would do, and as httpcore does)."""
    pool = make_pool(max_connections=1)
    a1 = dial(pool, A, "a1")
    for_b = queue(pool, B)
    decision = pool.release_locked(a1, reusable=True, now=1.0)
    assert decision.close == [a1]
    assert_woken_to_dial(decision, for_b)
    assert pool.idle_count() == 0 and pool.slots(B) == 1


def test_waiter_blocked_by_its_host_limit_does_not_starve_the_next() -> None:
    """R12: at ``max_connections``, a released connection that goes idle
    frees a slot (by eviction) for the first waiter that *can* use it. A
    waiter at the head blocked by ``max_connections_per_host`` must not keep
    another origin's waiter behind it waiting while an idle connection
    holds the slot it needs."""
    pool = make_pool(max_connections=2, max_connections_per_host=1)
    a1, b1 = dial(pool, A, "a1"), dial(pool, B, "b1")
    for_a, for_c = queue(pool, A), queue(pool, C)
    decision = pool.release_locked(b1, reusable=True, now=1.0)
    assert decision.close == [b1]
    assert_woken_to_dial(decision, for_c)
    assert not for_a.is_served() and a1.holds_slot
    assert pool.slots() == 2 and pool.slots(C) == 1


def test_expired_connection_slot_goes_to_the_waiter_when_closed() -> None:
    """R11 and R12: an expired idle connection keeps its slot until closed;
    closing it serves the request that queued behind it."""
    pool = make_pool(max_connections_per_host=1, idle_timeout=10.0)
    old = dial(pool, A, "old")
    park(pool, old, start=0.0)
    decision = pool.checkout_locked(A, 11.0)
    assert decision.close == [old] and decision.waiter is not None
    assert_woken_to_dial(pool.forget_locked(old), decision.waiter)


# -- R12: cancel, discard, forget --------------------------------------------


def test_cancel_wait_leaves_the_queue() -> None:
    """R12: a waiter that times out leaves the queue; the next release goes
    to the waiter behind it."""
    pool = make_pool(max_connections_per_host=1)
    a1 = dial(pool, A, "a1")
    gone, stays = queue(pool, A), queue(pool, A)
    decision = pool.cancel_wait_locked(gone, 1.0)
    assert decision.wake == [] and decision.close == []
    assert pool.waiting() == 1
    decision = pool.release_locked(a1, reusable=True, now=2.0)
    assert decision.wake == [stays] and not gone.is_served()


class CountingPool(PoolState[FakeConn]):
    """A pool that counts its attempts to give a waiter a slot."""

    attempts = 0

    def _take_slot(self, origin: Hashable, close: list[FakeConn]) -> bool:
        self.attempts += 1
        return super()._take_slot(origin, close)


@pytest.mark.parametrize(
    "limits",
    [{"max_connections": 1}, {"max_connections_per_host": 1}],
    ids=["global", "per-host"],
)
def test_waiters_leaving_a_full_pool_cost_the_same_however_long_the_queue(
    limits: dict[str, int],
) -> None:
    """R12 at scale: thousands of requests queued behind a stalled server
    that time out together. Each departure must not try every other waiter
    (that made the pool quadratic: 16 000 waiters took 17 s of CPU under
    the pool's lock): with the pool full, one attempt at most."""
    pool = CountingPool(make_pool(**limits).limits)
    dial(pool, A, "a1")
    waiters = [queue(pool, A) for _ in range(2000)]
    assert pool.waiting() == pool.waiting(A) == 2000
    pool.attempts = 0
    for waiter in reversed(waiters[1000:]):  # the back of the queue first
        assert pool.cancel_wait_locked(waiter, 1.0).wake == []
    for waiter in waiters[:1000]:
        assert pool.cancel_wait_locked(waiter, 1.0).wake == []
    assert pool.attempts <= 2000
    assert pool.waiting() == pool.waiting(A) == 0
    assert pool.origins_in_use() == {A}


def test_a_connection_goes_to_its_origins_first_waiter_without_walking_the_queue() -> None:
    """R12 at scale: thousands of requests queued for a stalled host (at its
    own limit) ahead of another host's: each connection the other host
    releases goes to that host's first waiter without a pass over the
    stalled host's."""
    pool = make_pool(max_connections_per_host=1)
    dial(pool, B, "b1")
    a1 = dial(pool, A, "a1")
    for _ in range(2000):
        queue(pool, B)
    for_a = [queue(pool, A) for _ in range(5)]
    pool._waiters = counted = CountedIteration(pool._waiters)
    for waiter in for_a:
        assert pool.release_locked(a1, reusable=True, now=1.0).wake == [waiter]
        assert waiter.connection is a1
    assert counted.passes == 0
    assert pool.waiting(A) == 0 and pool.waiting(B) == pool.waiting() == 2000


def test_a_freed_slot_goes_to_a_waiter_without_walking_past_blocked_origins() -> None:
    """R12 at scale, a crawler's shape: ten hosts at their own limit, each
    with hundreds of requests queued, one host after another. Each slot the
    last host frees goes to its first waiter without a walk past the other
    hosts' waiters (a pass over the whole queue per freed slot made such a
    crawl quadratic)."""
    pool = CountingPool(make_pool(max_connections_per_host=1).limits)
    origins = [("http", f"h{i}.test", 80) for i in range(10)]
    conns = {origin: dial(pool, origin, str(origin)) for origin in origins}
    queues = {origin: [queue(pool, origin) for _ in range(200)] for origin in origins}
    pool._waiters = counted = CountedIteration(pool._waiters)
    pool.attempts = 0
    last = origins[-1]
    conn = conns[last]
    for waiter in queues[last]:
        assert_woken_to_dial(pool.forget_locked(conn), waiter)
        conn = FakeConn(last, "dialled")  # what the woken waiter opens
    # Per freed slot: the grant, and one look at the host's next waiter
    # (at its limit again); the other hosts once in all.
    assert pool.attempts <= 2 * 200 + len(origins)
    assert counted.passes == 0
    assert pool.waiting() == 9 * 200 and pool.waiting(last) == 0
    # First come, first served across hosts still: a slot of the first host
    # goes to the first host's first waiter.
    first = origins[0]
    assert_woken_to_dial(pool.forget_locked(conns[first]), queues[first][0])


def test_queue_counts_per_origin_follow_every_way_out() -> None:
    """``waiting(origin)`` and ``origins_in_use()`` as waiters are served,
    leave and are drained."""
    pool = make_pool(max_connections=1)
    a1 = dial(pool, A, "a1")
    for_a, for_b1, for_b2, for_c = queue(pool, A), queue(pool, B), queue(pool, B), queue(pool, C)
    assert (pool.waiting(), pool.waiting(A), pool.waiting(B), pool.waiting(C)) == (4, 1, 2, 1)
    assert pool.origins_in_use() == {A, B, C}
    assert pool.release_locked(a1, reusable=True, now=1.0).wake == [for_a]  # same origin
    assert (pool.waiting(A), pool.waiting(B)) == (0, 2)
    pool.cancel_wait_locked(for_b1, 2.0)
    assert pool.waiting(B) == 1 and not pool.checkout_locked(B, 3.0).dial  # still queued
    decision = pool.forget_locked(a1)
    assert_woken_to_dial(decision, for_b2)
    assert (pool.waiting(), pool.waiting(B), pool.waiting(C)) == (2, 1, 1)
    assert pool.origins_in_use() == {B, C}
    drained = pool.drain_waiters_locked()
    assert for_c in drained and len(drained) == 2
    assert pool.waiting() == pool.waiting(B) == pool.waiting(C) == 0
    assert pool.origins_in_use() == {B}  # for_b2's slot


def test_cancel_wait_after_being_handed_a_connection_passes_it_on() -> None:
    """R12: a waiter served with a connection just as it gave up passes the
    connection to the next waiter (or the idle pool)."""
    pool = make_pool(max_connections_per_host=1)
    a1 = dial(pool, A, "a1")
    late, next_one = queue(pool, A), queue(pool, A)
    pool.release_locked(a1, reusable=True, now=1.0)
    assert late.connection is a1
    decision = pool.cancel_wait_locked(late, 2.0)
    assert decision.wake == [next_one] and next_one.connection is a1
    assert late.connection is None
    decision = pool.cancel_wait_locked(next_one, 3.0)
    assert decision.wake == [] and pool.is_idle(a1)
    assert pool.slots(A) == 1


def test_cancel_wait_does_not_pool_a_connection_closed_meanwhile() -> None:
    """R3, R11 and R12: a waiter handed a connection that was closed (and
    forgotten, slot freed) before the waiter gave up must not put that dead
    connection into the idle pool: it would be idle without holding a slot,
    and the next checkout would reuse a closed connection."""
    pool = make_pool(max_connections_per_host=1)
    a1 = dial(pool, A, "a1")
    waiter = queue(pool, A)
    pool.release_locked(a1, reusable=True, now=1.0)
    assert waiter.connection is a1
    pool.forget_locked(a1)  # the server closed it before the waiter woke
    pool.cancel_wait_locked(waiter, 2.0)  # the waiter timed out meanwhile
    assert not pool.is_idle(a1)
    assert pool.idle_count() == 0 and pool.slots() == 0
    assert pool.checkout_locked(A, 3.0).dial


def test_cancel_wait_after_being_given_a_slot_frees_it() -> None:
    """R12: a waiter given a slot just as it gave up frees the slot, which
    goes to the next waiter."""
    pool = make_pool(max_connections_per_host=1)
    a1 = dial(pool, A, "a1")
    late, next_one = queue(pool, A), queue(pool, A)
    pool.forget_locked(a1)
    assert late.may_dial
    assert_woken_to_dial(pool.cancel_wait_locked(late, 1.0), next_one)
    assert not late.may_dial
    assert pool.slots(A) == 1
    pool.cancel_wait_locked(next_one, 2.0)
    assert pool.slots() == 0


def test_discard_frees_a_reserved_slot_for_the_next_waiter() -> None:
    """R12: a failed dial gives its slot back, and the first waiter gets it."""
    pool = make_pool(max_connections=1)
    dial(pool, A, "a1")
    waiter = queue(pool, B)
    assert_woken_to_dial(pool.discard_locked(A), waiter)
    assert pool.slots(A) == 0 and pool.slots(B) == 1


def test_forget_frees_a_slot_only_once() -> None:
    """R12: forgetting a closed connection frees its slot exactly once, even
    when it is forgotten twice or was already evicted by the pool."""
    pool = make_pool(max_connections_per_host=2)
    a1, a2 = dial(pool, A, "a1"), dial(pool, A, "a2")
    pool.forget_locked(a1)
    pool.forget_locked(a1)
    assert pool.slots(A) == 1
    pool.release_locked(a2, reusable=False, now=1.0)  # evicted: slot freed
    assert pool.forget_locked(a2).wake == []
    assert pool.slots(A) == 0 and pool.slots() == 0


def test_forget_removes_an_idle_connection() -> None:
    """R3 and R12: a closed idle connection leaves the idle pool and frees
    its slot; ``remove_idle_locked`` alone keeps the slot."""
    pool = make_pool()
    a1, a2 = dial(pool, A, "a1"), dial(pool, A, "a2")
    park(pool, a1, a2)
    assert pool.remove_idle_locked(a1)
    assert not pool.remove_idle_locked(a1)
    assert pool.slots(A) == 2
    pool.forget_locked(a2)
    assert pool.idle_count() == 0 and pool.slots(A) == 1


def test_take_all_idle_and_drain_waiters() -> None:
    """R14: closing idle connections empties the idle pool (slots are freed
    as each is forgotten); closing the pool takes every waiter."""
    pool = make_pool(max_connections_per_host=2)
    a1, a2 = dial(pool, A, "a1"), dial(pool, A, "a2")
    park(pool, a1)
    assert pool.take_all_idle_locked() == [a1]
    assert pool.idle_count() == 0 and pool.slots(A) == 2
    waiters = [queue(pool, A) for _ in range(2)]
    assert pool.drain_waiters_locked() == waiters
    assert pool.waiting() == 0
    assert a2.holds_slot


@pytest.mark.parametrize(
    "limits",
    [
        {"max_connections": 0},
        {"max_connections_per_host": 0},
        {"max_idle": -1},
        {"max_idle_per_host": -1},
        {"idle_timeout": 0.0},
    ],
)
def test_limits_reject_nonsense(limits: dict[str, float]) -> None:
    """R11 and R12: limits that could never be met are refused up front."""
    with pytest.raises(ValueError):
        Limits(**limits)  # type: ignore[arg-type]


# -- the core stays free of I/O ----------------------------------------------


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_imports_no_io(path: Path) -> None:
    """STYLE.md (protocol core) and R11/R12: the ``_core`` modules import
    none of socket, threading, asyncio or time, so they run on a fake clock
    and serve both transports."""
    assert imported_modules(path).isdisjoint({"socket", "threading", "asyncio", "time"})
