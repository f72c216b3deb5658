"""``python -m poolwatch get``: fetch URLs through one transport and show each
phase, its timing, and whether the connection was reused. ``python -m
poolwatch stats``: run a load and print every pool's stats while it runs."""

from __future__ import annotations

import itertools
import json
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from ._exceptions import PoolwatchError, redact_url
from ._sync.response import Timings
from ._sync.transport import Transport, live_transports

__all__ = ["get_urls", "watch_stats"]

_PHASES = (
    ("connected", "connected"),
    ("tls_done", "TLS handshake done"),
    ("got_connection", "got connection"),
    ("request_written", "request written"),
    ("first_byte", "first response byte"),
    ("response_head", "response head"),
)


def get_urls(
    urls: Sequence[str], out: TextIO, *, verbose: bool = False, as_json: bool = False
) -> int:
    """GET each URL in turn on one transport; print what happened. Returns
    the exit status: 0 if every request got a response."""
    records = []
    failed = False
    with Transport() as transport:
        for url in urls:
            record = _fetch(transport, url)
            failed = failed or "error" in record
            records.append(record)
            if not as_json:
                _print_record(record, out, verbose)
        stats = transport.stats()
    if as_json:
        json.dump({"requests": records, "stats": stats.as_dict()}, out, indent=2)
        print(file=out)
    else:
        print(
            f"* {stats.requests} requests, {stats.connections_opened} connections opened, "
            f"{stats.reused_requests} reused",
            file=out,
        )
    return 1 if failed else 0


def _fetch(transport: Transport, url: str) -> dict[str, Any]:
    given, url = url, redact_url(url)  # printed without its password
    try:
        resp = transport.request("GET", given)
    except PoolwatchError as exc:
        return {"url": url, "error": f"{type(exc).__name__}: {exc}"}
    with resp:
        try:
            size = len(resp.read())
        except PoolwatchError as exc:
            return {"url": url, "status": resp.status, "error": f"{type(exc).__name__}: {exc}"}
    timings = resp.timings
    return {
        "url": url,
        "status": resp.status,
        "reason": resp.reason,
        "http_version": resp.http_version,
        "headers": list(resp.headers.iteritems()),
        "bytes": size,
        "connection": resp.connection_id,
        "reused": timings.reused,
        "outcome": resp.outcome,
        "timings_ms": _milliseconds(timings),
    }


def _milliseconds(timings: Timings) -> dict[str, float | None]:
    fields = [name for name, _ in _PHASES] + ["body_done"]
    return {
        name: None if (value := getattr(timings, name)) is None else round(value * 1000, 3)
        for name in fields
    }


def _print_record(record: dict[str, Any], out: TextIO, verbose: bool) -> None:
    url = record["url"]
    if "connection" not in record:
        print(f"* GET {url} failed: {record['error']}", file=out)
        return
    how = "reused" if record["reused"] else "new"
    print(f"* GET {url} on connection #{record['connection']} ({how})", file=out)
    timings = record["timings_ms"]
    if verbose:
        for name, label in _PHASES:
            if timings[name] is not None:
                print(f"*   {label:<20} {timings[name]:9.3f} ms", file=out)
        print(f"< {record['http_version']} {record['status']} {record['reason']}", file=out)
        for name, value in record["headers"]:
            print(f"< {name}: {value}"[:79], file=out)
    print(
        f"*   {'body done':<20} {timings['body_done']:9.3f} ms  "
        f"{record['bytes']} bytes, {record['outcome']}",
        file=out,
    )


def watch_stats(
    target: Callable[[], object], out: TextIO, *, interval: float = 0.5, as_json: bool = False
) -> int:
    """Run ``target`` on the calling thread (for the command, the main
    thread: a script may install signal handlers) while a thread of the
    watcher's own prints every live transport's stats per origin each
    ``interval`` seconds; once it returns, print them once more. The exit
    status is the load's: 0, the code it passed to ``sys.exit()``, 1 if it
    raised, 130 if Ctrl-C (``KeyboardInterrupt``) ended it."""
    numbers = Numbers()
    printer = _Printer(out, interval, as_json, numbers)
    printer.start()
    error: BaseException | None = None
    try:
        try:
            target()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit included: the script's status
            error = exc
        printer.stop()
        _print_stats(out, as_json, numbers)
    except KeyboardInterrupt:
        printer.stop()  # again, had Ctrl-C come before it was stopped
        _print_stats(out, as_json, numbers)
        print("* interrupted", file=out)
        return 130
    if error is None:
        return 0
    if isinstance(error, SystemExit):  # the script's own exit status
        if error.code is None or isinstance(error.code, int):
            return error.code or 0
        print(f"* the load exited: {error.code}", file=out)
        return 1
    print(f"* the load failed: {error!r}", file=out)
    return 1


