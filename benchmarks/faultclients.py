"""The stress run's mix through requests and httpx, over poolwatch's
adapters (``python -m benchmarks.stress --client requests|httpx``): the
same plans as :mod:`benchmarks.faultload`, made the way a user of each
library makes them, with a streamed response.

A user of requests catches ``requests.RequestException`` (and urllib3's
errors from ``resp.raw``); a user of httpx catches ``httpx.HTTPError`` and
``httpx.StreamError``. Any other exception, a poolwatch one included,
breaks the drop-in promise and is a violation. The transport's retries of
each call (R13) are counted from its events, which name the request's URL:
each call's URL carries its id in the query, which the fault server
ignores.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import poolwatch

from .faultload import Call, Context, Operation, Plan, Violation, cancelled_at
from .faultserver import FaultServer

__all__ = [
    "CLIENTS",
    "PROXY_KINDS",
    "LibraryClient",
    "acall_once_with",
    "add_run_arguments",
    "call_once_with",
    "check_run_arguments",
    "report_name",
    "run_async",
    "unproxied",
    "warm_loop",
]

T = TypeVar("T")

CLIENTS = ("requests", "httpx")
# What --proxy takes: the relaying proxy's URL scheme.
PROXY_KINDS = ("http", "socks5", "socks5h", "socks4", "socks4a")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options a stress or soak run shares: ``--tls`` and ``--proxy``
    (see :func:`~benchmarks.faultserver.start_fault_server`) and
    ``--client``."""
    parser.add_argument(
        "--tls",
        action="store_true",
        help="over https: the fault server speaks TLS with a certificate made for the run",
    )
    parser.add_argument(
        "--proxy",
        nargs="?",
        const="http",
        choices=PROXY_KINDS,
        help="through a relaying proxy (benchmarks.pipeproxy): http (the default; CONNECT "
        "tunnels with --tls) or SOCKS",
    )
    parser.add_argument(
        "--client",
        choices=("native", *CLIENTS),
        default="native",
        help="make the calls through requests or httpx (httpx.AsyncClient with --async)",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="with --async: the event loop (uvloop: pip install uvloop)",
    )


def check_run_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse what cannot run: requests has no asyncio client, and only an
    asyncio run has an event loop to choose."""
    if args.use_async and args.client == "requests":
        parser.error("--client requests has no asyncio client: use httpx with --async")
    if args.loop != "asyncio" and not args.use_async:
        parser.error(f"--loop {args.loop} needs --async")


def run_async(main: Coroutine[Any, Any, T], loop: str) -> T:
    """Run ``main`` to completion on a new event loop of the kind named
    (``"asyncio"`` or ``"uvloop"``), as :func:`asyncio.run` does."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def warm_loop(loop: str) -> None:
    """Run an empty coroutine on the loop kind named: uvloop keeps a pipe
    of its own open from its first run on, which a run's count of open file
    descriptors must not charge to poolwatch."""
    run_async(asyncio.sleep(0), loop)


def report_name(base: str, args: argparse.Namespace) -> str:
    """The report's file name for a run named ``base`` with ``args``, e.g.
    ``stress-async-tls-proxy.json`` or ``stress-requests.json``."""
    parts = [base, args.client, "async" if args.use_async else ""]
    parts += ["uvloop" if args.loop == "uvloop" else ""]
    proxy = {None: "", "http": "proxy"}.get(args.proxy, args.proxy)
    parts += ["tls" if args.tls else "", proxy]
    return "-".join(part for part in parts if part and part != "native") + ".json"


def unproxied(stats: poolwatch.PoolStats, server: FaultServer) -> list[str]:
    """A violation if the run goes through a proxy and some calls went
    straight to the server instead: the stats name each origin's proxy
    (its scheme may differ: httpx's adapter, as httpcore, has a
    ``socks5://`` proxy resolve names, ``socks5h``)."""
    if server.proxy is None:
        return []
    address = urlsplit(server.proxy).netloc
    direct = [
        origin
        for origin in stats.per_origin
        if urlsplit(origin.partition(" via ")[2]).netloc != address
    ]
    return [f"calls went past the proxy: {direct}"] if direct else []


