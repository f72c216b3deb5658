"""Command line: ``python -m poolwatch demo`` runs the seed experiment."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="poolwatch", description="An instrumented HTTP/1.1 connection pool."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run the seed experiment against a built-in loopback server",
        description="Four loops of five GETs (body read or not, closed or not); "
        "prints expected and measured worker counts. Exits 1 if any differs.",
    )
    demo.add_argument(
        "--client",
        choices=("native", "requests", "httpx"),
        default="native",
        help="make the requests with poolwatch's own API (default), or with "
        "requests or httpx over poolwatch",
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        return 0 if run_demo(sys.stdout, args.client) else 1
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
