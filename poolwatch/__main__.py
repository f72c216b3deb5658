"""Command line: ``python -m poolwatch demo`` runs the seed experiment;
``python -m poolwatch get URL...`` shows how requests use connections."""

from __future__ import annotations

import argparse
import os
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
        choices=("native", "requests", "httpx", "httpx-async"),
        default="native",
        help="make the requests with poolwatch's own API (default), or with "
        "requests or httpx over poolwatch",
    )
    get = commands.add_parser(
        "get",
        help="GET URLs on one transport, showing each phase and connection reuse",
        description="Fetch each URL in turn through one transport, like curl -v, "
        "showing phase timings and whether the connection was reused. Bodies are "
        "read and counted, not printed.",
    )
    get.add_argument("urls", nargs="+", metavar="URL")
    get.add_argument("-v", "--verbose", action="store_true", help="phases and headers")
    get.add_argument("--json", action="store_true", help="machine-readable output")
    stats = commands.add_parser(
        "stats",
        help="print a table of every pool's stats while a script or the demo runs",
        description="Run a Python script (or the seed demo's load) and print "
        "every poolwatch transport's stats per origin while it runs.",
    )
    load = stats.add_mutually_exclusive_group(required=True)
    load.add_argument(
        "script", nargs="?", help="a Python script to run (poolwatch's options come first)"
    )
    load.add_argument("--demo", action="store_true", help="run the seed demo's load")
    stats.add_argument(
        "--interval", type=_seconds, default=0.5, help="seconds between tables (> 0)"
    )
    stats.add_argument("--json", action="store_true", help="one JSON array per line")
    stats.add_argument(
        "script_args", nargs=argparse.REMAINDER, help="arguments for the script (its sys.argv)"
    )
    args = parser.parse_args(argv)
    if args.command == "stats":
        import io
        import runpy

        from ._cli import watch_stats
        from ._demo import run_demo

        def target() -> object:
            if args.demo:
                return run_demo(io.StringIO())
            # As ``python SCRIPT ARG...``: its own argv, its folder importable.
            saved, sys.argv = sys.argv, [args.script, *args.script_args]
            sys.path.insert(0, os.path.dirname(os.path.abspath(args.script)))
            try:
                return runpy.run_path(args.script, run_name="__main__")
            finally:
                sys.argv = saved
                del sys.path[0]

        return watch_stats(target, sys.stdout, interval=args.interval, as_json=args.json)
    if args.command == "get":
        from ._cli import get_urls

        return get_urls(args.urls, sys.stdout, verbose=args.verbose, as_json=args.json)
    if args.command == "demo":
        from ._demo import run_demo

        return 0 if run_demo(sys.stdout, args.client) else 1
    return 2  # pragma: no cover - argparse rejects unknown commands


def _seconds(text: str) -> float:
    """A positive, finite number of seconds, for argparse."""
    from ._core.pool import is_duration

    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not is_duration(value):
        raise argparse.ArgumentTypeError(f"not a number of seconds above 0: {text!r}")
    return value


if __name__ == "__main__":
    sys.exit(main())
