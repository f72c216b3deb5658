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

__all__ = ["new_handle"]

T = TypeVar("T")


def new_handle(cls: type[T], on_dropped: Callable[[T], None]) -> T:
    """A new, uninitialised instance of ``cls`` for the caller, whose
    attributes are those of its core (its ``_core`` attribute). Once the
    handle is garbage-collected, ``on_dropped(core)`` runs, on whatever
    thread the collector ran (not at interpreter exit)."""
    handle: Any = object.__new__(cls)
    core: Any = object.__new__(cls)
    handle.__dict__ = core.__dict__
    core._core = core
    weakref.finalize(handle, on_dropped, core).atexit = False
    return handle  # type: ignore[no-any-return]
