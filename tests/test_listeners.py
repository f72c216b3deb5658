"""Listeners (R19): removed as added, even as bound methods; each failing
listener logged once, without hiding another; details every listener
reads alike, as no listener can change them."""

from __future__ import annotations

import copy
import gc
import logging
import pickle
import socket
from typing import Any

import pytest

import poolwatch
from tests import async_support
from tests.servers import HTTPServer, ServerConnection, raw_server


class Recorder:
    """Records event names through a bound method, as the exporters do."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def observe(self, event: poolwatch.Event) -> None:
        self.names.append(event.name)


def test_bound_method_listener_is_removed(server: HTTPServer) -> None:
    """``remove_listener(obj.method)`` removes what ``add_listener(obj.method)``
    added, though each access makes a new bound method."""
    recorder = Recorder()
    with poolwatch.Transport() as t:
        t.add_listener(recorder.observe)
        t.request("GET", server.url()).read()
        heard = len(recorder.names)
        t.remove_listener(recorder.observe)
        t.request("GET", server.url()).read()
    assert heard > 0 and len(recorder.names) == heard


def test_async_bound_method_listener_is_removed(server: HTTPServer) -> None:
    """The same with the async transport."""
    recorder = Recorder()

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:
            t.add_listener(recorder.observe)
            await (await t.request("GET", server.url())).read()
            heard = len(recorder.names)
            t.remove_listener(recorder.observe)
            await (await t.request("GET", server.url())).read()
            assert heard > 0 and len(recorder.names) == heard

    async_support.run(main)


def test_each_failing_listener_is_logged_once(
    server: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A listener that raises is logged once, and the request goes on; one
    made later (perhaps at the address of a freed one) is logged too."""
    with poolwatch.Transport() as t, caplog.at_level(logging.ERROR, "poolwatch"):
        for round_ in range(3):

            def broken(event: poolwatch.Event, round_: int = round_) -> None:
                raise RuntimeError(f"listener {round_}")

            t.add_listener(broken)
            for _ in range(2):
                assert t.request("GET", server.url()).read() == b"hello world!\n"
            t.remove_listener(broken)
            del broken
    logged = [r for r in caplog.records if "raised; ignored" in r.getMessage()]
    assert [str(r.exc_info[1]) for r in logged if r.exc_info] == [
        "listener 0",
        "listener 1",
        "listener 2",
    ]


class _Outcome(BaseException):
    """What ``pytest.fail()`` raises: not an ``Exception``."""


