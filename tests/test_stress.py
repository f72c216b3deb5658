"""Scenario 13: a stress run against a server that hangs up at random after
responses. Every call returns a response or a documented error, none hangs,
and the R18 invariants hold at the end."""

from __future__ import annotations

import random
import threading

import poolwatch
from tests.conftest import assert_at_rest
from tests.servers import ServerConnection, raw_server

THREADS = 8
REQUESTS_PER_THREAD = 150
BODY = b"0123456789" * 50


def _flaky(seed: int) -> object:
    """A handler answering keep-alive requests, then hanging up at random:
    cleanly after a response, mid-body, or with a reset."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def serve(conn: ServerConnection) -> None:
        while conn.recv_request_head():
            with lock:
                roll = rng.random()
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
            if roll < 0.05:
                conn.sock.sendall(head + BODY[:100])  # cut mid-body
                return
            conn.sock.sendall(head + BODY)
            if roll < 0.15:
                return  # hang up after a response

    return serve


def test_scenario_13_random_hangups() -> None:
    """Many threads, random hang-ups: no hang, only documented errors, and
    the invariants hold with every body accounted for."""
    outcomes: dict[str, int] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(t: poolwatch.Transport, url: str) -> None:
        for _ in range(REQUESTS_PER_THREAD):
            try:
                with t.request("GET", url, timeout=10) as resp:
                    assert resp.read() == BODY
                    key = "ok"
            except poolwatch.PoolwatchError as exc:
                key = type(exc).__name__
            except BaseException as exc:  # anything else is a bug
                with lock:
                    errors.append(exc)
                return
            with lock:
                outcomes[key] = outcomes.get(key, 0) + 1

    with raw_server(_flaky(13)) as srv, poolwatch.Transport(max_connections_per_host=6) as t:
        threads = [threading.Thread(target=worker, args=(t, srv.url())) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert sum(outcomes.values()) == THREADS * REQUESTS_PER_THREAD
        assert outcomes["ok"] > THREADS * REQUESTS_PER_THREAD // 2
        assert set(outcomes) <= {"ok", "RemoteProtocolError", "ReadError", "RemoteDisconnected"}
        stats = assert_at_rest(t)
        assert stats.open_bodies == 0
        assert stats.requests == stats.bodies_drained + stats.bodies_errored
