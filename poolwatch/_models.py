"""Requests as the transport sees them: URL, origin, headers, body, timeouts.

Everything here runs in the caller's thread before a connection is chosen,
so a bad URL, header or body is rejected before any byte is sent.
"""

from __future__ import annotations

import base64
import functools
import inspect
import io
import math
import os
import re
import socket
import ssl
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import IO, NamedTuple, TypeAlias, TypeGuard, cast
from urllib.parse import unquote, unquote_to_bytes, urlsplit

import h11

from ._core.pool import check_duration
from ._core.socks import SOCKS_SCHEMES
from ._core.wire import (
    closes_connection,
    is_field_value,
    is_target,
    is_token,
    plain_request_head,
)
from ._exceptions import InvalidURL, LocalProtocolError, redact_url, split_userinfo

__all__ = [
    "Origin",
    "PreparedRequests",
    "Proxy",
    "Request",
    "Timeout",
    "check_transport_options",
    "parse_proxy",
]

HeaderTypes: TypeAlias = (
    "Mapping[str, str | bytes] | Mapping[bytes, str | bytes]"
    " | Iterable[tuple[str | bytes, str | bytes]]"
)
SocketOption: TypeAlias = "tuple[int, int, int | bytes]"
BodyTypes: TypeAlias = (
    "bytes | bytearray | memoryview | str | Iterable[bytes | str] | IO[bytes] | IO[str] | None"
)

_DEFAULT_PORTS = {"http": 80, "https": 443}
_SUPPORTED_SCHEMES = ("http", "https")
# Large enough to keep system calls per megabyte low, small enough that a
# streamed upload does not hold much memory per connection.
_FILE_CHUNK = 64 * 1024
_USER_AGENT = b"poolwatch/0.1"


class Proxy(NamedTuple):
    """A proxy: its scheme, where to connect, and its credentials.

    ``http`` proxies take plain requests in absolute form and open CONNECT
    tunnels for https; ``https`` proxies do the same over TLS (so an https
    request runs TLS inside TLS); ``socks5``/``socks4`` proxies connect to the target
    themselves (``socks5h`` and ``socks4a`` resolve its name too).
    ``authorization`` is the ``Proxy-Authorization`` value an http proxy
    gets; ``username``/``password`` are what a SOCKS proxy gets.
    """

    host: str
    port: int
    authorization: bytes | None = None
    scheme: str = "http"
    username: str | None = None
    password: str | None = None
    # How an https proxy's certificate is checked; None: as the origin's.
    ssl_context: ssl.SSLContext | None = None
    # Sent to an http(s) proxy with each CONNECT and each request it
    # forwards (as httpx's Proxy(headers=...)); never shown.
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def __repr__(self) -> str:
        # Credentials stay out of logs and tracebacks.
        secret = " with credentials" if self.authorization or self.username else ""
        return f"<Proxy {self}{secret}>"

    def is_socks(self) -> bool:
        """Whether this is a SOCKS proxy."""
        return self.scheme in SOCKS_SCHEMES

    def resolves_names(self) -> bool:
        """Whether a SOCKS proxy is given host names to resolve itself."""
        return self.scheme in ("socks5h", "socks4a")


_PROXY_PORTS = {
    "http": 80,
    "https": 443,
    "socks5": 1080,
    "socks5h": 1080,
    "socks4": 1080,
    "socks4a": 1080,
}


