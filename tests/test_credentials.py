"""Credentials in URLs. A request URL's userinfo is sent as
``Authorization: Basic`` unless the caller gave an Authorization (as curl,
httpx and Go's client do); the password never appears where poolwatch
shows a URL: error messages and their ``url``, events, ``open_bodies()``,
a response's repr and leak reports. A proxy URL's password never appears in
the error for a proxy URL that cannot be used."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h11
import pytest

import poolwatch
from tests.async_support import assert_at_rest, run
from tests.conftest import assert_at_rest as assert_sync_at_rest
from tests.eventlog import EventLog
from tests.servers import HTTPServer, RawServer, Reply, ServerConnection, http_server, raw_server
from tests.test_leaks import run_child

SECRET = "s3cr3tPW"


def _authorizations(request: h11.Request, body: bytes) -> Reply:
    """Answers with every Authorization value the request carried, one a line."""
    values = [value for name, value in request.headers if name == b"authorization"]
    return Reply(body=b"\n".join(values))


@pytest.fixture
def auth_server() -> Iterator[HTTPServer]:
    """A server whose ``/private`` answers with the Authorization it got."""
    with http_server({"/private": _authorizations}) as server:
        yield server


@pytest.fixture
def hang_up_server() -> Iterator[RawServer]:
    """A server that reads a request's head and closes without answering."""

    def hang_up(conn: ServerConnection) -> None:
        conn.recv_request_head()

    with raw_server(hang_up) as server:
        yield server


def with_userinfo(server: RawServer, userinfo: str, path: str = "/private") -> str:
    return f"http://{userinfo}@127.0.0.1:{server.port}{path}"


def basic(credentials: bytes) -> bytes:
    return b"Basic " + base64.b64encode(credentials)


# -- the Authorization sent --------------------------------------------------


@pytest.mark.parametrize(
    ("userinfo", "credentials"),
    [
        pytest.param(f"alice:{SECRET}", b"alice:" + SECRET.encode(), id="user-and-password"),
        pytest.param("alice:p%40ss%3Aw%C3%B6rd", "alice:p@ss:w\u00f6rd".encode(), id="encoded"),
        pytest.param("TOKEN", b"TOKEN:", id="user-only"),
        pytest.param("alice:", b"alice:", id="empty-password"),
    ],
)
def test_userinfo_is_sent_as_basic_authorization(
    auth_server: HTTPServer, userinfo: str, credentials: bytes
) -> None:
    """The userinfo, percent-decoded, goes as ``Authorization: Basic``
    (RFC 7617); the request line never carries it."""
    with poolwatch.Transport() as t:
        resp = t.request("GET", with_userinfo(auth_server, userinfo))
        assert resp.read() == basic(credentials)
    assert [path for _, _, path, _ in auth_server.requests] == ["/private"]


def test_callers_authorization_wins(auth_server: HTTPServer) -> None:
    """An Authorization the caller gives is sent alone; an empty userinfo
    (``http://@host``) sends none."""
    with poolwatch.Transport() as t:
        url = with_userinfo(auth_server, f"alice:{SECRET}")
        assert t.request("GET", url, headers={"authorization": "Bearer x"}).read() == b"Bearer x"
        assert t.request("GET", with_userinfo(auth_server, "")).read() == b""


def test_async_userinfo_is_sent_as_basic_authorization(
    event_loop_kind: str, auth_server: HTTPServer
) -> None:
    """As the sync transport."""
    url = with_userinfo(auth_server, f"alice:{SECRET}")

    async def main() -> bytes:
        async with poolwatch.AsyncTransport() as t:
            return await (await t.request("GET", url)).read()

    assert run(main) == basic(b"alice:" + SECRET.encode())


# -- the password is never shown ----------------------------------------------


