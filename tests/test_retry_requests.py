"""``max_retries`` on :class:`poolwatch.RequestsAdapter` means what it means
on requests' ``HTTPAdapter``: every case runs through a session with the
stock adapter and through one with poolwatch's, against a loopback server
that fails a given number of times (503 with ``Retry-After: 0``, a reset
after the request, a stalled response) and then succeeds, and both must see
the same result, the same exception types, and the same number of requests
reaching the server. Backoff is 0 throughout."""

from __future__ import annotations

import gc
import io
import logging
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import h11
import pytest
import requests
import requests.adapters
import requests.exceptions as rexc
from urllib3.exceptions import MaxRetryError, ProtocolError, ReadTimeoutError
from urllib3.util.retry import Retry

import poolwatch
from tests.conftest import assert_at_rest
from tests.parity_support import SHORT, BacklogServer
from tests.servers import HTTPServer, Reply, ServerConnection, http_server, raw_server

STOCK, POOLWATCH = "stock", "poolwatch"


class Hits:
    """Counts requests reaching a server; the first ``failures`` fail."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.count = 0
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()
        self.finished = threading.Event()  # set when the run is over

    def next(self, body: bytes) -> bool:
        """Count one request; whether it is to fail."""
        with self.lock:
            self.count += 1
            self.bodies.append(body)
            return self.count <= self.failures


# -- servers ---------------------------------------------------------------------


def busy_then_ok(hits: Hits, retry_after: bool = True) -> Callable[[h11.Request, bytes], Reply]:
    """503 (with ``Retry-After: 0``) for the first failures, then 200."""

    def route(request: h11.Request, body: bytes) -> Reply:
        if hits.next(body):
            headers = [("Retry-After", "0")] if retry_after else []
            return Reply(status=503, headers=headers, body=b"busy\n")
        return Reply(body=b"ok\n")

    return route


def stall_then_ok(hits: Hits) -> Callable[[h11.Request, bytes], Reply]:
    """No answer until the run is over for the first failures, then 200."""

    def route(request: h11.Request, body: bytes) -> Reply:
        if hits.next(body):
            hits.finished.wait(30)
        return Reply(body=b"ok\n")

    return route


def reset_then_ok(hits: Hits) -> Callable[[ServerConnection], None]:
    """Read the request, then reset the connection for the first failures;
    after that answer 200 and close."""

    def handler(conn: ServerConnection) -> None:
        head = conn.recv_request_head()
        if not head:
            return
        body = head.split(b"\r\n\r\n", 1)[1]
        length = _content_length(head)
        while len(body) < length:
            chunk = conn.sock.recv(65536)
            if not chunk:
                return
            body += chunk
        if hits.next(body):
            # SO_LINGER with a zero timeout: close() sends RST, not FIN.
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")

    return handler


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@contextmanager
def serve(kind: str, hits: Hits) -> Iterator[Any]:
    """A server of ``kind``: busy, busy-no-header, stall, reset, refused, backlog."""
    if kind in ("busy", "busy-no-header", "stall"):
        route = stall_then_ok(hits) if kind == "stall" else busy_then_ok(hits, kind == "busy")
        with http_server({"/": route}) as srv:
            yield srv
    elif kind == "reset":
        with raw_server(reset_then_ok(hits)) as srv:
            yield srv
    elif kind == "refused":
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        yield _Address(port)
    else:
        backlog = BacklogServer()
        try:
            yield backlog
        finally:
            backlog.stop()


@dataclass
class _Address:
    port: int

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


# -- running a case both ways ----------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    server: str
    failures: int
    max_retries: Callable[[], Retry | int | None] | None  # None: the default
    expect: dict[str, Any]
    method: str = "GET"
    body: Callable[[], Any] = lambda: None
    timeout: float | tuple[float, float] | None = None


def run(case: Case, flavour: str) -> dict[str, Any]:
    """Send the case's request once; what the user and the server saw."""
    hits = Hits(case.failures)
    seen: dict[str, Any] = {}
    options = {} if case.max_retries is None else {"max_retries": case.max_retries()}
    if flavour == POOLWATCH:
        adapter: requests.adapters.BaseAdapter = poolwatch.RequestsAdapter(**options)
    else:
        adapter = requests.adapters.HTTPAdapter(**options)
    with serve(case.server, hits) as server, requests.Session() as session, _quiet_urllib3():
        session.mount("http://", adapter)
        try:
            seen.update(_send(session, case, server.url("/")))
        finally:
            hits.finished.set()
        if flavour == POOLWATCH:
            assert isinstance(adapter, poolwatch.RequestsAdapter)
            stats = assert_at_rest(adapter.transport)
            seen["open_bodies"] = stats.open_bodies
        if isinstance(server, HTTPServer):
            seen["connections"] = server.accepted
    if flavour == STOCK:
        # urllib3 2.7's PoolManager closes a pool's connections when the pool
        # is collected, not when the session closes.
        gc.collect()
    seen["hits"] = hits.count
    seen["bodies"] = set(hits.bodies)
    return seen