def parse_proxy(
    url: str,
    ssl_context: ssl.SSLContext | None = None,
    headers: HeaderTypes | None = None,
) -> Proxy:
    """A :class:`Proxy` from ``scheme://[user:password@]host[:port]``, where
    the scheme is ``http`` (the default), ``https``, ``socks5``, ``socks5h``,
    ``socks4`` or ``socks4a``. ``ssl_context`` checks an https proxy;
    ``headers`` go to an http(s) proxy with each CONNECT and each request
    it forwards."""
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        port = parts.port
    except ValueError as exc:
        cut = _cut_credentials(url)
        reason = f"invalid proxy URL: {_parse_error(exc, cut)}"
        raise InvalidURL(reason, url=_unparsable(url) if cut else url) from exc
    scheme = parts.scheme.lower()
    if scheme not in _PROXY_PORTS or not parts.hostname:
        raise InvalidURL(
            "proxy URLs must be http://, https://, socks5://, socks5h://, socks4:// or socks4a:// "
            "followed by host[:port]",
            url=url,
        )
    authorization = username = password = None
    if parts.username is not None:
        username, password = unquote(parts.username), unquote(parts.password or "")
        credentials = f"{username}:{password}"
        authorization = b"Basic " + base64.b64encode(credentials.encode("utf-8"))
    port = port or _PROXY_PORTS[scheme]
    pairs = tuple(_header_pairs(headers)) if headers is not None else ()
    for name, value in pairs:
        if not is_token(name) or not is_field_value(value):
            # The value may be a secret: only the name is shown.
            raise LocalProtocolError(f"invalid header for the proxy: {name!r}", url=url)
    return Proxy(
        parts.hostname, port, authorization, scheme, username, password, ssl_context, pairs
    )


class Origin(NamedTuple):
    """Where a connection goes: scheme, host and port, and how it is
    reached (TLS context, proxy, Unix socket, TLS server name).

    Pools, limits and stats are kept per origin; ``str(origin)`` is the key
    used in :attr:`PoolStats.per_origin`, e.g. ``"http://127.0.0.1:8080"``.
    """

    scheme: str
    host: str
    port: int
    # The TLS configuration connections are made with: connections made with
    # different contexts are not interchangeable, so they pool apart.
    ssl_context: ssl.SSLContext | None = None
    proxy: Proxy | None = None  # connections go through this proxy
    uds: str | None = None  # or to this Unix socket
    # The name TLS asks for (SNI) and checks the certificate against, when
    # not the host's; connections made for another name pool apart.
    server_hostname: str | None = None

    @property
    def tls_name(self) -> str:
        """The name TLS sends (SNI) and checks the certificate against: the
        one given, else the host without the trailing dot of a fully
        qualified name (certificates never carry it; urllib3 and Go drop it
        too)."""
        return self.server_hostname or self.host.rstrip(".")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        via = f" via {self.proxy}" if self.proxy else ""
        if self.uds is not None:
            via = f" via unix:{self.uds}"
        return f"{self.scheme}://{host}:{self.port}{via}"


