"""Connection resets at each phase on the asyncio transport, with the sync
suite's scripts: a documented error naming the URL, the connection closed,
and the pool still usable."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

import poolwatch
from tests.async_support import assert_at_rest, run
from tests.servers import ServerConnection, raw_server
from tests.test_resets import (
    HANG_UPS,
    UPLOAD,
    _script,
    assert_hung_up_mid_upload,
    hang_up_mid_upload,
    test_reset_at_each_phase,
)

pytestmark = pytest.mark.usefixtures("event_loop_kind")

PHASES = test_reset_at_each_phase.pytestmark[0].args[1]


@pytest.mark.parametrize(("before_reset", "method", "body", "errors"), PHASES)
def test_reset_at_each_phase(
    before_reset: Callable[[ServerConnection], object],
    method: str,
    body: bytes | None,
    errors: tuple[type[Exception], ...],
) -> None:
    """A reset on accept, mid-upload, before or in the head, or mid-body."""

    async def main(first: str, next_url: str) -> None:
        async with poolwatch.AsyncTransport() as t:
            with pytest.raises(errors) as info:
                async with await t.request(method, first, body=body) as resp:
                    await resp.read()
            assert first in str(info.value)
            assert await (await t.request("GET", next_url)).read() == b"ok"
            stats = await assert_at_rest(t)
            assert stats.connections_opened - stats.connections_closed == 1
            assert stats.open_connections == 1

    with raw_server(_script(before_reset)) as srv:
        run(lambda: main(srv.url("/first"), srv.url("/next")))
    assert srv.accepted == 2


@pytest.mark.parametrize("hang_up", HANG_UPS)
def test_a_hang_up_mid_upload_is_said_one_way(hang_up: Callable[[ServerConnection], None]) -> None:
    """As on the sync transport: one error, whichever of the writer task and
    the reader task noticed the hang-up first."""

    async def main(url: str) -> None:
        async with poolwatch.AsyncTransport() as t:
            for _ in range(20):
                with pytest.raises(poolwatch.RemoteDisconnected) as info:
                    await t.request("POST", url, body=UPLOAD)
                assert_hung_up_mid_upload(info.value, url)
            stats = await assert_at_rest(t)
            assert (stats.request_errors, stats.open_connections) == (20, 0)

    released = threading.Event()
    with raw_server(hang_up_mid_upload(hang_up, released)) as srv:
        try:
            run(lambda: main(srv.url("/up")))
        finally:
            released.set()
