"""The pool against real loopback servers: idle order, idle limits and the
idle timeout (R11), connection limits with the FIFO queue and the pool
timeout (R12), closing (R14), and public scenarios 5, 6 and 12.

Threads are ordered with events (``pool_wait_start``, ``conn_closed``),
server gates and barriers, never with sleeps.
"""

from __future__ import annotations

import copy
import pickle
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

import pytest

import poolwatch
from tests.conftest import assert_at_rest
from tests.eventlog import EventLog
from tests.servers import HTTPServer, Reply, http_server

T = TypeVar("T")
# Generous for a loopback round trip; every wait asserts its result.
WAIT = 10.0
# A pool timeout long enough never to fire on a loaded machine when the
# pool works, short enough that a starved waiter fails the test quickly.
STARVED = 3.0
SIZE = 10  # body size of the responses held open


# -- helpers -----------------------------------------------------------------


@contextmanager
def watched(**options: Any) -> Iterator[tuple[poolwatch.Transport, EventLog]]:
    """A transport with an :class:`EventLog`; checked for the R18
    invariants when the test body succeeds, closed in any case."""
    log = EventLog()
    with poolwatch.Transport(**options) as transport:
        transport.add_listener(log)
        yield transport, log
        assert_at_rest(transport)


def hold(t: poolwatch.Transport, url: str) -> poolwatch.Response:
    """A response whose body is left unread: its connection stays checked
    out (R6)."""
    response = t.request("GET", url)
    assert response.status == 200
    return response


def drain(response: poolwatch.Response) -> int:
    """Read ``response`` to its end (R4); return its connection id."""
    with response:
        response.read()
    assert response.outcome == "drained"
    return response.connection_id


def get(t: poolwatch.Transport, url: str, timeout: poolwatch.Timeout | None = None) -> int:
    """GET ``url``, read the body; return the connection id."""
    return drain(t.request("GET", url, timeout=timeout))


def held_pair(t: poolwatch.Transport, server: HTTPServer) -> tuple[poolwatch.Response, ...]:
    """Two responses held open at once: two connections."""
    first, second = (hold(t, server.url(f"/bytes/{SIZE}")) for _ in range(2))
    assert first.connection_id != second.connection_id
    return first, second


@contextmanager
def in_threads(workers: int) -> Iterator[ThreadPoolExecutor]:
    """A thread pool that is shut down (every thread joined) at the end."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="test-client") as pool:
        yield pool


def result(future: Future[T]) -> T:
    """The future's result, waiting a bounded time."""
    return future.result(timeout=WAIT)


def queued(pool: ThreadPoolExecutor, log: EventLog, call: Callable[[], T]) -> Future[T]:
    """Run ``call`` in a thread and return once it waits in the pool queue
    (its ``pool_wait_start`` event, R12)."""
    before = len(log.named("pool_wait_start"))
    future = pool.submit(call)
    log.wait_for("pool_wait_start", before + 1)
    assert not future.done()
    return future


# -- R11: idle order and idle limits -------------------------------------------


def test_idle_connections_reused_newest_first(server: HTTPServer) -> None:
    """R11: of two idle connections, the one released last is reused first,
    then the other."""
    with watched() as (t, _):
        older, newer = held_pair(t, server)
        older_id, newer_id = drain(older), drain(newer)
        again = [hold(t, server.url(f"/bytes/{SIZE}")) for _ in range(2)]
        assert [r.connection_id for r in again] == [newer_id, older_id]
        for response in again:
            drain(response)
        assert t.stats().reused_requests == 2
    assert server.accepted == 2


def test_max_idle_per_host_closes_the_released_connection(server: HTTPServer) -> None:
    """R11: above ``max_idle_per_host`` the connection being released is
    closed instead of pooled; the one already idle stays and is reused."""
    with watched(max_idle_per_host=1) as (t, log):
        first, second = held_pair(t, server)
        kept = drain(first)
        dropped = drain(second)
        assert log.wait_closed(dropped) == "evicted"
        stats = assert_at_rest(t)
        assert (stats.open_connections, stats.idle_connections) == (1, 1)
        assert get(t, server.url()) == kept
    assert server.accepted == 2


def test_max_idle_evicts_least_recently_used_across_origins(server: HTTPServer) -> None:
    """R11: above ``max_idle`` (all origins) the least recently used idle
    connection is closed, even though it belongs to another origin."""
    with http_server() as other, watched(max_idle=1) as (t, log):
        old = get(t, server.url())
        new = get(t, other.url())
        assert log.wait_closed(old) == "evicted"
        stats = assert_at_rest(t)
        assert stats.per_origin[server.origin].open_connections == 0
        assert stats.per_origin[other.origin].idle_connections == 1
        assert get(t, other.url()) == new