def ip_family(host: str) -> int | None:
    """``AF_INET`` or ``AF_INET6`` if ``host`` is an IP address in the
    standard notation (no zone), else ``None``."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return family
    return None


@dataclass(frozen=True)
class Timeout:
    """Time limits in seconds; ``None`` means no limit (R17).

    ``response_header`` starts when the request has been fully written;
    ``read`` is the longest wait between two body bytes; ``pool`` is the
    longest wait for a connection when a connection limit is reached.
    """

    connect: float | None = 30.0
    write: float | None = None
    response_header: float | None = None
    read: float | None = None
    pool: float | None = None

    def __post_init__(self) -> None:
        for name in ("connect", "write", "response_header", "read", "pool"):
            check_duration(getattr(self, name), f"{name} timeout", "None: no limit")

    @classmethod
    def coerce(cls, value: Timeout | float | None, default: Timeout) -> Timeout:
        """A ``Timeout`` from a number (every limit), ``None`` (the default)
        or a ``Timeout``."""
        if value is None:
            return default
        if isinstance(value, Timeout):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            check_duration(value, "timeout", "None: the transport's")
            v = float(value)
            return cls(connect=v, write=v, response_header=v, read=v, pool=v)
        raise TypeError(f"timeout must be a number or a Timeout, not {value!r}")

    def with_changes(self, **limits: float | None) -> Timeout:
        """A copy with some limits changed."""
        return replace(self, **limits)


def check_transport_options(
    *,
    call_site_depth: object,
    expect_continue_timeout: object,
    uds: object,
    ssl_context: object,
    local_address: object,
    socket_options: object,
) -> tuple[SocketOption, ...]:
    """Refuse a transport's arguments of the wrong kind at once, as
    :class:`Timeout` and the pool's limits do, rather than at first use;
    the socket options, as a tuple."""
    check_ssl_context(ssl_context)
    if local_address is not None and not isinstance(local_address, str):
        raise TypeError(f"local_address must be an IP address as a str, not {local_address!r}")
    options = tuple(socket_options) if isinstance(socket_options, Iterable) else None
    if options is None or not all(_is_socket_option(option) for option in options):
        raise TypeError(
            "socket_options must be (level, option, value) tuples of two ints and an int"
            f" or bytes, as setsockopt() takes, not {socket_options!r}"
        )
    if not _is_int(call_site_depth):
        raise TypeError(f"call_site_depth must be an int >= 0, not {call_site_depth!r}")
    if call_site_depth < 0:
        raise ValueError(f"call_site_depth must be an int >= 0, not {call_site_depth!r}")
    if not _is_number(expect_continue_timeout):
        raise TypeError(
            "expect_continue_timeout must be a finite number of seconds >= 0,"
            f" not {expect_continue_timeout!r}"
        )
    if not 0 <= expect_continue_timeout < math.inf:
        raise ValueError(
            "expect_continue_timeout must be a finite number of seconds >= 0,"
            f" not {expect_continue_timeout!r}"
        )
    if uds is not None and not isinstance(uds, (str, os.PathLike)):
        raise TypeError(f"uds must be the path of a Unix socket, not {uds!r}")
    return cast("tuple[SocketOption, ...]", options)


def _is_socket_option(option: object) -> bool:
    return (
        isinstance(option, tuple)
        and len(option) == 3
        and _is_int(option[0])
        and _is_int(option[1])
        and isinstance(option[2], (int, bytes))
    )


def check_ssl_context(context: object) -> None:
    """Refuse a TLS context that is not an ``ssl.SSLContext`` (or ``None``)."""
    if context is not None and not isinstance(context, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext or None, not {context!r}")


def check_request_options(
    *, ssl_context: object, proxy: object, server_hostname: object, target: object
) -> None:
    """Refuse a request's options of the wrong kind before it is sent."""
    check_ssl_context(ssl_context)
    if proxy is not None and not isinstance(proxy, (str, Proxy)):
        raise TypeError(f"proxy must be a URL str, a poolwatch.Proxy or None, not {proxy!r}")
    if server_hostname is not None and not isinstance(server_hostname, str):
        raise TypeError(f"server_hostname must be a str or None, not {server_hostname!r}")
    if target is not None and not isinstance(target, (str, bytes)):
        raise TypeError(f"target must be a str, bytes or None, not {target!r}")


def check_listener(listener: object) -> None:
    """Refuse a listener that cannot be called with each event."""
    if not callable(listener):
        raise TypeError(f"listener must be callable (it is given each event), not {listener!r}")
    if inspect.iscoroutinefunction(listener) or inspect.iscoroutinefunction(
        type(listener).__call__  # an instance with an async __call__
    ):
        raise TypeError(
            f"listener must be a plain function: listeners are called, never awaited, "
            f"so {listener!r} would only make coroutines (start a task from a plain "
            f"function instead)"
        )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _request_target(target: str | bytes, method: str, url: str) -> bytes:
    """A request target given in place of the URL's (``*`` for a server-wide
    ``OPTIONS``, or a path sent exactly as given), checked as the URL is."""
    try:
        raw = target.encode("ascii") if isinstance(target, str) else target
    except UnicodeEncodeError:
        raw = b""
    if not raw or _NOT_IN_TARGET.search(raw):
        raise LocalProtocolError(
            f"invalid request target {target!r}: ASCII without spaces or control characters",
            method=method,
            url=url,
        )
    return raw


_NOT_IN_TARGET = re.compile(rb"[\x00-\x20\x7f-\xff]")


