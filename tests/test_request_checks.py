"""Requests that would be read otherwise than the caller meant are refused
before a connection is taken: a body framed both by Transfer-Encoding and
by Content-Length (RFC 9112 section 6.1, the shape of request smuggling;
R10 refuses it in responses), and a URL holding a control character or a
space, which urlsplit() would quietly drop or rewrite."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

import poolwatch
from tests.async_support import assert_at_rest, run
from tests.servers import HTTPServer
from tests.test_errors import assert_names_request

BOTH = "both Transfer-Encoding and Content-Length"
CONTROL = "URL contains a control character or space (percent-encode it)"


class Pieces:
    """A streamed body that records whether anything asked for it."""

    def __init__(self) -> None:
        self.started = False

    def __iter__(self) -> Iterator[bytes]:
        self.started = True
        yield b"hel"
        yield b"lo"


FRAMING_CASES = [
    pytest.param({"Transfer-Encoding": "chunked", "Content-Length": "5"}, id="chunked-and-length"),
    pytest.param({"transfer-encoding": "chunked", "CONTENT-LENGTH": "5"}, id="any-case"),
    pytest.param(
        [(b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked")], id="pairs-length-first"
    ),
]


def _assert_nothing_sent(transport: poolwatch.Transport, server: HTTPServer) -> None:
    """No connection was taken for the refused request; the next one goes."""
    assert transport.stats().connections_opened == 0
    assert transport.request("GET", server.url("/after")).read() == b"hello world!\n"
    assert [path for _, _, path, _ in server.requests] == ["/after"]


# -- Transfer-Encoding with Content-Length -------------------------------------


@pytest.mark.parametrize("headers", FRAMING_CASES)
@pytest.mark.parametrize("streamed", [False, True], ids=["bytes-body", "streamed-body"])
def test_transfer_encoding_with_content_length_is_refused(
    transport: poolwatch.Transport, server: HTTPServer, headers: Any, streamed: bool
) -> None:
    """RFC 9112 section 6.1: a request framed both ways raises
    LocalProtocolError naming method and URL, before a connection is taken
    and before a streamed body is asked for a byte."""
    url = server.url("/upload")
    pieces = Pieces()
    body = pieces if streamed else b"hello"
    with pytest.raises(poolwatch.LocalProtocolError, match=BOTH) as info:
        transport.request("POST", url, headers=headers, body=body)
    assert_names_request(info.value, "POST", url)
    assert not pieces.started
    _assert_nothing_sent(transport, server)


def test_either_framing_header_alone_is_sent(
    transport: poolwatch.Transport, server: HTTPServer
) -> None:
    """The check is for the pair: a caller's Transfer-Encoding or
    Content-Length on its own frames the body as before."""
    url = server.url("/echo")
    chunked = {"Transfer-Encoding": "chunked"}
    assert transport.request("POST", url, headers=chunked, body=Pieces()).read() == b"hello"
    sized = {"Content-Length": "5"}
    assert transport.request("POST", url, headers=sized, body=Pieces()).read() == b"hello"


def test_async_transfer_encoding_with_content_length_is_refused(
    event_loop_kind: str, server: HTTPServer
) -> None:
    """As the sync transport: refused before a connection is taken."""
    url = server.url("/upload")

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:
            headers = {"Transfer-Encoding": "chunked", "Content-Length": "5"}
            for body in (b"hello", Pieces()):
                with pytest.raises(poolwatch.LocalProtocolError, match=BOTH) as info:
                    await t.request("POST", url, headers=headers, body=body)
                assert_names_request(info.value, "POST", url)
            assert (await assert_at_rest(t)).connections_opened == 0
            assert await (await t.request("GET", server.url("/after"))).read() == b"hello world!\n"

    run(main)
    assert [path for _, _, path, _ in server.requests] == ["/after"]


# -- control characters and spaces in URLs --------------------------------------

URL_CASES = [
    pytest.param("/files/a\r\nb", id="crlf-in-path"),
    pytest.param("/admin\n/x", id="lf-in-path"),
    pytest.param("/q?user=al\tice", id="tab-in-query"),
    pytest.param("/a\rb", id="cr-in-path"),
    pytest.param("/a b", id="space-in-path"),
    pytest.param("/a\x00b", id="nul-in-path"),
    pytest.param("/a\x7fb", id="del-in-path"),
    pytest.param("/a#frag ment", id="space-in-fragment"),
    pytest.param("/path\n", id="trailing-newline"),
]


@pytest.mark.parametrize("path", URL_CASES)
def test_url_with_control_character_is_refused(
    transport: poolwatch.Transport, server: HTTPServer, path: str
) -> None:
    """A URL holding C0 controls, a space or DEL raises InvalidURL, every
    time (a refused URL is not cached), before a connection is taken: it is
    never sent as the other resource urlsplit() would make of it. The
    message shows the URL quoted, so it cannot break a log line."""
    url = server.url(path)
    for _ in range(2):
        with pytest.raises(poolwatch.InvalidURL, match=r"control character or space") as info:
            transport.request("GET", url)
        message = str(info.value)
        assert f"GET {url!r}: {CONTROL}" == message
        assert message.isprintable()
        assert info.value.url == url
    _assert_nothing_sent(transport, server)


@pytest.mark.parametrize("lead", ["\x00", " ", "\t", "\x1f"], ids=["nul", "space", "tab", "us"])
def test_url_with_leading_control_character_is_refused(
    transport: poolwatch.Transport, server: HTTPServer, lead: str
) -> None:
    """Characters before the scheme, which urlsplit() strips, are refused
    too."""
    url = lead + server.url("/x")
    with pytest.raises(poolwatch.InvalidURL, match=r"control character or space"):
        transport.request("GET", url)
    _assert_nothing_sent(transport, server)


@pytest.mark.parametrize(
    ("url", "advice"),
    [
        ("http://bücher.test/", "host name 'bücher.test' must be ASCII: give its IDNA form"),
        ("http://127.0.0.1/bücher", "URL must be ASCII (percent-encode it)"),
    ],
    ids=["host", "path"],
)
def test_a_non_ascii_url_says_how_to_write_it(
    transport: poolwatch.Transport, url: str, advice: str
) -> None:
    """A host name is written in its IDNA form, a path percent-encoded:
    the error says which, before any lookup or connection."""
    with pytest.raises(poolwatch.InvalidURL, match=re.escape(advice)):
        transport.request("GET", url)
    assert transport.stats().connections_opened == 0


def test_percent_encoded_control_characters_are_sent_as_given(
    transport: poolwatch.Transport, server: HTTPServer
) -> None:
    """The way to send such a character: percent-encoded, it goes as is."""
    assert transport.request("GET", server.url("/files/a%0D%0Ab%20c")).read()
    assert [path for _, _, path, _ in server.requests] == ["/files/a%0D%0Ab%20c"]


def test_async_url_with_control_character_is_refused(
    event_loop_kind: str, server: HTTPServer
) -> None:
    """As the sync transport: refused, nothing sent."""
    urls = [server.url("/files/a\r\nb"), server.url("/q?user=al\tice"), " " + server.url()]

    async def main() -> None:
        async with poolwatch.AsyncTransport() as t:
            for url in urls:
                with pytest.raises(poolwatch.InvalidURL, match="control character") as info:
                    await t.request("GET", url)
                assert str(info.value) == f"GET {url!r}: {CONTROL}"
            assert (await assert_at_rest(t)).connections_opened == 0
            assert await (await t.request("GET", server.url("/after"))).read() == b"hello world!\n"

    run(main)
    assert [path for _, _, path, _ in server.requests] == ["/after"]
