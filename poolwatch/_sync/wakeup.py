"""Wake-ups between a connection's threads that hand the GIL over cleanly.

Releasing a ``threading.Lock`` wakes the waiting thread while the waker
still holds the GIL. On a busy or single core the woken thread then often
runs first, finds the GIL taken, and sleeps again until the waker lets go:
three context switches and a handful of futex calls for one hand-off. An
``eventfd`` is written with the GIL released, so the woken thread can take
the GIL at once and run until it blocks; the waker resumes after it.

Two kinds, both on Linux only (elsewhere, and wherever ``os.eventfd`` is
missing, they fall back to a lock and a queue):

* :class:`OneShot`: set once by one thread and waited for by another, on
  an ``eventfd`` lent by the transport's :class:`EventPool` for the wait
  (as many as threads wait at once; closed with the transport). An
  exchange's caller waits on one for its head; its reader, parked while the
  caller reads the body from the socket, for the body's end; a parked
  worker thread, for its next connection. A stale count left by an earlier
  wait only costs one more loop.
* :class:`Inbox`: a writer's queue of exchanges, with one ``eventfd`` per
  connection (its second descriptor, beside the socket both workers share).

Each waiter re-checks its condition after every wake-up, so a stale count
never does harm.
"""

from __future__ import annotations

import os
import select
import threading
import time
import weakref
from queue import Empty, SimpleQueue
from typing import Generic, TypeVar

__all__ = ["HAVE_EVENTFD", "EventFD", "EventPool", "Inbox", "OneShot"]

T = TypeVar("T")

HAVE_EVENTFD = hasattr(os, "eventfd") and hasattr(select, "poll")
_MAX_POLL_MS = 2**31 - 1  # poll() takes an int of milliseconds
MAX_SPARE_EVENTS = 64