class _Printer:
    """The thread that prints a snapshot every interval while the load runs
    on the calling thread. Failing to print (standard output closed) ends
    it; :meth:`stop` raises that failure."""

    def __init__(self, out: TextIO, interval: float, as_json: bool, numbers: Numbers) -> None:
        self._out = out
        self._interval = interval
        self._as_json = as_json
        self._numbers = numbers
        self._stopping = threading.Event()
        self._failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="poolwatch-stats", daemon=True)

    def start(self) -> None:
        """Start printing."""
        self._thread.start()

    def stop(self) -> None:
        """Stop printing; return once the thread has ended, with any
        snapshot it was printing out. Raises what made it fail, if
        anything did."""
        self._stopping.set()
        self._thread.join()
        if self._failure:
            raise self._failure.pop()

    def _run(self) -> None:
        try:
            while not self._stopping.wait(self._interval):
                _print_stats(self._out, self._as_json, self._numbers)
        except BaseException as exc:
            self._failure.append(exc)


class Numbers:
    """The number each transport is shown with, given on first sight and
    never given again (not even once the transport is gone)."""

    def __init__(self) -> None:
        self._given: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()
        self._next = itertools.count(1)

    def of(self, transport: object) -> int:
        """``transport``'s number."""
        number = self._given.get(transport)
        if number is None:
            number = self._given[transport] = next(self._next)
        return number


_LINE_WIDTH = 80  # a table fits in this while its numbers leave room
_ORIGIN_WIDTH = 30  # origins are cut to no less than this to fit it
_COLUMNS = (
    ("open_connections", "open"),
    ("idle_connections", "idle"),
    ("active_connections", "actv"),
    ("workers_alive", "wrkr"),
    ("requests", "reqs"),
    ("reused_requests", "reus"),
    ("open_bodies", "body"),
    ("bodies_leaked", "leak"),
    ("waiting_requests", "wait"),
)


def _print_stats(out: TextIO, as_json: bool, numbers: Numbers) -> None:
    """One snapshot: a row per transport and origin, the transport named by
    a number that stays its own (two may serve one origin)."""
    rows = []
    for transport in live_transports():
        number = numbers.of(transport)
        for origin, stats in transport.stats().per_origin.items():
            rows.append((number, origin, stats))
    # Each snapshot goes out in one write: the program being watched prints
    # from its own threads, and print() writes a line and its end apart.
    if as_json:
        records = [
            {"transport": number, "origin": origin, **stats.as_dict()}
            for number, origin, stats in rows
        ]
        out.write(json.dumps(records) + "\n")
        return
    cells = [
        [str(number), origin, *(str(getattr(stats, name)) for name, _ in _COLUMNS)]
        for number, origin, stats in rows
    ]
    out.write("\n".join(_table(cells)) + "\n\n")


def _table(cells: Sequence[Sequence[str]]) -> list[str]:
    """The header and a line per row of ``cells`` (the transport's number,
    the origin, then a value per column of :data:`_COLUMNS`): each column
    as wide as its widest entry, numbers aligned right, origins left and
    cut with ``~`` only where the line would not fit in
    :data:`_LINE_WIDTH` (and never below :data:`_ORIGIN_WIDTH`)."""
    header = ["tr", "origin", *(label for _, label in _COLUMNS)]
    widths = [max(len(text) for text in column) for column in zip(header, *cells, strict=True)]
    # Two spaces after the origin, one between the other columns.
    beside = sum(widths) - widths[1] + len(widths)
    widths[1] = min(widths[1], max(_ORIGIN_WIDTH, _LINE_WIDTH - beside))

    def line(row: Sequence[str]) -> str:
        number, origin, *values = row
        if len(origin) > widths[1]:
            origin = origin[: widths[1] - 1] + "~"
        columns = zip(values, widths[2:], strict=True)
        numbers = " ".join(value.rjust(width) for value, width in columns)
        return f"{number.rjust(widths[0])} {origin.ljust(widths[1])}  {numbers}"

    return [line(row) for row in [header, *cells]]
