"""How fast could any transport make requests and httpx? The floor under
the adapter targets.

``python -m benchmarks.floor`` measures, in one process and interleaved
round by round, the CPU time per request (every thread: poolwatch's
workers count) of each client library over:

- ``stock``: the library's own transport, against the loopback server;
- ``poolwatch``: poolwatch's adapter, against the same server;
- ``floor``: a transport that does no I/O at all and hands back a canned
  200 response shaped like the server's (same headers, same body size);
- ``over-raw``, ``over-raw-threads``, ``over-native``: the same canned
  answer, given only after an exchange with the server made by the raw
  socket loop (:class:`~benchmarks.rawsocket.RawSocketClient`), by the raw
  loop split across a writer and a reader thread as poolwatch splits a
  request (:class:`~benchmarks.rawsocket.ThreadedRawSocketClient`), or by
  poolwatch's own transport. Each is the library over that transport
  through an adapter that costs nothing.

The floor is what the library itself costs: building the request, cookies,
hooks, the response object and reading its body. No transport can make a
request cheaper than that, so ``stock / floor`` is the best CPU ratio over
the stock transport that any transport could reach. A transport must also
send and receive the bytes, and the library runs slower beside real I/O
than alone (its caches no longer hold only its own work), so ``stock /
over-raw`` is the best ratio a real transport could reach, ``stock /
over-raw-threads`` the best one with a writer and a reader thread per
connection, and ``stock / over-native`` what an adapter costing nothing
would reach over today's transport. The three clients are also measured
alone (``raw``, ``raw-threads``, ``native``), for scale. For a client bound
by its own CPU, throughput ratios are at most these CPU ratios.

As in the main benchmark, the server runs pinned to one core and the
measuring process to another (``--no-pin`` to leave both free): where
poolwatch's threads run changes what their hand-offs cost.

Scenarios: S1 (GET of 13 bytes), S2 (GET of 1 MiB), S5 (POST of 64 KiB)
for requests and httpx, S4 (64 asyncio tasks, GET of 13 bytes) for httpx's
``AsyncClient``, with aiohttp measured beside it for the target that
names it (there the ratios over the raw socket and over native are
estimated as the floor plus the raw loop, or plus poolwatch's
``AsyncTransport``, alone).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import importlib.util
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from .clients import (
    _httpx_client,
    _requests_client,
    make_aiohttp,
    make_httpx,
    make_httpx_async,
    make_httpx_async_poolwatch,
    make_httpx_poolwatch,
    make_poolwatch,
    make_poolwatch_async,
    make_raw,
    make_requests,
    make_requests_poolwatch,
)
from .rawsocket import ThreadedRawSocketClient
from .registry import AsyncClient, ClientOptions, SyncClient
from .scenarios import TASKS
from .servers import start_server
from .spec import ONE_MIB, POST_BODY, POST_REPLY, TINY_BODY

__all__ = ["TARGETS", "Target", "canned_response", "main", "measure"]

# The response heads nginx sends for the benchmark's paths (the Date is
# fixed: only the shape matters), and the bodies.
_HEADERS = [
    ("Server", "nginx/1.22.1"),
    ("Date", "Fri, 27 Nov 2026 03:00:00 GMT"),
    ("Content-Type", "text/plain"),
    ("Connection", "keep-alive"),
]
_BODIES = {"/tiny": TINY_BODY, "/1m": b"\0" * ONE_MIB, "/post": POST_REPLY}


def canned_response(path: str) -> tuple[list[tuple[str, str]], bytes]:
    """The headers and body the server would send for ``path``."""
    body = _BODIES[path]
    return [*_HEADERS, ("Content-Length", str(len(body)))], body


@dataclass(frozen=True)
class Target:
    """One adapter target: ``client`` over poolwatch at least ``ratio``
    times ``baseline`` in ``scenario``."""

    client: str  # "requests", "httpx" or "httpx-async"
    scenario: str
    ratio: float
    baseline: str = "stock"  # or "aiohttp"


TARGETS = (
    Target("requests", "S1", 1.3),
    Target("requests", "S2", 1.3),
    Target("requests", "S5", 1.3),
    Target("httpx", "S1", 2.0),
    Target("httpx", "S2", 3.0),
    Target("httpx-async", "S4", 40.0),
    Target("httpx-async", "S4", 0.7, baseline="aiohttp"),
)

SCENARIOS = {
    "S1": ("GET", "/tiny"),
    "S2": ("GET", "/1m"),
    "S5": ("POST", "/post"),
    "S4": ("GET", "/tiny"),
}
# Requests per sample, each about 0.1-0.5 s of CPU on the reference machine.
COUNTS = {"S1": 300, "S2": 40, "S5": 200, "S4": 4 * TASKS}


# -- the do-nothing transports -------------------------------------------------

ClientMaker = Callable[[ClientOptions], SyncClient]


@dataclass(frozen=True)
class _Exchanger:
    """A client that moves a request's bytes for a floor transport, whose
    answer is then the canned response as always."""

    client: SyncClient

    def exchange(self, method: str, path: str, body: bytes | None) -> None:
        if method == "POST":
            self.client.post(path, body or b"")
        else:
            self.client.get(path)


def _exchanger(under: ClientMaker | None, opts: ClientOptions) -> _Exchanger | None:
    """``under`` made for ``opts``: the floor transports measured over a
    real exchange (the raw socket loop, poolwatch's own transport) cost
    what the library costs over that transport with an adapter that
    costs nothing, the interplay of the two on the CPU included."""
    return None if under is None else _Exchanger(under(opts))


def floor_requests(opts: ClientOptions, *, under: ClientMaker | None = None) -> SyncClient:
    """``requests.Session`` over an adapter that answers without I/O, or
    after ``under``'s exchange with the server (see :func:`_exchanger`)."""
    import requests
    import requests.adapters
    import urllib3

    class _Original:
        """What cookie extraction and urllib3 read: the headers as a
        message, and whether the body is finished."""

        def __init__(self, headers: list[tuple[str, str]], body: io.BytesIO) -> None:
            self.msg = http.client.HTTPMessage()
            for name, value in headers:
                self.msg[name] = value
            self.body = body

        def isclosed(self) -> bool:
            return self.body.closed

        def close(self) -> None:
            self.body.close()

    wire = _exchanger(under, opts)

    class FloorAdapter(requests.adapters.BaseAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> requests.Response:
            if wire is not None:
                wire.exchange(request.method, request.path_url, request.body)
            headers, body = canned_response(request.path_url)
            fp = io.BytesIO(body)
            raw = urllib3.HTTPResponse(
                body=fp,
                headers=dict(headers),
                status=200,
                version=11,
                version_string="HTTP/1.1",
                reason="OK",
                preload_content=False,
                decode_content=False,
                original_response=_Original(headers, fp),  # type: ignore[arg-type]
                request_method=request.method,
                request_url=request.url,
                enforce_content_length=True,
            )
            return requests.adapters.HTTPAdapter.build_response(self, request, raw)  # type: ignore[arg-type]

        def close(self) -> None:
            if wire is not None:
                wire.client.close()

    session = requests.Session()
    session.mount("http://", FloorAdapter())
    return _requests_client(session, opts)


def _httpx_floor_response(request: Any) -> Any:
    import httpx

    headers, body = canned_response(request.url.path)
    return httpx.Response(
        200,
        headers=headers,
        stream=httpx.ByteStream(body),
        extensions={"http_version": b"HTTP/1.1", "reason_phrase": b"OK"},
    )


def floor_httpx(opts: ClientOptions, *, under: ClientMaker | None = None) -> SyncClient:
    """``httpx.Client`` over a transport that answers without I/O, or after
    ``under``'s exchange with the server (see :func:`_exchanger`)."""
    import httpx

    wire = _exchanger(under, opts)

    class FloorTransport(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if wire is not None:
                wire.exchange(request.method, request.url.raw_path.decode(), request.read())
            return _httpx_floor_response(request)  # type: ignore[no-any-return]

        def close(self) -> None:
            if wire is not None:
                wire.client.close()

    return _httpx_client(httpx.Client(transport=FloorTransport()), opts)


async def floor_httpx_async(opts: ClientOptions) -> AsyncClient:
    """``httpx.AsyncClient`` over a transport that answers without I/O."""
    import httpx

    class FloorTransport(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return _httpx_floor_response(request)  # type: ignore[no-any-return]

    client = httpx.AsyncClient(transport=FloorTransport())

    async def get(path: str) -> int:
        resp = await client.get(opts.base_url + path)
        return len(resp.content)

    return AsyncClient(get, client.aclose)


def make_raw_threads(opts: ClientOptions) -> SyncClient:
    """The raw socket loop split across a writer and a reader thread, as
    poolwatch splits a request: see :class:`ThreadedRawSocketClient`."""
    raw = ThreadedRawSocketClient(opts)
    return SyncClient(
        lambda path: raw.exchange("GET", path),
        lambda path, body: raw.exchange("POST", path, body),
        raw.close,
    )


# Measured beside each library's transports, for scale.
REFERENCES: dict[str, ClientMaker] = {
    "raw": make_raw,
    "raw-threads": make_raw_threads,
    "native": make_poolwatch,
}


def _transports(stock: ClientMaker, poolwatch: ClientMaker, floor: Any) -> dict[str, ClientMaker]:
    """A library's transports: its own, poolwatch's adapter, the floor, and
    the floor over each reference client."""
    return {
        "stock": stock,
        "poolwatch": poolwatch,
        "floor": floor,
        "over-raw": partial(floor, under=make_raw),
        "over-raw-threads": partial(floor, under=make_raw_threads),
        "over-native": partial(floor, under=make_poolwatch),
    }


SYNC_MAKERS: dict[str, dict[str, ClientMaker]] = {
    "requests": _transports(make_requests, make_requests_poolwatch, floor_requests),
    "httpx": _transports(make_httpx, make_httpx_poolwatch, floor_httpx),
}
ASYNC_MAKERS: dict[str, Callable[[ClientOptions], Awaitable[AsyncClient]]] = {
    "stock": make_httpx_async,
    "poolwatch": make_httpx_async_poolwatch,
    "floor": floor_httpx_async,
    "native": make_poolwatch_async,
}
if importlib.util.find_spec("aiohttp") is not None:  # the bench extra
    ASYNC_MAKERS["aiohttp"] = make_aiohttp


# -- measuring -------------------------------------------------------------


def _sync_sample(client: SyncClient, scenario: str, count: int) -> float:
    method, path = SCENARIOS[scenario]
    start = time.process_time()
    for _ in range(count):
        if method == "POST":
            client.post(path, POST_BODY)
        else:
            client.get(path)
    return (time.process_time() - start) / count


async def _async_sample(client: AsyncClient, count: int) -> float:
    per_task = max(1, count // TASKS)

    async def task() -> None:
        for _ in range(per_task):
            await client.get("/tiny")

    start = time.process_time()
    await asyncio.gather(*(task() for _ in range(TASKS)))
    return (time.process_time() - start) / (per_task * TASKS)


def _rotations(names: list[str], rounds: int) -> Iterator[list[str]]:
    for round_ in range(rounds):
        shift = round_ % len(names)
        yield names[shift:] + names[:shift]


def _measure_sync(
    base_url: str, library: str, scenario: str, rounds: int, count: int
) -> dict[str, list[float]]:
    opts = ClientOptions(base_url)
    makers = {**SYNC_MAKERS[library], **REFERENCES}
    clients = {name: make(opts) for name, make in makers.items()}
    samples: dict[str, list[float]] = {name: [] for name in clients}
    try:
        for client in clients.values():
            _sync_sample(client, scenario, max(1, count // 10))  # warm up
        for order in _rotations(list(clients), rounds):
            for name in order:
                samples[name].append(_sync_sample(clients[name], scenario, count))
    finally:
        for client in clients.values():
            client.close()
    return samples


async def _measure_async(base_url: str, rounds: int, count: int) -> dict[str, list[float]]:
    opts = ClientOptions(base_url, concurrency=TASKS)
    clients = {name: await make(opts) for name, make in ASYNC_MAKERS.items()}
    samples: dict[str, list[float]] = {name: [] for name in clients}
    try:
        for client in clients.values():
            await _async_sample(client, TASKS)  # warm up: one request a task
        for order in _rotations(list(clients), rounds):
            for name in order:
                samples[name].append(await _async_sample(clients[name], count))
    finally:
        for client in clients.values():
            await client.close()
    return samples


def measure(base_url: str, rounds: int, scale: float) -> dict[str, dict[str, list[float]]]:
    """CPU seconds per request, one sample a round, keyed by
    ``"library scenario"`` and then transport: ``stock``, ``poolwatch``,
    ``floor``, and for scale ``raw`` (the raw socket loop) and ``native``
    (poolwatch's own transport, no client library)."""
    results: dict[str, dict[str, list[float]]] = {}
    for scenario in ("S1", "S2", "S5"):
        count = max(1, round(COUNTS[scenario] * scale))
        for library in SYNC_MAKERS:
            if library == "httpx" and scenario == "S5":
                continue  # no httpx target names S5
            results[f"{library} {scenario}"] = _measure_sync(
                base_url, library, scenario, rounds, count
            )
    count = max(TASKS, round(COUNTS["S4"] * scale))
    samples = asyncio.run(_measure_async(base_url, rounds, count))
    results["httpx-async S4"] = {**samples, "raw": results["requests S1"]["raw"]}  # 13 bytes
    return results


# -- the report ------------------------------------------------------------


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}".replace(",", " ")


# Columns of the first table: (key, heading). The "over-" entries are the
# library over a floor transport that first makes the exchange with the
# named client; where one is missing the report estimates it as the floor
# plus that client alone.
_COLUMNS = (
    ("stock", "stock"),
    ("poolwatch", "poolwatch"),
    ("floor", "floor"),
    ("over-raw", "over raw socket"),
    ("over-raw-threads", "over raw threads"),
    ("over-native", "over native"),
    ("raw", "raw socket"),
    ("raw-threads", "raw threads"),
    ("native", "native"),
)
# The ladder of the second table: (key, alone, verdict if the ratio over it
# meets the target).
_LADDER = (
    ("over-native", "native", "with today's transport"),
    ("over-raw-threads", "raw-threads", "only with a transport of this design near its floor"),
    ("over-raw", "raw", "only with a transport near the raw socket loop"),
    ("floor", "", "only with no I/O"),
)


def _cpu(m: dict[str, float], key: str, alone: str) -> float | None:
    """``m[key]``, or where it was not measured, the floor plus ``alone``
    (``None`` if neither was)."""
    if key in m:
        return m[key]
    return m["floor"] + m[alone] if alone in m else None


def report(results: dict[str, dict[str, list[float]]]) -> str:
    """The markdown report: CPU per request, then each target against the
    best ratio each kind of transport could give."""
    median = {
        key: {name: statistics.median(values) for name, values in samples.items()}
        for key, samples in results.items()
    }
    lines = [
        "| library, scenario | " + " | ".join(heading for _, heading in _COLUMNS) + " |",
        "| --- |" + " --: |" * len(_COLUMNS),
    ]
    for key, m in median.items():
        cells = [_us(m[name]) if name in m else "-" for name, _ in _COLUMNS]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "CPU us per request (median): `floor` is the library over a transport that "
        "answers at once without I/O; `over X` the library over a transport that "
        "first makes the exchange with X (an adapter costing nothing); `raw socket` "
        "the raw socket loop alone, `raw threads` the same split across a writer "
        "and a reader thread as poolwatch splits a request, `native` poolwatch's "
        "transport alone. Below, the baseline's CPU over each: the best ratio each "
        "kind of transport could reach (where `over X` is missing, floor + X).",
        "",
        "| target | now | over native | over raw threads | over raw socket "
        "| best: floor | reachable? |",
        "| --- | --: | --: | --: | --: | --: | --- |",
    ]
    for target in TARGETS:
        found = median.get(f"{target.client} {target.scenario}")
        if found is None or target.baseline not in found:
            continue
        base = found[target.baseline]
        costs = [_cpu(found, key, alone) for key, alone, _ in _LADDER]
        ratios = [None if cost is None else base / cost for cost in costs]
        verdict = next(
            (
                says
                for (_, _, says), ratio in zip(_LADDER, ratios, strict=True)
                if ratio is not None and ratio >= target.ratio
            ),
            "no",
        )
        name = f"{target.client} {target.scenario} >= {target.ratio:g}x {target.baseline}"
        shown = " | ".join("-" if ratio is None else f"{ratio:.2f}x" for ratio in ratios)
        lines.append(f"| {name} | {base / found['poolwatch']:.2f}x | {shown} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply requests per sample")
    parser.add_argument("--server", choices=("auto", "nginx", "builtin"), default="auto")
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and client")
    args = parser.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    pin = len(cpus) >= 2 and not args.no_pin
    with start_server(args.server, cpu=cpus[0] if pin else None) as server:
        if pin:
            os.sched_setaffinity(0, {cpus[1]})  # this process, after the server started
        results = measure(server.base_url, args.rounds, args.scale)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        pinning = f"server on core {cpus[0]}, client on core {cpus[1]}" if pin else "unpinned"
        print(
            f"server: {server.description}; {pinning}; "
            f"{args.rounds} rounds, scale {args.scale:g}\n"
        )
        print(report(results))


if __name__ == "__main__":
    main()
