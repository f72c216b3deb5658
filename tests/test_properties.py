"""Property tests (hypothesis): valid and mutated responses, split at
arbitrary byte boundaries, from a real loopback server. A valid response is
read exactly; anything else gives a response or a documented error, and a
connection is never reused in an unknown state."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import poolwatch
from tests.conftest import assert_at_rest
from tests.servers import RawServer, ServerConnection


class ScriptedServer:
    """Answers each request with the next script: a list of byte pieces,
    sent one send() each; the connection is then closed."""

    def __init__(self) -> None:
        self.script: list[bytes] = []
        self.lock = threading.Lock()
        self.server = RawServer(self._serve)

    def _serve(self, conn: ServerConnection) -> None:
        conn.recv_request_head()
        with self.lock:
            pieces = list(self.script)
        for piece in pieces:
            conn.sock.sendall(piece)


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    try:
        yield server
    finally:
        server.server.stop()


def _framed(body: bytes, chunked: bool, chunk: int) -> tuple[bytes, bytes]:
    """``(body, response bytes)`` with Content-Length or chunked framing."""
    if not chunked:
        return body, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    parts = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    return body, head + encoded + b"0\r\n\r\n"


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


responses = st.builds(
    _framed,
    body=st.binary(max_size=300),
    chunked=st.booleans(),
    chunk=st.integers(min_value=1, max_value=64),
)
cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=6)
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(response=responses, cut=cuts)
def test_valid_response_split_anywhere_is_read_exactly(
    scripted: ScriptedServer, response: tuple[bytes, bytes], cut: list[int]
) -> None:
    """However the bytes are split, a valid response is read exactly."""
    expected, data = response
    scripted.script = _split(data, cut)
    with poolwatch.Transport(read_timeout=5, response_header_timeout=5) as t:
        assert t.request("GET", scripted.server.url()).read() == expected
        stats = assert_at_rest(t)
        assert stats.bodies_drained + stats.bodies_without_content == 1


@SETTINGS
@given(
    response=responses,
    cut=cuts,
    position=st.integers(min_value=0, max_value=10_000),
    mutation=st.sampled_from(["truncate", "flip", "insert"]),
    byte=st.integers(min_value=0, max_value=255),
)
def test_mutated_response_gives_a_response_or_a_documented_error(
    scripted: ScriptedServer,
    response: bytes,
    cut: list[int],
    position: int,
    mutation: str,
    byte: int,
) -> None:
    """A mutated response never raises anything but a PoolwatchError, never
    hangs (timeouts bound it), and leaves the transport consistent."""
    _, response_bytes = response
    at = position % (len(response_bytes) + 1)
    if mutation == "truncate":
        mutated = response_bytes[:at]
    elif mutation == "flip":
        mutated = response_bytes[:at] + bytes([byte]) + response_bytes[at + 1 :]
    else:
        mutated = response_bytes[:at] + bytes([byte]) + response_bytes[at:]
    scripted.script = _split(mutated, cut)
    with poolwatch.Transport(read_timeout=2, response_header_timeout=2) as t:
        try:
            with t.request("GET", scripted.server.url()) as resp:
                resp.read()
        except poolwatch.PoolwatchError:
            pass
        stats = assert_at_rest(t)
        # The server closes after each script: nothing may stay pooled.
        t.close_idle_connections()
        assert assert_at_rest(t).open_connections == 0
        assert stats.open_bodies == 0
