"""The command line: start the server, run each scenario's clients (each in
a process of its own, runs interleaved), and write the report.

``python -m benchmarks`` makes 5 runs of 2 s per client and scenario;
``--quick`` makes one run of a few hundred requests (a smoke test, not a
measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .clients import REGISTRY
from .driver import run_scenario
from .registry import ClientEntry
from .report import machine_description, markdown, pair_ratios, summarize, write_outputs
from .scenarios import SCENARIOS, Scenario
from .servers import ServerHandle, start_server
from .spec import Budget

__all__ = ["budget_text", "main", "parse_args"]

ROOT = Path(__file__).resolve().parent.parent
QUICK_REQUESTS = 300  # --quick: requests per run, unless --requests says otherwise
NOTES = [
    "- Runs are interleaved round-robin across the clients of a scenario (order "
    "rotated each round), so load changes on the machine hit all clients alike.",
    "- While other clients run, a client's connections sit idle for several "
    "seconds: httpx (httpcore closes connections idle for 5 s) reconnects once a "
    "run, which its connection count shows.",
    "- S4 runs its clients on the default asyncio event loop (not uvloop).",
    "- Clients use stock settings, except urllib3's pool sized to the threads "
    "and poolwatch's idle limit raised to them (S3) or to the tasks (S4, native "
    "asyncio transport; aiohttp keeps all 64).",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options; see ``python -m benchmarks --help``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="1 run of a few hundred requests")
    p.add_argument("--runs", type=int, default=None, help="runs per cell (default 5)")
    p.add_argument("--seconds", type=float, default=2.0, help="seconds per run (default 2)")
    p.add_argument("--requests", type=int, default=0, help="requests per run instead of time")
    p.add_argument("--warmup", type=float, default=0.2, help="warmup seconds per cell")
    p.add_argument("--server", choices=("auto", "nginx", "builtin"), default="auto")
    p.add_argument(
        "--clients", default="", help=f"comma-separated (* = only when named): {_names()}"
    )
    p.add_argument("--scenarios", default="", help="comma-separated keys (S1..S7), default all")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--no-pin", action="store_true", help="do not pin server and client")
    p.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    return p.parse_args(argv)


def _names() -> str:
    return ", ".join(f"{n}{'' if e.default else '*'}" for n, e in REGISTRY.items())


def _budgets(args: argparse.Namespace) -> tuple[int, Budget, Budget]:
    if args.quick:
        requests = args.requests or QUICK_REQUESTS
        return args.runs or 1, Budget(requests=requests), Budget(requests=min(5, requests))
    budget = Budget(seconds=args.seconds, requests=args.requests)
    return args.runs or 5, budget, Budget(seconds=args.warmup)


def budget_text(budget: Budget) -> str:
    """``2 s`` or ``300 requests``."""
    return f"{budget.requests} requests" if budget.requests else f"{budget.seconds:g} s"


def _run(
    scenario: Scenario, entries: list[ClientEntry], server: ServerHandle, cell: dict[str, Any]
) -> list[tuple[dict[str, Any], int | None]]:
    """The scenario's results: one row for a stub, else one per client of
    the scenario's kind."""
    if scenario.kind == "stub":
        stub = {"scenario": scenario.key, "client": "-", "status": "not measured"}
        return [({**stub, "note": scenario.note}, None)]
    mine = [e for e in entries if e.kind == scenario.kind]
    return run_scenario(scenario, mine, server, cell)


def _progress(result: dict[str, Any], conns: int | None) -> str:
    label = f"{result['scenario']} {result['client']:<20}"
    if result["status"] != "ok":
        return f"{label} {result['status']}: {result.get('note') or result.get('error')}"
    runs = result["runs"]
    total = sum(r["requests"] for r in runs)
    return f"{label} ok: {total:,} requests in {len(runs)} runs, {conns} server connections"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 1 if any cell failed, 2 on bad arguments, else 0."""
    args = parse_args(argv)
    runs, budget, warmup = _budgets(args)
    names = [n for n in args.clients.split(",") if n]
    names = names or [n for n, e in REGISTRY.items() if e.default]
    keys = [k.upper() for k in args.scenarios.split(",") if k] or list(SCENARIOS)
    if any(n not in REGISTRY for n in names) or any(k not in SCENARIOS for k in keys):
        print(f"unknown client or scenario; clients: {_names()}", file=sys.stderr)
        return 2
    cpus = sorted(os.sched_getaffinity(0))
    pin = len(cpus) >= 2 and not args.no_pin
    server_cpu, client_cpu = (cpus[0], cpus[1]) if pin else (None, None)
    pinning = f"server on core {server_cpu}, client on core {client_cpu}" if pin else "unpinned"
    cell = {"runs": runs, "budget": budget, "warmup": warmup, "cpu": client_cpu}
    entries = [REGISTRY[n] for n in names]
    results: list[tuple[dict[str, Any], int | None]] = []
    load_before = os.getloadavg()[0]
    with start_server(args.server, server_cpu) as server:
        server_pid = server.pid
        machine = machine_description(server.description, pinning)
        print(json.dumps(machine, indent=2), flush=True)
        for scenario in (SCENARIOS[k] for k in keys):
            for result, conns in _run(scenario, entries, server, cell):
                results.append((result, conns))
                print(_progress(result, conns), flush=True)
    rows = summarize(results)
    config = {
        "runs": runs,
        "budget": budget_text(budget),
        "warmup": budget_text(warmup),
        "quick": args.quick,
        "load_average": [load_before, os.getloadavg()[0]],  # 1-minute, before and after
        "server_pid": server_pid,  # stopped by now: the smoke test checks
        "notes": NOTES,
    }
    text = markdown(machine, config, rows)
    print(text)
    cells = [{**result, "server_connections": conns} for result, conns in results]
    document = {
        "machine": machine,
        "config": config,
        "rows": rows,
        "pairs": pair_ratios(rows),
        "cells": cells,
    }
    for path in write_outputs(args.out, text, document, rows, not args.no_chart):
        print(f"wrote {path}")
    return 1 if any(r["status"] == "failed" for r in rows) else 0
