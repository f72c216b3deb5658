"""A transport seen from two sides: the handle its caller holds, and the
core its connections hold.

The workers of a transport's open connections (threads, or tasks on an
event loop) reference their connections, and the connections their
transport. If the caller's object were that transport, it could never be
garbage-collected while a connection is open: a transport dropped without
being closed would keep its workers and sockets for ever. So the caller
gets a *handle*, and everything long-lived (connections, their workers,
the fork handler) gets the *core*: two instances of the transport's class
sharing one attribute dictionary, so either runs every method alike. Only
the caller's references (and its open responses') keep the handle alive;
when it is collected, the core is closed.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["close_when_dropped", "new_handle"]

T = TypeVar("T")


def new_handle(cls: type[T]) -> T:
    """A new, uninitialised instance of ``cls`` for the caller, whose
    attributes are those of its core (its ``_core`` attribute)."""
    handle: Any = object.__new__(cls)
    core: Any = object.__new__(cls)
    # A new dictionary for both, never one an instance made for itself: from
    # Python 3.13 that one can hold its values inside its instance.
    shared = {"_core": core}
    handle.__dict__ = shared
    core.__dict__ = shared
    return handle  # type: ignore[no-any-return]


def close_when_dropped(handle: Any, close: Callable[[Any], None]) -> None:
    """Once ``handle`` is garbage-collected, run ``close(core)``, on
    whatever thread the collector ran (not at interpreter exit). Called at
    the end of ``__init__``: a transport whose construction failed has
    nothing to close."""
    weakref.finalize(handle, close, handle._core).atexit = False
