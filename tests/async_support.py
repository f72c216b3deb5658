"""Running async tests on a fresh event loop (asyncio's own, or uvloop's:
see :data:`LOOPS`), checking that no task is left behind, and checking an
:class:`~poolwatch.AsyncTransport` at rest."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import poolwatch

T = TypeVar("T")

# The event loops the asyncio tests run on, each test once per loop (the
# ``event_loop_kind`` fixture): asyncio's own, and uvloop's where installed.
LOOPS = ("asyncio", "uvloop") if importlib.util.find_spec("uvloop") else ("asyncio",)
_loop = "asyncio"  # the running test's, set by use_loop()

# Loop turns that let aborted transports run their connection_lost callbacks
# (which close the sockets) before the loop closes.
_SETTLE_TURNS = 5


def use_loop(kind: str) -> None:
    """Make :func:`run` use the event loop named (one of :data:`LOOPS`)."""
    global _loop
    _loop = kind


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` in a fresh event loop of the kind :func:`use_loop`
    chose; fail if it leaves a task behind."""

    async def checked() -> T:
        result = await main()
        for _ in range(_SETTLE_TURNS):
            await asyncio.sleep(0)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not left, f"tasks left behind: {left}"
        return result

    return run_bare(checked())


def run_bare(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` as :func:`asyncio.run` does, on a fresh event loop of
    the kind :func:`use_loop` chose, without :func:`run`'s checks."""
    if _loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


async def assert_at_rest(transport: poolwatch.AsyncTransport) -> poolwatch.PoolStats:
    """Settle the transport and check the R18 invariants, in total and per
    origin. Returns the snapshot."""
    await transport.settle()
    stats = transport.stats()
    assert stats.invariant_violations() == [], stats
    for origin, per in stats.per_origin.items():
        assert per.invariant_violations() == [], (origin, per)
    return stats


def event_seen(transport: poolwatch.AsyncTransport, name: str) -> asyncio.Event:
    """An asyncio Event set when the transport next emits ``name``."""
    seen = asyncio.Event()
    transport.add_listener(lambda e: seen.set() if e.name == name else None)
    return seen


def worker_tasks() -> int:
    """Live poolwatch worker tasks in the running loop."""
    return sum(1 for t in asyncio.all_tasks() if t.get_name().startswith("poolwatch-"))