def test_password_not_in_error(hang_up_server: RawServer) -> None:
    """An error names the URL with the password replaced by ``***``, in its
    message and its ``url``."""
    url = with_userinfo(hang_up_server, f"alice:{SECRET}")
    shown = with_userinfo(hang_up_server, "alice:***")
    with poolwatch.Transport() as t, pytest.raises(poolwatch.RemoteDisconnected) as info:
        t.request("GET", url)
    assert SECRET not in str(info.value)
    assert f"GET {shown}: " in str(info.value)
    assert info.value.url == shown


def test_password_not_in_events_open_bodies_or_repr(auth_server: HTTPServer) -> None:
    """Events, ``open_bodies()`` and the response's repr show the URL with
    the password replaced; a user name alone (often a token) is replaced."""
    log = EventLog()
    with poolwatch.Transport() as t:
        t.add_listener(log)
        for userinfo, shown_userinfo in ((f"alice:{SECRET}", "alice:***"), (SECRET, "***")):
            url = with_userinfo(auth_server, userinfo)
            shown = with_userinfo(auth_server, shown_userinfo)
            with t.request("GET", url) as resp:
                assert [body.url for body in t.open_bodies()] == [shown]
                assert resp.url == shown
                assert repr(resp) == f"<Response [200 ] GET {shown}>"  # h11 sends no reason
        assert_sync_at_rest(t)
    urls = {event.url for event in log.events if event.url is not None}
    assert urls == {
        with_userinfo(auth_server, "alice:***"),
        with_userinfo(auth_server, "***"),
    }


def test_password_not_in_leak_report(tmp_path: Path, auth_server: HTTPServer) -> None:
    """R6: the LeakWarning and the leak_detected event of a response
    garbage-collected unclosed show the URL without the password."""
    url = with_userinfo(auth_server, f"alice:{SECRET}")
    shown = with_userinfo(auth_server, "alice:***")
    report, stderr, _ = run_child(tmp_path, url, "refcount", 1)
    assert stderr == ""
    (warning,) = report["warnings"]
    assert warning["category"] == "LeakWarning"
    assert SECRET not in warning["message"]
    assert f"GET {shown} " in warning["message"]
    assert [event["url"] for event in report["leak_events"]] == [shown]
    assert auth_server.wait_handlers_done(1)


def test_password_not_in_leak_log(
    auth_server: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    """R6: nor in the leak report sent to the ``poolwatch.leaks`` logger."""
    with poolwatch.Transport() as t:
        closed = threading.Event()
        t.add_listener(lambda e: closed.set() if e.name == "conn_closed" else None)
        resp = t.request("GET", with_userinfo(auth_server, f"alice:{SECRET}"))
        with pytest.warns(poolwatch.LeakWarning), caplog.at_level("WARNING", "poolwatch.leaks"):
            resp.report_leak()
            assert closed.wait(10)
    messages = [record.getMessage() for record in caplog.records]
    assert messages
    assert not [message for message in messages if SECRET in message]


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(f"http://alice:{SECRET}@127.0.0.1:99999/", id="port-out-of-range"),
        pytest.param(f"ftp://alice:{SECRET}@127.0.0.1/", id="unsupported-scheme"),
        pytest.param(f"http://alice:{SECRET}@127.0.0.1/a b", id="space"),
        pytest.param(f"https://alice:a#{SECRET}@127.0.0.1/", id="hash-in-password"),
        pytest.param(f"https://alice:a?{SECRET}@127.0.0.1/", id="question-mark-in-password"),
        pytest.param(f"https://alice:a/{SECRET}@127.0.0.1/", id="slash-in-password"),
    ],
)
def test_password_not_in_invalid_url_error(url: str) -> None:
    """A URL refused before anything is sent is shown without its password."""
    with poolwatch.Transport() as t, pytest.raises(poolwatch.InvalidURL) as info:
        t.request("GET", url)
    assert SECRET not in str(info.value)
    assert SECRET not in info.value.url
    # Where a password's end cannot be told, all of the credentials go.
    shown = "***@127.0.0.1" if "a#" in url or "a?" in url or "a/" in url else "alice:***@127.0.0.1"
    assert shown in str(info.value)


