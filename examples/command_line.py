"""The command line, driven from a script: ``poolwatch get -v`` fetches two
URLs on one transport (the second reuses the connection), then
``poolwatch stats --json`` watches the pools of another example while it
runs. Run: python examples/command_line.py"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from _server import local_server

HERE = Path(__file__).parent


def poolwatch(*args: str) -> str:
    """Run ``python -m poolwatch ARGS`` and return what it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "poolwatch", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def main() -> None:
    with local_server() as base:
        print(poolwatch("get", "-v", base + "/", base + "/bytes/100"))
    lines = poolwatch("stats", "--json", "--interval", "0.05", str(HERE / "stats_tour.py"))
    snapshots = [json.loads(line) for line in lines.splitlines() if line.startswith('[{"')]
    for row in snapshots[-1]:  # one row per transport and origin
        where, opened = f"#{row['transport']} {row['origin']}", row["connections_opened"]
        print(f"{where}: {row['requests']} requests on {opened} connection")


if __name__ == "__main__":
    main()
