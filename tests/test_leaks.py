"""Leaked response bodies (R6): who holds them (open_bodies), and what happens
when one is garbage-collected unclosed (a LeakWarning, the bodies_leaked
count, and the connection torn down).

Garbage-collection tests run in a child interpreter (STYLE.md, Tests): the
warning comes from a finaliser, which pytest's warnings-as-errors would turn
into an unraisable exception, and gc timing must not depend on the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import poolwatch
from tests.conftest import assert_at_rest
from tests.servers import HTTPServer, ServerConnection, raw_server

REPO = Path(__file__).resolve().parent.parent

# The child: makes COUNT requests through `fetch` (the call site every leak
# report must name), drops the responses unread and unclosed, then reports
# what it saw as JSON on stdout. Garbage collection is manual so that a
# response kept alive by a reference cycle is freed only by gc.collect().
CHILD = textwrap.dedent(
    """
    import gc
    import json
    import sys
    import threading
    import warnings

    import poolwatch

    url, mode, count, record = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    gc.disable()
    events = []
    cond = threading.Condition()


    def listener(event):
        with cond:
            events.append(event)
            cond.notify_all()


    def named(name):
        return [e for e in events if e.name == name]


    def fetch(transport):
        return transport.request("GET", url)  # CALL SITE


    # "record": keep the warnings and report them; "stderr": let Python
    # print them, as a user running with -W always would see them.
    with warnings.catch_warnings(record=record == "record") as caught:
        warnings.simplefilter("always")
        caught = [] if caught is None else caught
        with poolwatch.Transport() as transport:
            transport.add_listener(listener)
            responses = [fetch(transport) for _ in range(count)]
            held = transport.stats()
            if mode == "cycle":
                responses.append(responses)  # only the cycle collector frees it
            del responses
            warned_before_gc = len(caught)
            gc.collect()
            with cond:
                closed = cond.wait_for(lambda: len(named("conn_closed")) >= count, 10)
            transport.settle()
            stats = transport.stats()
            open_after = transport.open_bodies()

    print(json.dumps({
        "closed_in_time": closed,
        "held_open_bodies": held.open_bodies,
        "warned_before_gc": warned_before_gc,
        "warnings": [
            {
                "category": w.category.__name__,
                "is_leak_warning": issubclass(w.category, poolwatch.LeakWarning),
                "is_resource_warning": issubclass(w.category, ResourceWarning),
                "message": str(w.message),
            }
            for w in caught
        ],
        "closed_reasons": [e["reason"] for e in named("conn_closed")],
        "leak_events": [
            {"method": e["method"], "url": e.url, "call_site": str(e["call_site"])}
            for e in named("leak_detected")
        ],
        "put_idle": len(named("put_idle_conn")),
        "stats": stats.as_dict(),
        "violations": stats.invariant_violations(),
        "open_after": len(open_after),
    }))
    """
)


def _line_of(marker: str, text: str) -> int:
    """The 1-based line of ``text`` that holds ``marker``."""
    (line,) = [n for n, row in enumerate(text.splitlines(), 1) if marker in row]
    return line


def run_child(
    tmp_path: Path, url: str, mode: str, count: int, record: str = "record"
) -> tuple[dict[str, Any], str, str]:
    """Run the child script; return its report, its stderr and the call
    site (``file:line``) its leak reports must name."""
    script = tmp_path / "leaky_client.py"
    script.write_text(CHILD)
    # The child must not inherit -W error from the environment: the leak
    # warnings are recorded there, not raised.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(script), url, mode, str(count), record],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # A finaliser that raised is reported only on stderr ("Exception ignored").
    assert "Exception ignored" not in result.stderr, result.stderr
    call_site = f"{script}:{_line_of('# CALL SITE', CHILD)}"
    report: dict[str, Any] = json.loads(result.stdout)
    return report, result.stderr, call_site


@pytest.mark.parametrize(
    ("mode", "count"),
    [
        pytest.param("refcount", 1, id="dropped"),
        pytest.param("cycle", 1, id="dropped-in-a-cycle"),
        pytest.param("refcount", 5, id="five-dropped"),
    ],
)
def test_garbage_collected_response_is_reported_and_torn_down(
    tmp_path: Path, server: HTTPServer, mode: str, count: int
) -> None:
    """R6: each response garbage-collected with its body neither read nor
    closed emits one LeakWarning (a ResourceWarning) naming the method, the
    URL and the call site (file:line of the code that made the request),
    counts as leaked, and its connection is torn down (conn_closed with
    reason "leaked"), never pooled; the R18 invariants hold afterwards."""
    url = server.url("/leaky")
    report, stderr, call_site = run_child(tmp_path, url, mode, count)
    assert stderr == ""

    assert report["held_open_bodies"] == count
    assert report["closed_in_time"], report
    warned = report["warnings"]
    assert len(warned) == count, warned
    for warning in warned:
        assert warning["category"] == "LeakWarning"
        assert warning["is_leak_warning"] and warning["is_resource_warning"]
        assert f"GET {url}" in warning["message"]
        assert call_site in warning["message"], (call_site, warning["message"])
    if mode == "cycle":
        assert report["warned_before_gc"] == 0, "reported while still reachable"
    assert (
        report["leak_events"]
        == [{"method": "GET", "url": url, "call_site": f"{call_site} in fetch"}] * count
    )
    assert report["closed_reasons"] == ["leaked"] * count
    assert report["put_idle"] == 0
    stats = report["stats"]
    assert stats["bodies_leaked"] == count
    assert stats["requests"] == count
    assert stats["connections_opened"] == stats["connections_closed"] == count
    assert (stats["open_connections"], stats["workers_alive"]) == (0, 0)
    assert report["violations"] == []
    assert report["open_after"] == 0
    # The server saw every connection go away.
    assert server.wait_handlers_done(count)


def test_leak_warning_printed_by_default_machinery(tmp_path: Path, server: HTTPServer) -> None:
    """R6: with warnings shown rather than raised (the child runs without
    -W error), the LeakWarning reaches stderr through Python's normal
    warning display, once, with its category, URL and call site."""
    url = server.url("/shown")
    report, stderr, call_site = run_child(tmp_path, url, "refcount", 1, record="stderr")
    assert report["stats"]["bodies_leaked"] == 1
    assert report["closed_reasons"] == ["leaked"]
    assert stderr.count("LeakWarning: ") == 1, stderr
    assert f"GET {url}" in stderr
    assert call_site in stderr


def _drain(resp: poolwatch.Response) -> None:
    assert resp.read() == b"hello world!\n"


def _close_early(resp: poolwatch.Response) -> None:
    resp.close()


def _read_partly_then_close(resp: poolwatch.Response) -> None:
    assert resp.read(5) == b"hello"
    resp.close()


def _nothing(resp: poolwatch.Response) -> None:
    """A body-less response needs neither a read nor a close (R7)."""


@pytest.mark.parametrize(
    ("path", "finish", "outcome"),
    [
        pytest.param("/", _drain, "drained", id="drained"),
        pytest.param("/", _close_early, "closed_early", id="closed-early"),
        pytest.param("/", _read_partly_then_close, "closed_early", id="read-partly-closed"),
        pytest.param("/empty", _nothing, "no_body", id="204-untouched"),
        pytest.param("/zero", _nothing, "no_body", id="content-length-0-untouched"),
    ],
)
def test_finished_response_dropped_silently(
    transport: poolwatch.Transport,
    server: HTTPServer,
    path: str,
    finish: Callable[[poolwatch.Response], None],
    outcome: str,
) -> None:
    """R4, R5, R7 vs R6: a response whose body ended (drained, closed, or
    never had one) can be dropped without a LeakWarning and is not counted
    as leaked."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resp = transport.request("GET", server.url(path))
        finish(resp)
        assert resp.outcome == outcome
        del resp
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    stats = assert_at_rest(transport)
    assert (stats.bodies_leaked, stats.open_bodies) == (0, 0)
    assert transport.open_bodies() == []