@pytest.mark.parametrize("name", ["got_first_response_byte", "body_done"])
def test_a_listener_raising_a_base_exception_is_logged_too(
    server: HTTPServer, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    """A listener raising a ``BaseException`` (a test's ``pytest.fail()``),
    on a worker or on the caller's thread, is logged and ignored like any
    other: the request and its body are as if it had not raised."""

    def failing(event: poolwatch.Event) -> None:
        if event.name == name:
            raise _Outcome(f"failed on {name}")

    with poolwatch.Transport() as t, caplog.at_level(logging.ERROR, "poolwatch"):
        t.add_listener(failing)
        assert t.request("GET", server.url()).read() == b"hello world!\n"
        stats = t.stats()
    assert (stats.bodies_drained, stats.bodies_closed_early) == (1, 0)
    logged = [r for r in caplog.records if "raised; ignored" in r.getMessage()]
    assert [str(r.exc_info[1]) for r in logged if r.exc_info] == [f"failed on {name}"]


def test_a_listener_added_twice_is_removed_once(server: HTTPServer) -> None:
    """``remove_listener`` takes back one addition: added twice, removed
    once, it is still called once per event."""
    recorder = Recorder()
    with poolwatch.Transport() as t:
        t.add_listener(recorder.observe)
        t.add_listener(recorder.observe)
        t.remove_listener(recorder.observe)
        t.request("GET", server.url()).read()
        heard = list(recorder.names)
        t.remove_listener(recorder.observe)
        t.remove_listener(recorder.observe)  # no longer there: nothing to do
        t.request("GET", server.url()).read()
    assert heard and len(heard) == len(set(heard))  # once each
    assert recorder.names == heard


def test_event_details_are_read_only(server: HTTPServer) -> None:
    """A listener cannot change what the next listener reads."""
    seen: list[Any] = []

    def meddler(event: poolwatch.Event) -> None:
        if event.name == "got_conn":
            with pytest.raises(TypeError):
                event.data["wait"] = 1e6  # type: ignore[index]

    def reader(event: poolwatch.Event) -> None:
        if event.name == "got_conn":
            seen.append(event.data["wait"])

    with poolwatch.Transport() as t:
        t.add_listener(meddler)
        t.add_listener(reader)
        t.request("GET", server.url()).read()
    assert len(seen) == 1 and seen[0] < 1e6


def _refused_url() -> str:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{unused.getsockname()[1]}/"


def test_a_call_that_raises_is_counted_and_heard() -> None:
    """A call that raises before its response counts in ``request_errors``
    (R18: not in ``requests``) and emits ``request_failed``."""
    failed: list[poolwatch.Event] = []
    url = _refused_url()
    with poolwatch.Transport() as t:
        t.add_listener(lambda e: failed.append(e) if e.name == "request_failed" else None)
        with pytest.raises(poolwatch.ConnectError):
            t.request("POST", url, body=b"x")
        stats = t.stats()
    assert (stats.request_errors, stats.requests) == (1, 0)
    assert stats.per_origin[url.rstrip("/")].request_errors == 1
    [event] = failed
    assert event.url == url and event.data["method"] == "POST"
    assert isinstance(event.data["error"], poolwatch.ConnectError)
    assert event.data["elapsed"] >= 0


def test_async_call_that_raises_is_counted_and_heard() -> None:
    """The same with the async transport."""
    failed: list[poolwatch.Event] = []
    url = _refused_url()

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:
            t.add_listener(lambda e: failed.append(e) if e.name == "request_failed" else None)
            with pytest.raises(poolwatch.ConnectError):
                await t.request("GET", url)
            assert (t.stats().request_errors, t.stats().requests) == (1, 0)

    async_support.run(main)
    assert [e.data["method"] for e in failed] == ["GET"]


def test_events_pickle_and_copy(server: HTTPServer) -> None:
    """An event goes to another process (a multiprocessing queue) or a deep
    copy whole, its details read-only again; a leak's call site with its
    file, line and function names."""
    events: list[poolwatch.Event] = []
    with poolwatch.Transport() as t:
        t.add_listener(events.append)
        t.request("GET", server.url()).read()
        with pytest.warns(poolwatch.LeakWarning):
            t.request("GET", server.url("/stream"))  # dropped unread: leaked
            gc.collect()
        t.settle()
    leaks = [event for event in events if event.name == "leak_detected"]
    assert len(leaks) == 1
    site = pickle.loads(pickle.dumps(leaks[0])).data["call_site"]
    assert str(site) == str(leaks[0].data["call_site"])
    assert "test_listeners.py" in site.format()
    for event in events:
        for copied in (pickle.loads(pickle.dumps(event)), copy.deepcopy(event)):
            assert copied == event
            with pytest.raises(TypeError):
                copied.data["x"] = 1  # type: ignore[index]


class _AsyncCallable:
    async def __call__(self, event: poolwatch.Event) -> None:
        pass


async def _async_listener(event: poolwatch.Event) -> None:
    pass


@pytest.mark.parametrize(
    "listener", [_async_listener, _AsyncCallable()], ids=["function", "object"]
)
def test_a_coroutine_listener_is_refused(server: HTTPServer, listener: Any) -> None:
    """Listeners are called, never awaited: an async one would only make
    coroutines that are never run (and a warning for each event). It is
    refused when added, or given to one request, with a TypeError saying so."""
    with poolwatch.Transport() as t:
        with pytest.raises(TypeError, match="never awaited"):
            t.add_listener(listener)
        with pytest.raises(TypeError, match="never awaited"):
            t.request("GET", server.url(), listener=listener)
        assert t.request("GET", server.url()).read() == b"hello world!\n"


@pytest.mark.parametrize("path", ["/bytes/100", "/bytes/1000000"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_body_the_transport_close_ends_is_heard_once(
    server: HTTPServer, kind: str, path: str
) -> None:
    """R14, R19: a body still open when its transport closes ends
    ``errored``, and ``body_done`` says so, once, also after a read of it
    has raised."""
    heard: list[poolwatch.Event] = []
    if kind == "sync":
        t = poolwatch.Transport()
        t.add_listener(heard.append)
        resp = t.request("GET", server.url(path))
        t.close()
        with pytest.raises(poolwatch.ReadError):
            resp.read()
        resp.close()
        stats = t.stats()
    else:

        async def main() -> poolwatch.PoolStats:
            t = poolwatch.AsyncTransport()
            t.add_listener(heard.append)
            resp = await t.request("GET", server.url(path))
            await t.aclose()
            with pytest.raises(poolwatch.ReadError):
                await resp.read()
            await resp.aclose()
            return t.stats()

        stats = async_support.run(main)
    done = [event for event in heard if event.name == "body_done"]
    assert [(e.data["outcome"], e.data["reused"]) for e in done] == [("errored", False)]
    assert done[0].data["elapsed"] >= 0
    assert (stats.bodies_errored, stats.open_bodies) == (1, 0)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_errored_body_closes_its_connection_for_the_same_reason(kind: str) -> None:
    """R19: a body cut short ends ``errored``, and both transports close its
    connection for that reason."""

    def cut_short(conn: ServerConnection) -> None:
        conn.recv_request_head()
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")

    heard: list[poolwatch.Event] = []
    with raw_server(cut_short) as srv:
        if kind == "sync":
            with poolwatch.Transport() as t:
                t.add_listener(heard.append)
                with pytest.raises(poolwatch.RemoteProtocolError):
                    t.request("GET", srv.url()).read()
                t.settle()
        else:

            async def main() -> None:
                async with poolwatch.AsyncTransport() as t:
                    t.add_listener(heard.append)
                    with pytest.raises(poolwatch.RemoteProtocolError):
                        await (await t.request("GET", srv.url())).read()
                    await t.settle()

            async_support.run(main)
    ends = [(e.name, e.data.get("outcome", e.data.get("reason"))) for e in heard]
    assert [end for end in ends if end[0] in ("body_done", "conn_closed")] == [
        ("body_done", "errored"),
        ("conn_closed", "errored"),
    ]