class LibraryClient:
    """requests or httpx over a poolwatch transport, for the fault
    ``server``, counting the transport's retries per call id. requests is
    given the server's certificate authority and proxy with each request,
    httpx the proxy once (its transport's; the context is the poolwatch
    transport's)."""

    def __init__(
        self,
        name: str,
        transport: poolwatch.Transport | poolwatch.AsyncTransport,
        server: FaultServer,
    ) -> None:
        self.name = name
        ca_file = server.ca_file()
        # Per request: REQUESTS_CA_BUNDLE would override a session's verify.
        self.verify: str | bool = True if ca_file is None else ca_file
        proxy = server.proxy  # httpx: the transport's; requests: per request
        self._retries: dict[str, int] = {}
        self._lock = threading.Lock()
        self.session: Any  # requests.Session, httpx.Client or httpx.AsyncClient
        self.documented: tuple[type[BaseException], ...]  # the library's errors
        transport.add_listener(self._on_event)
        if isinstance(transport, poolwatch.AsyncTransport):
            if name != "httpx":
                raise ValueError(f"{name} has no asyncio client: only httpx")
            import httpx

            from poolwatch.adapters.httpx import AsyncHTTPXTransport

            self.session = httpx.AsyncClient(
                transport=AsyncHTTPXTransport(proxy=proxy, transport=transport)
            )
            self.documented = (httpx.HTTPError, httpx.StreamError)
        elif name == "requests":
            import requests
            import urllib3

            from poolwatch.adapters.requests import RequestsAdapter

            self.session = requests.Session()
            adapter = RequestsAdapter(transport=transport)
            self.session.mount("http://", adapter)
            self.session.mount("https://", adapter)
            self.documented = (
                requests.RequestException,
                urllib3.exceptions.HTTPError,
            )
        elif name == "httpx":
            import httpx

            from poolwatch.adapters.httpx import HTTPXTransport

            self.session = httpx.Client(transport=HTTPXTransport(proxy=proxy, transport=transport))
            self.documented = (httpx.HTTPError, httpx.StreamError)
        else:
            raise ValueError(f"unknown client {name!r}: one of {', '.join(CLIENTS)}")

    def _on_event(self, event: poolwatch.Event) -> None:
        if event.name == "retry" and event.url:
            request_id = parse_qs(urlsplit(event.url).query).get("id", [""])[0]
            with self._lock:
                self._retries[request_id] = self._retries.get(request_id, 0) + 1

    def retries_of(self, request_id: str) -> int:
        """How often the transport retried the call ``request_id``."""
        with self._lock:
            return self._retries.pop(request_id, 0)

    def perform(self, ctx: Context, plan: Plan) -> str:
        """Carry out ``plan`` with the library; its result."""
        url, headers = _address(ctx, plan)
        body = iter(plan.body) if isinstance(plan.body, tuple) else plan.body
        if self.name == "requests":
            proxy = ctx.server.proxy
            resp = self.session.request(
                plan.method, url, data=body, headers=headers,
                timeout=(ctx.timeout.connect, ctx.timeout.read), stream=True,
                proxies={"http": proxy, "https": proxy} if proxy else {}, verify=self.verify,
            )  # fmt: skip
            if plan.read == "drop":
                del resp
                return plan.result
            with resp:
                plan.check_status(resp.status_code)
                if plan.read == "none":
                    return plan.result
                if plan.read == "chunks":
                    got = b"".join(resp.iter_content(1024))
                elif plan.read == "first":
                    got = resp.raw.read(len(plan.expect or b""))
                else:
                    got = resp.content
            return plan.verdict(got)
        request = self._httpx_request(ctx, plan, url, headers, body)
        response = self.session.send(request, stream=True)
        if plan.read == "drop":
            del response
            return plan.result
        try:
            plan.check_status(response.status_code)
            if plan.read == "none":
                return plan.result
            want = len(plan.expect or b"")
            if plan.read in ("chunks", "first"):
                pieces = response.iter_bytes(1024 if plan.read == "chunks" else want or 1)
                got = b"".join(pieces) if plan.read == "chunks" else next(pieces, b"")[:want]
            else:
                got = response.read()
        finally:
            response.close()
        return plan.verdict(got)

    async def aperform(self, ctx: Context, plan: Plan) -> str:
        """Carry out ``plan`` with ``httpx.AsyncClient``; its result."""
        url, headers = _address(ctx, plan)
        body = _parts(plan.body) if isinstance(plan.body, tuple) else plan.body
        request = self._httpx_request(ctx, plan, url, headers, body)
        response = await self.session.send(request, stream=True)
        if plan.read == "drop":
            del response
            return plan.result
        try:
            plan.check_status(response.status_code)
            if plan.read == "none":
                return plan.result
            want = len(plan.expect or b"")
            if plan.read == "chunks":
                got = b"".join([piece async for piece in response.aiter_bytes(1024)])
            elif plan.read == "first":
                got = b""
                async for piece in response.aiter_bytes(want or 1):
                    got = piece[:want]
                    break  # then closed early
            else:
                got = await response.aread()
        finally:
            await response.aclose()
        return plan.verdict(got)

    def _httpx_request(
        self, ctx: Context, plan: Plan, url: str, headers: dict[str, str], body: Any
    ) -> Any:
        """The ``httpx.Request`` for ``plan``, under the run's limits."""
        import httpx

        limits = ctx.timeout
        timeout = httpx.Timeout(
            connect=limits.connect, read=limits.read, write=limits.write, pool=limits.pool
        )
        return self.session.build_request(
            plan.method, url, content=body, headers=headers, timeout=timeout
        )

    def classify(self, exc: BaseException) -> tuple[str, str, str]:
        """Result, error and violation for a call that raised ``exc``."""
        if isinstance(exc, Violation):
            return "violation", "", str(exc)
        if isinstance(exc, self.documented):
            return type(exc).__name__, str(exc), ""
        what = "a poolwatch error" if isinstance(exc, poolwatch.PoolwatchError) else "an error"
        return "violation", "", f"{what} outside {self.name}'s API: {type(exc).__name__}: {exc}"

    def close(self) -> None:
        """Close the session (the transport is closed by its owner)."""
        self.session.close()

    async def aclose(self) -> None:
        """Close the asyncio session (the transport is closed by its owner)."""
        await self.session.aclose()


