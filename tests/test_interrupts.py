"""A synchronous call stopped by an exception from outside poolwatch: Ctrl-C
(KeyboardInterrupt), or what a signal handler raises (the ``signal.alarm``
deadline pattern). The exception goes on to the caller unchanged, and the
connection it stopped on is closed: not left checked out for ever, and not
pooled with bytes of a response nobody reads.

The interruption is a real signal sent to the main thread at a point the
test controls (from a listener, or from the server as it stalls)."""

from __future__ import annotations

import gc
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import h11
import httpx
import pytest
import requests
import trustme

import poolwatch
from poolwatch.adapters.requests import RequestsAdapter
from tests.conftest import assert_at_rest
from tests.eventlog import WAIT, EventLog
from tests.servers import HTTPServer, RawServer, Reply, ServerConnection, http_server
from tests.tls_support import client_context, server_context, tls_server

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill"
)


class Deadline(Exception):
    """What a ``signal.alarm``-style handler raises."""


class Interrupter:
    """Raises ``kind`` in the main thread, once, from a SIGUSR1 handler.

    After :attr:`go` is set, a helper thread signals the main thread until
    the handler has raised: a signal that arrives just as the main thread
    is about to block (it has let go of the GIL, so the helper runs then)
    is only acted on after that wait ends, as with any signal in Python."""

    def __init__(self, kind: type[BaseException]) -> None:
        self.kind = kind
        self.go = threading.Event()
        self.raised = threading.Event()
        self._stopped = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.go.is_set() and not self.raised.is_set():
            self.raised.set()
            raise self.kind("interrupted by the test")

    def on(self, name: str) -> poolwatch.Listener:
        """A listener that starts the interruption at the event ``name``."""

        def listener(event: poolwatch.Event) -> None:
            if event.name == name:
                self.go.set()

        return listener

    def _signal_until_raised(self) -> None:
        self.go.wait(WAIT)
        main = threading.main_thread().ident or 0
        while not self._stopped and not self.raised.wait(0.005):
            signal.pthread_kill(main, signal.SIGUSR1)

    @contextmanager
    def armed(self) -> Iterator[None]:
        """Interrupt the main thread once :attr:`go` is set, in this block."""
        helper = threading.Thread(target=self._signal_until_raised)
        helper.start()
        try:
            yield
        finally:
            self._stopped = True
            self.go.set()
            helper.join()


@pytest.fixture(params=[KeyboardInterrupt, Deadline])
def interrupter(request: pytest.FixtureRequest) -> Iterator[Interrupter]:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread only")
    interrupter = Interrupter(request.param)
    previous = signal.signal(signal.SIGUSR1, interrupter.handle)
    try:
        yield interrupter
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert interrupter.raised.is_set()


def stalling_body(interrupter: Interrupter, gate: threading.Event) -> Iterator[bytes]:
    """A chunked body that sends one piece, starts the interruption, then
    stalls until ``gate`` opens."""
    yield b"x" * 1000
    interrupter.go.set()
    gate.wait(WAIT)
    yield b"y" * 1000


def test_interrupted_waiting_for_the_head(server: HTTPServer, interrupter: Interrupter) -> None:
    log = EventLog()
    with poolwatch.Transport() as t:
        t.add_listener(log)
        with interrupter.armed(), pytest.raises(interrupter.kind):
            t.request("GET", server.url("/wait/head"), listener=interrupter.on("wrote_request"))
        (got,) = log.named("got_conn")
        assert log.wait_closed(got.connection_id or 0) == "interrupted"
        stats = assert_at_rest(t)
        assert (stats.open_connections, stats.requests, stats.connections_closed) == (0, 0, 1)
        server.release("head")
        assert t.request("GET", server.url()).read() == b"hello world!\n"


def test_interrupted_in_the_pool_queue(server: HTTPServer, interrupter: Interrupter) -> None:
    """The waiter leaves the queue: the connection it waited for goes to the
    next request when it is given back."""
    with poolwatch.Transport(max_connections_per_host=1) as t:
        holder = t.request("GET", server.url("/bytes/10"))
        with interrupter.armed(), pytest.raises(interrupter.kind):
            t.request("GET", server.url(), listener=interrupter.on("pool_wait_start"))
        assert t.stats().waiting_requests == 0
        assert holder.read() == b"x" * 10
        with t.request("GET", server.url()) as resp:
            assert resp.read() == b"hello world!\n"
            assert resp.reused_connection
        stats = assert_at_rest(t)
        assert (stats.connections_opened, stats.pool_waits) == (1, 1)