class Request:
    """A validated request, ready to hand to a connection's writer.

    ``url`` is the URL as poolwatch shows it (in errors, events, responses
    and leak reports): as given, but with the password of its userinfo
    replaced (see :func:`~poolwatch._exceptions.redact_url`). The userinfo
    itself is sent as ``Authorization: Basic`` unless the caller gave one.
    """

    __slots__ = (
        "_event",
        "_event_parts",
        "body",
        "content_length",
        "expects_continue",
        "idempotency_key",
        "method",
        "origin",
        "plain_head",
        "url",
        "wants_close",
    )

    def __init__(
        self,
        method: str,
        url: str,
        headers: HeaderTypes | None = None,
        body: BodyTypes = None,
        *,
        keep_alive: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        proxy: str | Proxy | None = None,
        uds: str | None = None,
        server_hostname: str | None = None,
        target: str | bytes | None = None,
    ) -> None:
        for name, value in (("method", method), ("url", url)):
            if not isinstance(value, str):
                raise TypeError(f"{name} must be str, not {type(value).__name__}: {value!r}")
        if any(x is not None for x in (ssl_context, proxy, server_hostname, target)):
            check_request_options(
                ssl_context=ssl_context,
                proxy=proxy,
                server_hostname=server_hostname,
                target=target,
            )
        self.method = method.upper()
        try:
            parsed = parse_url(url)
        except InvalidURL as exc:
            cut = exc.__cause__ is not None and _cut_credentials(url)
            shown = _unparsable(url) if cut else url
            raise InvalidURL(str(exc), method=self.method, url=shown) from exc
        self.origin, url_target, host_header, authorization, self.url = parsed
        if target is not None:
            url_target = _request_target(target, self.method, self.url)
        if self.origin.scheme == "https":
            if ssl_context is not None:
                self.origin = self.origin._replace(ssl_context=ssl_context)
            if server_hostname is not None and server_hostname != self.origin.host:
                self.origin = self.origin._replace(server_hostname=server_hostname)
        if proxy is not None:
            if isinstance(proxy, str):
                proxy = parse_proxy(proxy)
            self.origin = self.origin._replace(proxy=proxy)
        elif uds is not None:
            self.origin = self.origin._replace(uds=uds)
        try:
            pairs = _header_pairs(headers)
        except UnicodeEncodeError as exc:
            raise LocalProtocolError(
                f"header not encodable as Latin-1 (encode it yourself): {exc}",
                method=self.method,
                url=self.url,
            ) from exc
        self.body, self.content_length = _prepare_body(body, pairs)
        names = {name.lower() for name, _ in pairs}
        if names >= _FRAMING_HEADERS:
            # RFC 9112 section 6.1: a sender must not send both. A server
            # and a proxy in front of it may each frame the body by a
            # different one, the shape of request smuggling (and poolwatch
            # refuses a response with both, R10).
            raise LocalProtocolError(
                "request has both Transfer-Encoding and Content-Length"
                " (RFC 9112 section 6.1 forbids it: send one)",
                method=self.method,
                url=self.url,
            )
        if b"content-length" in names and isinstance(self.body, bytes):
            declared = _declared_length(pairs)
            if declared is not None and declared != self.content_length:
                # Known now: refused before a connection is taken (R16).
                raise LocalProtocolError(
                    f"request body does not match its framing: Content-Length "
                    f"is {declared}, the body has {self.content_length} bytes",
                    method=self.method,
                    url=self.url,
                )
        self.idempotency_key = bool(names & _IDEMPOTENCY_KEYS)
        # R15: headers first, the body after a 100 Continue.
        self.expects_continue = self.body is not None and any(
            name.lower() == b"expect" and value.strip().lower() == b"100-continue"
            for name, value in pairs
        )
        extra: list[tuple[bytes, bytes]] = []
        if b"host" not in names:
            extra.append((b"Host", host_header))
        if b"user-agent" not in names:
            extra.append((b"User-Agent", _USER_AGENT))
        if not names & _FRAMING_HEADERS:
            if self.content_length is None:
                extra.append((b"Transfer-Encoding", b"chunked"))
            elif self.content_length or self.method in _METHODS_WITH_BODY:
                extra.append((b"Content-Length", str(self.content_length).encode()))
        if authorization is not None and b"authorization" not in names:
            # A URL's userinfo is sent as Basic credentials unless the
            # caller gave an Authorization (Go's Client.send does the same).
            extra.append((b"Authorization", authorization))
        if not keep_alive and b"connection" not in names:
            extra.append((b"Connection", b"close"))
        if proxy is not None and self.origin.scheme == "http" and not proxy.is_socks():
            # Through an http proxy a plain request names its whole URL (RFC
            # 9112 section 3.2.2); https goes through a CONNECT tunnel instead,
            # and a SOCKS proxy connects to the origin itself.
            url_target = b"http://" + host_header + url_target
            if proxy.authorization and b"proxy-authorization" not in names:
                extra.append((b"Proxy-Authorization", proxy.authorization))
            extra.extend(pair for pair in proxy.headers if pair[0].lower() not in names)
        headers = extra + pairs
        if b"connection" in names:
            self.wants_close = _says_close(pairs)
        else:
            self.wants_close = not keep_alive
        try:
            method_bytes = self.method.encode("ascii")
        except UnicodeEncodeError as exc:
            raise LocalProtocolError(
                f"invalid request: {exc}", method=self.method, url=self.url
            ) from exc
        #: The request line and headers, ready to send, for a request simple
        #: enough to go without h11 (see _plain_head); else ``None``.
        self.plain_head = _plain_head(method_bytes, url_target, headers, self)
        self._event: h11.Request | None = None
        self._event_parts = (method_bytes, url_target, headers)
        if self.plain_head is None:
            self._event = self._make_event()  # h11 checks it now: errors come early

    @property
    def event(self) -> h11.Request:
        """The request as an h11 event, for a connection that sends it (or
        learns of it) through h11."""
        event = self._event
        if event is None:
            event = self._event = self._make_event()
        return event

    def _make_event(self) -> h11.Request:
        method, target, headers = self._event_parts
        try:
            return h11.Request(method=method, target=target, headers=headers)
        except (h11.LocalProtocolError, UnicodeEncodeError) as exc:
            raise LocalProtocolError(
                f"invalid request: {exc}", method=self.method, url=self.url
            ) from exc

    def with_body(self, body: bytes | None) -> Request:
        """This request with another body of the same length, or with none
        held (a shared head must not keep a body alive)."""
        twin = object.__new__(Request)
        for name in Request.__slots__:
            setattr(twin, name, getattr(self, name))
        twin.body = body
        return twin

    def is_replayable(self) -> bool:
        """Whether sending this request twice is safe and possible (R13):
        an idempotent method or an idempotency key, and a body that can be
        produced again."""
        if self.method not in _IDEMPOTENT_METHODS and not self.idempotency_key:
            return False
        return self.body is None or isinstance(self.body, bytes)

    def body_chunks(self) -> Iterator[bytes]:
        """The body as a sequence of byte strings (may be iterated once)."""
        body = self.body
        if body is None:
            return iter(())
        if isinstance(body, bytes):
            return iter((body,))
        if hasattr(body, "read"):
            return _read_file(cast("IO[bytes]", body))
        return map(body_chunk_bytes, body)