def _send(session: requests.Session, case: Case, url: str) -> dict[str, Any]:
    """Send the case's request: the response seen, or the error raised."""
    try:
        resp = session.request(case.method, url, data=case.body(), timeout=case.timeout)
    except rexc.RequestException as exc:
        return _error(exc)
    history = resp.raw.retries.history
    return {
        "status": resp.status_code,
        "content": resp.content,
        # What code reads to see the attempts retried, and what was asked for.
        "retried": [(h.method, h.url, type(h.error), h.status) for h in history],
        "raw_url": resp.raw.url,
    }


@contextmanager
def _quiet_urllib3() -> Iterator[None]:
    """Keep urllib3's "Retrying ..." warning out of the log capture: its
    record holds the error, whose traceback holds the dropped connection's
    socket open until the end of the test."""
    logger = logging.getLogger("urllib3.connectionpool")
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = False


def _error(exc: Exception) -> dict[str, Any]:
    """The exception's type, the type it wraps and, for MaxRetryError, the
    type of its reason."""
    cause = exc.args[0] if exc.args else None
    seen: dict[str, Any] = {"error": type(exc), "wraps": type(cause)}
    if isinstance(cause, MaxRetryError):
        seen["reason"] = type(cause.reason)
    return seen


def no_backoff(**options: Any) -> Callable[[], Retry]:
    return lambda: Retry(backoff_factor=0, **options)


