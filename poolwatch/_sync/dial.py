"""Connecting to the first of a name's addresses to answer, on the caller's
thread: non-blocking connects waited on together (see
:mod:`poolwatch._core.dialing`)."""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from collections.abc import Callable, Sequence

from .._core.dialing import ATTEMPT_DELAY, NO_ADDRESS, Address

__all__ = ["connect_first", "connect_one"]

# What connect_ex() on a non-blocking socket gives for a connect under way.
_UNDER_WAY = frozenset({0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN})


def connect_first(
    addresses: Sequence[Address], timeout: float, prepare: Callable[[socket.socket], None]
) -> socket.socket:
    """A socket connected to the first of ``addresses`` to answer, tried in
    the order given and raced, the whole race within ``timeout`` seconds
    (``TimeoutError``); ``prepare`` sets a new socket up before it connects.
    The socket returned has ``timeout`` as its timeout; the other attempts'
    sockets are closed. When every attempt fails, the last failure is
    raised."""
    if len(addresses) == 1:
        return connect_one(addresses[0], timeout, prepare)
    deadline = time.monotonic() + timeout
    waiting = list(reversed(addresses))  # taken from the end: in order
    failure = OSError(NO_ADDRESS)
    next_start = 0.0
    with selectors.DefaultSelector() as selector:
        try:
            while True:
                now = time.monotonic()
                if waiting and (now >= next_start or not selector.get_map()):
                    try:
                        selector.register(_started(waiting.pop(), prepare), selectors.EVENT_WRITE)
                    except OSError as exc:
                        failure = exc
                        continue  # the next one at once
                    next_start = now + ATTEMPT_DELAY
                if not selector.get_map():
                    raise failure
                if now >= deadline:
                    raise TimeoutError("timed out")
                wait = min(deadline, next_start) if waiting else deadline
                for key, _ in selector.select(max(wait - now, 0.0)):
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    selector.unregister(sock)
                    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if error == 0:
                        sock.settimeout(timeout)
                        return sock
                    failure = OSError(error, os.strerror(error))
                    sock.close()
        finally:
            for key in list(selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]


def connect_one(
    address: Address, timeout: float, prepare: Callable[[socket.socket], None]
) -> socket.socket:
    """A socket connected to ``address`` within ``timeout`` seconds, with
    that as its timeout; ``prepare`` sets it up first."""
    family, kind, proto, _, target = address
    sock = socket.socket(family, kind, proto)
    try:
        sock.settimeout(timeout)
        prepare(sock)
        sock.connect(target)
    except BaseException:
        sock.close()
        raise
    return sock


def _started(address: Address, prepare: Callable[[socket.socket], None]) -> socket.socket:
    """A non-blocking socket connecting to ``address``."""
    family, kind, proto, _, target = address
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        prepare(sock)
        error = sock.connect_ex(target)
        if error not in _UNDER_WAY:
            raise OSError(error, os.strerror(error))
    except BaseException:
        sock.close()
        raise
    return sock
