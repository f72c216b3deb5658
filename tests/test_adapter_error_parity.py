"""What the requests adapter raises for a forwarding proxy that fails and
for a head with two Content-Lengths: the exception types and the pool named
are those of requests' HTTPAdapter, checked side by side."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable

import pytest
import requests
import requests.adapters
import requests.exceptions as rexc
from urllib3.exceptions import NameResolutionError

import poolwatch
from tests.conftest import assert_at_rest
from tests.servers import ServerConnection, answering, raw_server

ADAPTERS = pytest.mark.parametrize("stock", [True, False], ids=["HTTPAdapter", "RequestsAdapter"])
# Never resolved: a forwarding proxy receives the whole URL and answers.
TARGET = "http://origin.invalid/p"


def _mounted(stock: bool) -> tuple[requests.Session, requests.adapters.BaseAdapter]:
    adapter = requests.adapters.HTTPAdapter() if stock else poolwatch.RequestsAdapter()
    session = requests.Session()
    session.mount("http://", adapter)
    return session, adapter


def _hang_up(conn: ServerConnection) -> None:
    conn.recv_request_head()


def _reset(conn: ServerConnection) -> None:
    conn.recv_request_head()
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@ADAPTERS
@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        (_hang_up, rexc.ProxyError),
        (_reset, rexc.ProxyError),
        (answering(b"SSH-2.0-OpenSSH\r\n\r\n"), rexc.ConnectionError),
    ],
    ids=["hangs-up", "resets", "answers-garbage"],
)
def test_a_forwarding_proxy_that_fails(
    stock: bool, behaviour: Callable[[ServerConnection], None], expected: type[Exception]
) -> None:
    """An http proxy that closes or resets the connection without an
    answer is a ProxyError naming the proxy's pool, as urllib3 has it; one
    that answers garbage is a ConnectionError, not a ProxyError."""
    session, adapter = _mounted(stock)
    with raw_server(behaviour) as proxy, session:
        with pytest.raises(rexc.ConnectionError) as raised:
            session.get(TARGET, proxies={"http": proxy.url()}, timeout=10)
        assert type(raised.value) is expected
        if expected is rexc.ProxyError:
            assert f"HTTPConnectionPool(host='127.0.0.1', port={proxy.port})" in str(raised.value)
            assert "Unable to connect to proxy" in str(raised.value)
        if isinstance(adapter, poolwatch.RequestsAdapter):
            assert_at_rest(adapter.transport)


@ADAPTERS
def test_a_silent_forwarding_proxy_times_out_naming_its_pool(stock: bool) -> None:
    release = threading.Event()

    def silent(conn: ServerConnection) -> None:
        conn.recv_request_head()
        release.wait(10)

    session, _ = _mounted(stock)
    try:
        with raw_server(silent) as proxy, session:
            with pytest.raises(rexc.ReadTimeout) as raised:
                session.get(TARGET, proxies={"http": proxy.url()}, timeout=0.2)
            assert f"HTTPConnectionPool(host='127.0.0.1', port={proxy.port})" in str(raised.value)
            release.set()
    finally:
        release.set()


_CONFLICTING_LENGTHS = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde"
_SAME_LENGTHS = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"


@ADAPTERS
def test_two_different_content_lengths_are_an_invalid_header(stock: bool) -> None:
    """urllib3 refuses them as InvalidHeader; two equal ones are one."""
    session, adapter = _mounted(stock)
    with session:
        with raw_server(answering(_CONFLICTING_LENGTHS)) as srv, pytest.raises(rexc.InvalidHeader):
            session.get(srv.url(), timeout=10)
        with raw_server(answering(_SAME_LENGTHS)) as srv:
            assert session.get(srv.url(), timeout=10).content == b"abc"
        if isinstance(adapter, poolwatch.RequestsAdapter):
            assert_at_rest(adapter.transport)


@ADAPTERS
def test_a_name_that_does_not_resolve(stock: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib3's NameResolutionError is the reason, through either adapter
    (the lookup is made to fail here: no resolver is asked)."""

    def no_such_name(host: object, *args: object, **kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    session, _ = _mounted(stock)
    with session, pytest.raises(rexc.ConnectionError) as raised:
        session.get("http://no-such-name.invalid/", timeout=10)
    assert isinstance(raised.value.args[0].reason, NameResolutionError)
    assert "Failed to resolve 'no-such-name.invalid'" in str(raised.value)
