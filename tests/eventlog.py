"""A transport listener for tests: keeps every event and lets a test wait
for one (R19), instead of sleeping."""

from __future__ import annotations

import threading

import poolwatch

WAIT = 10.0  # seconds; a bound on waits that should end at once


class EventLog:
    """Every event a transport emitted, with waits for the ones to come."""

    def __init__(self) -> None:
        self.events: list[poolwatch.Event] = []
        self._cond = threading.Condition()

    def __call__(self, event: poolwatch.Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def named(self, name: str) -> list[poolwatch.Event]:
        with self._cond:
            return [e for e in self.events if e.name == name]

    def wait_for(self, name: str, count: int = 1) -> list[poolwatch.Event]:
        """Wait until ``count`` events called ``name`` have happened."""
        with self._cond:
            seen = self._cond.wait_for(lambda: len(self.named(name)) >= count, WAIT)
        assert seen, f"no {count} {name!r} events in {WAIT}s: {self.events}"
        return self.named(name)

    def wait_closed(self, conn_id: int) -> str:
        """Wait until connection ``conn_id`` has closed and both its workers
        have exited; return the close reason."""
        with self._cond:
            seen = self._cond.wait_for(lambda: self._closed(conn_id), WAIT)
        assert seen, f"connection {conn_id} not closed in {WAIT}s: {self.events}"
        closed = self._closed(conn_id)
        assert closed is not None
        return str(closed["reason"])

    def _closed(self, conn_id: int) -> poolwatch.Event | None:
        for event in self.events:
            if event.name == "conn_closed" and event.connection_id == conn_id:
                return event
        return None
