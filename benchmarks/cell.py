"""One benchmark cell (one client in one scenario) in a process of its own,
so its peak RSS and CPU time are its own and no client inherits another's
threads or sockets.

Run as ``python -m benchmarks.cell '<CellSpec JSON>'``. The process pins
itself to the client core, builds the client, and then obeys one command
per line on standard input, answering each with one JSON line on standard
output, so the harness can interleave the runs of several clients:

- on start: ``{"event": "ready"}`` (or a final reply, see below);
- ``warmup`` or ``run``: ``{"event": "run", "run": {...}}`` (a :class:`Run`);
- ``stop`` or end of input: the client is closed, and the final reply is
  ``{"event": "done", "status": "ok", "peak_rss_kib": ..., ...}``.

A failure at any point ends the process with a final reply whose
``status`` is ``"skipped"`` (the client's library would not import) or
``"failed"`` (with ``error`` and ``traceback``).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import traceback
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from .clients import REGISTRY
from .registry import AsyncClient, ClientEntry, SyncClient
from .scenarios import SCENARIOS, Scenario
from .spec import Budget, CellSpec, Run

__all__ = ["main"]


def status_kib(field: str) -> int:
    """A number from this process's ``/proc/self/status`` (``VmRSS``,
    ``RssAnon``: KiB; ``Threads``: a count); 0 if the field is missing."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _reply(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def _commands(spec: CellSpec) -> Iterator[Budget]:
    """The budget of each ``warmup`` or ``run`` command, until ``stop``."""
    while True:
        command = sys.stdin.readline().strip()
        if command in ("stop", ""):
            return
        if command not in ("warmup", "run"):
            raise ValueError(f"unknown command {command!r}")
        yield spec.warmup if command == "warmup" else spec.budget


def _serve_sync(entry: ClientEntry, scenario: Scenario, spec: CellSpec) -> dict[str, float]:
    assert scenario.run is not None
    client: SyncClient = entry.make(scenario.options(spec.base_url))
    try:
        _reply(event="ready")
        for budget in _commands(spec):
            run: Run = scenario.run(client, budget)
            _reply(event="run", run=asdict(run))
        return client.stats()
    finally:
        client.close()


async def _serve_async(entry: ClientEntry, scenario: Scenario, spec: CellSpec) -> dict[str, float]:
    assert scenario.run is not None
    client: AsyncClient = await entry.make(scenario.options(spec.base_url))
    try:
        _reply(event="ready")
        # Reading stdin blocks the loop, but only between runs, when the
        # loop has nothing to do.
        for budget in _commands(spec):
            run: Run = await scenario.run(client, budget)
            _reply(event="run", run=asdict(run))
        return {}
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> None:
    """Serve the commands of the harness for the cell given as JSON."""
    args = sys.argv[1:] if argv is None else argv
    spec = CellSpec.from_json(json.loads(args[0]))
    if spec.cpu is not None:
        os.sched_setaffinity(0, {spec.cpu})
    rss_start = _peak_rss_kib()
    entry = REGISTRY[spec.client]
    scenario = SCENARIOS[spec.scenario]
    try:
        if entry.kind == "async":
            stats = asyncio.run(_serve_async(entry, scenario, spec))
        else:
            stats = _serve_sync(entry, scenario, spec)
    except ImportError as exc:
        _reply(event="done", status="skipped", note=f"import failed: {exc}")
        return
    except Exception as exc:
        tb = traceback.format_exc(limit=6)
        _reply(event="done", status="failed", error=repr(exc), traceback=tb)
        return
    _reply(
        event="done",
        status="ok",
        rss_start_kib=rss_start,
        peak_rss_kib=_peak_rss_kib(),
        client_stats=stats,
    )


if __name__ == "__main__":
    main()
