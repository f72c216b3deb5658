"""R6 on the asyncio transport: a response garbage-collected unclosed emits
the LeakWarning with its call site and its connection is torn down on the
loop, whichever thread the finaliser runs on, and quietly after the loop
has closed."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import pytest

import poolwatch
from tests.async_support import assert_at_rest, event_seen, run
from tests.servers import HTTPServer, ServerConnection, raw_server

pytestmark = pytest.mark.usefixtures("event_loop_kind")

ROOT = Path(__file__).resolve().parent.parent


def test_finaliser_on_another_thread(server: HTTPServer) -> None:
    """The last reference dropped on another thread: the warning is emitted
    there, and the teardown runs on the loop."""
    caught: list[warnings.WarningMessage] = []

    def drop(holder: list[object]) -> None:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            holder.clear()
            gc.collect()
        caught.extend(seen)

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:
            closed = event_seen(t, "conn_closed")
            holder: list[object] = [await t.request("GET", server.url("/stream"))]
            thread = threading.Thread(target=drop, args=(holder,))
            thread.start()
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
            await closed.wait()
            stats = await assert_at_rest(t)
            assert (stats.bodies_leaked, stats.open_connections) == (1, 0)

    run(main)
    leaks = [w for w in caught if issubclass(w.category, poolwatch.LeakWarning)]
    assert len(leaks) == 1
    assert "test_async_leaks.py" in str(leaks[0].message)


SCRIPT = """
import asyncio, gc, sys, warnings
sys.path.insert(0, {root!r})
import poolwatch
from tests.servers import http_server

heard = []

async def main(url):
    t = poolwatch.AsyncTransport()
    t.add_listener(lambda event: heard.append(event.name))
    return t, await t.request("GET", url)

def leak_warnings(holder):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", poolwatch.LeakWarning)
        holder.clear()
        gc.collect()
    return sum(issubclass(w.category, poolwatch.LeakWarning) for w in caught)

with http_server() as srv:
    # asyncio.run() cancels the worker tasks: the connection closes and the
    # body ends as errored, so there is nothing left to report.
    t, resp = asyncio.run(main(srv.url("/stream")))
    outcome, holder = resp.outcome, [resp]
    del resp
    print("after run:", outcome, leak_warnings(holder))
    print("heard:", heard.count("leak_detected"), heard.count("body_done"))
    # A loop closed with its tasks still pending: the body is still open.
    loop = asyncio.new_event_loop()
    t, resp = loop.run_until_complete(main(srv.url("/stream")))
    loop.close()
    outcome, holder = resp.outcome, [resp]
    del resp
    print("after close:", outcome, leak_warnings(holder))
"""


def test_finaliser_after_the_loop_closed() -> None:
    """Dropped after the loop is gone: nothing raises from the finaliser.
    After asyncio.run() the body already ended as leaked (the run cancelled
    its workers with the body still open), and ``leak_detected`` was heard;
    after a bare loop.close() it is
    still open, and the warning comes. In a subprocess: the transport is left unclosed."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT.format(root=str(ROOT)))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "after run: leaked 0" in done.stdout
    assert "heard: 1 0" in done.stdout  # leak_detected, not body_done (R19)
    assert "after close: None 1" in done.stdout
    assert "Exception ignored" not in done.stderr


def test_leak_after_the_server_hung_up_is_counted() -> None:
    """R6: a buffered body dropped after the server closed its connection
    (so its reader has already exited) is still counted as leaked, no
    longer listed as open, and the leak event is emitted once."""

    def answer_then_hang_up(conn: ServerConnection) -> None:
        conn.recv_request_head()
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")

    async def main(url: str) -> None:
        async with poolwatch.AsyncTransport() as t:
            closed = event_seen(t, "conn_closed")
            leaks: list[poolwatch.Event] = []
            t.add_listener(lambda e: leaks.append(e) if e.name == "leak_detected" else None)
            resp = await t.request("GET", url)
            await closed.wait()  # the reader saw the hang-up and exited
            assert len(t.open_bodies()) == 1
            with pytest.warns(poolwatch.LeakWarning):
                del resp
            stats = await assert_at_rest(t)
            assert (stats.bodies_leaked, stats.open_bodies) == (1, 0)
            assert t.open_bodies() == []
            assert len(leaks) == 1

    with raw_server(answer_then_hang_up) as srv:
        run(lambda: main(srv.url("/")))


def test_settle_counts_a_leak_just_dropped(server: HTTPServer) -> None:
    """R6: right after a response is dropped unread on a live keep-alive
    connection, settle() waits for its teardown: the leak is counted and the
    connection closed when it returns."""

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:
            resp = await t.request("GET", server.url("/"))
            with pytest.warns(poolwatch.LeakWarning):
                del resp
            stats = await assert_at_rest(t)
            assert (stats.bodies_leaked, stats.open_bodies, stats.open_connections) == (1, 0, 0)

    run(main)


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_a_leak_just_before_aclose_is_counted(server: HTTPServer, turns: int) -> None:
    """R6, R18: a response whose body came whole, dropped unread a few loop
    turns before ``aclose()``: the close leaves the leak to the connection's
    reader, which counts it; nothing stays open."""

    async def main() -> None:
        t = poolwatch.AsyncTransport()
        resp = await t.request("GET", server.url("/bytes/10"))
        with pytest.warns(poolwatch.LeakWarning):
            del resp
            gc.collect()
        for _ in range(turns):
            await asyncio.sleep(0)
        await t.aclose()
        await t.settle()
        stats = t.stats()
        assert (stats.open_bodies, stats.bodies_leaked) == (0, 1)
        assert t.open_bodies() == []

    run(main)


def test_an_async_call_site_shows_the_callers_frames_only(server: HTTPServer) -> None:
    """``call_site_depth`` frames of the caller's code: the event loop's own
    frames, under the coroutine, are not among them."""

    async def main() -> poolwatch.OpenBody:
        async with poolwatch.AsyncTransport() as t:
            response = await t.request("GET", server.url("/stream"))
            [held] = t.open_bodies()
            await response.aclose()
            return held

    held = run(main)
    files = [name for name, _, _ in held.call_site.frames]
    assert files[0] == __file__
    assert not [name for name in files if f"{os.sep}asyncio{os.sep}" in name]
