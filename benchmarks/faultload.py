"""The requests the stress and soak runs make against the fault server
(:mod:`benchmarks.faultserver`), one function per kind, and the record of
each call.

Every request carries a unique ``X-Request-Id``; the server builds its
response body from it, so a body delivered to the wrong caller is caught.
An operation builds a :class:`Plan` (the request, how to read its body and
what must arrive), which :func:`perform` carries out on a
:class:`poolwatch.Transport` and :func:`aperform` on a
:class:`poolwatch.AsyncTransport`: the mix and the checks are the same for
both. A call returns a short result (``"ok"``, ``"413"``) or raises a
:class:`poolwatch.PoolwatchError`; a wrong body, or a response where only
an error can be right, raises :class:`Violation`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import poolwatch

from .faultserver import FaultServer, body_for

__all__ = [
    "OPERATIONS",
    "Call",
    "Context",
    "Operation",
    "Plan",
    "Violation",
    "acall_once",
    "aperform",
    "call_once",
    "cancelled_at",
    "perform",
    "pick",
]

UPLOAD = 256 * 1024  # the early-413 upload: larger than the socket buffers


class Violation(Exception):
    """The client saw something the contract rules out."""


@dataclass
class Context:
    """What an operation needs: the transport (a :class:`poolwatch.Transport`
    or a :class:`poolwatch.AsyncTransport`), the server, a random source, the
    time limits, this call's request id, and a per-request listener that
    counts retries (R13)."""

    transport: poolwatch.Transport | poolwatch.AsyncTransport
    server: FaultServer
    rng: random.Random
    timeout: poolwatch.Timeout
    request_id: str = ""
    retries: int = 0
    origin: int = 0  # which of the server's origins this call goes to

    def url(self, plan: Plan) -> str:
        """The URL of ``plan``'s request, on this call's origin."""
        return self.server.url(plan.path, self.origin)

    def next_call(self, request_id: str) -> None:
        """Start call ``request_id``: with more than one origin, on one
        picked at random."""
        self.request_id = request_id
        if len(self.server.ports) > 1:
            self.origin = self.rng.randrange(len(self.server.ports))

    def listener(self, event: poolwatch.Event) -> None:
        """Count the transport's retries of this call."""
        if event.name == "retry":
            self.retries += 1

    def _arguments(self, plan: Plan) -> dict[str, Any]:
        headers = {"X-Request-Id": self.request_id, **plan.extra}
        return {
            "headers": headers,
            "timeout": self.timeout,
            "listener": self.listener,
            "proxy": self.server.proxy,
        }

    def request(self, plan: Plan) -> poolwatch.Response:
        """Send ``plan``'s request, tagged with this call's id."""
        assert isinstance(self.transport, poolwatch.Transport)
        body = iter(plan.body) if isinstance(plan.body, tuple) else plan.body
        url = self.url(plan)
        return self.transport.request(plan.method, url, body=body, **self._arguments(plan))

    async def arequest(self, plan: Plan) -> poolwatch.AsyncResponse:
        """Send ``plan``'s request on the asyncio transport, tagged with this
        call's id; a body of parts goes as an async iterable."""
        assert isinstance(self.transport, poolwatch.AsyncTransport)
        body = _parts(plan.body) if isinstance(plan.body, tuple) else plan.body
        url = self.url(plan)
        return await self.transport.request(plan.method, url, body=body, **self._arguments(plan))


