"""Drive the cell processes of one scenario, interleaving their runs.

Every client of a scenario gets its own process (:mod:`benchmarks.cell`),
all started up front and pinned to the client core. Runs go round-robin,
rotating the order each round (run 1: A B C, run 2: B C A, ...), so a
change in the machine's load (other work sharing the cores, frequency
changes) hits every client alike and the ratios between clients stay
fair. Only one client runs at a time; the others wait, idle.

The server's accepted-connection count is read before and after every
command, so each client is charged the connections it alone opened.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from .registry import ClientEntry
from .scenarios import Scenario
from .servers import ServerHandle, child_setup
from .spec import Budget, CellSpec

__all__ = ["Worker", "run_scenario"]

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0  # seconds for a cell process to import and build its client
SLACK = 60.0  # seconds a command may take beyond its budget before the cell is killed


def _cell_env() -> dict[str, str]:
    """The environment of a cell: no proxy, so no byte leaves 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


class Worker:
    """One cell process, driven one command at a time."""

    def __init__(self, spec: CellSpec) -> None:
        self.spec = spec
        self.stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.cell", json.dumps(spec.to_json())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            cwd=ROOT,
            env=_cell_env(),
            preexec_fn=child_setup(None),  # stops with the harness
        )
        self.warmup: dict[str, Any] | None = None
        self.runs: list[dict[str, Any]] = []
        self.connections: int | None = 0  # None once the server cannot tell
        self.final: dict[str, Any] | None = None  # the last reply, once there is one

    @property
    def alive(self) -> bool:
        """Whether the cell still takes commands."""
        return self.final is None

    def _stderr_tail(self) -> str:
        self.stderr.seek(0)
        lines = self.stderr.read().decode(errors="replace").strip().splitlines()
        return " / ".join(lines[-3:])

    def _reply(self, timeout: float) -> dict[str, Any]:
        stdout = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        line = stdout.readline() if ready else ""
        if line:
            reply: dict[str, Any] = json.loads(line)
            return reply
        if not ready:
            self.process.kill()
            return {"status": "failed", "error": f"no reply within {timeout:.0f}s"}
        self.process.wait()
        error = f"exit {self.process.returncode}: {self._stderr_tail()}"
        return {"status": "failed", "error": error}

    def start(self) -> None:
        """Wait until the client is built (or the cell gave up)."""
        reply = self._reply(START_TIMEOUT)
        if reply.get("event") != "ready":
            self.final = reply

    def command(self, name: str, budget: Budget, server: ServerHandle) -> None:
        """Send ``warmup`` or ``run`` and record the run it reports."""
        stdin = self.process.stdin
        assert stdin is not None and self.alive
        before = server.accepted()
        stdin.write(name + "\n")
        stdin.flush()
        reply = self._reply(min(budget.duration(), 3600.0) + SLACK)
        after = server.accepted()
        if reply.get("event") != "run":
            self.final = reply
            return
        if name == "warmup":
            self.warmup = reply["run"]
        else:
            self.runs.append(reply["run"])
        if before is None or after is None or self.connections is None:
            self.connections = None
        else:  # each /stats fetch is a connection too: the one before counts in `after`
            self.connections += after - before - 1

    def stop(self) -> dict[str, Any]:
        """Close the client, end the process; the cell's result record."""
        if self.alive:
            assert self.process.stdin is not None
            self.process.stdin.write("stop\n")
            self.process.stdin.flush()
            self.final = self._reply(SLACK)
        try:
            self.process.wait(SLACK)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.stderr):
            if stream is not None:
                stream.close()
        assert self.final is not None
        result = {"scenario": self.spec.scenario, "client": self.spec.client, **self.final}
        result.pop("event", None)
        if result["status"] == "ok" and self.warmup is not None:
            result["warmup"] = self.warmup
        result["runs"] = self.runs
        return result


def run_scenario(
    scenario: Scenario,
    entries: list[ClientEntry],
    server: ServerHandle,
    cell: dict[str, Any],
) -> list[tuple[dict[str, Any], int | None]]:
    """Run every client of ``scenario``, runs interleaved; each client's
    result record and the server connections it opened. ``cell`` holds
    the :class:`CellSpec` fields other than scenario, client and URL."""
    results: dict[str, tuple[dict[str, Any], int | None]] = {}
    workers: list[Worker] = []
    for entry in entries:
        base = {"scenario": scenario.key, "client": entry.name}
        missing = entry.missing()
        if missing:
            results[entry.name] = ({**base, "status": "skipped", "note": missing}, None)
            continue
        spec = CellSpec(scenario.key, entry.name, server.base_url, **cell)
        workers.append(Worker(spec))
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            if worker.alive:
                worker.command("warmup", worker.spec.warmup, server)
        for i in range(cell["runs"]):
            shift = i % max(len(workers), 1)
            for worker in workers[shift:] + workers[:shift]:
                if worker.alive:
                    worker.command("run", worker.spec.budget, server)
    finally:
        for worker in workers:
            results[worker.spec.client] = (worker.stop(), worker.connections)
    return [results[e.name] for e in entries]
