"""Wake-ups between a connection's threads that hand the GIL over cleanly.

Releasing a ``threading.Lock`` wakes the waiting thread while the waker
still holds the GIL. On a busy or single core the woken thread then often
runs first, finds the GIL taken, and sleeps again until the waker lets go:
three context switches and a handful of futex calls for one hand-off. An
``eventfd`` is written with the GIL released, so the woken thread can take
the GIL at once and run until it blocks; the waker resumes after it.

Two kinds, both on Linux only (elsewhere, and wherever ``os.eventfd`` is
missing, they fall back to a lock and a queue):

* :class:`HeadSignal`: one per exchange, set once by whoever delivers the
  head or an error, and waited for by the caller. Each caller thread has one
  ``eventfd`` for all its exchanges (:func:`thread_event`); a stale count
  left by an earlier exchange only costs one more loop.
* :class:`Inbox`: a writer's queue of exchanges, with one ``eventfd`` per
  connection (a third descriptor beside the socket and its duplicate).

Each waiter re-checks its condition after every wake-up, so a stale count
never does harm.
"""

from __future__ import annotations

import os
import select
import threading
import time
from queue import Empty, SimpleQueue
from typing import Generic, TypeVar

__all__ = ["HAVE_EVENTFD", "EventFD", "HeadSignal", "Inbox", "thread_event"]

T = TypeVar("T")

HAVE_EVENTFD = hasattr(os, "eventfd") and hasattr(select, "poll")
_MAX_POLL_MS = 2**31 - 1  # poll() takes an int of milliseconds


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

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            os.close(self._fd)


_local = threading.local()


def thread_event() -> EventFD:
    """The calling thread's own event, made on first use; closed when the
    thread has exited and no exchange refers to it any more."""
    event: EventFD | None = getattr(_local, "event", None)
    if event is None:
        event = _local.event = EventFD()
    return event


def _forget_thread_events() -> None:
    # A forked child shares the parent's eventfds: give it its own.
    global _local
    _local = threading.local()


if HAVE_EVENTFD:
    os.register_at_fork(after_in_child=_forget_thread_events)


class HeadSignal:
    """Set once when an exchange's head or error is ready; the caller waits
    for it. On the caller thread's event, or a lock without eventfd.
    :meth:`done` lets go of the event once the caller has stopped waiting,
    so that an exchange kept alive does not keep its thread's descriptor."""

    __slots__ = ("_event", "_lock", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: EventFD | None = None
        self._lock: threading.Lock | None = None
        if HAVE_EVENTFD:
            self._event = thread_event()
        else:
            self._lock = threading.Lock()
            self._lock.acquire()

    def release(self) -> None:
        """Set it and wake the caller; harmless if already set."""
        if self._set:
            return
        event = self._event  # before _set: done() may drop it after
        self._set = True  # before the wake-up, which the waiter checks it after
        if event is not None:
            event.set()
        elif self._lock is not None:
            self._lock.release()

    def acquire(self, timeout: float = -1) -> bool:
        """Wait up to ``timeout`` seconds (negative: no limit) for it to be
        set; whether it is. Caller thread only."""
        event = self._event
        if event is None:
            if self._lock is None:  # done() after the head came
                return self._set
            if self._lock.acquire(timeout=timeout):
                self._lock.release()  # set for good
            return self._set
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
        """The caller waits no more (caller thread)."""
        self._event = None


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
