"""One request and its response on an asyncio connection: the shared
exchange state (``poolwatch._core.exchange``) plus the futures that wake the
caller, the writer and the parked reader; and the two ways the asyncio
layer waits with a limit, neither of which starts a task (``asyncio.wait_for``
wraps what it awaits in a task of its own on Python 3.11 and earlier)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from contextvars import copy_context
from typing import TypeVar

from .._core.exchange import Exchange as CoreExchange
from .._events import Listener
from .._leaks import CallSite
from .._models import Request, Timeout

__all__ = ["AsyncExchange", "cancel_pending", "wait_or_expire", "wake", "within"]

T = TypeVar("T")


def wake(future: asyncio.Future[None] | None) -> None:
    """Resolve a one-shot future; harmless if already done or its loop closed."""
    if future is not None and not future.done():
        try:
            future.set_result(None)
        except RuntimeError:  # its loop has closed: nobody waits any more
            pass


async def wait_or_expire(future: asyncio.Future[None], limit: float) -> bool:
    """Await ``future`` for at most ``limit`` seconds; whether it was
    resolved (``False``: the limit passed first). A timer resolves it at the
    limit, so the future is done either way; a future that others share
    must be replaced after an expiry."""
    if future.done():
        return True
    expired = False

    def expire() -> None:
        nonlocal expired
        if not future.done():
            expired = True
            future.set_result(None)

    timer = future.get_loop().call_later(limit, expire)
    try:
        await future
    finally:
        timer.cancel()
    return not expired


if sys.version_info >= (3, 11):

    async def within(limit: float | None, step: Awaitable[T]) -> T:
        """Await ``step``, within ``limit`` seconds unless it is ``None``
        (raises ``TimeoutError``). One timer that cancels the current task
        at the limit, no task of its own."""
        if limit is None:
            return await step
        async with asyncio.timeout(limit):
            return await step

else:  # pragma: no cover - Python 3.10

    async def within(limit: float | None, step: Awaitable[T]) -> T:
        """Await ``step``, within ``limit`` seconds unless it is ``None``
        (raises ``asyncio.TimeoutError``)."""
        if limit is None:
            return await step
        return await asyncio.wait_for(step, limit)


if sys.version_info >= (3, 11):

    def cancel_pending(loop: asyncio.AbstractEventLoop) -> bool:
        """Whether the current task (on ``loop``, the running loop) has a
        cancellation on its way (Python 3.11+ can tell; before, the request
        goes out and the connection is closed). Given the loop,
        ``current_task`` skips ``get_running_loop``, which on 3.11 makes a
        ``getpid`` system call."""
        task = asyncio.current_task(loop)
        return task is not None and task.cancelling() > 0

else:

    def cancel_pending(loop: asyncio.AbstractEventLoop) -> bool:
        """Whether the current task (on ``loop``, the running loop) has a
        cancellation on its way (Python 3.11+ can tell; before, the request
        goes out and the connection is closed)."""
        return False


class AsyncExchange(CoreExchange):
    """One request and its response on an asyncio connection: the shared
    exchange state plus the futures that wake the caller, the writer and the
    parked reader."""

    __slots__ = (
        "body_context",
        "go_ahead",
        "head_ready",
        "head_timer",
        "reader_parked",
        "reader_released",
        "write_done",
        "write_started",
    )

    def __init__(
        self,
        request: Request,
        timeout: Timeout,
        call_site: CallSite,
        listener: Listener | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(request, timeout, call_site, listener, loop.time())
        self.head_ready: asyncio.Future[None] = loop.create_future()
        # Made only when someone waits for them: most small bodies arrive
        # with the head, and the reader never parks for them.
        self.reader_parked: asyncio.Future[None] | None = None
        self.reader_released = False  # set by the body owner, read by the reader
        self.go_ahead: asyncio.Future[None] | None = None
        self.write_done: asyncio.Future[None] | None = None
        self.head_timer: asyncio.TimerHandle | None = None  # the response-header limit
        self.write_started = False  # set by the writer before its first byte
        # A streamed body is produced by a task of its own, in the context
        # variables of the caller that made the request.
        self.body_context = None if isinstance(request.body, bytes | None) else copy_context()

    def head_delivered(self) -> None:
        """Wake the caller waiting in :meth:`AsyncConnection.round_trip`."""
        wake(self.head_ready)

    def continue_received(self) -> None:
        """Let the writer send the body (R15)."""
        self.marks["got_100"] = self.head_ready.get_loop().time()
        wake(self.go_ahead)

    def interim_received(self) -> None:
        """Start the response-header limit again: its timer, when it
        fires, reckons the deadline from ``written_at``."""
        self.written_at = self.head_ready.get_loop().time()

    def release_reader(self) -> None:
        """Let the parked reader go on; harmless if already released, and
        remembered if it has not parked yet."""
        self.reader_released = True
        wake(self.reader_parked)

    async def park_reader(self) -> None:
        """The reader waits here until the body owner lets go of the
        connection (:meth:`release_reader`)."""
        if not self.reader_released:
            self.reader_parked = self.head_ready.get_loop().create_future()
            await self.reader_parked

    def has_written_all_now(self) -> bool | None:
        """Whether the writer finished the request without error, or
        ``None`` while it is still writing (no wait: the common case)."""
        if not self.write_finished:
            return None
        return self.write_error is None

    async def has_written_all(self, wait: float) -> bool:
        """Whether the writer finished the request without error, waiting up
        to ``wait`` seconds for it to finish (R9)."""
        if not self.write_finished:
            if self.write_done is None:
                self.write_done = self.head_ready.get_loop().create_future()
            if not await wait_or_expire(self.write_done, wait):
                self.write_done = None  # resolved by the timer: a fresh one next time
                return False
        return self.write_error is None
