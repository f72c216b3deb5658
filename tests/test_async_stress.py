"""200 concurrent tasks on one AsyncTransport with mixed outcomes (drained,
closed early, leaked then collected, errors) and random cancellations: every
task ends, R18 holds afterwards and no task is left."""

from __future__ import annotations

import asyncio
import gc
import random
import warnings

import pytest

import poolwatch
from tests.async_support import assert_at_rest, run, worker_tasks
from tests.servers import HTTPServer, ServerConnection, raw_server

pytestmark = pytest.mark.usefixtures("event_loop_kind")

TASKS = 200


def _short_body(conn: ServerConnection) -> None:
    while conn.recv_request_head():
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        return


async def _one(t: poolwatch.AsyncTransport, kind: str, url: str, bad_url: str) -> str:
    if kind == "error":
        resp = await t.request("GET", bad_url)
        try:
            await resp.read()
        except poolwatch.RemoteProtocolError:
            return "errored"
        return "unexpected"
    if kind == "drain":
        resp = await t.request("GET", url + "bytes/2000")
        await resp.read()
    elif kind == "early":
        resp = await t.request("GET", url + "stream")
        await resp.read(3000)
        await resp.aclose()
    elif kind == "no_body":
        resp = await t.request("GET", url + "empty")
    else:  # leak: dropped unclosed, found by the garbage collector
        resp = await t.request("GET", url + "stream")
        await resp.read(10)
        del resp
        gc.collect()
        return "leaked"
    return resp.outcome or "open"


def test_two_hundred_tasks_mixed_outcomes_and_cancellations(server: HTTPServer) -> None:
    rng = random.Random(1234)
    kinds = [
        rng.choice(["drain", "drain", "early", "no_body", "leak", "error"]) for _ in range(TASKS)
    ]
    cancel_after = [rng.randrange(1, 30) if rng.random() < 0.25 else 0 for _ in range(TASKS)]

    async def main(bad_url: str) -> None:
        t = poolwatch.AsyncTransport(max_connections_per_host=24, max_idle_per_host=8)
        url = server.url("/")
        tasks = [asyncio.ensure_future(_one(t, kind, url, bad_url)) for kind in kinds]

        async def canceller(task: asyncio.Task[str], turns: int) -> None:
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()

        cancellers = [
            asyncio.ensure_future(canceller(task, turns))
            for task, turns in zip(tasks, cancel_after, strict=True)
            if turns
        ]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*cancellers)
        gc.collect()
        outcomes = [r if isinstance(r, str) else type(r).__name__ for r in results]
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                raise r
        assert "unexpected" not in outcomes and "open" not in outcomes
        assert set(outcomes) <= {
            "drained",
            "closed_early",
            "no_body",
            "leaked",
            "errored",
            "CancelledError",
        }
        assert outcomes.count("CancelledError") >= 1
        # Leaked bodies are torn down on the loop: let those callbacks run.
        while t.open_bodies():
            await asyncio.sleep(0)
        stats = await assert_at_rest(t)
        assert stats.open_bodies == 0
        assert stats.bodies_drained >= 1 and stats.bodies_leaked >= 1
        # The pool still works after all that.
        assert await (await t.request("GET", url)).read() == b"hello world!\n"
        await t.aclose()
        assert worker_tasks() == 0
        assert t.stats().workers_alive == 0

    with raw_server(_short_body) as bad, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", poolwatch.LeakWarning)
        run(lambda: main(bad.url()))
    assert any(issubclass(w.category, poolwatch.LeakWarning) for w in caught)
