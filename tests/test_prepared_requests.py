"""Requests that repeat are checked and prepared once: the same head is
shared, each request keeps its own body, and anything that could differ
gets a request of its own."""

from __future__ import annotations

import ssl

import pytest

import poolwatch
from poolwatch._models import PreparedRequests
from tests.servers import http_server

URL = "http://127.0.0.1:8080/a?b=c"

# One transport's memory of requests, for the tests that call it directly.
prepare_request = PreparedRequests().prepare


def test_the_same_request_is_prepared_once() -> None:
    headers = {"X-A": "1", "Accept": "*/*"}
    first = prepare_request("GET", URL, headers)
    assert prepare_request("GET", URL, dict(headers)) is first
    assert prepare_request("GET", URL, list(headers.items())) is first  # the same pairs
    assert prepare_request("GET", URL, list(reversed(headers.items()))) is not first


@pytest.mark.parametrize(
    "change",
    [
        {"method": "HEAD"},
        {"url": URL + "&d=e"},
        {"headers": {"X-A": "2", "Accept": "*/*"}},
        {"keep_alive": False},
        {"proxy": "http://127.0.0.1:3128"},
        {"uds": "/tmp/poolwatch-test.sock"},
    ],
)
def test_anything_that_changes_the_head_gets_a_request_of_its_own(
    change: dict[str, object],
) -> None:
    base: dict[str, object] = {
        "method": "GET",
        "url": URL,
        "headers": {"X-A": "1", "Accept": "*/*"},
    }
    first = prepare_request(**base)  # type: ignore[arg-type]
    other = prepare_request(**{**base, **change})  # type: ignore[arg-type]
    assert other is not first
    assert (other.method, other.url, other.origin, other.plain_head, other.wants_close) != (
        first.method,
        first.url,
        first.origin,
        first.plain_head,
        first.wants_close,
    )


def test_a_new_ssl_context_gets_a_request_of_its_own() -> None:
    one, two = ssl.create_default_context(), ssl.create_default_context()
    first = prepare_request("GET", "https://127.0.0.1:8443/", ssl_context=one)
    assert prepare_request("GET", "https://127.0.0.1:8443/", ssl_context=one) is first
    second = prepare_request("GET", "https://127.0.0.1:8443/", ssl_context=two)
    assert second.origin.ssl_context is two


def test_each_request_keeps_its_own_body() -> None:
    first = prepare_request("POST", URL, None, b"aaaa")
    second = prepare_request("POST", URL, None, b"bbbb")
    assert (first.body, second.body) == (b"aaaa", b"bbbb")
    assert second.plain_head == first.plain_head
    longer = prepare_request("POST", URL, None, b"ccccc")
    assert longer.content_length == 5 and b"Content-Length: 5" in (longer.plain_head or b"")
    assert prepare_request("POST", URL, None, b"").content_length == 0


def test_a_shared_head_keeps_no_body_alive() -> None:
    prepared = PreparedRequests()
    body = b"x" * 100_000
    prepared.prepare("PUT", URL + "&big", None, body)
    (held,) = prepared._known.values()
    assert held.body is None and held.content_length == 100_000
    again = prepared.prepare("PUT", URL + "&big", None, b"y" * 100_000)
    assert again.body == b"y" * 100_000 and again.plain_head == held.plain_head


def test_bodies_of_other_kinds_and_unhashable_headers_are_not_shared() -> None:
    chunks = [b"a", b"b"]
    assert prepare_request("POST", URL, None, chunks) is not prepare_request(
        "POST", URL, None, chunks
    )
    pairs = [["X-A", "1"]]
    first = prepare_request("GET", URL, pairs)  # type: ignore[arg-type]
    assert prepare_request("GET", URL, pairs) is not first  # type: ignore[arg-type]
    assert b"X-A: 1" in (first.plain_head or b"")


def test_bad_requests_are_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(poolwatch.LocalProtocolError):
            prepare_request("GET", URL, {"X-A": "bad\r\nvalue"})
        with pytest.raises(poolwatch.InvalidURL):
            prepare_request("GET", "http:///nohost")


def test_the_memory_of_requests_is_bounded() -> None:
    prepared = PreparedRequests()
    for n in range(3 * PreparedRequests.MAX):
        request = prepared.prepare("GET", f"{URL}&n={n}")
        assert request.url == f"{URL}&n={n}"
        assert 0 < len(prepared) <= PreparedRequests.MAX


def test_each_transport_keeps_its_own_memory() -> None:
    with http_server() as server, poolwatch.Transport() as one, poolwatch.Transport() as two:
        url = f"http://127.0.0.1:{server.port}/"
        for _ in range(3):
            assert one.request("GET", url).read() == b"hello world!\n"
        assert (len(one._prepared), len(two._prepared)) == (1, 0)


def test_shared_heads_carry_each_body_over_the_wire() -> None:
    with http_server() as server, poolwatch.Transport() as transport:
        url = f"http://127.0.0.1:{server.port}/echo"
        for body in (b"first body", b"other body", b"first body"):
            with transport.request("POST", url, {"X-A": "1"}, body) as response:
                assert response.read() == body
        assert [r[3] for r in server.requests] == [b"first body", b"other body", b"first body"]
        assert transport.stats().connections_opened == 1
