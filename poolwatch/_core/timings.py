"""When each phase of a request ended, as both transports' responses report
it, and the budget ``drain_on_close`` has (R5). No I/O, no clock: times are
the exchange's marks."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DRAIN_MAX_BYTES", "DRAIN_MAX_SECONDS", "Timings"]

# drain_on_close reads at most this much of an abandoned body to save the
# connection; past it a new connection is cheaper than the bytes.
DRAIN_MAX_BYTES = 256 * 1024
DRAIN_MAX_SECONDS = 0.25


@dataclass(frozen=True)
class Timings:
    """When each phase of a request ended, in seconds since the request call
    (``None``: the phase did not happen, or has not yet)."""

    got_connection: float | None
    connected: float | None  # a new connection's TCP connect (and proxy tunnel)
    tls_done: float | None
    request_written: float | None
    first_byte: float | None
    response_head: float | None
    body_done: float | None
    reused: bool

    @classmethod
    def from_marks(cls, marks: dict[str, float], reused: bool) -> Timings:
        """Build from an exchange's time marks."""
        start = marks["start"]

        def since(name: str) -> float | None:
            mark = marks.get(name)
            return None if mark is None else mark - start

        return cls(
            got_connection=since("got_conn"),
            connected=since("connected"),
            tls_done=since("tls_done"),
            request_written=since("written"),
            first_byte=since("first_byte"),
            response_head=since("head"),
            body_done=since("body_done"),
            reused=reused,
        )