class EventFD:
    """An ``eventfd`` counter: :meth:`set` adds one, :meth:`wait` takes
    them all, waiting for one if there is none. Closed when garbage
    collected or by :meth:`close`; :meth:`set` on a closed one does nothing."""

    __slots__ = ("_closed", "_fd", "_lock", "_poller")

    def __init__(self) -> None:
        self._fd: int = os.eventfd(0, os.EFD_CLOEXEC)
        self._poller: select.poll | None = None  # made for the first timed wait
        self._lock = threading.Lock()  # closing against setting
        self._closed = False

    def set(self) -> None:
        """Wake the waiter (the system call runs without the GIL)."""
        with self._lock:
            if not self._closed:
                os.eventfd_write(self._fd, 1)

    def wait(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (``None``: no limit) for a
        :meth:`set`; whether one came. One thread waits at a time."""
        if timeout is not None:
            poller = self._poller
            if poller is None:
                poller = self._poller = select.poll()
                poller.register(self._fd, select.POLLIN)
            if not poller.poll(min(max(0, int(timeout * 1000 + 0.999)), _MAX_POLL_MS)):
                return False
        os.eventfd_read(self._fd)
        return True

    def close(self) -> None:
        """Close the descriptor; later :meth:`set` calls do nothing."""
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._fd)

    def close_in_child(self) -> None:
        """Close the descriptor in a child process just forked, without the
        lock, which a parent thread may have held at the fork."""
        self.__del__()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            os.close(self._fd)


class EventPool:
    """A transport's spare events for threads waiting on a :class:`OneShot`:
    taken when a wait starts, given back when it ends, closed with the
    transport. It holds as many as threads ever waited at once (at most
    :data:`MAX_SPARE_EVENTS` kept)."""

    __slots__ = ("__weakref__", "_closed", "_free", "_lock")

    def __init__(self) -> None:
        self._free: list[EventFD] = []
        self._lock = threading.Lock()
        self._closed = False
        _pools.add(self)

    def take(self) -> EventFD:
        """A spare event, or a new one."""
        with self._lock:
            if self._free:
                return self._free.pop()
        return EventFD()

    def give(self, event: EventFD) -> None:
        """Keep ``event`` for the next wait (a late wake-up left on it only
        costs that wait one more loop), or close it."""
        with self._lock:
            if not self._closed and len(self._free) < MAX_SPARE_EVENTS:
                self._free.append(event)
                return
        event.close()

    @property
    def spare(self) -> int:
        """How many events are kept, not lent."""
        with self._lock:
            return len(self._free)

    def close(self) -> None:
        """Close the spare events; those in use close when given back."""
        with self._lock:
            self._closed = True
            free, self._free = self._free, []
        for event in free:
            event.close()


_pools: weakref.WeakSet[EventPool] = weakref.WeakSet()


def _forget_spare_events() -> None:
    # A forked child shares its parent's eventfds: a wait there could take
    # the parent's wake-ups. The child makes its own, and closes its copies
    # without their locks: a parent thread waking one late may have held one.
    for pool in list(_pools):
        pool._lock = threading.Lock()
        free, pool._free = pool._free, []
        for event in free:
            event.close_in_child()  # the child's copy only


if HAVE_EVENTFD:
    os.register_at_fork(after_in_child=_forget_spare_events)


class OneShot:
    """Set once by one thread, waited for by one other: on an event taken
    from the transport's :class:`EventPool` when the wait starts and given
    back by :meth:`done`; or on a lock without eventfd (or without a
    pool)."""

    __slots__ = ("_event", "_lock", "_pool", "_set")

    def __init__(self, pool: EventPool | None = None) -> None:
        self._set = False
        self._event: EventFD | None = None  # the waiter's, while it waits
        self._pool = pool if HAVE_EVENTFD else None
        self._lock: threading.Lock | None = None
        if self._pool is None:
            self._lock = threading.Lock()
            self._lock.acquire()

    def release(self) -> None:
        """Set it and wake the waiter; harmless if already set."""
        if self._set:
            return
        # Set first, then look for a waiter, which takes its event first and
        # then looks at the flag: one of the two sees the other.
        self._set = True
        event = self._event
        if event is not None:
            event.set()
        elif self._lock is not None:
            self._lock.release()

    def is_set(self) -> bool:
        """Whether it is set; never waits."""
        return self._set

    def acquire(self, timeout: float = -1) -> bool:
        """Wait up to ``timeout`` seconds (negative: no limit) for it to be
        set; whether it is."""
        if self._lock is not None:
            if self._lock.acquire(timeout=timeout):
                self._lock.release()  # set for good
            return self._set
        event = self._event
        if event is None:
            assert self._pool is not None
            event = self._event = self._pool.take()
        if timeout < 0:
            while not self._set:
                event.wait(None)
            return True
        deadline = time.monotonic() + timeout
        while not self._set:  # a count left by an earlier exchange: again
            left = deadline - time.monotonic()
            if left <= 0 or not event.wait(left):
                return self._set
        return True

    def done(self) -> None:
        """The waiter waits no more: give its event back."""
        event = self._event
        if event is not None:
            self._event = None
            assert self._pool is not None
            self._pool.give(event)


class Inbox(Generic[T]):
    """A writer's queue: items put by any thread, taken by the writer. Its
    ``eventfd`` is the connection's own, closed by :meth:`close` once the
    writer has exited (a put after that wakes nobody)."""

    __slots__ = ("_event", "_queue")

    def __init__(self) -> None:
        self._queue: SimpleQueue[T] = SimpleQueue()
        self._event = EventFD() if HAVE_EVENTFD else None

    def put(self, item: T) -> None:
        """Queue ``item`` and wake the writer."""
        self._queue.put(item)
        if self._event is not None:
            self._event.set()

    def get(self) -> T:
        """The next item, waiting for one (the writer only)."""
        event = self._event
        if event is None:
            return self._queue.get()
        while True:
            # A count left by a put taken without waiting costs one more loop.
            try:
                return self._queue.get_nowait()
            except Empty:
                event.wait(None)

    def close(self) -> None:
        """Free the descriptor (the writer, on its way out)."""
        if self._event is not None:
            self._event.close()
