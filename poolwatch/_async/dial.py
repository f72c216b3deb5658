"""Connecting to the first of a name's addresses to answer, on the event
loop (see :mod:`poolwatch._core.dialing`)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Sequence

from .._core.dialing import ATTEMPT_DELAY, NO_ADDRESS, Address

__all__ = ["connect_first"]


async def connect_first(
    loop: asyncio.AbstractEventLoop,
    addresses: Sequence[Address],
    prepare: Callable[[socket.socket], None],
) -> socket.socket:
    """A non-blocking socket connected to the first of ``addresses`` to
    answer, tried in the order given and raced (see
    :mod:`poolwatch._core.dialing`); ``prepare`` sets a new socket up
    before it connects. The other attempts are cancelled and their sockets
    closed. When every attempt fails, the last failure is raised."""
    if len(addresses) == 1:
        return await _attempt(loop, addresses[0], prepare)
    attempts: list[asyncio.Task[socket.socket]] = []
    winner: asyncio.Task[socket.socket] | None = None
    failure: BaseException = OSError(NO_ADDRESS)
    waiting = list(reversed(addresses))  # taken from the end: in order
    try:
        while True:
            if waiting:
                attempts.append(loop.create_task(_attempt(loop, waiting.pop(), prepare)))
            running = [attempt for attempt in attempts if not attempt.done()]
            if not running:
                raise failure
            done, _ = await asyncio.wait(
                running,
                timeout=ATTEMPT_DELAY if waiting else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for attempt in done:
                error = attempt.exception()
                if error is None:
                    winner = attempt
                    return attempt.result()
                failure = error
    finally:
        for attempt in attempts:
            if attempt is not winner:
                attempt.cancel()  # nothing, if it is over
                attempt.add_done_callback(_close_unused)


def _close_unused(attempt: asyncio.Task[socket.socket]) -> None:
    """Close the socket of an attempt that connected too late."""
    if not attempt.cancelled() and attempt.exception() is None:
        attempt.result().close()


async def _attempt(
    loop: asyncio.AbstractEventLoop, address: Address, prepare: Callable[[socket.socket], None]
) -> socket.socket:
    family, kind, proto, _, target = address
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        prepare(sock)
        await loop.sock_connect(sock, target)
    except BaseException:
        sock.close()
        raise
    return sock