def test_scenario_6_idle_timeout(server: HTTPServer) -> None:
    """R11, scenario 6: requests inside the idle timeout share a connection;
    once it has expired the pool closes it by itself and the next request
    dials a new one."""
    with watched(idle_timeout=0.25) as (t, log):
        first = get(t, server.url())
        assert get(t, server.url()) == first
        assert log.wait_closed(first) == "idle_timeout"
        stats = assert_at_rest(t)
        assert stats.idle_expired == 1
        assert (stats.open_connections, stats.workers_alive) == (0, 0)
        assert get(t, server.url()) != first
    assert server.accepted == 2


# -- R12: limits and the queue -------------------------------------------------


def test_scenario_5_one_connection_per_host(server: HTTPServer) -> None:
    """R12, scenario 5: with ``max_connections_per_host=1`` ten concurrent
    GETs share one dialled connection, waiting for it in turn."""
    start = threading.Barrier(10)

    def fetch() -> bytes:
        start.wait(WAIT)
        with t.request("GET", server.url()) as response:
            return response.read()

    with watched(max_connections_per_host=1, pool_timeout=WAIT) as (t, _), in_threads(10) as pool:
        futures = [pool.submit(fetch) for _ in range(10)]
        assert [result(f) for f in futures] == [b"hello world!\n"] * 10
        stats = assert_at_rest(t)
        assert (stats.connections_opened, stats.requests, stats.bodies_drained) == (1, 10, 10)
        assert stats.waiting_requests == 0
    assert server.accepted == 1


def test_waiters_served_in_arrival_order(server: HTTPServer) -> None:
    """R12: requests over the limit queue FIFO; the released connection goes
    to each in the order they arrived."""
    with watched(max_connections_per_host=1, pool_timeout=WAIT) as (t, log), in_threads(3) as pool:
        held = hold(t, server.url(f"/bytes/{SIZE}"))
        paths = [f"/bytes/{n}" for n in (1, 2, 3)]
        futures = [queued(pool, log, partial(get, t, server.url(p))) for p in paths]
        assert t.stats().waiting_requests == 3
        conn_id = drain(held)
        assert [result(f) for f in futures] == [conn_id] * 3
        assert [path for *_, path, _ in server.requests[1:]] == paths
        assert t.stats().pool_waits == 3
    assert server.accepted == 1


def test_open_body_counts_against_the_limit_until_pool_timeout(server: HTTPServer) -> None:
    """R12: a response left open keeps its connection's slot; a request over
    the limit waits ``pool_timeout`` and raises PoolTimeout, and the pool is
    usable afterwards."""
    with watched(max_connections_per_host=1, pool_timeout=0.2) as (t, _):
        held = hold(t, server.url(f"/bytes/{SIZE}"))
        url = server.url("/over-the-limit")
        with pytest.raises(poolwatch.PoolTimeout) as caught:
            t.request("GET", url)
        assert caught.value.url == url
        stats = t.stats()
        assert (stats.pool_waits, stats.waiting_requests, stats.requests) == (1, 0, 1)
        held_id = drain(held)
        assert get(t, server.url()) == held_id
    assert [path for *_, path, _ in server.requests] == [f"/bytes/{SIZE}", "/"]


def test_closed_connection_frees_its_slot_for_a_waiter(server: HTTPServer) -> None:
    """R12: under ``max_connections`` a request for another origin waits,
    and the slot of a connection torn down by an early close (R5) goes to
    it."""
    with (
        http_server() as other,
        watched(max_connections=1, pool_timeout=STARVED) as (t, log),
        in_threads(1) as pool,
    ):
        held = hold(t, server.url(f"/bytes/{SIZE}"))
        waiting = queued(pool, log, lambda: get(t, other.url()))
        held.close()
        assert result(waiting) != held.connection_id
        assert log.wait_closed(held.connection_id) == "closed_early"
    assert other.accepted == 1


def test_released_connection_frees_its_slot_for_another_origin(server: HTTPServer) -> None:
    """R12: "a released connection goes to the first waiter". Under
    ``max_connections``, a connection released while only another origin
    waits must give up its slot (be evicted) rather than sit idle while the
    waiter runs into the pool timeout."""
    with (
        http_server() as other,
        watched(max_connections=1, pool_timeout=STARVED) as (t, log),
        in_threads(1) as pool,
    ):
        held = hold(t, server.url(f"/bytes/{SIZE}"))
        waiting = queued(pool, log, lambda: get(t, other.url()))
        drain(held)
        assert result(waiting) != held.connection_id
        assert log.wait_closed(held.connection_id) == "evicted"
    assert other.accepted == 1


