"""Worker threads for connections, kept for the next connection when one
closes (R1, R14).

Starting a thread and waiting for it to exit cost about a quarter of a
millisecond each, twice per connection. A transport keeps a few finished
workers *parked* instead, and hands them the next connection's reader and
writer loops. A connection still has exactly two workers of its own while
it is open; a parked worker belongs to none (``workers_alive`` counts only
the former), carries the name ``poolwatch-spare``, and exits after
:data:`SPARE_SECONDS` unused or when the transport closes, which waits for
every worker to exit.

A parked worker waits on a :class:`~.wakeup.OneShot`, as a caller waits
for its head: the wake-up is an ``eventfd`` write made with the GIL
released, so the worker runs at once instead of waking only to find the
GIL taken by the thread that woke it. That halves the context switches of
a new connection.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable

from .wakeup import EventPool, OneShot

__all__ = ["SPARE_NAME", "SPARE_SECONDS", "Job", "WorkerPool", "refuse_green_threads"]

logger = logging.getLogger("poolwatch")

# How long a parked worker waits for a connection before it exits.
SPARE_SECONDS = 5.0
# How many parked workers a transport keeps at most.
MAX_SPARE = 16
SPARE_NAME = "poolwatch-spare"


def refuse_green_threads() -> None:
    """Raise ``RuntimeError`` if gevent or eventlet has monkey-patched
    ``threading``: the workers would then be green threads sharing one OS
    thread, and the first one to block on a socket or an ``eventfd`` would
    stop them all, the request hanging past every timeout."""
    gevent = sys.modules.get("gevent.monkey")
    eventlet = sys.modules.get("eventlet.patcher")
    if gevent is not None and gevent.is_module_patched("threading"):
        library = "gevent"
    elif eventlet is not None and eventlet.is_monkey_patched("thread"):
        library = "eventlet"
    else:
        return
    raise RuntimeError(
        f"poolwatch.Transport needs real threads, and {library} has monkey-patched "
        "threading: its connection workers would block each other and hang. Use "
        "poolwatch.AsyncTransport from asyncio, or leave threading unpatched."
    )


class Job:
    """One connection loop run by a worker: who runs it, and when it ends."""

    __slots__ = ("_running", "name", "target", "thread")

    def __init__(self, target: Callable[[], None], name: str) -> None:
        self.target = target
        self.name = name
        self.thread: threading.Thread | None = None  # set when it starts
        # Held until the job returns: a lock costs less than an Event.
        self._running = threading.Lock()
        self._running.acquire()

    def is_current(self) -> bool:
        """Whether the calling thread is running this job."""
        return self.thread is threading.current_thread() and self._running.locked()

    def join(self) -> None:
        """Wait until the job has returned (not from its own thread)."""
        with self._running:
            pass

    def finished(self) -> None:
        """The job returned (called once)."""
        self._running.release()


class _Worker:
    def __init__(self, pool: WorkerPool, job: Job) -> None:
        self.pool = pool
        # The job to run next; handed over under the pool's lock while the
        # worker is parked (None then tells it to exit).
        self.job: Job | None = job
        self.wake: OneShot | None = None  # what it waits on while parked
        self.thread = threading.Thread(target=self._loop, name=SPARE_NAME, daemon=True)

    def _loop(self) -> None:
        thread = self.thread
        while (job := self.job) is not None:
            self.job = None
            job.thread = thread
            thread.name = job.name
            try:
                job.target()
            except BaseException:  # pragma: no cover - the loops catch their own
                logger.exception("poolwatch worker %s failed", job.name)
            finally:
                thread.name = SPARE_NAME
                # Parked before the job counts as finished, so that a
                # connection closed and joined has its workers ready.
                wake = self.pool.park(self)
                job.finished()
            if wake is None or not self._wait(wake):
                return

    def _wait(self, wake: OneShot) -> bool:
        """Wait parked to be handed a job; whether one came."""
        try:
            while not wake.acquire(SPARE_SECONDS):
                if self.pool.retire(self):
                    return False
                # Handed a job meanwhile: its wake-up is on the way.
        finally:
            wake.done()
        return self.job is not None


class WorkerPool:
    """A transport's worker threads: each runs one connection loop at a
    time, and waits parked for the next between them."""

    def __init__(self, max_spare: int = MAX_SPARE, events: EventPool | None = None) -> None:
        self._lock = threading.Lock()
        self._events = events  # what parked workers wait on
        self._max_spare = max_spare
        self._spare: list[_Worker] = []  # parked, most recent last
        self._threads: set[threading.Thread] = set()  # every worker not yet exited
        self._closed = False

    def run(self, target: Callable[[], None], name: str) -> Job:
        """Run ``target`` on a parked worker, or a new one; returns its job."""
        job = Job(target, name)
        with self._lock:
            worker = None
            while self._spare:
                worker = self._spare.pop()
                if worker.thread.is_alive():
                    break
                # Gone without exiting through the pool: in a child process
                # after fork(), only the forking thread exists.
                self._threads.discard(worker.thread)
                worker = None
            if worker is None:
                worker = _Worker(self, job)
                self._threads.add(worker.thread)
            else:
                worker.job = job
        if worker.wake is None:  # a new thread
            worker.thread.start()
        else:
            worker.wake.release()
        return job

    def park(self, worker: _Worker) -> OneShot | None:
        """``worker`` finished its job: keep it for the next one if there is
        room, and return what it waits on; ``None`` if it is not kept (it
        exits)."""
        with self._lock:
            if not self._closed and len(self._spare) < self._max_spare:
                worker.wake = OneShot(self._events)
                self._spare.append(worker)
                return worker.wake
            self._threads.discard(worker.thread)
            return None

    def retire(self, worker: _Worker) -> bool:
        """``worker`` waited parked long enough: whether it may exit (not if
        it was handed a job meanwhile)."""
        with self._lock:
            if worker not in self._spare:
                return False
            self._spare.remove(worker)
            self._threads.discard(worker.thread)
            return True

    @property
    def spare(self) -> int:
        """How many workers are parked."""
        with self._lock:
            return len(self._spare)

    def close(self) -> None:
        """Stop every worker and wait for it to exit. Workers still running a
        connection loop exit when it returns; close the connections first."""
        with self._lock:
            self._closed = True
            spare, self._spare = self._spare, []
            threads = list(self._threads)
        for worker in spare:
            assert worker.wake is not None  # set when it parked
            worker.wake.release()  # with no job: it exits
        current = threading.current_thread()
        for thread in threads:
            if thread is not current:
                thread.join()
