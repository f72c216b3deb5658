"""One request and its response on an asyncio connection: the shared
exchange state (``poolwatch._core.exchange``) plus the futures that wake the
caller, the writer and the parked reader."""

from __future__ import annotations

import asyncio

from .._core.exchange import Exchange as CoreExchange
from .._events import Listener
from .._leaks import CallSite
from .._models import Request, Timeout

__all__ = ["AsyncExchange", "cancel_pending", "wake"]


def wake(future: asyncio.Future[None] | None) -> None:
    """Resolve a one-shot future; harmless if already done or its loop closed."""
    if future is not None and not future.done():
        try:
            future.set_result(None)
        except RuntimeError:  # its loop has closed: nobody waits any more
            pass


def cancel_pending() -> bool:
    """Whether the current task has a cancellation on its way (Python 3.11+
    can tell; before, the request goes out and the connection is closed)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is not None and bool(cancelling())


class AsyncExchange(CoreExchange):
    """One request and its response on an asyncio connection: the shared
    exchange state plus the futures that wake the caller, the writer and the
    parked reader."""

    __slots__ = (
        "go_ahead",
        "head_ready",
        "head_timer",
        "reader_parked",
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
        self.reader_parked: asyncio.Future[None] = loop.create_future()
        # Made only when someone waits for them.
        self.go_ahead: asyncio.Future[None] | None = None
        self.write_done: asyncio.Future[None] | None = None
        self.head_timer: asyncio.TimerHandle | None = None  # the response-header limit
        self.write_started = False  # set by the writer before its first byte

    def head_delivered(self) -> None:
        """Wake the caller waiting in :meth:`AsyncConnection.round_trip`."""
        wake(self.head_ready)

    def continue_received(self) -> None:
        """Let the writer send the body (R15)."""
        self.marks["got_100"] = self.head_ready.get_loop().time()
        wake(self.go_ahead)

    def release_reader(self) -> None:
        """Let the parked reader go on; harmless if already released."""
        wake(self.reader_parked)

    async def has_written_all(self, wait: float) -> bool:
        """Whether the writer finished the request without error, waiting up
        to ``wait`` seconds for it to finish (R9)."""
        if not self.write_finished:
            if self.write_done is None:
                self.write_done = self.head_ready.get_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self.write_done), wait)
            except asyncio.TimeoutError:
                return False
        return self.write_error is None
