"""The client registry: what a benchmarked client looks like and how an
entry is added (see :mod:`benchmarks.clients` for the entries).

Each entry is one factory function decorated with :func:`register`. The
factory imports its library itself, so a missing package skips only that
entry, and returns a :class:`SyncClient` or, for ``kind="async"``, is a
coroutine returning an :class:`AsyncClient`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "REGISTRY",
    "AsyncClient",
    "ClientEntry",
    "ClientOptions",
    "SyncClient",
    "check_status",
    "register",
]


@dataclass(frozen=True)
class ClientOptions:
    """How a scenario needs the client set up."""

    base_url: str
    keep_alive: bool = True
    threads: int = 1  # threads sharing the client: size its pool for them
    concurrency: int = 1  # concurrent tasks (async clients)

    @property
    def headers(self) -> dict[str, str]:
        """Request headers: ``Connection: close`` when keep-alive is off."""
        return {} if self.keep_alive else {"Connection": "close"}


@dataclass
class SyncClient:
    """A blocking client: ``get(path)`` and ``post(path, body)`` return the
    response body's length; ``stats()`` returns the client's own counters."""

    get: Callable[[str], int]
    post: Callable[[str, bytes], int]
    close: Callable[[], None]
    stats: Callable[[], dict[str, float]] = field(default=lambda: {})


@dataclass
class AsyncClient:
    """An asyncio client, made inside the running loop."""

    get: Callable[[str], Awaitable[int]]
    close: Callable[[], Awaitable[None]]


F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ClientEntry:
    """One registered client."""

    name: str
    label: str
    requires: tuple[str, ...]  # import names; a missing one skips the entry
    kind: str  # "sync" or "async"
    default: bool
    make: Callable[..., Any]

    def missing(self) -> str | None:
        """Why this entry cannot run here, or ``None``."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed"
        return None


REGISTRY: dict[str, ClientEntry] = {}


def register(
    name: str, *, label: str, requires: tuple[str, ...], kind: str = "sync", default: bool = True
) -> Callable[[F], F]:
    """Add the decorated factory to :data:`REGISTRY` under ``name``."""

    def decorate(make: F) -> F:
        REGISTRY[name] = ClientEntry(name, label, requires, kind, default, make)
        return make

    return decorate


def check_status(status: int, path: str) -> None:
    """Fail the cell on any response but 200."""
    if status != 200:
        raise RuntimeError(f"{path}: status {status}")
