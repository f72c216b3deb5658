"""The chunked body decoder (``poolwatch._core.chunked``) against h11, whose
reading it replaces: the same bodies, chunk by chunk, from the same bytes
however they are split, and the same refusals (with h11's messages) for
what h11 refuses. Pure: bytes in, bytes out, no socket."""

from __future__ import annotations

import itertools

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolwatch._core.chunked import ChunkedBody

LIMIT = 256 * 1024
HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def _with_h11(body: bytes) -> tuple[list[bytes], str | None]:
    """The chunks h11 reads from ``body`` (all at once), and its error."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=LIMIT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(HEAD + body)
    conn.receive_data(b"")
    chunks: list[bytes] = []
    try:
        assert isinstance(conn.next_event(), h11.Response)
        while True:
            event = conn.next_event()
            if isinstance(event, h11.EndOfMessage):
                return chunks, None
            assert isinstance(event, h11.Data)
            if event.chunk_start or not chunks:
                chunks.append(b"")
            chunks[-1] += event.data
    except h11.RemoteProtocolError as exc:
        return chunks, str(exc)


def _decoded(pieces: list[bytes]) -> tuple[list[bytes], bool, str | None]:
    """The chunks the decoder hands over as ``pieces`` arrive one by one
    (each take a whole chunk or a part of one), whether it found the end,
    and its error."""
    decoder = ChunkedBody(LIMIT)
    buffer, at = b"", 0
    chunks: list[bytes] = []
    starting = True
    try:
        for piece in pieces:
            buffer = buffer[at:] + piece
            at = 0
            while not decoder.done:
                data, at = decoder.take(buffer, at)
                if not data:
                    break
                if starting:
                    chunks.append(b"")
                chunks[-1] += data
                starting = decoder._left == 0  # the chunk is complete
    except h11.RemoteProtocolError as exc:
        return chunks, decoder.done, str(exc)
    return chunks, decoder.done, None


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a] or [b""]


def _encode(chunks: list[bytes], extension: bytes, trailer: bytes) -> bytes:
    body = b"".join(b"%x%s\r\n%s\r\n" % (len(c), extension, c) for c in chunks if c)
    return body + b"0" + extension + b"\r\n" + trailer + b"\r\n"


chunk_lists = st.lists(st.binary(min_size=1, max_size=40), max_size=8)
extensions = st.sampled_from([b"", b";name=value", b'; q="a;b"', b"  ", b";x\t"])
trailers = st.sampled_from([b"", b"Expires: never\r\n", b"A: 1\r\nB: 2\r\n", b"X: y\n"])
cuts = st.lists(st.integers(min_value=0, max_value=1_000), max_size=6)


@settings(max_examples=300, deadline=None)
@given(chunks=chunk_lists, extension=extensions, trailer=trailers, cut=cuts)
def test_valid_bodies_read_as_h11_reads_them(
    chunks: list[bytes], extension: bytes, trailer: bytes, cut: list[int]
) -> None:
    body = _encode(chunks, extension, trailer)
    expected, error = _with_h11(body)
    assert error is None
    assert expected == [c for c in chunks if c]
    decoded, done, failure = _decoded(_split(body, cut))
    assert failure is None
    assert done
    assert decoded == expected


@settings(max_examples=500, deadline=None)
@given(
    chunks=chunk_lists,
    trailer=trailers,
    position=st.integers(min_value=0, max_value=10_000),
    byte=st.binary(min_size=1, max_size=3),
    how=st.sampled_from(["replace", "insert", "delete"]),
    cut=cuts,
)
def test_mutated_bodies_are_refused_where_h11_refuses_them(
    chunks: list[bytes], trailer: bytes, position: int, byte: bytes, how: str, cut: list[int]
) -> None:
    """A body with a byte changed, added or removed: where h11 reads it
    whole, so does the decoder, the same chunks; where h11 refuses it, the
    decoder refuses it too (or, given the same bytes, is still waiting for
    more: h11 was told the server closed)."""
    body = _encode(chunks, b"", trailer)
    at = position % (len(body) + 1)
    if how == "replace":
        body = body[:at] + byte + body[at + len(byte) :]
    elif how == "insert":
        body = body[:at] + byte + body[at:]
    else:
        body = body[:at] + body[at + len(byte) :]
    expected, error = _with_h11(body)
    decoded, done, failure = _decoded(_split(body, cut))
    if error is None:
        assert failure is None and done
        assert decoded == expected
    else:
        # Refused, or still waiting for bytes (the server closing then is
        # an error too). A bad trailer line is refused as it comes, where
        # h11 waits for the whole trailer: the messages may differ.
        assert failure is not None or not done


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"zz\r\nabc\r\n0\r\n\r\n", "illegal chunk header: b'zz'"),
        (b"3\r\nabcdef\r\n0\r\n\r\n", "malformed chunk footer: b'de' (expected b'\\r\\n')"),
        (b"2\r\nok\r\n0\r\nNoColon\r\n\r\n", "illegal header line: b'NoColon'"),
        (b"2\r\nok\r\n0\r\n folded: x\r\n\r\n", "continuation line at start of headers"),
        (b"123456789012345678901\r\n", "illegal chunk header: b'123456789012345678901'"),
    ],
)
def test_what_h11_refuses_is_refused_with_its_message(body: bytes, message: str) -> None:
    h11_says = _with_h11(body)[1]
    assert h11_says is not None
    assert h11_says.split(":")[0] == message.split(":")[0]
    assert _decoded([body])[2] == message


def test_a_size_line_or_trailer_without_end_is_refused_past_the_limit() -> None:
    decoder = ChunkedBody(100)
    assert decoder.take(b"5;" + b"x" * 98, 0) == (b"", 0)  # could still end
    with pytest.raises(h11.RemoteProtocolError, match="chunk size line too long"):
        decoder.take(b"5;" + b"x" * 99, 0)
    decoder = ChunkedBody(100)
    data, at = decoder.take(b"0\r\n" + b"A: b\r\n" * 16, 0)
    assert (data, decoder.done) == (b"", False)
    with pytest.raises(h11.RemoteProtocolError, match="chunked trailer too long"):
        decoder.take(b"0\r\n" + b"A: b\r\n" * 16 + b"A: b\r\n" * 2, at)


def test_a_chunk_is_handed_over_as_it_arrives_and_never_past_its_end() -> None:
    decoder = ChunkedBody(LIMIT)
    buffer = b"a\r\n0123456789\r\n3\r\nabc\r\n0\r\n\r\nextra"
    assert decoder.take(buffer[:8], 0) == (b"01234", 8)
    assert decoder.take(buffer, 8) == (b"56789", 13)
    assert decoder.take(buffer, 13) == (b"abc", 21)
    assert not decoder.done
    assert decoder.take(buffer, 21) == (b"", 28)
    assert decoder.done
    assert buffer[28:] == b"extra"  # left for the caller: bytes after the body