def test_waiter_blocked_by_host_limit_does_not_starve_another_origin(
    server: HTTPServer,
) -> None:
    """R12: at ``max_connections``, a waiter at the head of the queue blocked
    by ``max_connections_per_host`` must not keep the slot of a connection
    released into the idle pool from another origin's waiter behind it."""
    with (
        http_server() as second,
        http_server() as third,
        watched(max_connections=2, max_connections_per_host=1, pool_timeout=WAIT) as (t, log),
        in_threads(2) as pool,
    ):
        held_first = hold(t, server.url(f"/bytes/{SIZE}"))
        held_second = hold(t, second.url(f"/bytes/{SIZE}"))
        for_first = queued(pool, log, partial(get, t, server.url()))
        # Gives up first, so that only the release can serve it.
        starved = poolwatch.Timeout(pool=STARVED)
        for_third = queued(pool, log, partial(get, t, third.url(), starved))
        released = drain(held_second)
        try:
            assert result(for_third) != released
            assert log.wait_closed(released) == "evicted"
        finally:
            first_id = drain(held_first)
        assert result(for_first) == first_id
    assert third.accepted == 1


def test_put_idle_conn_not_reported_for_a_connection_closed_instead(
    server: HTTPServer,
) -> None:
    """R11 and R19: a connection closed instead of pooled (above
    ``max_idle_per_host``) is not reported as put idle; like Go's
    ``PutIdleConn(err)``, an event for it must carry the error."""
    with watched(max_idle_per_host=1) as (t, log):
        first, second = held_pair(t, server)
        kept, dropped = drain(first), drain(second)
        assert log.wait_closed(dropped) == "evicted"
        put = log.named("put_idle_conn")
        assert [e.connection_id for e in put if not e.data.get("error")] == [kept]


def test_global_limit_evicts_idle_connection_of_another_origin(server: HTTPServer) -> None:
    """R11 and R12: at ``max_connections`` a request for a new origin closes
    another origin's idle connection rather than waiting for it."""
    with http_server() as other, watched(max_connections=1, pool_timeout=0.2) as (t, log):
        idle = get(t, server.url())
        get(t, other.url())
        assert log.wait_closed(idle) == "evicted"
        stats = assert_at_rest(t)
        assert (stats.connections_opened, stats.open_connections, stats.pool_waits) == (2, 1, 0)


def got_conn(log: EventLog, url: str) -> tuple[bool, bool, float]:
    """``(reused, was_idle, idle_time)`` of the one got_conn event for
    ``url`` (R19)."""
    [event] = [e for e in log.named("got_conn") if e.url == url]
    return event["reused"], event["was_idle"], event["idle_time"]


def test_got_conn_tells_idle_reuse_from_a_hand_off(server: HTTPServer) -> None:
    """R12 and R19: ``got_conn`` follows Go's httptrace: a dial is neither
    reused nor idle; a connection taken from the idle pool is reused and was
    idle; one handed straight from a released response to a waiting request
    is reused but was never idle (Go delivers it with a zero idleAt), so its
    idle time is 0."""
    dialled, from_idle, handed = (server.url(f"/bytes/{n}") for n in (1, 2, 3))
    with watched(max_connections_per_host=1, pool_timeout=WAIT) as (t, log), in_threads(1) as pool:
        get(t, dialled)
        held = hold(t, from_idle)
        waiting = queued(pool, log, partial(get, t, handed))
        held_id = drain(held)
        assert result(waiting) == held_id
        assert got_conn(log, dialled) == (False, False, 0.0)
        reused, was_idle, idle_time = got_conn(log, from_idle)
        assert (reused, was_idle) == (True, True) and idle_time >= 0.0
        assert got_conn(log, handed) == (True, False, 0.0)


# -- R14: closing --------------------------------------------------------------


def test_close_idle_connections_leaves_active_ones(server: HTTPServer) -> None:
    """R14: ``close_idle_connections()`` closes the idle connection only; a
    response still being read keeps its connection, which is pooled after."""
    with watched() as (t, log):
        active, idle = held_pair(t, server)
        idle_id = drain(idle)
        t.close_idle_connections()
        assert log.wait_closed(idle_id) == "close_idle"
        assert [(c.id, c.state) for c in t.connections()] == [(active.connection_id, "active")]
        assert active.read() == b"x" * SIZE
        stats = assert_at_rest(t)
        assert (stats.open_connections, stats.idle_connections) == (1, 1)


