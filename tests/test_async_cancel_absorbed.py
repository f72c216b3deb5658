"""A cancelled call must end cancelled: a cancellation that arrives as a
body read completes, or as the pool hands a waiting request its connection,
is never absorbed, whatever the loop turn it lands on."""

from __future__ import annotations

import asyncio
import sys

import pytest

import poolwatch
from tests.async_support import assert_at_rest, event_seen, run
from tests.servers import HTTPServer

pytestmark = pytest.mark.usefixtures("event_loop_kind")
# On Python 3.10 asyncio.wait_for drops a cancellation that lands as the
# awaited result is ready, and without Task.cancelling() poolwatch cannot
# tell it happened (README, "cancelled while").
NEEDS_CANCELLING = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="needs Task.cancelling() (Python 3.11+)"
)

# Loop turns tried between starting a read and cancelling it: enough to land
# on each step of one read (the read's own task, its completion callback, the
# caller's wake-up) several times over.
TURNS = 24
ROUNDS = 3  # each turn count tried this often: when a read completes varies a little


@NEEDS_CANCELLING
def test_cancelled_body_read_never_runs_on(server: HTTPServer) -> None:
    async def main() -> list[int]:
        absorbed = []
        async with poolwatch.AsyncTransport(read_timeout=5.0) as t:
            for turns in list(range(TURNS)) * ROUNDS:
                resp = await t.request("GET", server.url("/bytes/200000"))
                reading = asyncio.create_task(resp.read())
                for _ in range(turns):
                    await asyncio.sleep(0)  # one loop turn, no waiting
                if reading.cancel():
                    await asyncio.wait({reading})
                    if not reading.cancelled():
                        absorbed.append(turns)
                await resp.aclose()
            await assert_at_rest(t)
        return absorbed

    assert run(main) == []


@NEEDS_CANCELLING
def test_cancelled_pool_wait_never_runs_on(server: HTTPServer) -> None:
    async def main() -> list[int]:
        absorbed = []
        async with poolwatch.AsyncTransport(max_connections_per_host=1, pool_timeout=5.0) as t:
            for turns in list(range(TURNS)) * ROUNDS:
                holder = await t.request("GET", server.url("/bytes/10"))
                queued = event_seen(t, "pool_wait_start")
                waiting = asyncio.create_task(t.request("GET", server.url("/bytes/10")))
                await queued.wait()
                await holder.aclose()  # hands the connection to the waiting request
                for _ in range(turns):
                    await asyncio.sleep(0)  # one loop turn, no waiting
                if waiting.cancel():
                    await asyncio.wait({waiting})
                    if not waiting.cancelled():
                        absorbed.append(turns)
                if waiting.done() and not waiting.cancelled():
                    await waiting.result().aclose()
            await assert_at_rest(t)
        return absorbed

    assert run(main) == []