def body_chunk_bytes(chunk: object) -> bytes:
    """A piece of a streamed request body as bytes: ``str`` is sent UTF-8
    encoded, as a ``str`` body is (and as urllib3 sends text pieces);
    anything but bytes-like objects and ``str`` is a TypeError naming it."""
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, str):
        return chunk.encode("utf-8")
    if isinstance(chunk, (bytearray, memoryview)):
        return bytes(chunk)
    raise TypeError(
        f"a request body's pieces must be bytes or str, not {type(chunk).__name__}: {chunk!r:.60}"
    )


class PreparedRequests:
    """A transport's requests, checked and prepared once for requests that
    repeat.

    A request with the same method, URL, headers and options as one made
    before, and a body of ``bytes`` of the same length (or none), has the
    same head: the earlier one's checked parts and prepared bytes are used
    again, with this body. A request is never changed once made, so they can
    be shared. Anything else (a body of another kind, headers that cannot be
    hashed) is prepared from scratch. At most :attr:`MAX` heads are kept,
    without their bodies, for as long as the transport lives.
    """

    MAX = 256
    # TLS contexts the kept heads may hold: a context made per request (it
    # holds the CA store, most of a megabyte) must not stay alive here.
    MAX_CONTEXTS = 4
    __slots__ = ("_contexts", "_known")

    def __init__(self) -> None:
        self._known: dict[tuple[object, ...], Request] = {}
        self._contexts: set[int] = set()  # ids of those the kept heads hold

    def __len__(self) -> int:
        return len(self._known)

    def prepare(
        self,
        method: str,
        url: str,
        headers: HeaderTypes | None = None,
        body: BodyTypes = None,
        *,
        keep_alive: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        proxy: str | Proxy | None = None,
        uds: str | None = None,
        server_hostname: str | None = None,
        target: str | bytes | None = None,
    ) -> Request:
        """The request, as :class:`Request` makes it (and raising as it does)."""
        options = (keep_alive, ssl_context, proxy, uds, server_hostname, target)
        key = _request_key(method, url, headers, body, options)
        known = None if key is None else self._known.get(key)
        if known is not None:
            return known if body is None else known.with_body(cast(bytes, body))
        request = Request(
            method,
            url,
            headers,
            body,
            keep_alive=keep_alive,
            ssl_context=ssl_context,
            proxy=proxy,
            uds=uds,
            server_hostname=server_hostname,
            target=target,
        )
        if key is not None:
            contexts = self._contexts
            if ssl_context is not None and id(ssl_context) not in contexts:
                if len(contexts) >= self.MAX_CONTEXTS:
                    self._known.clear()
                    contexts.clear()
                contexts.add(id(ssl_context))
            if len(self._known) >= self.MAX:
                self._known.clear()
                contexts.clear()
                if ssl_context is not None:
                    contexts.add(id(ssl_context))
            # The head only: a body kept here would stay alive.
            self._known[key] = request if body is None else request.with_body(None)
        return request


