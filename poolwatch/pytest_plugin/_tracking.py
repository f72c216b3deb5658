"""Which test made each request, and which of those bodies leaked.

Theory of operation. The adapters the plugin installs hand every response
to :meth:`Tracker.track` together with the object that owns it (the
``requests`` raw response, the ``httpx.Response``) and the caller's line. The
tracker charges the request to its *owner scope*: the running test, or the
module/class/session fixture being set up. When that scope ends (the test's
teardown, or the fixture's finalisation) each of its responses is checked:

- body read to the end (R4), closed early (R5), errored, no body (R7): fine;
- body still open: a leak, "still open";
- owner garbage-collected with the body open: a leak, "garbage-collected
  unclosed" (R6). The owner's weak reference callback sees this at once,
  whichever test is running then, and the leak stays charged to the scope
  that made the request.

Requests made outside any test (at import or collection time) are checked
when the session finishes.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import _pytest
import pluggy

from .._core.stats import OriginStats, PoolStats
from .._leaks import CallSite
from .._sync.transport import Transport

__all__ = ["Leak", "Record", "Tracker", "merge_stats"]

OUTSIDE_TESTS = "<outside any test>"


def _origin(module: str) -> str | None:
    """Where ``module`` is, without importing it."""
    spec = importlib.util.find_spec(module)
    return None if spec is None else spec.origin


# Frames of the test runner, the event loop and the import machinery below
# the test function (or module) say nothing about the leak.
_RUNNER_DIRS = (
    *(
        os.path.dirname(os.path.abspath(origin)) + os.sep
        for origin in (_pytest.__file__, pluggy.__file__, _origin("asyncio"))
        if origin
    ),
    "<frozen importlib",
)


class TrackedResponse(Protocol):
    """What the tracker needs of a poolwatch response (sync or async)."""

    method: str
    url: str

    @property
    def outcome(self) -> str | None: ...  # pragma: no cover

    def report_leak(self, stacklevel: int = 2) -> None: ...  # pragma: no cover


class StatsSource(Protocol):
    """Anything with ``stats()``: a transport or an adapter."""

    def stats(self) -> PoolStats: ...  # pragma: no cover


@dataclass(frozen=True)
class Leak:
    """One leaked response body and the scope it is charged to."""

    test: str  # node id of the test that made the request
    fixture: str | None  # the broader-scoped fixture being set up, if any
    method: str
    url: str
    call_site: CallSite
    how: str  # "still open" or "garbage-collected unclosed"

    def describe(self) -> str:
        """A multi-line report: method, URL, how, and the call site."""
        where = f" (in fixture {self.fixture!r}, set up for {self.test})" if self.fixture else ""
        frames = "\n".join(
            f"  {name}:{line} in {function}"
            for name, line, function in self.call_site.frames
            if not name.startswith(_RUNNER_DIRS)
        )
        frames = frames or "  <call site not recorded>"
        return f"{self.method} {self.url}: body {self.how}{where}; request made at:\n{frames}"


@dataclass(eq=False)
class Record:
    """One response the plugin watches until its owner scope has ended."""

    test: str
    fixture: str | None
    method: str
    url: str
    call_site: CallSite
    response: TrackedResponse | None  # held until the body is settled
    collected_open: bool = False  # the owner was collected with the body open
    owner: weakref.ref[Any] | None = field(default=None, repr=False)

    def leak(self) -> Leak | None:
        """The leak this record shows now, if any."""
        response = self.response  # the collector may clear it meanwhile
        outcome = None if response is None else response.outcome
        if self.collected_open:
            how = "garbage-collected unclosed"
        elif outcome == "leaked":
            how = "left open until its connection went (leaked)"
        elif response is not None and outcome is None:
            how = "still open"
        else:
            return None
        return Leak(self.test, self.fixture, self.method, self.url, self.call_site, how)


class Tracker:
    """The records of one pytest run, by owner scope, and the transports the
    plugin created (for the ``poolwatch_stats`` fixture)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[object, list[Record]] = {}  # lock: by scope key
        # lock: (test, adapter or transport, its poolwatch Transport)
        self._transports: list[tuple[str, weakref.ref[Any], weakref.ref[Any] | None]] = []
        self.current_test = OUTSIDE_TESTS  # set by the runtest hooks
        self._fixtures: list[tuple[object, str]] = []  # broader fixtures being set up
        self.transports_created = 0

    # -- scopes ---------------------------------------------------------------

    def push_fixture(self, key: object, name: str) -> None:
        """A module, class, package or session fixture starts its setup."""
        self._fixtures.append((key, name))

    def pop_fixture(self) -> None:
        """That fixture's setup ended."""
        self._fixtures.pop()

    def _scope(self) -> tuple[object, str | None]:
        if self._fixtures:
            key, name = self._fixtures[-1]
            return key, name
        return ("test", self.current_test), None

    # -- recording --------------------------------------------------------------

    def transport_created(self, source: StatsSource) -> None:
        """Remember a transport made for a session or a client."""
        inner = getattr(source, "transport", None)
        inner_ref = weakref.ref(inner) if isinstance(inner, Transport) else None
        # One made by a broader fixture is no single test's, whichever test
        # first asked for that fixture.
        made_in = OUTSIDE_TESTS if self._fixtures else self.current_test
        with self._lock:
            self.transports_created += 1
            self._transports.append((made_in, weakref.ref(source), inner_ref))

    def transports(self, test: str | None = None) -> list[StatsSource]:
        """Live transports, all or those created while ``test`` ran."""
        with self._lock:
            refs = [ref for made_in, ref, _ in self._transports if test in (None, made_in)]
        return [source for source in (ref() for ref in refs) if source is not None]

    def release_abandoned(self) -> None:
        """Close the idle connections of transports whose session or client
        is gone: with stock transports the garbage collector would have
        closed those sockets, here their workers would idle on."""
        with self._lock:
            entries = self._transports
            self._transports = [e for e in entries if e[1]() is not None]
        for _, source, inner in entries:
            transport = None if inner is None or source() is not None else inner()
            if transport is not None:
                transport.close_idle_connections()

    def close_transports(self) -> None:
        """Close every poolwatch transport still alive (at the end of the run)."""
        with self._lock:
            entries, self._transports = self._transports, []
        for _, _, inner in entries:
            transport = None if inner is None else inner()
            if transport is not None:
                transport.close()

    def track(self, response: TrackedResponse, owner: object, call_site: CallSite) -> None:
        """Watch ``response``, whose body belongs to ``owner``, made at ``call_site``."""
        if response.outcome is not None:
            return  # no body (R7): nothing to watch
        key, fixture = self._scope()
        record = Record(
            self.current_test, fixture, response.method, response.url, call_site, response
        )
        record.owner = weakref.ref(owner, lambda _ref: self._owner_collected(record))
        with self._lock:
            self._records.setdefault(key, []).append(record)

    @staticmethod
    def _owner_collected(record: Record) -> None:
        """The owner of a response was garbage-collected (any thread, any
        time): the leak stays charged to the scope that made the request."""
        response = record.response
        if response is None:
            return  # already checked
        if response.outcome in (None, "leaked"):
            record.collected_open = True
            # As the adapters do for their own objects (R6); a no-op if done.
            response.report_leak()
        record.response = None  # let the poolwatch response go too

    # -- checking ---------------------------------------------------------------

    def take(self, key: object) -> list[Record]:
        """The records of a scope that has just ended, no longer tracked by
        scope (a fixture set up again starts afresh)."""
        with self._lock:
            return self._records.pop(key, [])

    def test_ended(self, nodeid: str) -> list[Leak]:
        """Check the responses made while test ``nodeid`` ran."""
        return self.settle(self.take(("test", nodeid)))

    def session_ended(self) -> list[Leak]:
        """Check everything left: requests made outside tests, and scopes
        whose end the plugin did not see."""
        with self._lock:
            records = [r for group in self._records.values() for r in group]
            self._records.clear()
        return self.settle(records)

    @staticmethod
    def settle(records: Iterable[Record]) -> list[Leak]:
        """The leaks among ``records``, which are then no longer watched."""
        leaks = []
        for record in records:
            leak = record.leak()
            if leak is not None:
                leaks.append(leak)
            record.response = None
        return leaks

    def has_records(self) -> bool:
        """Whether any response is still watched."""
        with self._lock:
            return any(self._records.values())


def merge_stats(sources: Iterable[StatsSource]) -> PoolStats:
    """One :class:`PoolStats` summing the snapshots of ``sources``."""
    per_origin: dict[str, OriginStats] = {}
    for source in sources:
        for origin, stats in source.stats().per_origin.items():
            per_origin[origin] = per_origin[origin] + stats if origin in per_origin else stats
    return PoolStats.build(per_origin)