def test_interrupted_in_the_tls_handshake(interrupter: Interrupter) -> None:
    """The socket is closed and its pool slot given back."""
    client_closed = threading.Event()

    def silent(conn: ServerConnection) -> None:
        if conn.index > 1:
            return  # hang up on later connections
        conn.sock.recv(65536)  # the client's hello, never answered
        interrupter.go.set()
        if conn.sock.recv(65536) == b"":
            client_closed.set()

    server = RawServer(silent)
    url = f"https://127.0.0.1:{server.port}/"
    try:
        with poolwatch.Transport(max_connections_per_host=1) as t:
            with interrupter.armed(), pytest.raises(interrupter.kind):
                t.request("GET", url, timeout=WAIT)
            assert client_closed.wait(WAIT)
            stats = assert_at_rest(t)
            assert (stats.connections_opened, stats.open_connections) == (0, 0)
            # The slot is free: the next call dials (and this server hangs up).
            with pytest.raises((poolwatch.ConnectError, poolwatch.TLSError)):
                t.request("GET", url, timeout=poolwatch.Timeout(connect=WAIT, pool=WAIT))
    finally:
        server.stop()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_interrupted_reading_the_body(
    scheme: str, interrupter: Interrupter, ca: trustme.CA
) -> None:
    """Bytes the read took from the socket may be lost with the interrupted
    call: the body ends closed early, and its connection is closed."""
    gate = threading.Event()

    def stall(request: h11.Request, body: bytes) -> Reply:
        return Reply(body=stalling_body(interrupter, gate), chunked=True)

    routes = {"/stall": stall}
    serve = (
        http_server(routes)
        if scheme == "http"
        else tls_server(server_context(ca, "localhost"), routes)
    )
    log = EventLog()
    with serve as srv, poolwatch.Transport(ssl_context=client_context(ca)) as t:
        t.add_listener(log)
        resp = t.request("GET", srv.url("/stall"), timeout=WAIT)
        try:
            with interrupter.armed(), pytest.raises(interrupter.kind):
                resp.read()
        finally:
            gate.set()
        assert log.wait_closed(resp.connection_id) == "interrupted"
        stats = assert_at_rest(t)
        assert (stats.bodies_closed_early, stats.open_bodies, stats.open_connections) == (1, 0, 0)
        with pytest.raises(poolwatch.ReadError, match="closed_early"):
            resp.read()
        resp.close()
        assert t.request("GET", srv.url()).read() == b"hello world!\n"


def test_interrupted_draining_on_close(
    interrupter: Interrupter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``drain_on_close`` reads the rest of the body to save the connection;
    interrupted there, it is closed instead."""
    monkeypatch.setattr("poolwatch._sync.response.DRAIN_MAX_SECONDS", WAIT)  # not the limit here
    gate = threading.Event()

    def stall(request: h11.Request, body: bytes) -> Reply:
        return Reply(body=stalling_body(interrupter, gate), chunked=True)

    with http_server({"/stall": stall}) as srv, poolwatch.Transport(drain_on_close=True) as t:
        resp = t.request("GET", srv.url("/stall"))
        try:
            with interrupter.armed(), pytest.raises(interrupter.kind):
                resp.close()
        finally:
            gate.set()
        stats = assert_at_rest(t)
        assert (stats.bodies_closed_early, stats.bodies_drained_on_close) == (1, 0)
        assert (stats.open_bodies, stats.open_connections) == (0, 0)


def test_requests_session_interrupted(server: HTTPServer, interrupter: Interrupter) -> None:
    adapter = RequestsAdapter()
    adapter.transport.add_listener(interrupter.on("wrote_request"))
    with requests.Session() as session:
        session.mount("http://", adapter)
        with interrupter.armed(), pytest.raises(interrupter.kind):
            session.get(server.url("/wait/head"))
        server.release("head")
        stats = assert_at_rest(adapter.transport)
        assert (stats.open_connections, stats.connections_closed) == (0, 1)
        assert session.get(server.url()).text == "hello world!\n"


def test_httpx_client_interrupted_streaming(interrupter: Interrupter) -> None:
    gate = threading.Event()

    def stall(request: h11.Request, body: bytes) -> Reply:
        return Reply(body=stalling_body(interrupter, gate), chunked=True)

    adapter = poolwatch.HTTPXTransport()
    with http_server({"/stall": stall}) as srv, httpx.Client(transport=adapter) as client:
        try:
            with (
                client.stream("GET", srv.url("/stall")) as resp,
                interrupter.armed(),
                pytest.raises(interrupter.kind),
            ):
                resp.read()
        finally:
            gate.set()
        stats = assert_at_rest(adapter.transport)
        assert (stats.bodies_closed_early, stats.open_connections) == (1, 0)
        assert client.get(srv.url()).text == "hello world!\n"


def test_interrupted_close_is_finished_when_the_transport_is_dropped(
    server: HTTPServer, interrupter: Interrupter
) -> None:
    """close() waits for each worker to exit, here for one held up in a
    listener; interrupted there, it is finished when the transport is
    garbage-collected (and the test's check finds no thread or eventfd
    left behind)."""
    gate = threading.Event()

    def hold_up(event: poolwatch.Event) -> None:
        if event.name == "conn_closed":
            interrupter.go.set()
            gate.wait(WAIT)

    t = poolwatch.Transport()
    core = t._core
    t.add_listener(hold_up)
    assert t.request("GET", server.url()).read() == b"hello world!\n"
    try:
        with interrupter.armed(), pytest.raises(interrupter.kind):
            t.close()
    finally:
        gate.set()
    with pytest.raises(poolwatch.PoolClosed):
        t.request("GET", server.url())
    del t
    gc.collect()
    for thread in threading.enumerate():
        if thread.name == "poolwatch-close":
            thread.join(WAIT)
    assert core._close_finished
    stats = assert_at_rest(core)
    assert (stats.open_connections, stats.workers_alive) == (0, 0)
