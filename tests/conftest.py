"""Fixtures shared by the tests: loopback servers, a transport checked for
the R18 invariants, and a guard that fails any test leaving a thread or a
socket behind."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import pytest
import trustme

import poolwatch
from tests import async_support
from tests.servers import HTTPServer, http_server
from tests.tls_support import TLSServer, server_context, tls_server


def _open_sockets() -> set[str]:
    """The process's open sockets and eventfds (what a transport opens)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:") or target == "anon_inode:[eventfd]":
            found.add(f"{fd}->{target}")
    return found


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    """Fail a test that leaves a thread, a socket or an eventfd behind."""
    threads_before = set(threading.enumerate())
    sockets_before = _open_sockets()
    yield
    left = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    for thread in left:
        thread.join(5)  # a worker may still be on its way out
    left = [t for t in left if t.is_alive()]
    assert not left, f"threads left behind: {[t.name for t in left]}"
    leaked = _open_sockets() - sockets_before
    assert not leaked, f"sockets or eventfds left open: {sorted(leaked)}"


@pytest.fixture(params=async_support.LOOPS)
def event_loop_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test's event loops (:func:`tests.async_support.run`) on each
    kind in turn: asyncio's own, then uvloop's."""
    async_support.use_loop(request.param)
    try:
        yield request.param
    finally:
        async_support.use_loop("asyncio")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A certificate authority made for this module's tests."""
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_bundle(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``ca``'s certificate in a PEM file, for ``verify=`` paths."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def https_server(ca: trustme.CA) -> Iterator[TLSServer]:
    """A TLS loopback server with a certificate for ``localhost`` from ``ca``."""
    with tls_server(server_context(ca, "localhost")) as srv:
        yield srv


@pytest.fixture
def server() -> Iterator[HTTPServer]:
    with http_server() as srv:
        yield srv


class CountedIteration(OrderedDict[Any, Any]):
    """A dict that counts the passes made over it (to check that some work
    does not walk a collection, or walks it once)."""

    passes = 0

    def __iter__(self) -> Iterator[Any]:
        self.passes += 1
        return super().__iter__()


def assert_at_rest(transport: poolwatch.Transport) -> poolwatch.PoolStats:
    """Settle the transport and check the R18 invariants, in total and per
    origin. Returns the snapshot."""
    transport.settle()
    stats = transport.stats()
    assert stats.invariant_violations() == [], stats
    for origin, per in stats.per_origin.items():
        assert per.invariant_violations() == [], (origin, per)
    return stats


@pytest.fixture
def transport() -> Iterator[poolwatch.Transport]:
    """A default transport, checked for the R18 invariants at the end."""
    t = poolwatch.Transport()
    try:
        yield t
        assert_at_rest(t)
    finally:
        t.close()
    assert t.stats().workers_alive == 0