def _request_key(
    method: str,
    url: str,
    headers: HeaderTypes | None,
    body: BodyTypes,
    options: tuple[object, ...],
) -> tuple[object, ...] | None:
    """What makes two requests' heads the same, or ``None`` when the request
    is not shared (a body other than bytes, anything unhashable)."""
    if body is not None and type(body) is not bytes:
        return None
    if headers is None:
        fields: tuple[object, ...] = ()
    elif isinstance(headers, Mapping):
        fields = tuple(headers.items())
    elif isinstance(headers, (list, tuple)):
        fields = tuple(headers)
    else:
        return None  # an iterator would be used up here, or not headers at all
    key = (method, url, fields, None if body is None else len(body), options)
    try:
        hash(key)
    except TypeError:
        return None
    return key


_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_IDEMPOTENCY_KEYS = frozenset({b"idempotency-key", b"x-idempotency-key"})
_FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding"})


class ParsedURL(NamedTuple):
    """A URL as a request needs it (see :func:`parse_url`)."""

    origin: Origin
    target: bytes  # the request target: path and query
    host_header: bytes
    authorization: bytes | None  # from the URL's userinfo, if any
    shown: str  # the URL as poolwatch shows it: without the password


# C0 controls, space and DEL may not appear in a URL (RFC 3986 section 2;
# RFC 9112 section 3.2). urlsplit() drops TAB, CR and LF anywhere, and C0
# controls and spaces before the scheme (the WHATWG URL rules), so such a
# URL would otherwise request another resource than the one it names.
_NOT_IN_URL = re.compile(r"[\x00-\x20\x7f]")


def _cut_credentials(url: str) -> bool:
    """Whether a URL that does not parse has an ``@`` past where urlsplit()
    ends its authority: credentials with a ``/``, ``?`` or ``#`` not
    percent-encoded, whose pieces its error may quote (as a port)."""
    try:
        netloc = urlsplit(url if "://" in url else f"http://{url}").netloc
    except ValueError:
        return "@" in url
    return "@" in url and "@" not in netloc


