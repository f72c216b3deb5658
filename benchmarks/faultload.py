"""The requests the stress and soak runs make against the fault server
(:mod:`benchmarks.faultserver`), one function per kind, and the record of
each call.

Every request carries a unique ``X-Request-Id``; the server builds its
response body from it, so a body delivered to the wrong caller is caught.
An operation returns a short result (``"ok"``, ``"413"``) or raises a
:class:`poolwatch.PoolwatchError`; a wrong body, or a response where only
an error can be right, raises :class:`Violation`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import poolwatch

from .faultserver import FaultServer, body_for

__all__ = [
    "OPERATIONS",
    "Call",
    "Context",
    "Operation",
    "Violation",
    "call_once",
    "pick",
]

UPLOAD = 256 * 1024  # the early-413 upload: larger than the socket buffers


class Violation(Exception):
    """The client saw something the contract rules out."""


@dataclass
class Context:
    """What an operation needs: the transport, the server, a random source,
    the time limits, this call's request id, and a per-request listener
    that counts retries (R13)."""

    transport: poolwatch.Transport
    server: FaultServer
    rng: random.Random
    timeout: poolwatch.Timeout
    request_id: str = ""
    retries: int = 0

    def listener(self, event: poolwatch.Event) -> None:
        """Count the transport's retries of this call."""
        if event.name == "retry":
            self.retries += 1

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Iterator[bytes] | None = None,
        extra: dict[str, str] | None = None,
    ) -> poolwatch.Response:
        """Send a request tagged with this call's id."""
        headers = {"X-Request-Id": self.request_id, **(extra or {})}
        return self.transport.request(
            method,
            self.server.url(path),
            headers=headers,
            body=body,
            timeout=self.timeout,
            listener=self.listener,
        )


def _expect(got: bytes, want: bytes, what: str) -> None:
    if got != want:
        raise Violation(f"{what}: body of {len(got)} bytes, expected {len(want)}: {got[:40]!r}")


def get_drained(ctx: Context) -> str:
    """GET a Content-Length body and read it to the end (drained, R4)."""
    size = ctx.rng.randrange(0, 16384)
    with ctx.request("GET", f"/cl/{size}") as resp:
        _expect(resp.read(), body_for(ctx.request_id, size), "GET /cl")
    return "ok"


def get_chunked(ctx: Context) -> str:
    """GET a chunked body, read in pieces of 1 KiB."""
    size = ctx.rng.randrange(0, 16384)
    with ctx.request("GET", f"/chunked/{size}") as resp:
        body = b"".join(resp.iter_bytes(1024))
    _expect(body, body_for(ctx.request_id, size), "GET /chunked")
    return "ok"


def get_closed_early(ctx: Context) -> str:
    """GET 64 KiB, read 100 bytes, close (closed early, R5)."""
    with ctx.request("GET", "/cl/65536") as resp:
        _expect(resp.read(100), body_for(ctx.request_id, 100), "GET /cl, early close")
    return "ok"


def head_or_empty(ctx: Context) -> str:
    """HEAD, or GET a 204: no body (R7)."""
    if ctx.rng.random() < 0.5:
        with ctx.request("HEAD", "/cl/500") as resp:
            _expect(resp.read(), b"", "HEAD")
            return "ok"
    with ctx.request("GET", "/empty") as resp:
        if resp.status != 204:
            raise Violation(f"GET /empty: status {resp.status}")
    return "ok"


def post_bytes(ctx: Context) -> str:
    """POST a bytes body without an idempotency key: never sent twice."""
    return _post(ctx, ctx.rng.randbytes(ctx.rng.randrange(0, 8192)), {})


def post_keyed(ctx: Context) -> str:
    """POST a bytes body with an ``Idempotency-Key``: may be retried (R13)."""
    body = ctx.rng.randbytes(ctx.rng.randrange(0, 8192))
    return _post(ctx, body, {"Idempotency-Key": ctx.request_id})


def post_chunked(ctx: Context) -> str:
    """POST a body of unknown length (chunked, R16): never replayable."""
    parts = [ctx.rng.randbytes(ctx.rng.randrange(1, 2048)) for _ in range(3)]
    with ctx.request("POST", "/post", iter(parts)) as resp:
        _expect(resp.read(), body_for(ctx.request_id, sum(map(len, parts))), "POST chunked")
    return "ok"


def _post(ctx: Context, body: bytes, extra: dict[str, str]) -> str:
    with ctx.request("POST", "/post", body, extra) as resp:
        _expect(resp.read(), body_for(ctx.request_id, len(body)), "POST")
    return "ok"


def post_early_413(ctx: Context) -> str:
    """POST 256 KiB that the server answers with 413 before reading (R9)."""
    with ctx.request("POST", "/early413", b"u" * UPLOAD) as resp:
        if resp.status != 413:
            raise Violation(f"POST /early413: status {resp.status}")
        resp.read()
    return "413"


def _must_fail(ctx: Context, path: str) -> str:
    with ctx.request("GET", path) as resp:
        resp.read()
    raise Violation(f"GET {path}: a complete response, where only an error is right")


def stall_head(ctx: Context) -> str:
    """The server sends nothing past the header timeout (R17)."""
    return _must_fail(ctx, "/stall-head")


def stall_body(ctx: Context) -> str:
    """The server stops mid-body past the read timeout (R17)."""
    return _must_fail(ctx, "/stall-body/4096")


def cut_body(ctx: Context) -> str:
    """The server closes mid-body (R10)."""
    return _must_fail(ctx, "/cut/4096")


def hang_up(ctx: Context) -> str:
    """The server closes without a byte."""
    return _must_fail(ctx, "/hangup")


def reset(ctx: Context) -> str:
    """The server resets mid status line."""
    return _must_fail(ctx, "/reset")


@dataclass(frozen=True)
class Operation:
    """One kind of request, how often it is picked, and whether the server
    may see it more than once (``replayable``, R13)."""

    name: str
    weight: int
    run: Callable[[Context], str]
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
    """Run ``op`` once and record it; a non-poolwatch exception is recorded
    as a violation, never raised."""
    ctx.retries = 0
    start = time.monotonic()
    error = violation = ""
    try:
        result = op.run(ctx)
    except poolwatch.PoolwatchError as exc:
        result, error = type(exc).__name__, str(exc)
    except Violation as exc:
        result, violation = "violation", str(exc)
    except Exception as exc:  # anything else breaks the contract
        result, violation = "violation", f"{type(exc).__name__}: {exc}"
    wall = time.monotonic() - start
    return Call(op.name, ctx.request_id, result, wall, ctx.retries, error, violation)
