"""The scenarios, one function each, and the timed loops they share.

A scenario function takes a ready client and a :class:`~benchmarks.spec.Budget`
and returns one :class:`~benchmarks.spec.Run`. :data:`SCENARIOS` says how
each needs its client set up and what unit its throughput is in.

CPU time is the whole process's (``time.process_time``, every thread, so a
transport's own reader and writer threads are charged to it); the caller
threads' share is measured with ``time.thread_time``.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .registry import AsyncClient, ClientOptions, SyncClient
from .spec import POST_BODY, Budget, Run

__all__ = ["SCENARIOS", "Scenario", "threaded_loop", "timed_loop"]

THREADS = 8  # S3: threads sharing one client
TASKS = 64  # S4: concurrent asyncio tasks


def timed_loop(op: Callable[[], int], budget: Budget) -> Run:
    """Call ``op`` (which returns a body length) until the budget is spent."""
    limit, clock = budget.limit(), time.perf_counter
    requests = body = 0
    cpu0, thread0, start = time.process_time(), time.thread_time(), clock()
    deadline = start + budget.duration()
    while requests < limit:
        body += op()
        requests += 1
        if clock() >= deadline:
            break
    wall = clock() - start
    return Run(requests, body, wall, time.process_time() - cpu0, time.thread_time() - thread0)


def threaded_loop(op: Callable[[], int], budget: Budget, threads: int) -> Run:
    """``threads`` threads call ``op`` at once, from a common start, until
    the budget (shared between them when it counts requests) is spent."""
    limit = math.ceil(budget.limit() / threads) if budget.requests else budget.limit()
    clock = time.perf_counter
    barrier = threading.Barrier(threads + 1)
    deadline = [math.inf]
    totals: list[tuple[int, int, float]] = []  # requests, body bytes, thread CPU
    errors: list[BaseException] = []

    def worker() -> None:
        barrier.wait()
        requests = body = 0
        thread0 = time.thread_time()
        try:
            while requests < limit:
                body += op()
                requests += 1
                if clock() >= deadline[0]:
                    break
        except BaseException as exc:
            errors.append(exc)
        totals.append((requests, body, time.thread_time() - thread0))

    workers = [threading.Thread(target=worker, name=f"bench-{i}") for i in range(threads)]
    for thread in workers:
        thread.start()
    cpu0, start = time.process_time(), clock()
    deadline[0] = start + budget.duration()
    barrier.wait()
    for thread in workers:
        thread.join()
    wall = clock() - start
    if errors:
        raise errors[0]
    requests, body, caller = (sum(column) for column in zip(*totals, strict=True))
    return Run(int(requests), int(body), wall, time.process_time() - cpu0, caller)


async def tasks_loop(op: Callable[[], Awaitable[int]], budget: Budget, tasks: int) -> Run:
    """``tasks`` asyncio tasks await ``op`` until the budget is spent."""
    limit = math.ceil(budget.limit() / tasks) if budget.requests else budget.limit()
    clock = time.perf_counter
    cpu0, thread0, start = time.process_time(), time.thread_time(), clock()
    deadline = start + budget.duration()

    async def worker() -> tuple[int, int]:
        requests = body = 0
        while requests < limit:
            body += await op()
            requests += 1
            if clock() >= deadline:
                break
        return requests, body

    done = await asyncio.gather(*(worker() for _ in range(tasks)))
    wall = clock() - start
    requests = sum(r for r, _ in done)
    body = sum(b for _, b in done)
    return Run(requests, body, wall, time.process_time() - cpu0, time.thread_time() - thread0)


# -- the scenarios -----------------------------------------------------------


def s1_keepalive_tiny(client: SyncClient, budget: Budget) -> Run:
    """S1: sequential keep-alive GET /tiny on one thread (req/s)."""
    return timed_loop(lambda: client.get("/tiny"), budget)


def s2_get_1m(client: SyncClient, budget: Budget) -> Run:
    """S2: sequential GET /1m, read whole (MiB/s of body)."""
    return timed_loop(lambda: client.get("/1m"), budget)


def s3_threads_tiny(client: SyncClient, budget: Budget) -> Run:
    """S3: 8 threads sharing one client, GET /tiny (req/s, all threads)."""
    return threaded_loop(lambda: client.get("/tiny"), budget, THREADS)


async def s4_async_tiny(client: AsyncClient, budget: Budget) -> Run:
    """S4: 64 concurrent asyncio tasks sharing one client, GET /tiny."""
    return await tasks_loop(lambda: client.get("/tiny"), budget, TASKS)


def s5_post_64k(client: SyncClient, budget: Budget) -> Run:
    """S5: sequential POST of 64 KiB to /post, small reply (req/s)."""
    return timed_loop(lambda: client.post("/post", POST_BODY), budget)


def s6_new_connection(client: SyncClient, budget: Budget) -> Run:
    """S6: GET /tiny with keep-alive off: a new connection per request."""
    return timed_loop(lambda: client.get("/tiny"), budget)


@dataclass(frozen=True)
class Scenario:
    """How to run one scenario: its function, the client kind it takes
    (``"sync"``, ``"async"``, or ``"stub"`` for one not measured yet), the
    client options it needs and its throughput unit."""

    key: str
    title: str
    unit: str
    kind: str
    run: Callable[..., Any] | None  # (SyncClient | AsyncClient, Budget) -> Run | Awaitable
    keep_alive: bool = True
    threads: int = 1
    concurrency: int = 1
    note: str = ""

    def options(self, base_url: str) -> ClientOptions:
        """The client options for this scenario against ``base_url``."""
        return ClientOptions(base_url, self.keep_alive, self.threads, self.concurrency)


SCENARIOS: dict[str, Scenario] = {
    s.key: s
    for s in (
        Scenario("S1", "keep-alive GET /tiny, 1 thread", "req/s", "sync", s1_keepalive_tiny),
        Scenario("S2", "GET /1m, 1 thread", "MiB/s", "sync", s2_get_1m),
        Scenario(
            "S3",
            f"{THREADS} threads, one client, GET /tiny",
            "req/s",
            "sync",
            s3_threads_tiny,
            threads=THREADS,
        ),
        Scenario(
            "S4",
            f"{TASKS} asyncio tasks, GET /tiny",
            "req/s",
            "async",
            s4_async_tiny,
            concurrency=TASKS,
            note="asyncio clients only (poolwatch-async is the native AsyncTransport)",
        ),
        Scenario("S5", "POST 64 KiB, 1 thread", "req/s", "sync", s5_post_64k),
        Scenario(
            "S6",
            "new connection per request, GET /tiny",
            "req/s",
            "sync",
            s6_new_connection,
            keep_alive=False,
        ),
        Scenario(
            "S7",
            "1000 idle connections",
            "-",
            "stub",
            None,
            note="measured apart: python -m benchmarks.idle",
        ),
    )
}
