"""Parsed URLs are remembered; bad ones are refused every time."""

from __future__ import annotations

import pytest

import poolwatch
from poolwatch._models import Request


def test_same_url_parses_the_same_every_time() -> None:
    first = Request("GET", "http://127.0.0.1:8080/a?b=c")
    second = Request("GET", "http://127.0.0.1:8080/a?b=c")
    assert first.origin == second.origin
    assert first.event.target == second.event.target == b"/a?b=c"
    other = Request("GET", "http://127.0.0.1:8080/a?b=c", proxy="http://127.0.0.1:3128")
    assert other.origin.proxy is not None
    assert Request("GET", "http://127.0.0.1:8080/a?b=c").origin.proxy is None


def test_bad_url_is_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(poolwatch.InvalidURL, match="no host") as info:
            Request("GET", "http:///nohost")
        assert info.value.url == "http:///nohost"


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("http://127.0.0.1:8080/p?", b"/p?"),
        ("http://127.0.0.1:8080?", b"/?"),
        ("http://127.0.0.1:8080/p", b"/p"),
        ("http://127.0.0.1:8080/p?a=1#f", b"/p?a=1"),
        ("http://127.0.0.1:8080/p#f?x", b"/p"),
    ],
)
def test_request_target_keeps_the_query_as_given(url: str, target: bytes) -> None:
    """An empty query is sent as the URL has it (``/p?``), as httpx and
    http.client send it; a ``?`` in the fragment is not a query."""
    assert Request("GET", url).event.target == target
