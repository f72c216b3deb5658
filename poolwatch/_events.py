"""Events in the vocabulary of Go's ``net/http/httptrace`` (R19).

A listener is any callable taking an :class:`Event`. Listeners run in the
thread where the event happens (the caller's or a worker's), never with a
pool lock held; one that raises is logged once and otherwise ignored.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["EVENT_NAMES", "Event", "Listener"]

logger = logging.getLogger("poolwatch")

EVENT_NAMES = frozenset(
    {
        "get_conn",
        "got_conn",
        "connect_start",
        "connect_done",
        "tls_handshake_start",
        "tls_handshake_done",
        "wrote_headers",
        "wrote_request",
        "got_100_continue",
        "got_first_response_byte",
        "put_idle_conn",
        "body_done",
        "conn_closed",
        "retry",
        "pool_wait_start",
        "pool_wait_done",
        "leak_detected",
        "request_failed",
    }
)


@dataclass(frozen=True)
class Event:
    """One thing that happened to a request or a connection.

    ``name`` is one of :data:`EVENT_NAMES`; ``data`` holds its details
    (``reused``, ``was_idle`` and ``idle_time`` for ``got_conn``, ``outcome``
    and ``bytes`` for ``body_done``, ``reason`` for ``conn_closed``, ...).
    """

    name: str
    origin: str
    connection_id: int | None = None
    url: str | None = None
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __reduce__(self) -> tuple[Any, ...]:
        # Its read-only details cannot be pickled as they are: an event goes
        # to another process (a multiprocessing queue) rebuilt from a copy.
        fields = (self.name, self.origin, self.connection_id, self.url, dict(self.data))
        return (_rebuilt, fields)


def _rebuilt(
    name: str, origin: str, connection_id: int | None, url: str | None, data: dict[str, Any]
) -> Event:
    """An event unpickled, its details read-only again."""
    return Event(name, origin, connection_id, url, MappingProxyType(data))


Listener = Callable[[Event], object]

# Listeners whose failure was logged; held weakly, so that a listener made
# later at a freed one's address is still logged.
_failed_listeners: weakref.WeakSet[Any] = weakref.WeakSet()
_failed_ids: set[int] = set()  # those that cannot be held weakly


def dispatch(listeners: tuple[Listener, ...], event: Event) -> None:
    """Call each listener; log (once per listener) and swallow what it
    raises, a ``BaseException`` too (a test's ``pytest.fail()``: on a
    worker it would end the worker), but ``KeyboardInterrupt`` and
    ``SystemExit``."""
    for listener in listeners:
        try:
            listener(event)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:
            if _first_failure(listener):
                logger.exception("poolwatch listener %r raised; ignored", listener)


def without(listeners: tuple[Listener, ...], listener: Listener) -> tuple[Listener, ...]:
    """``listeners`` less the first one equal to ``listener`` (``obj.method``
    makes a new bound method each time, equal to the one added)."""
    for index, candidate in enumerate(listeners):
        if candidate == listener:
            return listeners[:index] + listeners[index + 1 :]
    return listeners


def _first_failure(listener: Listener) -> bool:
    """Whether ``listener`` fails for the first time (and remember it)."""
    try:
        if listener in _failed_listeners:
            return False
        _failed_listeners.add(listener)
    except TypeError:  # no weak reference to be had
        if id(listener) in _failed_ids:
            return False
        _failed_ids.add(id(listener))
    return True
