"""Connecting to a host whose name gives several addresses: the attempts
race, each started when the one before has failed or has not connected
within 250 ms (RFC 8305, "happy eyeballs", as Go's dialer, anyio and
aiohttp connect), the address families taking turns. A first address that
drops every packet then costs a quarter of a second, not the connect
timeout, which bounds the whole race."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["ATTEMPT_DELAY", "NO_ADDRESS", "Address", "interleaved"]

ATTEMPT_DELAY = 0.25  # RFC 8305's recommended connection attempt delay
NO_ADDRESS = "the name lookup gave no address"

Address = tuple[Any, ...]  # one getaddrinfo() entry: family, type, proto, name, address


def interleaved(addresses: Sequence[Address]) -> list[Address]:
    """``addresses`` in the order to try them: the families take turns,
    the first address's family first, each family's in the order given
    (RFC 8305, section 4)."""
    families: dict[int, list[Address]] = {}
    for address in addresses:
        families.setdefault(address[0], []).append(address)
    if len(families) < 2:
        return list(addresses)
    ordered: list[Address] = []
    queues = list(families.values())
    for turn in range(max(len(queue) for queue in queues)):
        ordered.extend(queue[turn] for queue in queues if turn < len(queue))
    return ordered
