"""What every part of the harness agrees on: the server's paths and bodies,
the loopback address, and the records a benchmark cell produces.

A *cell* is one client in one scenario; it runs in a process of its own
(:mod:`benchmarks.cell`) so that its peak RSS and CPU time are its own.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "HOST",
    "ONE_MIB",
    "POST_BODY",
    "TINY_BODY",
    "Budget",
    "CellSpec",
    "Run",
]

# The only address the harness ever talks to.
HOST = "127.0.0.1"

TINY_BODY = b"hello, world\n"  # 13 bytes: the body of GET /tiny
ONE_MIB = 1 << 20  # the size of GET /1m
POST_BODY = b"p" * (64 * 1024)  # what S5 sends to POST /post
POST_REPLY = b"ok"


@dataclass(frozen=True)
class Budget:
    """How long one run lasts: ``seconds`` of wall time, or ``requests``
    requests when that is non-zero (``--quick``), whichever ends first."""

    seconds: float = 2.0
    requests: int = 0

    def limit(self) -> int:
        """The request count that ends a run (a very large number if none)."""
        return self.requests or 1 << 62

    def duration(self) -> float:
        """The wall time that ends a run (infinite when counting requests)."""
        return math.inf if self.requests else self.seconds


@dataclass(frozen=True)
class CellSpec:
    """Everything a cell process needs, passed to it as JSON."""

    scenario: str
    client: str
    base_url: str
    runs: int
    budget: Budget
    warmup: Budget
    cpu: int | None  # the core to pin the client to, or None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (see :meth:`from_json`)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellSpec:
        """The inverse of :meth:`to_json`."""
        data = dict(data)
        data["budget"] = Budget(**data["budget"])
        data["warmup"] = Budget(**data["warmup"])
        return cls(**data)


@dataclass
class Run:
    """One timed run: counts, wall time and CPU time (seconds).

    ``cpu`` is the whole process's CPU time (every thread: a transport's own
    worker threads count); ``caller_cpu`` is the CPU time of the threads that
    made the requests, so ``cpu - caller_cpu`` is work done elsewhere.
    """

    requests: int
    body_bytes: int
    wall: float
    cpu: float
    caller_cpu: float
    extra: dict[str, float] = field(default_factory=dict)

    def rate(self, unit: str) -> float:
        """Throughput in ``unit``: ``"req/s"`` or ``"MiB/s"`` (of bodies)."""
        if self.wall <= 0:
            return 0.0
        if unit == "MiB/s":
            return self.body_bytes / ONE_MIB / self.wall
        return self.requests / self.wall

    def cpu_per_request(self) -> float:
        """Process CPU seconds per request."""
        return self.cpu / self.requests if self.requests else 0.0

    def caller_cpu_per_request(self) -> float:
        """CPU seconds per request of the requesting threads alone."""
        return self.caller_cpu / self.requests if self.requests else 0.0
