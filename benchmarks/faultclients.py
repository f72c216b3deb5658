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

import threading
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import poolwatch

from .faultload import Call, Context, Operation, Plan, Violation, cancelled_at

__all__ = ["CLIENTS", "LibraryClient", "acall_once_with", "call_once_with"]

CLIENTS = ("requests", "httpx")


class LibraryClient:
    """requests or httpx over a poolwatch transport, counting the
    transport's retries per call id; ``ca_file`` is the certificate
    authority requests must trust for https (httpx takes the transport's
    context)."""

    def __init__(
        self,
        name: str,
        transport: poolwatch.Transport | poolwatch.AsyncTransport,
        ca_file: str | None = None,
    ) -> None:
        self.name = name
        # Per request: REQUESTS_CA_BUNDLE would override a session's verify.
        self.verify: str | bool = True if ca_file is None else ca_file
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

            self.session = httpx.AsyncClient(transport=AsyncHTTPXTransport(transport=transport))
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

            self.session = httpx.Client(transport=HTTPXTransport(transport=transport))
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
        url = f"{ctx.server.url(plan.path)}?id={ctx.request_id}"
        headers = {"X-Request-Id": ctx.request_id, **plan.extra}
        body = iter(plan.body) if isinstance(plan.body, tuple) else plan.body
        limits = ctx.timeout
        proxies = {"http": ctx.server.proxy, "https": ctx.server.proxy} if ctx.server.proxy else {}
        if self.name == "requests":
            timeout = (limits.connect, limits.read)
            resp = self.session.request(
                plan.method, url, data=body, headers=headers, timeout=timeout,
                stream=True, proxies=proxies, verify=self.verify,
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
        import httpx

        request = self.session.build_request(
            plan.method, url, content=body, headers=headers,
            timeout=httpx.Timeout(
                connect=limits.connect, read=limits.read, write=limits.write, pool=limits.pool
            ),
        )  # fmt: skip
        response = self.session.send(request, stream=True)
        if plan.read == "drop":
            del response
            return plan.result
        try:
            plan.check_status(response.status_code)
            if plan.read == "none":
                return plan.result
            if plan.read == "chunks":
                got = b"".join(response.iter_bytes(1024))
            elif plan.read == "first":
                want = len(plan.expect or b"")
                got = next(response.iter_bytes(want), b"")[:want] if want else b""
            else:
                got = response.read()
        finally:
            response.close()
        return plan.verdict(got)

    async def aperform(self, ctx: Context, plan: Plan) -> str:
        """Carry out ``plan`` with ``httpx.AsyncClient``; its result."""
        import httpx

        url = f"{ctx.server.url(plan.path)}?id={ctx.request_id}"
        headers = {"X-Request-Id": ctx.request_id, **plan.extra}
        body = _parts(plan.body) if isinstance(plan.body, tuple) else plan.body
        limits = ctx.timeout
        request = self.session.build_request(
            plan.method, url, content=body, headers=headers,
            timeout=httpx.Timeout(
                connect=limits.connect, read=limits.read, write=limits.write, pool=limits.pool
            ),
        )  # fmt: skip
        response = await self.session.send(request, stream=True)
        if plan.read == "drop":
            del response
            return plan.result
        try:
            plan.check_status(response.status_code)
            if plan.read == "none":
                return plan.result
            if plan.read == "chunks":
                got = b"".join([piece async for piece in response.aiter_bytes(1024)])
            elif plan.read == "first":
                want = len(plan.expect or b"")
                got = b""
                if want:
                    async for piece in response.aiter_bytes(want):
                        got = piece[:want]
                        break
            else:
                got = await response.aread()
        finally:
            await response.aclose()
        return plan.verdict(got)

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