CASES = [
    # -- status retries
    Case(
        "status-forcelist",
        "busy",
        2,
        no_backoff(total=3, status_forcelist=[503]),
        {
            "status": 200,
            "content": b"ok\n",
            "hits": 3,
            "connections": 1,
            "retried": [("GET", "/", type(None), 503)] * 2,
        },
    ),
    Case(
        "status-retry-after-respected",
        "busy",
        2,
        no_backoff(total=3),
        {"status": 200, "hits": 3, "connections": 1},
    ),
    Case(
        "status-retry-after-ignored",
        "busy",
        2,
        no_backoff(total=3, respect_retry_after_header=False),
        {"status": 503, "content": b"busy\n", "hits": 1},
    ),
    Case(
        "status-no-header-not-retried",
        "busy-no-header",
        2,
        no_backoff(total=3),
        {"status": 503, "hits": 1},
    ),
    Case(
        "status-exhausted-raises-retry-error",
        "busy",
        5,
        no_backoff(total=2, status_forcelist=[503]),
        {"error": rexc.RetryError, "wraps": MaxRetryError, "hits": 3, "connections": 1},
    ),
    Case(
        "status-exhausted-returns-response",
        "busy",
        5,
        no_backoff(total=2, status_forcelist=[503], raise_on_status=False),
        {"status": 503, "content": b"busy\n", "hits": 3},
    ),
    Case(
        "status-status-count",
        "busy",
        5,
        no_backoff(total=10, status=1, status_forcelist=[503]),
        {"error": rexc.RetryError, "hits": 2},
    ),
    Case(
        "status-post-not-allowed",
        "busy",
        2,
        no_backoff(total=3, status_forcelist=[503]),
        {"status": 503, "hits": 1},
        method="POST",
        body=lambda: b"payload",
    ),
    Case(
        "status-post-allowed-file-rewound",
        "busy",
        2,
        no_backoff(total=3, status_forcelist=[503], allowed_methods=None),
        {"status": 200, "hits": 3, "bodies": {b"payload"}},
        method="POST",
        body=lambda: io.BytesIO(b"payload"),
    ),
    Case("status-default-none", "busy", 2, None, {"status": 503, "hits": 1}),
    # -- read errors: a reset after the request
    Case(
        "reset-get-retried",
        "reset",
        2,
        no_backoff(total=3),
        {"status": 200, "content": b"ok\n", "hits": 3},
    ),
    Case(
        "reset-int-retries",
        "reset",
        2,
        lambda: 2,
        {"status": 200, "hits": 3},
    ),
    Case(
        "reset-int-exhausted",
        "reset",
        5,
        lambda: 2,
        {"error": rexc.ConnectionError, "wraps": MaxRetryError, "hits": 3},
    ),
    Case(
        "reset-default-not-retried",
        "reset",
        2,
        None,
        {"error": rexc.ConnectionError, "wraps": ProtocolError, "hits": 1},
    ),
    Case(
        "reset-read-false",
        "reset",
        2,
        no_backoff(total=3, read=False),
        {"error": rexc.ConnectionError, "wraps": ProtocolError, "hits": 1},
    ),
    Case(
        "reset-post-not-retried",
        "reset",
        2,
        no_backoff(total=3),
        {"error": rexc.ConnectionError, "wraps": ProtocolError, "hits": 1},
        method="POST",
        body=lambda: b"payload",
    ),
    Case(
        "reset-read-count",
        "reset",
        5,
        no_backoff(total=10, read=1),
        {"error": rexc.ConnectionError, "wraps": MaxRetryError, "hits": 2},
    ),
    # -- read timeouts
    Case(
        "read-timeout-retried",
        "stall",
        1,
        no_backoff(total=1),
        {"status": 200, "hits": 2},
        timeout=(5, SHORT),
    ),
    Case(
        "read-timeout-not-retried",
        "stall",
        1,
        None,
        {"error": rexc.ReadTimeout, "wraps": ReadTimeoutError, "hits": 1},
        timeout=(5, SHORT),
    ),
    Case(
        "read-timeout-exhausted",
        "stall",
        5,
        no_backoff(total=1),
        {"error": rexc.ConnectionError, "reason": ReadTimeoutError, "hits": 2},
        timeout=(5, SHORT),
    ),
    # -- connect errors
    Case(
        "refused-exhausted",
        "refused",
        0,
        no_backoff(connect=2),
        {"error": rexc.ConnectionError, "wraps": MaxRetryError, "hits": 0},
    ),
    Case(
        "connect-timeout-exhausted",
        "backlog",
        0,
        no_backoff(connect=1),
        {"error": rexc.ConnectTimeout, "wraps": MaxRetryError, "hits": 0},
        timeout=(SHORT, 5),
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES])
def test_retry_parity(case: Case) -> None:
    """Same result, same exception types, same requests reaching the server,
    and (for poolwatch) no body left open by a retried attempt."""
    stock = run(case, STOCK)
    ours = run(case, POOLWATCH)
    for key, value in case.expect.items():
        assert stock.get(key) == value, ("stock", key, stock)
    assert ours.pop("open_bodies") == 0
    assert ours == stock


def test_retried_responses_are_drained_and_reused() -> None:
    """A 503 that is retried is read to its end (R4): its connection serves
    the next attempt, and the stats count every response as drained."""
    hits = Hits(2)
    with http_server({"/": busy_then_ok(hits)}) as server:
        adapter = poolwatch.RequestsAdapter(max_retries=no_backoff(total=3)())
        with requests.Session() as session:
            session.mount("http://", adapter)
            assert session.get(server.url("/")).content == b"ok\n"
            stats = assert_at_rest(adapter.transport)
    assert stats.requests == 3
    assert stats.bodies_drained == 3
    assert stats.connections_opened == 1
    assert stats.reused_requests == 2


def test_exhaustion_message_names_url_and_cause() -> None:
    """The MaxRetryError inside requests' exception names the origin, the
    path and poolwatch's own error (with the full URL)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x"
    with requests.Session() as session:
        session.mount("http://", poolwatch.RequestsAdapter(max_retries=1))
        with pytest.raises(rexc.ConnectionError) as info:
            session.get(url)
    text = str(info.value)
    assert f"HTTPConnectionPool(host='127.0.0.1', port={port})" in text
    assert "Max retries exceeded with url: /x" in text
    assert f"GET {url}" in text


def test_max_retries_forms() -> None:
    """As HTTPAdapter: 0 is Retry(0, read=False), n is Retry(n), None is
    urllib3's default, a Retry is kept."""
    given = Retry(5, status_forcelist=[500])
    for value in (0, 3, None, given):
        ours = poolwatch.RequestsAdapter(max_retries=value).max_retries
        stock = requests.adapters.HTTPAdapter(max_retries=value).max_retries
        assert (ours.total, ours.read, ours.connect, ours.redirect) == (
            stock.total,
            stock.read,
            stock.connect,
            stock.redirect,
        )
    assert poolwatch.RequestsAdapter(max_retries=given).max_retries is given