def _here() -> int:
    """The caller's current line number."""
    return sys._getframe(1).f_lineno


def test_open_bodies_name_who_holds_them(
    transport: poolwatch.Transport, server: HTTPServer
) -> None:
    """R6: open_bodies() lists each response neither drained nor closed,
    with its method, URL, status, age, connection and the call site
    (file, line and function of the code that made the request); a body
    leaves the list when it is closed or read to the end."""
    started = time.monotonic()
    get, get_line = transport.request("GET", server.url("/bytes/100")), _here()
    post, post_line = transport.request("POST", server.url("/echo"), body=b"abc"), _here()
    open_bodies = sorted(transport.open_bodies(), key=lambda body: body.method)
    elapsed = time.monotonic() - started

    assert [(b.method, b.url, b.status) for b in open_bodies] == [
        ("GET", server.url("/bytes/100"), 200),
        ("POST", server.url("/echo"), 200),
    ]
    assert [b.connection_id for b in open_bodies] == [get.connection_id, post.connection_id]
    function = "test_open_bodies_name_who_holds_them"
    for body, line in zip(open_bodies, (get_line, post_line), strict=True):
        assert 0 <= body.age <= elapsed
        assert body.call_site.frames[0] == (__file__, line, function)
        assert str(body.call_site) == f"{__file__}:{line} in {function}"
    assert transport.stats().open_bodies == 2

    post.close()
    assert [b.method for b in transport.open_bodies()] == ["GET"]
    assert get.read() == b"x" * 100
    assert transport.open_bodies() == []


