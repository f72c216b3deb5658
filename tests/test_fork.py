"""A transport used before ``fork()``: in the child, the connections'
workers (the parent's threads) are gone, so the child's transport starts
afresh, and the parent's connections are not disturbed. Each child reports
through a pipe and leaves with ``os._exit``."""

from __future__ import annotations

import json
import os
import select
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial

import pytest
import trustme

import poolwatch
from tests.servers import HTTPServer
from tests.tls_support import TLSServer, client_context

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")

LIMITS = poolwatch.Timeout(connect=5, write=5, response_header=5, read=5, pool=5)
CHILD_LIMIT = 20  # seconds a child may take before it counts as hung


def in_child(work: Callable[[], dict[str, object]]) -> dict[str, object]:
    """Fork; run ``work`` in the child and return what it returned (or the
    error it raised, as ``{"error": ...}``)."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a process with threads may deadlock
        # the child: that child is what this tests.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report, then leave without running any cleanup
        try:
            os.close(read_end)
            try:
                result = work()
            except BaseException as exc:
                result = {"error": f"{type(exc).__name__}: {exc}"}
            os.write(write_end, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        if not select.select([reader], [], [], CHILD_LIMIT)[0]:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the child hung for {CHILD_LIMIT}s")
        report = reader.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    result: dict[str, object] = json.loads(report)
    return result


def _get(t: poolwatch.Transport, url: str) -> dict[str, object]:
    with t.request("GET", url, timeout=LIMITS) as resp:
        body = resp.read()
    stats = t.stats()
    return {
        "body": body.decode(),
        "reused": resp.reused_connection,
        "opened": stats.connections_opened,
        "workers": stats.workers_alive,
    }


def test_child_starts_afresh_and_the_parent_keeps_its_connection(server: HTTPServer) -> None:
    with poolwatch.Transport() as t:
        assert t.request("GET", server.url()).read() == b"hello world!\n"
        child = in_child(lambda: _get(t, server.url()))
        # The child dialled its own connection, with workers of its own.
        assert child == {"body": "hello world!\n", "reused": False, "opened": 1, "workers": 2}
        # The parent's connection survived the child closing its copy.
        assert _get(t, server.url())["reused"] is True
        assert t.stats().connections_opened == 1


def test_over_tls_the_child_does_not_end_the_parents_session(
    https_server: TLSServer, ca: trustme.CA
) -> None:
    """The child closes its copy of the socket without a TLS close_notify,
    which would end the session for the parent too."""
    with poolwatch.Transport(ssl_context=client_context(ca)) as t:
        assert t.request("GET", https_server.url()).read() == b"hello world!\n"
        child = in_child(lambda: _get(t, https_server.url()))
        assert child == {"body": "hello world!\n", "reused": False, "opened": 1, "workers": 2}
        for _ in range(2):
            assert _get(t, https_server.url())["reused"] is True
    assert https_server.accepted == 2


def test_a_response_open_at_the_fork_is_unusable_in_the_child(server: HTTPServer) -> None:
    """Reading it there is a documented error, and the child's transport
    still serves its next request."""
    with poolwatch.Transport() as t:
        resp = t.request("GET", server.url("/stream"))

        def work() -> dict[str, object]:
            try:
                resp.read(10)
            except poolwatch.PoolwatchError as exc:
                error = type(exc).__name__
            else:
                error = "none"
            return {"error_reading": error, **_get(t, server.url())}

        child = in_child(work)
        assert child["error_reading"] == "ReadError", child
        assert child["body"] == "hello world!\n"
        resp.close()


@contextmanager
def held(*locks: threading.Lock) -> Iterator[None]:
    with ExitStack() as stack:
        for lock in locks:
            stack.enter_context(lock)
        yield


def test_locks_held_in_the_parent_at_the_fork_do_not_hang_the_child(server: HTTPServer) -> None:
    """At the fork, other threads of the parent may be inside any of the
    transport's locks (a worker waking a spare event late, say), and the
    child gets those locks still held. The child takes none of them."""
    with poolwatch.Transport() as t:
        assert t.request("GET", server.url()).read() == b"hello world!\n"
        (conn,) = t._book.live
        events = t._events
        # A spare event whatever the reader does: parked for a body sent
        # after its head, it may still hold the one the caller gave back.
        events.give(events.take())
        locks = [t._lock, t._workers._lock, events._lock, events._free[0]._lock, conn._proto_lock]
        with held(*locks):
            child = in_child(lambda: _get(t, server.url()))
        assert child == {"body": "hello world!\n", "reused": False, "opened": 1, "workers": 2}
        assert _get(t, server.url())["reused"] is True


def test_forks_while_other_threads_make_requests(
    server: HTTPServer, https_server: TLSServer, ca: trustme.CA
) -> None:
    """Forks land wherever the parent's threads happen to be (its TLS
    connection's workers included); each child makes a request of its own,
    and the parent's threads carry on. The children dial plain HTTP: a
    child's TLS handshake needs OpenSSL's random generator, whose lock the
    test's TLS server threads in this process (handshaking with an earlier
    child) may hold at the fork, and then the child hangs inside OpenSSL
    (twice in some 320 runs beside CPU-burning processes). The child's TLS
    dial is tested with the parent quiet, above."""
    urls = [server.url(), server.url("/chunked/5000"), https_server.url()]
    stop = threading.Event()
    calls = [0] * len(urls)
    errors: list[Exception] = []

    def load(index: int) -> None:
        try:
            while not stop.is_set():
                with t.request("GET", urls[index], timeout=LIMITS) as resp:
                    resp.read()
                calls[index] += 1
        except Exception as exc:
            errors.append(exc)

    with poolwatch.Transport(ssl_context=client_context(ca)) as t:
        threads = [threading.Thread(target=load, args=(i,)) for i in range(len(urls))]
        for thread in threads:
            thread.start()
        try:
            # Each child dials its own connection.
            children = [in_child(partial(_get, t, server.url())) for _ in range(30)]
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert all(child["body"] == "hello world!\n" for child in children), children
        assert all(child["opened"] == 1 for child in children), children
        assert errors == []
        assert min(calls) > 0
        stats = t.stats()
        assert (stats.bodies_errored, stats.bodies_leaked) == (0, 0)
