"""The sync transport's thread hand-offs: the caller and the writer are woken
through eventfds (or, without them, a lock and a queue), the reader waits
on the socket with poll() and reads it with os.read(), the writer sends
with os.write() first. R1-R3 still hold, descriptors do not outlive their
threads and connections, and a worker that fails an exchange has closed
the connection before the caller hears of it."""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Iterator

import pytest

import poolwatch
from poolwatch._sync import wakeup
from poolwatch._sync.wakeup import EventPool, Inbox, OneShot
from tests.conftest import assert_at_rest
from tests.servers import HTTPServer, RawServer, ServerConnection

HELLO = b"hello world!\n"

needs_eventfd = pytest.mark.skipif(not wakeup.HAVE_EVENTFD, reason="no eventfd here")


@pytest.fixture(params=["eventfd", "lock"])
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test twice: with eventfds, and with the lock fallback."""
    if request.param == "eventfd" and not wakeup.HAVE_EVENTFD:
        pytest.skip("no eventfd here")
    if request.param == "lock":
        monkeypatch.setattr(wakeup, "HAVE_EVENTFD", False)
    yield request.param


def _eventfds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]":
                count += 1
        except OSError:
            pass  # the listing's own descriptor, closed meanwhile
    return count


# -- the primitives ---------------------------------------------------------


def test_head_signal_wakes_a_waiting_thread(kind: str) -> None:
    pool = EventPool()
    signal = OneShot(pool)
    waiting = threading.Event()

    def release() -> None:
        assert waiting.wait(10)
        signal.release()

    releaser = threading.Thread(target=release)
    releaser.start()
    waiting.set()
    assert signal.acquire(timeout=10)
    releaser.join()
    assert signal.acquire(timeout=0)  # set for good
    signal.release()  # harmless twice
    signal.done()
    assert signal.acquire(timeout=0)
    pool.close()


def test_head_signal_times_out_and_ignores_an_earlier_exchanges_wake(kind: str) -> None:
    pool = EventPool()
    earlier = OneShot(pool)
    later = OneShot(pool)
    assert not earlier.acquire(timeout=0)  # waited for, gave up
    earlier.done()
    earlier.release()  # too late: nobody waits
    assert earlier.acquire(timeout=0)
    assert not later.acquire(timeout=0.05)
    assert not later.acquire(timeout=0)
    later.release()
    assert later.acquire(timeout=0)
    assert later.acquire()
    later.done()
    pool.close()


def test_inbox_hands_items_over_in_order(kind: str) -> None:
    inbox: Inbox[int | None] = Inbox()
    got: list[int | None] = []

    def take() -> None:
        while (item := inbox.get()) is not None:
            got.append(item)

    thread = threading.Thread(target=take)
    thread.start()
    for i in range(100):
        inbox.put(i)
    inbox.put(None)
    thread.join(10)
    assert not thread.is_alive()
    assert got == list(range(100))
    inbox.close()
    inbox.put(1)  # after close: queued, wakes nobody, does not fail
    inbox.close()


@needs_eventfd
def test_a_closed_event_ignores_set_and_frees_its_descriptor() -> None:
    before = _eventfds()
    event = wakeup.EventFD()
    assert _eventfds() == before + 1
    event.set()
    assert event.wait(0)
    assert not event.wait(0.01)
    event.close()
    event.set()
    event.close()
    assert _eventfds() == before
    dropped = wakeup.EventFD()
    del dropped
    gc.collect()
    assert _eventfds() == before


# -- the transport ------------------------------------------------------------


def test_requests_with_each_kind_of_wake_up(kind: str, server: HTTPServer) -> None:
    with poolwatch.Transport() as transport:
        for _ in range(20):
            assert transport.request("GET", server.url("/")).read() == HELLO
        assert transport.request("POST", server.url("/echo"), body=b"abc").read() == b"abc"
        assert transport.request("GET", server.url("/empty")).read() == b""
        stats = assert_at_rest(transport)
        assert stats.connections_opened == 1
        assert stats.bodies_drained + stats.bodies_without_content == 22


def test_threads_share_a_transport(kind: str, server: HTTPServer) -> None:
    errors: list[BaseException] = []

    def work(transport: poolwatch.Transport) -> None:
        try:
            for _ in range(25):
                assert transport.request("GET", server.url("/")).read() == HELLO
        except BaseException as exc:  # reported below
            errors.append(exc)

    with poolwatch.Transport() as transport:
        threads = [threading.Thread(target=work, args=(transport,)) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
        stats = assert_at_rest(transport)
        assert stats.bodies_drained == 150
        assert 1 <= stats.connections_opened <= 6


def test_response_header_timeout_with_each_kind_of_wake_up(kind: str, server: HTTPServer) -> None:
    with poolwatch.Transport(response_header_timeout=0.1) as transport:
        with pytest.raises(poolwatch.ResponseHeaderTimeout):
            transport.request("GET", server.url("/wait/never"))
        server.gate("never").set()
        assert transport.request("GET", server.url("/")).read() == HELLO
        assert_at_rest(transport)


@needs_eventfd
def test_a_late_wake_up_left_on_a_spare_event_is_harmless() -> None:
    pool = EventPool()
    first = OneShot(pool)
    assert not first.acquire(timeout=0)
    event = first._event
    first.done()
    assert event is not None
    event.set()  # as a release racing with done() would
    second = OneShot(pool)
    assert not second.acquire(timeout=0.05)  # took the same event: not fooled
    assert second._event is event
    second.release()
    assert second.acquire(timeout=0)
    second.done()
    pool.close()
    event.set()  # closed: does nothing


@needs_eventfd
def test_eventfds_do_not_outlive_their_connections_and_transport(server: HTTPServer) -> None:
    gc.collect()
    before = _eventfds()
    transport = poolwatch.Transport()
    ready = threading.Barrier(3)

    def work() -> None:
        ready.wait(10)
        assert transport.request("GET", server.url("/")).read() == HELLO

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    stats = transport.stats()
    # One per open connection (its writer's), and at most one spare per
    # thread that waited at the same time: each caller for its head, each
    # reader parked while its caller read the body.
    spare = _eventfds() - before - stats.open_connections
    transport.close()
    assert 0 < spare <= 2 * len(threads)
    assert _eventfds() == before


def test_the_connection_is_closed_before_the_caller_hears_of_a_bad_head() -> None:
    def handler(conn: ServerConnection) -> None:
        conn.recv_request_head()
        conn.sock.sendall(b"\x90TTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        conn.wait_for_close()

    server = RawServer(handler)
    try:
        with poolwatch.Transport() as transport:
            for _ in range(20):
                with pytest.raises(poolwatch.RemoteProtocolError, match="status line"):
                    transport.request("GET", server.url())
                stats = transport.stats()  # no settle(): already so
                assert stats.open_connections == 0
                assert stats.connections_closed == stats.connections_opened
    finally:
        server.stop()


def test_an_upload_larger_than_the_socket_buffer(server: HTTPServer) -> None:
    body = os.urandom(8 * 1024 * 1024)
    with poolwatch.Transport(write_timeout=30) as transport:
        assert transport.request("POST", server.url("/echo"), body=body).read() == body
        assert transport.request("POST", server.url("/echo"), body=b"small").read() == b"small"
        stats = assert_at_rest(transport)
        assert stats.connections_opened == 1


def test_a_whole_body_read_on_a_descriptor_past_1023(server: HTTPServer) -> None:
    """select() cannot watch such a descriptor; the end-of-body check must
    not use it."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        pytest.skip(f"descriptor limit {soft}")
    spare = os.open(os.devnull, os.O_RDONLY)
    fillers = [os.dup(spare) for _ in range(1100)]
    try:
        with poolwatch.Transport() as transport:
            response = transport.request("GET", server.url("/bytes/300000"))
            assert response.read() == b"x" * 300_000
            stats = assert_at_rest(transport)
            assert stats.bodies_drained == 1
    finally:
        for fd in fillers:
            os.close(fd)
        os.close(spare)