def test_close_refuses_further_requests(server: HTTPServer) -> None:
    """R14: ``close()`` closes every connection, waits for every worker, and
    further requests raise PoolClosed."""
    with watched() as (t, _):
        get(t, server.url())
        t.close()
        assert t.stats().workers_alive == 0
        with pytest.raises(poolwatch.PoolClosed):
            t.request("GET", server.url())
        assert "closed" in repr(t)
    assert server.accepted == 1


def test_close_wakes_waiters_and_ends_open_bodies(server: HTTPServer) -> None:
    """R12 and R14: ``close()`` wakes a request waiting in the pool queue
    with PoolClosed, and a body still open becomes unreadable."""
    with (
        watched(max_connections_per_host=1, pool_timeout=WAIT) as (t, log),
        in_threads(1) as pool,
    ):
        held = hold(t, server.url(f"/bytes/{SIZE}"))
        waiting = queued(pool, log, lambda: get(t, server.url()))
        t.close()
        with pytest.raises(poolwatch.PoolClosed):
            result(waiting)
        assert held.is_closed
        with pytest.raises(poolwatch.ReadError):
            held.read()
        stats = t.stats()
        assert (stats.workers_alive, stats.open_connections, stats.waiting_requests) == (0, 0, 0)
    assert server.accepted == 1


def test_close_during_a_dial(server: HTTPServer) -> None:
    """R12 and R14: a connection whose dial finishes after ``close()`` is
    not kept: its request fails with PoolClosed, its slot and socket are
    released, and no worker is started."""
    dialled, proceed = threading.Event(), threading.Event()

    def block_after_connect(event: poolwatch.Event) -> None:
        if event.name == "connect_done":  # in the dialling thread
            dialled.set()
            proceed.wait(WAIT)

    with watched(max_connections_per_host=1) as (t, _), in_threads(1) as pool:
        t.add_listener(block_after_connect)
        dialling = pool.submit(get, t, server.url())
        assert dialled.wait(WAIT)
        t.close()
        proceed.set()
        with pytest.raises(poolwatch.PoolClosed):
            result(dialling)
        stats = t.stats()
        assert (stats.connections_opened, stats.workers_alive, stats.requests) == (0, 0, 0)
    assert server.wait_handlers_done(1)


def test_close_ends_a_request_waiting_for_its_response(server: HTTPServer) -> None:
    """R14: ``close()`` does not wait for a response that has not come: the
    request in flight fails with a poolwatch error and every worker exits."""
    # Made now, so that it exists (and is released) however far the server
    # got with the request when the test ends.
    gate = server.gate("later")
    with watched() as (t, log), in_threads(1) as pool:
        in_flight = pool.submit(get, t, server.url("/wait/later"))
        log.wait_for("wrote_request")
        t.close()
        with pytest.raises(poolwatch.PoolwatchError):
            result(in_flight)
        gate.set()
        stats = t.stats()
        assert (stats.workers_alive, stats.open_connections, stats.requests) == (0, 0, 0)


def test_scenario_12_many_204s_then_close_idle() -> None:
    """R7 and R14, scenario 12: twenty-five concurrent 204 responses (the
    server holds them until all 25 requests have arrived, so 25 connections),
    all closed, then ``close_idle_connections()``: no worker left."""
    count = 25
    all_in = threading.Barrier(count)

    def gathered(request: object, body: bytes) -> Reply:
        all_in.wait(WAIT)
        return Reply(status=204)

    def fetch() -> str | None:
        with t.request("GET", server.url("/gathered")) as response:
            assert response.status == 204
        return response.outcome

    with (
        http_server({"/gathered": gathered}) as server,
        watched() as (t, _),
        in_threads(count) as pool,
    ):
        futures = [pool.submit(fetch) for _ in range(count)]
        assert [result(f) for f in futures] == ["no_body"] * count
        assert t.stats().idle_connections == 10  # max_idle_per_host's default
        t.close_idle_connections()
        stats = assert_at_rest(t)
        assert (stats.connections_opened, stats.bodies_without_content) == (count, count)
        assert (stats.workers_alive, stats.open_connections) == (0, 0)


def test_stats_snapshot_pickles_and_copies(server: HTTPServer) -> None:
    """R18 snapshots go to another process (pickle) or a deep copy whole,
    totals and per-origin breakdown, and stay read-only."""
    with poolwatch.Transport() as t:
        for _ in range(2):
            t.request("GET", server.url()).read()
        stats = t.stats()
    for copied in (pickle.loads(pickle.dumps(stats)), copy.deepcopy(stats)):
        assert copied == stats
        assert copied.per_origin[server.origin].requests == 2
        with pytest.raises(TypeError):
            copied.per_origin["x"] = stats  # type: ignore[index]