async def _parts(parts: tuple[bytes, ...]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@dataclass(frozen=True)
class Plan:
    """One request and what must come of it, the same for both transports.

    ``body`` is bytes (sent with a Content-Length) or a tuple of parts (sent
    chunked, length unknown). ``read`` says how the body is consumed:
    ``"all"``; ``"chunks"`` (1 KiB pieces); ``"first"`` (``len(expect)``
    bytes, then closed early); ``"none"`` (closed unread, for a 204);
    ``"drop"`` (the response is dropped unclosed: leaked, R6). ``expect`` is
    the body that must arrive, ``status`` the status that must, and
    ``must_fail`` says only a :class:`poolwatch.PoolwatchError` is right.
    """

    method: str
    path: str
    body: bytes | tuple[bytes, ...] | None = None
    extra: dict[str, str] = field(default_factory=dict)
    read: str = "all"
    expect: bytes | None = None
    status: int | None = None
    must_fail: bool = False
    result: str = "ok"

    def check_status(self, status: int) -> None:
        """Raise :class:`Violation` if the status is not the one required."""
        if self.status is not None and status != self.status:
            raise Violation(f"{self.method} {self.path}: status {status}")

    def verdict(self, got: bytes) -> str:
        """The result for the body read, or :class:`Violation`."""
        what = f"{self.method} {self.path}"
        if self.must_fail:
            raise Violation(f"{what}: a complete response, where only an error is right")
        if self.expect is not None and got != self.expect:
            raise Violation(
                f"{what}: body of {len(got)} bytes, expected {len(self.expect)}: {got[:40]!r}"
            )
        return self.result


def perform(ctx: Context, plan: Plan) -> str:
    """Carry out ``plan`` on the sync transport; its result."""
    resp = ctx.request(plan)
    if plan.read == "drop":
        del resp  # the last reference: the leak is detected here
        return plan.result
    with resp:
        plan.check_status(resp.status)
        if plan.read == "none":
            return plan.result
        if plan.read == "chunks":
            got = b"".join(resp.iter_bytes(1024))
        else:
            got = resp.read(len(plan.expect or b"") if plan.read == "first" else None)
    return plan.verdict(got)


async def aperform(ctx: Context, plan: Plan) -> str:
    """Carry out ``plan`` on the asyncio transport; its result."""
    resp = await ctx.arequest(plan)
    if plan.read == "drop":
        del resp  # the last reference: the leak is detected here
        return plan.result
    async with resp:
        plan.check_status(resp.status)
        if plan.read == "none":
            return plan.result
        if plan.read == "chunks":
            got = b"".join([chunk async for chunk in resp.aiter_bytes(1024)])
        else:
            got = await resp.read(len(plan.expect or b"") if plan.read == "first" else None)
    return plan.verdict(got)


def get_drained(ctx: Context) -> Plan:
    """GET a Content-Length body and read it to the end (drained, R4)."""
    size = ctx.rng.randrange(0, 16384)
    return Plan("GET", f"/cl/{size}", expect=body_for(ctx.request_id, size))


def get_chunked(ctx: Context) -> Plan:
    """GET a chunked body, read in pieces of 1 KiB."""
    size = ctx.rng.randrange(0, 16384)
    return Plan("GET", f"/chunked/{size}", read="chunks", expect=body_for(ctx.request_id, size))


def get_closed_early(ctx: Context) -> Plan:
    """GET 64 KiB, read 100 bytes, close (closed early, R5)."""
    return Plan("GET", "/cl/65536", read="first", expect=body_for(ctx.request_id, 100))


def head_or_empty(ctx: Context) -> Plan:
    """HEAD, or GET a 204: no body (R7)."""
    if ctx.rng.random() < 0.5:
        return Plan("HEAD", "/cl/500", expect=b"")
    return Plan("GET", "/empty", read="none", status=204)


def post_bytes(ctx: Context) -> Plan:
    """POST a bytes body without an idempotency key: never sent twice."""
    body = ctx.rng.randbytes(ctx.rng.randrange(0, 8192))
    return Plan("POST", "/post", body, expect=body_for(ctx.request_id, len(body)))


def post_keyed(ctx: Context) -> Plan:
    """POST a bytes body with an ``Idempotency-Key``: may be retried (R13)."""
    body = ctx.rng.randbytes(ctx.rng.randrange(0, 8192))
    key = {"Idempotency-Key": ctx.request_id}
    return Plan("POST", "/post", body, key, expect=body_for(ctx.request_id, len(body)))


def post_chunked(ctx: Context) -> Plan:
    """POST a body of unknown length (chunked, R16): never replayable."""
    parts = tuple(ctx.rng.randbytes(ctx.rng.randrange(1, 2048)) for _ in range(3))
    expect = body_for(ctx.request_id, sum(map(len, parts)))
    return Plan("POST", "/post", parts, expect=expect)


def post_early_413(ctx: Context) -> Plan:
    """POST 256 KiB that the server answers with 413 before reading (R9)."""
    return Plan("POST", "/early413", b"u" * UPLOAD, status=413, result="413")


def stall_head(ctx: Context) -> Plan:
    """The server sends nothing past the header timeout (R17)."""
    return Plan("GET", "/stall-head", must_fail=True)


def stall_body(ctx: Context) -> Plan:
    """The server stops mid-body past the read timeout (R17)."""
    return Plan("GET", "/stall-body/4096", must_fail=True)


def cut_body(ctx: Context) -> Plan:
    """The server closes mid-body (R10)."""
    return Plan("GET", "/cut/4096", must_fail=True)


def hang_up(ctx: Context) -> Plan:
    """The server closes without a byte."""
    return Plan("GET", "/hangup", must_fail=True)


def reset(ctx: Context) -> Plan:
    """The server resets mid status line."""
    return Plan("GET", "/reset", must_fail=True)


def leak(ctx: Context) -> Plan:
    """GET a body and drop the response unread (leaked, R6)."""
    return Plan("GET", "/cl/1000", read="drop", result="leaked")


@dataclass(frozen=True)
class Operation:
    """One kind of request, how often it is picked, its plan, and whether
    the server may see it more than once (``replayable``, R13)."""

    name: str
    weight: int
    plan: Callable[[Context], Plan]
    replayable: bool = True
    is_post: bool = False


OPERATIONS: tuple[Operation, ...] = (
    Operation("get_drained", 30, get_drained),
    Operation("get_chunked", 12, get_chunked),
    Operation("get_closed_early", 8, get_closed_early),
    Operation("head_or_204", 6, head_or_empty),
    Operation("post", 12, post_bytes, replayable=False, is_post=True),
    Operation("post_keyed", 6, post_keyed, is_post=True),
    Operation("post_chunked", 5, post_chunked, replayable=False, is_post=True),
    Operation("post_early_413", 3, post_early_413, replayable=False, is_post=True),
    Operation("stall_head", 1, stall_head),
    Operation("stall_body", 1, stall_body),
    Operation("cut_body", 2, cut_body),
    Operation("hang_up", 2, hang_up),
    Operation("reset", 2, reset),
)


def pick(rng: random.Random, operations: tuple[Operation, ...]) -> Operation:
    """An operation at random, by weight."""
    return rng.choices(operations, weights=[op.weight for op in operations])[0]


@dataclass
class Call:
    """One call's record: which operation, its id, what came of it, how
    long it took and how often the transport retried it."""

    op: str
    request_id: str
    result: str
    wall: float
    retries: int
    error: str = ""
    violation: str = ""


def call_once(ctx: Context, op: Operation) -> Call:
    """Run ``op`` once on the sync transport and record it; a non-poolwatch
    exception is recorded as a violation, never raised."""
    ctx.retries = 0
    start = time.monotonic()
    try:
        result, error, violation = perform(ctx, op.plan(ctx)), "", ""
    except Exception as exc:
        result, error, violation = _classify(exc)
    return Call(
        op.name, ctx.request_id, result, time.monotonic() - start, ctx.retries, error, violation
    )


async def acall_once(ctx: Context, op: Operation, cancel_after: float | None = None) -> Call:
    """Run ``op`` once on the asyncio transport and record it, as
    :func:`call_once`. With ``cancel_after`` the call runs in a task of its
    own, cancelled (:meth:`asyncio.Task.cancel`) if still running after that
    many seconds; a call that ends cancelled has the result ``"cancelled"``."""
    ctx.retries = 0
    start = time.monotonic()
    plan = op.plan(ctx)
    if cancel_after is None:
        try:
            result, error, violation = await aperform(ctx, plan), "", ""
        except Exception as exc:
            result, error, violation = _classify(exc)
    else:
        result, error, violation = await cancelled_at(aperform(ctx, plan), cancel_after)
    return Call(
        op.name, ctx.request_id, result, time.monotonic() - start, ctx.retries, error, violation
    )


async def cancelled_at(
    call: Coroutine[Any, Any, str],
    delay: float,
    classify: Callable[[BaseException], tuple[str, str, str]] | None = None,
) -> tuple[str, str, str]:
    """Run ``call`` in a task, cancel it after ``delay`` seconds if still
    running; result, error and violation (an exception judged by
    ``classify``, by default as the transport's own)."""
    classify = classify or _classify
    task = asyncio.ensure_future(call)
    cancelled = False
    try:
        done, _ = await asyncio.wait({task}, timeout=delay)
        if not done:
            cancelled = task.cancel()
            await asyncio.wait({task})  # never raises, even for a cancelled task
    except asyncio.CancelledError:  # the caller itself is cancelled: take the call along
        task.cancel()
        raise
    if task.cancelled():
        return "cancelled", "", ""
    exc = task.exception()
    result, error, violation = classify(exc) if exc else (task.result(), "", "")
    # A cancellation the call absorbed: it ran on as if never cancelled.
    return (f"{result} despite cancel" if cancelled else result), error, violation


def _classify(exc: BaseException) -> tuple[str, str, str]:
    """Result, error and violation for a call that raised ``exc``."""
    if isinstance(exc, poolwatch.PoolwatchError):
        return type(exc).__name__, str(exc), ""
    if isinstance(exc, Violation):
        return "violation", "", str(exc)
    return "violation", "", f"{type(exc).__name__}: {exc}"  # anything else breaks the contract