def test_open_body_age_grows(transport: poolwatch.Transport, server: HTTPServer) -> None:
    """R6: an open body's age counts from its response head, so a later
    snapshot reports it older."""
    with transport.request("GET", server.url()) as resp:
        (first,) = transport.open_bodies()
        (second,) = transport.open_bodies()
        assert resp.status == 200
    assert 0 <= first.age <= second.age


@pytest.mark.parametrize("depth", [0, 1, 2, 5])
def test_call_site_depth(server: HTTPServer, depth: int) -> None:
    """R6: the transport records ``call_site_depth`` caller frames,
    innermost first, all outside poolwatch; depth 0 records none."""
    with poolwatch.Transport(call_site_depth=depth) as t:
        with t.request("GET", server.url()) as resp:
            line = _here() - 1
            (body,) = t.open_bodies()
            assert resp.status == 200
        frames = body.call_site.frames
        assert len(frames) == depth
        if depth:
            assert frames[0][:2] == (__file__, line)
            package = os.path.dirname(poolwatch.__file__) + os.sep
            assert not [f for f in frames if f[0].startswith(package)]
        else:
            assert str(body.call_site) == "<unknown>"


def test_leak_after_the_server_hung_up_is_counted(transport: poolwatch.Transport) -> None:
    """R6: a buffered body dropped after the server closed its connection
    (so its reader has already exited) is still counted as leaked and no
    longer listed as open."""
    closed = threading.Event()
    transport.add_listener(lambda e: closed.set() if e.name == "conn_closed" else None)

    def answer_then_hang_up(conn: ServerConnection) -> None:
        conn.recv_request_head()
        conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")

    with raw_server(answer_then_hang_up) as srv:
        resp = transport.request("GET", srv.url("/"))
        assert closed.wait(10)  # the reader saw the hang-up and exited
        assert len(transport.open_bodies()) == 1
        with pytest.warns(poolwatch.LeakWarning):
            del resp
        stats = transport.stats()
        assert stats.bodies_leaked == 1
        assert stats.open_bodies == 0
        assert transport.open_bodies() == []


def test_settle_counts_a_leak_just_dropped(
    transport: poolwatch.Transport, server: HTTPServer
) -> None:
    """R6: right after a response is dropped unread on a live keep-alive
    connection, settle() waits for its workers to count the leak and tear
    the connection down."""
    resp = transport.request("GET", server.url("/"))
    with pytest.warns(poolwatch.LeakWarning):
        del resp
    transport.settle()
    stats = transport.stats()
    assert (stats.bodies_leaked, stats.open_bodies, stats.open_connections) == (1, 0, 0)
    assert stats.workers_alive == 0
