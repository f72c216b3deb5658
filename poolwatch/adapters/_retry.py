"""urllib3 ``Retry`` for :class:`~poolwatch.RequestsAdapter`, with the meaning
``HTTPAdapter`` gives it.

``HTTPAdapter`` hands its ``max_retries`` to urllib3's ``urlopen``, which
counts every failed attempt against the ``Retry``: connect errors, read
errors (only for ``allowed_methods``), other errors, and responses whose
status is in ``status_forcelist`` or that carry ``Retry-After`` (413, 429,
503). Here poolwatch's exceptions are restated as the urllib3 exceptions
``urlopen`` would have seen, so that ``Retry.increment`` itself decides, and
what it raises on exhaustion becomes the requests exception ``HTTPAdapter``
raises for it. poolwatch's own retry of a request on a stale reused
connection (R13) happens first, inside the transport, and is not counted.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any, cast
from urllib.parse import urlsplit

import requests
import requests.exceptions as rexc
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
)
from urllib3.exceptions import ProxyError as Urllib3ProxyError
from urllib3.exceptions import SSLError as Urllib3SSLError
from urllib3.util.retry import Retry

from .. import _exceptions as pw

__all__ = [
    "PoolName",
    "as_urllib3_error",
    "conflicting_lengths",
    "max_retries_error",
    "requests_retry",
    "reraised_error",
]


def requests_retry(max_retries: Retry | int | None) -> Retry:
    """``max_retries`` as ``HTTPAdapter.__init__`` turns it into a ``Retry``:
    0 (its default) is ``Retry(0, read=False)``, so that a read error is
    raised as it is; any other number ``n`` allows ``n`` retries of any
    kind; ``None`` is urllib3's default ``Retry(3)``."""
    if max_retries == 0:
        return Retry(0, read=False)
    return Retry.from_int(max_retries)


class PoolName:
    """Stands in for the urllib3 pool that names the origin in a
    ``MaxRetryError`` message: ``HTTPConnectionPool(host='h', port=80)``.
    With ``forwarding``, ``url`` is an http proxy's, to which urllib3 sends
    an http URL's requests whole (its pool is the proxy's)."""

    def __init__(self, url: str, forwarding: bool = False) -> None:
        self.url = url  # split only when a message needs it: most requests never do
        self.forwarding = forwarding

    def __str__(self) -> str:
        parts = urlsplit(self.url)
        kind = "HTTPSConnectionPool" if parts.scheme == "https" else "HTTPConnectionPool"
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"{kind}(host={parts.hostname!r}, port={port!r})"

    def as_pool(self) -> ConnectionPool:
        """Typed as the pool urllib3's exceptions take (they only print it)."""
        return cast("ConnectionPool", self)


def as_urllib3_error(exc: pw.PoolwatchError, pool: PoolName, target: str) -> Exception | None:
    """The exception urllib3's ``urlopen`` would count against the
    ``Retry`` for ``exc``, or ``None`` for an error it raises at once (a
    bad URL or header, a pool timeout)."""
    if isinstance(exc.__cause__, UnicodeEncodeError) or conflicting_lengths(exc):
        return None
    message = str(exc)
    if isinstance(exc, pw.ProxyError):
        # Failing to reach the proxy counts as a connect error, a refusal
        # by the proxy as another error (urllib3's _wrap_proxy_error).
        reached = not isinstance(exc.__cause__, OSError)
        original = OSError(message) if reached else _new_connection_error(message, pool)
        return Urllib3ProxyError("Unable to connect to proxy", original)
    if isinstance(exc, pw.TLSError) or isinstance(exc.__cause__, ssl.SSLError):
        # A TLS alert read after the handshake, as a server that wants a
        # client certificate sends under TLS 1.3: urllib3's SSLError too.
        return Urllib3SSLError(message)
    if isinstance(exc, pw.ConnectTimeout):
        return ConnectTimeoutError(message)
    if isinstance(exc, pw.ConnectError):
        if isinstance(exc.__cause__, socket.gaierror):
            # urllib3's own kind for a name that does not resolve.
            host = urlsplit(pool.url).hostname or ""
            return NameResolutionError(host, cast("Any", pool), exc.__cause__)
        return _new_connection_error(message, pool)
    if isinstance(exc, pw.ReadTimeout):
        return ReadTimeoutError(pool.as_pool(), target, message)
    if pool.forwarding and isinstance(exc, pw.NetworkError):
        # A forwarding proxy that reset or closed the connection without an
        # answer: urlopen takes it for a failure to reach the proxy.
        return Urllib3ProxyError("Unable to connect to proxy", exc)
    if isinstance(exc, pw.NetworkError | pw.WriteTimeout | pw.RemoteProtocolError):
        # A reset, an early close, a failed write or an unreadable head:
        # http.client's errors, which urlopen calls "Connection aborted.".
        return ProtocolError("Connection aborted.", exc)
    return None


def conflicting_lengths(exc: pw.PoolwatchError) -> bool:
    """Whether the response declared two different Content-Lengths, which
    urllib3 raises at once as ``InvalidHeader`` (h11's words, found by
    poolwatch's head parser)."""
    return isinstance(exc, pw.RemoteProtocolError) and "conflicting Content-Length" in str(exc)


def _new_connection_error(message: str, pool: PoolName) -> NewConnectionError:
    """urllib3's error naming the pool where it names its connection."""
    return NewConnectionError(cast("Any", pool), message)


def max_retries_error(error: MaxRetryError, request: requests.PreparedRequest) -> Exception:
    """The requests exception ``HTTPAdapter.send`` raises for ``error``."""
    reason = error.reason
    if isinstance(reason, ConnectTimeoutError) and not isinstance(reason, NewConnectionError):
        return rexc.ConnectTimeout(error, request=request)
    if isinstance(reason, ResponseError):
        return rexc.RetryError(error, request=request)
    if isinstance(reason, Urllib3ProxyError):
        return rexc.ProxyError(error, request=request)
    if isinstance(reason, Urllib3SSLError):
        return rexc.SSLError(error, request=request)
    return rexc.ConnectionError(error, request=request)


def reraised_error(error: Exception, request: requests.PreparedRequest) -> Exception | None:
    """The requests exception ``HTTPAdapter.send`` raises for an error
    ``Retry`` will not retry (a read error with ``read=False``, or for a
    method not in ``allowed_methods``); ``None`` for the others, which
    poolwatch translates as it does without retries."""
    if isinstance(error, ProtocolError):
        return rexc.ConnectionError(error, request=request)
    if isinstance(error, ReadTimeoutError):
        return rexc.ReadTimeout(error, request=request)
    return None
