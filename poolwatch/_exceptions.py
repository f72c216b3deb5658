"""The exceptions poolwatch raises.

One tree, rooted at :class:`PoolwatchError`, with pool, network, timeout and
protocol branches. Every error raised for a request names the method and URL
it happened on, and keeps the lower-level cause as ``__cause__``. A URL's
password never appears in a message or an exception's ``url``: see
:func:`redact_url`.

    PoolwatchError
    +-- InvalidURL (also ValueError)
    +-- PoolError
    |   +-- PoolClosed
    +-- NetworkError
    |   +-- ConnectError
    |   |   +-- TLSError
    |   |   +-- ProxyError
    |   +-- ReadError
    |   |   +-- RemoteDisconnected
    |   +-- WriteError
    +-- TimeoutException
    |   +-- ConnectTimeout
    |   +-- WriteTimeout
    |   +-- ReadTimeout
    |   |   +-- ResponseHeaderTimeout
    |   +-- PoolTimeout (also PoolError)
    +-- ProtocolError
        +-- RemoteProtocolError
        +-- LocalProtocolError
"""

from __future__ import annotations

import os
import socket

__all__ = [
    "ConnectError",
    "ConnectTimeout",
    "InvalidURL",
    "LeakWarning",
    "LocalProtocolError",
    "NetworkError",
    "PoolClosed",
    "PoolError",
    "PoolTimeout",
    "PoolwatchError",
    "ProtocolError",
    "ProxyError",
    "ReadError",
    "ReadTimeout",
    "RemoteDisconnected",
    "RemoteProtocolError",
    "ResponseHeaderTimeout",
    "TLSError",
    "TimeoutException",
    "WriteError",
    "WriteTimeout",
    "redact_url",
]


class PoolwatchError(Exception):
    """Base class of every error poolwatch raises.

    ``method`` and ``url`` name the request the error belongs to, when there
    is one; the message already includes them.
    """

    def __init__(self, message: str, *, method: str = "", url: str = "") -> None:
        if url:
            url = redact_url(url)
            # A URL that would break a log line (or hide where it ends) is
            # shown quoted, its control characters escaped.
            shown = url if url.isprintable() and " " not in url else repr(url)
            message = f"{method} {shown}: {message}" if method else f"{shown}: {message}"
        super().__init__(message)
        self.method = method
        self.url = url


def os_reason(exc: BaseException) -> object:
    """What went wrong, in the system's words: ``Connection refused`` also
    where asyncio says ``Connect call failed (address)``."""
    if not isinstance(exc, OSError):
        return exc
    if exc.errno and exc.errno > 0 and not isinstance(exc, socket.gaierror):
        return os.strerror(exc.errno)
    return exc.strerror or exc


def redact_url(url: str) -> str:
    """``url`` as poolwatch shows it (in messages, events, ``open_bodies()``,
    reprs and leak warnings): the password of its userinfo replaced by
    ``***`` (``http://alice:***@host/``, as Go's ``url.Redacted`` and its
    client's errors show it), or a user name given without a password
    replaced (``http://***@host/``: that is how tokens are often passed,
    as in ``https://TOKEN@host/``). Any other URL is returned as is.

    Works on the string, so that a URL that does not parse, or a proxy
    given as ``user:password@host:port``, is redacted too."""
    parts = split_userinfo(url)
    if parts is None:
        return url
    head, userinfo, tail = parts
    user, colon, _ = userinfo.partition(":")
    return f"{head}{user}:***@{tail}" if colon else f"{head}***@{tail}"


def split_userinfo(url: str) -> tuple[str, str, str] | None:
    """``url`` as what precedes its userinfo, the userinfo, and what
    follows its ``@``; ``None`` if it has none."""
    if "@" not in url:
        return None
    scheme, slashes, rest = url.partition("://")
    if slashes:
        # The authority ends at the path, query or fragment (RFC 3986
        # section 3.2), as urlsplit() ends it.
        end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    else:
        # No authority to find: hide everything up to the last "@" before
        # a query or fragment, which covers "user:password@host:port".
        scheme, slashes, rest = "", "", url
        end = min((i for i in map(rest.find, "?#") if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, end)
    if at < 0 and slashes:
        # A password with a "#" or "?" not percent-encoded ends the
        # authority early for urlsplit(): take "user:...@" up to the path.
        path = rest.find("/")
        at = rest.rfind("@", 0, path if path >= 0 else len(rest))
        if ":" not in rest[: max(at, 0)]:
            at = -1
    if at < 0:
        return None
    return f"{scheme}{slashes}", rest[:at], rest[at + 1 :]


class InvalidURL(PoolwatchError, ValueError):
    """The URL cannot be requested: bad syntax, unsupported scheme, no host."""


class PoolError(PoolwatchError):
    """The pool could not provide a connection."""


class PoolClosed(PoolError):
    """The transport was closed; it accepts no more requests."""


class NetworkError(PoolwatchError):
    """The network failed: a refused, reset or dropped connection."""


class ConnectError(NetworkError):
    """The connection could not be established."""


class TLSError(ConnectError):
    """The TLS handshake failed: an untrusted, expired or mismatched
    certificate, or no common protocol."""


class ProxyError(ConnectError):
    """The proxy refused or failed to open the way to the origin."""


class ReadError(NetworkError):
    """Reading the response failed, or the server closed the connection."""


class RemoteDisconnected(ReadError):
    """The server closed the connection before the whole response head
    arrived (``http.client.RemoteDisconnected``; httpx's
    ``RemoteProtocolError``), including while the request was still being
    sent, without answering it."""


class WriteError(NetworkError):
    """Writing the request failed (a server that hangs up mid-request
    without answering is :class:`RemoteDisconnected` instead)."""


class TimeoutException(PoolwatchError):
    """A time limit was exceeded. The connection it happened on is closed."""


class ConnectTimeout(TimeoutException):
    """Establishing the connection took longer than the connect timeout."""


class WriteTimeout(TimeoutException):
    """Sending the request took longer than the write timeout."""


class ReadTimeout(TimeoutException):
    """No response byte arrived within the read timeout."""


class ResponseHeaderTimeout(ReadTimeout):
    """The response head did not arrive within the response-header timeout,
    counted from the moment the request was fully written."""


class PoolTimeout(TimeoutException, PoolError):
    """No connection became available within the pool timeout."""


class ProtocolError(PoolwatchError):
    """The HTTP/1.1 exchange broke the protocol."""


class RemoteProtocolError(ProtocolError):
    """The server's response is malformed (framing, headers, status line)."""


class LocalProtocolError(ProtocolError):
    """The request cannot be sent as given (bad header, body length mismatch)."""


class LeakWarning(ResourceWarning):
    """A response was garbage-collected while its body was neither read to the
    end nor closed, so its connection stayed checked out until then (R6)."""