def _address(ctx: Context, plan: Plan) -> tuple[str, dict[str, str]]:
    """The call's URL (its id in the query, for the retry count) and headers."""
    url = f"{ctx.url(plan)}?id={ctx.request_id}"
    return url, {"X-Request-Id": ctx.request_id, **plan.extra}


async def _parts(parts: tuple[bytes, ...]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def call_once_with(client: LibraryClient, ctx: Context, op: Operation) -> Call:
    """Run ``op`` once through ``client`` and record it; an exception
    outside the library's API is recorded as a violation, never raised."""
    start = time.monotonic()
    try:
        result, error, violation = client.perform(ctx, op.plan(ctx)), "", ""
    except Exception as exc:
        result, error, violation = client.classify(exc)
    wall = time.monotonic() - start
    retries = client.retries_of(ctx.request_id)
    return Call(op.name, ctx.request_id, result, wall, retries, error, violation)


async def acall_once_with(
    client: LibraryClient, ctx: Context, op: Operation, cancel_after: float | None = None
) -> Call:
    """As :func:`call_once_with` on the asyncio transport, cancelled after
    ``cancel_after`` seconds as :func:`~benchmarks.faultload.acall_once`."""
    start = time.monotonic()
    plan = op.plan(ctx)
    if cancel_after is None:
        try:
            result, error, violation = await client.aperform(ctx, plan), "", ""
        except Exception as exc:
            result, error, violation = client.classify(exc)
    else:
        call = client.aperform(ctx, plan)
        result, error, violation = await cancelled_at(call, cancel_after, client.classify)
    wall = time.monotonic() - start
    retries = client.retries_of(ctx.request_id)
    return Call(op.name, ctx.request_id, result, wall, retries, error, violation)
