"""``python -m poolwatch get``: fetch URLs through one transport and show each
phase, its timing, and whether the connection was reused."""

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
    """Run ``target`` in a thread and print every live transport's stats per
    origin each ``interval`` seconds until it returns, then once more. The
    exit status is the load's: 0, the code it passed to ``sys.exit()``, 1 if
    it raised, 130 after Ctrl-C (the load, in a daemon thread, ends with
    the process)."""
    done = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    numbers = Numbers()
    thread = threading.Thread(target=run, name="poolwatch-stats-target", daemon=True)
    thread.start()
    try:
        while not done.wait(interval):
            _print_stats(out, as_json, numbers)
    except KeyboardInterrupt:
        _print_stats(out, as_json, numbers)
        print("* interrupted", file=out)
        return 130
    thread.join()
    _print_stats(out, as_json, numbers)
    if not failure:
        return 0
    error = failure[0]
    if isinstance(error, SystemExit):  # the script's own exit status
        if error.code is None or isinstance(error.code, int):
            return error.code or 0
        print(f"* the load exited: {error.code}", file=out)
        return 1
    print(f"* the load failed: {error!r}", file=out)
    return 1


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


_ORIGIN_WIDTH = 30  # with the transport's number and the columns: 80 wide
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
    header = f"{'tr':>2} {'origin':<{_ORIGIN_WIDTH}} "
    lines = [header + "".join(f"{label:>5}" for _, label in _COLUMNS)]
    for number, origin, stats in rows:
        values = "".join(f"{getattr(stats, name):>5}" for name, _ in _COLUMNS)
        shown = origin if len(origin) <= _ORIGIN_WIDTH else origin[: _ORIGIN_WIDTH - 1] + "~"
        lines.append(f"{number:>2} {shown:<{_ORIGIN_WIDTH}} {values}")
    out.write("\n".join(lines) + "\n\n")