def _parse_error(exc: ValueError, cut: bool) -> str:
    """What urlsplit() found wrong, unless credentials were cut (``cut``)."""
    if cut:
        return "its authority does not parse (percent-encode '/', '?' and '#' in credentials)"
    return str(exc)


def _unparsable(url: str) -> str:
    """A URL that does not parse, as shown: all up to its last ``@`` hidden,
    since where its credentials end cannot be known (a ``/`` in a password
    not percent-encoded would end them early for :func:`redact_url`)."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, slashes, _ = head.partition("://")
    return f"{scheme}://***@{tail}" if slashes else f"***@{tail}"


def without_userinfo(url: str) -> str:
    """``url`` without the user name and password of its authority: what
    the adapters send once requests or httpx has made its own ``auth`` of
    them (so a digest auth, say, is not joined by a Basic one)."""
    parts = split_userinfo(url)
    return url if parts is None else parts[0] + parts[2]


@functools.lru_cache(maxsize=512)
def parse_url(url: str) -> ParsedURL:
    """Split ``url`` into its origin, request target, Host header value,
    the Authorization its userinfo gives and the form it is shown in.
    Remembers the last 512 URLs (the answer is immutable; errors are not
    remembered). Raises :class:`InvalidURL` with the reason only: the
    caller names the request."""
    if _NOT_IN_URL.search(url):
        raise InvalidURL("URL contains a control character or space (percent-encode it)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"invalid URL: {_parse_error(exc, _cut_credentials(url))}") from exc
    scheme = parts.scheme.lower()
    if scheme not in _SUPPORTED_SCHEMES:
        what = f"unsupported scheme {scheme!r}" if scheme else "no scheme"
        raise InvalidURL(f"{what}; poolwatch speaks http:// and https://")
    host = parts.hostname
    if not host:
        raise InvalidURL("the URL has no host")
    default_port = _DEFAULT_PORTS[scheme]
    if port is None:
        port = default_port
    target = parts.path or "/"
    if parts.query or "?" in url.partition("#")[0]:
        target = f"{target}?{parts.query}"  # an empty query is sent as given
    if not host.isascii():
        raise InvalidURL(
            f"the host name {host!r} must be ASCII: give its IDNA form (xn--...),"
            " as requests and httpx make it"
        )
    try:
        target_bytes = target.encode("ascii")
    except UnicodeEncodeError as exc:
        raise InvalidURL("URL must be ASCII (percent-encode it)") from exc
    bracketed = f"[{host}]" if ":" in host else host
    host_header = bracketed if port == default_port else f"{bracketed}:{port}"
    origin = Origin(scheme, host, port)
    if "@" not in parts.netloc:
        return ParsedURL(origin, target_bytes, host_header.encode("ascii"), None, url)
    return ParsedURL(
        origin,
        target_bytes,
        host_header.encode("ascii"),
        _basic_authorization(parts.username or "", parts.password or ""),
        redact_url(url),
    )


def _basic_authorization(username: str, password: str) -> bytes | None:
    """The ``Authorization`` a URL's userinfo gives: Basic, with the user
    name and password percent-decoded (RFC 7617), as curl, httpx and Go's
    client send it; ``None`` for an empty userinfo (``http://@host/``), as
    httpx does."""
    if not username and not password:
        return None
    credentials = unquote_to_bytes(username) + b":" + unquote_to_bytes(password)
    return b"Basic " + base64.b64encode(credentials)


def _says_close(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a ``Connection`` header holds the ``close`` token, as h11 reads it."""
    return any(
        name.lower() == b"connection" and closes_connection(value) for name, value in headers
    )


def _plain_head(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], request: Request
) -> bytes | None:
    """The bytes of the request line and headers when the whole request can
    go in one write without h11: a body held as bytes (or none), no
    ``Expect: 100-continue``, and headers that h11 would send unchanged
    (valid characters, one ``Host``, no ``Transfer-Encoding``, a
    ``Content-Length`` that is the body's length in plain digits)."""
    body = request.body
    if request.expects_continue or not isinstance(body, bytes | None):
        return None
    if not is_token(method) or not is_target(target):
        return None
    hosts = 0
    declared: int | None = None
    for field in headers:
        if not (_PLAIN_FIELDS.get(field) or _check_field(field)):
            return None
        name, value = field
        lowered = name.lower()
        if lowered == b"host":
            hosts += 1
        elif lowered == b"content-length":
            if declared is not None or not value.isdigit():
                return None  # for h11 to judge
            declared = int(value)
        elif lowered == b"transfer-encoding":
            return None
    if declared is not None and declared != len(body or b""):
        return None  # h11 refuses to send it, as it should
    if hosts != 1:
        return None
    return plain_request_head(method, target, headers)


