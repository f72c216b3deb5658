"""The property tests (hypothesis) on the asyncio transport, with the sync
suite's strategies and scripted server: a valid response split anywhere is
read exactly; a mutated one gives a response or a documented error, and no
connection is reused in an unknown state."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import poolwatch
from tests.async_support import assert_at_rest, run
from tests.test_properties import SETTINGS, ScriptedServer, _split, cuts, responses, scripted

pytestmark = pytest.mark.usefixtures("event_loop_kind")

__all__ = ["scripted"]  # the fixture used here


@SETTINGS
@given(response=responses, cut=cuts)
def test_valid_response_split_anywhere_is_read_exactly(
    scripted: ScriptedServer, response: tuple[bytes, bytes], cut: list[int]
) -> None:
    """However the bytes are split, a valid response is read exactly."""
    expected, data = response
    scripted.script = _split(data, cut)

    async def main() -> None:
        async with poolwatch.AsyncTransport(read_timeout=5, response_header_timeout=5) as t:
            assert await (await t.request("GET", scripted.server.url())).read() == expected
            stats = await assert_at_rest(t)
            assert stats.bodies_drained + stats.bodies_without_content == 1

    run(main)


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
    response: tuple[bytes, bytes],
    cut: list[int],
    position: int,
    mutation: str,
    byte: int,
) -> None:
    """Nothing but a PoolwatchError, no hang, a consistent transport."""
    _, data = response
    at = position % (len(data) + 1)
    if mutation == "truncate":
        mutated = data[:at]
    elif mutation == "flip":
        mutated = data[:at] + bytes([byte]) + data[at + 1 :]
    else:
        mutated = data[:at] + bytes([byte]) + data[at:]
    scripted.script = _split(mutated, cut)

    async def main() -> None:
        async with poolwatch.AsyncTransport(read_timeout=2, response_header_timeout=2) as t:
            try:
                async with await t.request("GET", scripted.server.url()) as resp:
                    await resp.read()
            except poolwatch.PoolwatchError:
                pass
            stats = await assert_at_rest(t)
            await t.close_idle_connections()  # the server closes after each script
            assert (await assert_at_rest(t)).open_connections == 0
            assert stats.open_bodies == 0

    run(main)