@pytest.mark.parametrize(
    "proxy",
    [
        pytest.param(f"http://bob:{SECRET}@127.0.0.1:99999", id="port-out-of-range"),
        pytest.param(f"ftp://bob:{SECRET}@127.0.0.1:1", id="unsupported-scheme"),
        pytest.param(f"bob:{SECRET}@127.0.0.1:port", id="no-scheme-bad-port"),
    ],
)
def test_proxy_password_not_in_error(proxy: str) -> None:
    """A proxy URL that cannot be used raises InvalidURL without its
    password, from ``parse_proxy()`` and from a request given it."""
    with pytest.raises(poolwatch.InvalidURL) as parsing:
        poolwatch.parse_proxy(proxy)
    with poolwatch.Transport() as t, pytest.raises(poolwatch.InvalidURL) as requesting:
        t.request("GET", "http://127.0.0.1:1/", proxy=proxy)
    for exc in (parsing.value, requesting.value):
        assert SECRET not in str(exc)
        assert SECRET not in exc.url
        assert "bob:***@127.0.0.1:" in str(exc)


def test_async_password_not_shown(
    event_loop_kind: str, auth_server: HTTPServer, hang_up_server: RawServer
) -> None:
    """The asyncio transport shows the same URL: in an error, in events,
    ``open_bodies()`` and the response's repr."""
    failing = with_userinfo(hang_up_server, f"alice:{SECRET}")
    url = with_userinfo(auth_server, f"alice:{SECRET}")
    shown = with_userinfo(auth_server, "alice:***")
    urls: set[str | None] = set()

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:
            with pytest.raises(poolwatch.RemoteDisconnected) as info:
                await t.request("GET", failing)
            assert SECRET not in str(info.value)
            assert info.value.url == with_userinfo(hang_up_server, "alice:***")
            t.add_listener(lambda event: urls.add(event.url))
            async with await t.request("GET", url) as resp:
                assert [body.url for body in t.open_bodies()] == [shown]
                assert repr(resp) == f"<AsyncResponse [200 ] GET {shown}>"
            await assert_at_rest(t)

    run(main)
    assert urls - {None} == {shown}


# -- through the adapters ------------------------------------------------------


class _TokenAuth:
    """An auth that sends no Authorization (an API key header instead)."""

    def __call__(self, request: Any) -> Any:
        request.headers["X-Token"] = "t"
        return request


def test_requests_adapter_sends_url_credentials_as_requests_decides(
    auth_server: HTTPServer,
) -> None:
    """requests turns a URL's credentials into its ``auth`` only when none
    is given; the adapter must not add them back (as urllib3 never sends
    them), so the server sees what it sees with ``HTTPAdapter``."""
    import requests

    url = with_userinfo(auth_server, f"alice:{SECRET}")
    for adapter in (requests.adapters.HTTPAdapter(), poolwatch.RequestsAdapter()):
        with requests.Session() as session:
            session.mount("http://", adapter)
            assert session.get(url).content == basic(f"alice:{SECRET}".encode())
            assert session.get(url, auth=_TokenAuth()).content == b""


def test_httpx_adapters_send_url_credentials_as_httpx_decides(auth_server: HTTPServer) -> None:
    """The same through httpx, sync and async."""
    import httpx

    url = with_userinfo(auth_server, f"alice:{SECRET}")

    def token(request: httpx.Request) -> httpx.Request:
        request.headers["X-Token"] = "t"
        return request

    for transport in (httpx.HTTPTransport(), poolwatch.HTTPXTransport()):
        with httpx.Client(transport=transport) as client:
            assert client.get(url).content == basic(f"alice:{SECRET}".encode())
            assert client.get(url, auth=token).content == b""

    async def main() -> None:
        for transport in (httpx.AsyncHTTPTransport(), poolwatch.AsyncHTTPXTransport()):
            async with httpx.AsyncClient(transport=transport) as client:
                assert (await client.get(url)).content == basic(f"alice:{SECRET}".encode())
                assert (await client.get(url, auth=token)).content == b""

    run(main)