# Header lines already checked, and whether h11 would send them unchanged:
# most requests repeat the same few.
_PLAIN_FIELDS: dict[tuple[bytes, bytes], bool] = {}
_PLAIN_FIELDS_MAX = 1024


def _check_field(field: tuple[bytes, bytes]) -> bool:
    name, value = field
    plain = bool(is_token(name) and is_field_value(value))
    if len(_PLAIN_FIELDS) >= _PLAIN_FIELDS_MAX:
        _PLAIN_FIELDS.clear()
    _PLAIN_FIELDS[field] = plain
    return plain


def _header_pairs(headers: HeaderTypes | None) -> list[tuple[bytes, bytes]]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise TypeError(f"headers must be a mapping or (name, value) pairs, not {headers!r}")
    pairs = []
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            raise TypeError(
                f"headers must be a mapping or (name, value) pairs, not {headers!r}"
            ) from None
        pairs.append((_as_bytes(name), _as_bytes(value)))
    return pairs


def _as_bytes(value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        # Latin-1 is what HTTP/1.1 headers have historically carried (RFC
        # 9110 section 5.5); anything else must be encoded by the caller.
        return value.encode("latin-1")
    raise TypeError(f"header names and values must be str or bytes, not {value!r}")


def _prepare_body(
    body: BodyTypes, headers: list[tuple[bytes, bytes]]
) -> tuple[bytes | Iterable[bytes | str] | IO[bytes] | IO[str] | None, int | None]:
    """Normalise the body and find its length (``None`` means unknown, R16)."""
    if body is None:
        return None, 0
    if isinstance(body, str):
        body = body.encode("utf-8")
    if isinstance(body, (bytearray, memoryview)):
        body = bytes(body)
    if isinstance(body, bytes):
        return body, len(body)
    declared = _declared_length(headers)
    if hasattr(body, "read"):
        file = cast("IO[bytes]", body)
        if declared is not None or isinstance(file, io.TextIOBase):
            return file, declared  # text: its length in bytes is known once sent
        return file, _file_length(file)
    if isinstance(body, Iterable) and not isinstance(body, Mapping):
        return body, declared
    raise TypeError(
        f"request body must be bytes, str, an iterable of bytes or a file, not {body!r}"
        + (" (encode a form or JSON yourself)" if isinstance(body, Mapping) else "")
    )


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length" and value.strip().isdigit():
            return int(value)
    return None


def _file_length(file: IO[bytes]) -> int | None:
    """The bytes left in a seekable file (none past its end), or ``None``:
    also for a file the system sizes as 0 that has bytes to read, as those
    made as they are read do (``/proc``, ``/sys``), which are sent chunked."""
    try:
        if not file.seekable():
            return None
        position = file.tell()
        try:
            size = os.fstat(file.fileno()).st_size
        except (OSError, io.UnsupportedOperation):  # not a file of the system's
            size = file.seek(0, io.SEEK_END)
            file.seek(position)
            return max(size - position, 0)
        if size:
            return max(size - position, 0)
        first = file.read(1)  # size 0: empty, or made as it is read
        file.seek(position)
        return None if first else 0
    except (OSError, AttributeError, ValueError):
        return None


def _read_file(file: IO[bytes]) -> Iterator[bytes]:
    while chunk := file.read(_FILE_CHUNK):
        yield body_chunk_bytes(chunk)  # a text file's, UTF-8 encoded
