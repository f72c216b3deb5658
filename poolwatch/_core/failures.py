"""What went wrong, decided once for both transports: the error a caller
gets for a failed dial, write or read, why an idle connection ended (R3),
and the leak report (R6). The I/O layers pass in what they caught and
whether it was their timeout; nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import ssl
from typing import cast

import h11

from .._exceptions import (
    ConnectError,
    ConnectTimeout,
    LocalProtocolError,
    PoolwatchError,
    ProxyError,
    ReadError,
    RemoteDisconnected,
    TLSError,
    WriteError,
    WriteTimeout,
    os_reason,
)
from .._models import Request
from .exchange import Exchange, request_error
from .socks import SocksError
from .tunnel import TunnelRefused

__all__ = [
    "SERVER_ENDED_UNDER_BODY",
    "body_closed_error",
    "closed_while_reading",
    "connect_error",
    "dial_error",
    "idle_end_reason",
    "is_peer_gone",
    "leak_message",
    "no_response_error",
    "read_failed",
    "write_error",
]


def idle_end_reason(data: bytes | OSError) -> str:
    """Why a connection with no request outstanding ended, from what its
    reader got (R3): the server closed it, sent a 408, or sent bytes nobody
    asked for."""
    if isinstance(data, OSError) or not data:
        return "server_closed_idle"
    if data.startswith((b"HTTP/1.1 408", b"HTTP/1.0 408")):
        return "server_timeout_408"
    return "unsolicited_response"


# Close reasons of a connection the server ended while a body that had
# arrived whole was still checked out (see Book.arrived_locked).
SERVER_ENDED_UNDER_BODY = frozenset({"server_closed", "bytes_after_body"})


def read_failed(exchange: Exchange, exc: OSError) -> PoolwatchError:
    """A read error naming the request, caused by ``exc``."""
    error = request_error(exchange.request, ReadError, f"reading the response failed: {exc}")
    error.__cause__ = exc
    return error


def closed_while_reading(exchange: Exchange, reason: str) -> PoolwatchError:
    """The error for a body read that failed, or found the body ended,
    because its connection was closed on this side (for ``reason``: the
    transport closing, say) before the body's end: a
    :class:`~poolwatch.ReadError`, not the ``RemoteProtocolError`` the
    cut-short body would suggest, for the server did nothing wrong."""
    if reason == "transport_closed":
        what = "the transport was closed"
    else:
        what = f"the connection was closed ({reason})"
    return request_error(
        exchange.request, ReadError, f"{what} before the whole response body was read"
    )


def body_closed_error(exchange: Exchange, close_reason: str) -> PoolwatchError:
    """The error for a read of a body that has ended (``close_reason``: its
    connection's, if closed). A body that the transport's close ended
    (outcome ``errored``, connection closed for ``transport_closed``: had
    the body ended before, its connection would have closed or been
    released then) says so, as it does when the close comes during a read."""
    outcome = exchange.outcome
    if close_reason == "transport_closed" and outcome == "errored":
        return closed_while_reading(exchange, close_reason)
    return request_error(
        exchange.request,
        ReadError,
        f"the response body is closed ({outcome}); connection {close_reason or 'released'}",
    )


def no_response_error(
    exchange: Exchange, data: bytes | OSError, nothing_received: bool
) -> BaseException:
    """The error for a connection that ended (``data`` is ``b""`` or the
    read's error) before the whole response head arrived. A TLS alert says
    why. A server that hung up while the request was still going out is
    :class:`~poolwatch.RemoteDisconnected` whichever worker saw the hang-up
    first, the writer (a broken pipe or a reset) or the reader (a reset or
    the end), as urllib3 and httpcore report it. Any other write error comes
    first: the request did not go out."""
    if is_tls_alert(data):
        return read_failed(exchange, cast(OSError, data))
    finished = exchange.write_finished  # set after write_error
    written = exchange.write_error
    if nothing_received and _hung_up_under_request(finished, written, data):
        error = request_error(
            exchange.request,
            RemoteDisconnected,
            "server closed the connection without sending a response, "
            "while the request was being sent",
        )
        if written is not None:
            error.__cause__ = written.__cause__
        elif isinstance(data, OSError):
            error.__cause__ = data
        return error
    if written is not None:
        return written
    if isinstance(data, OSError):
        return read_failed(exchange, data)
    if nothing_received:
        reason = "server closed the connection without sending a response"
    else:
        reason = "server closed the connection in the middle of the response head"
    return request_error(exchange.request, RemoteDisconnected, reason)


def _hung_up_under_request(
    finished: bool, written: BaseException | None, data: bytes | OSError
) -> bool:
    """Whether the server went away while the request was being written:
    the writer failed for that, or had not finished when the reader found
    the connection reset or ended."""
    if written is not None:
        return isinstance(written, WriteError) and is_peer_gone(written.__cause__)
    return not finished and (not data or isinstance(data, ConnectionResetError))


class BodySourceFailed(Exception):
    """The request body's own iterator or file raised ``cause``: not the
    connection's doing, whatever its type (a relay's source socket may
    raise ``ConnectionResetError``), so it reaches the caller as raised."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(cause)
        self.cause = cause


def write_error(exchange: Exchange, exc: BaseException, timed_out: bool) -> BaseException:
    """The error for a request that could not be written (R9, R16): the
    body's own exception unchanged, otherwise a poolwatch error."""
    if isinstance(exc, BodySourceFailed):
        return exc.cause
    if isinstance(exc, h11.LocalProtocolError):
        error: BaseException = request_error(
            exchange.request,
            LocalProtocolError,
            f"request body does not match its framing: {exc}",
        )
    elif timed_out:
        error = request_error(
            exchange.request, WriteTimeout, f"request not sent within {exchange.timeout.write}s"
        )
    elif isinstance(exc, OSError):
        error = request_error(exchange.request, WriteError, f"sending the request failed: {exc}")
    else:
        return exc  # the request body's own iterator or file failed
    error.__cause__ = exc
    return error


def is_tls_alert(exc: object) -> bool:
    """Whether ``exc`` is a TLS error the server sent (an alert), rather
    than the end of the connection."""
    return isinstance(exc, ssl.SSLError) and not isinstance(
        exc, ssl.SSLEOFError | ssl.SSLZeroReturnError
    )


def is_peer_gone(exc: BaseException | None) -> bool:
    """Whether a write failed because the server is gone or stopped reading:
    a response it sent first is still readable (R9), and so is a TLS alert
    (a server wanting a client certificate sends one, then hangs up)."""
    return isinstance(
        exc, ConnectionResetError | BrokenPipeError | ssl.SSLZeroReturnError | ssl.SSLEOFError
    )


def leak_message(exchange: Exchange) -> tuple[str, str, str, str]:
    """The leak log's format and arguments: method, URL and call site (R6)."""
    request = exchange.request
    return (
        "response to %s %s was garbage-collected unclosed; request made at:\n%s",
        request.method,
        request.url,
        exchange.call_site.format(),
    )


def connect_error(
    exchange: Exchange, exc: BaseException, what: str, timed_out: bool
) -> ConnectError | ConnectTimeout:
    """The error for a connect (or handshake) that failed or timed out."""
    request = exchange.request
    if timed_out:
        return ConnectTimeout(
            f"{what}: no answer from {request.origin} within {exchange.timeout.connect}s",
            method=request.method,
            url=request.url,
        )
    return ConnectError(
        f"{what} to {request.origin}: {os_reason(exc)}", method=request.method, url=request.url
    )


def dial_error(
    exchange: Exchange, exc: BaseException, timed_out: bool, stage: str = "TLS handshake failed"
) -> BaseException:
    """The error for a dial that failed after the TCP connect: at the SOCKS
    proxy, the proxy's tunnel, a TLS handshake, or on the network (``stage``
    says which step was under way); anything else unchanged."""
    request: Request = exchange.request
    origin = request.origin
    if isinstance(exc, SocksError):
        return ProxyError(
            f"proxy {origin.proxy} did not connect to {origin}: {exc}",
            method=request.method,
            url=request.url,
        )
    if isinstance(exc, TunnelRefused | h11.RemoteProtocolError):
        return ProxyError(
            f"proxy {origin.proxy} did not open a tunnel to {origin}: {exc}",
            method=request.method,
            url=request.url,
        )
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return TLSError(f"{stage} for {origin}: {exc}", method=request.method, url=request.url)
    if timed_out or isinstance(exc, OSError):
        return connect_error(exchange, exc, stage, timed_out)
    return exc
