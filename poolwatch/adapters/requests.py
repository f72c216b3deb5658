"""A ``requests`` transport adapter over a poolwatch :class:`~poolwatch.Transport`.

Mount it and nothing else changes::

    adapter = poolwatch.RequestsAdapter(pool_maxsize=20)
    session.mount("http://", adapter)
    session.mount("https://", adapter)

``Response.raw`` is a urllib3 ``HTTPResponse`` reading poolwatch's body, so
content decoding, ``iter_content``, ``raw.read``, ``raw.stream`` and cookies
work as with ``HTTPAdapter``. Errors are requests' own exception types.
Proxies come from ``proxies`` as requests selects them: ``http``, ``https``
(TLS to the proxy, checked as ``verify`` says), and SOCKS (``socks5``,
``socks5h``, ``socks4``, ``socks4a``) without PySocks.
"""

from __future__ import annotations

import http.client
import io
import os
import ssl
import warnings
from collections.abc import Callable, Mapping
from typing import IO, Any, ClassVar, cast
from urllib.parse import urlsplit

import requests
import requests.adapters
import requests.exceptions as rexc
import urllib3
from requests.structures import CaseInsensitiveDict
from urllib3 import HTTPConnectionPool, HTTPResponse
from urllib3.exceptions import DecodeError, InsecureRequestWarning, MaxRetryError
from urllib3.util import Timeout as Urllib3Timeout
from urllib3.util.request import rewind_body, set_file_position
from urllib3.util.retry import Retry

from .._core.stats import PoolStats
from .._exceptions import (
    ConnectTimeout,
    InvalidURL,
    LocalProtocolError,
    PoolTimeout,
    PoolwatchError,
    ProxyError,
    ReadTimeout,
    TimeoutException,
    TLSError,
    WriteTimeout,
)
from .._leaks import skip_module_directory
from .._models import BodyTypes, Proxy, Timeout, parse_proxy, without_userinfo
from .._sync.response import Response
from .._sync.transport import Transport
from ._retry import (
    PoolName,
    as_urllib3_error,
    conflicting_lengths,
    max_retries_error,
    requests_retry,
    reraised_error,
)

__all__ = ["RequestsAdapter"]

skip_module_directory(requests.__file__)
skip_module_directory(urllib3.__file__)

_DEFAULT_POOLSIZE = requests.adapters.DEFAULT_POOLSIZE
# Distinct timeouts remembered per adapter: a session passes one or a few;
# a caller making up a new one per request only refills the table.
_MAX_REMEMBERED = 64


class _Body(io.RawIOBase):
    """poolwatch's response body as the file urllib3 reads, raising the
    exceptions ``http.client`` would so that urllib3 and requests translate
    them as they do for ``HTTPAdapter``.

    Reads are served from the last piece taken from the response, by
    offset, so that reading a large body in small pieces copies each byte
    once. A piece never includes the body's last byte unless the read
    asked for it: the connection is still released by the read that
    reaches the end (R4), and a close before it still tears it down (R5).
    """

    def __init__(self, response: Response) -> None:
        super().__init__()
        self.response = response
        self._piece = b""  # taken from the response, not yet read from here
        self._offset = 0  # how much of _piece has been read
        # Body bytes still in the response, when its Content-Length says.
        self._unpulled = None if response.is_closed else _content_length(response)
        # A body found cut short after some bytes of a read were gathered:
        # those bytes are returned first and the error raised by the next
        # read, as ``http.client`` does (a timeout raises at once, as there).
        self._failure: Exception | None = None
        self._empty_read = False  # a read came back empty: the body is over

    def readable(self) -> bool:
        return True

    def read(self, amt: int | None = -1) -> bytes:
        if amt is None or amt < 0:
            data = self._taken(len(self._piece)) + self._translated(self.response.read, None)
            self._unpulled = 0 if self._unpulled is not None else None
            self._empty_read = True  # read to the end, as http.client's read() is
            return data
        data = self._taken(amt)
        if len(data) == amt:
            return data
        pieces = [data] if data else []
        wanted = amt - len(data)
        while wanted and self._unpulled != 0:
            try:
                piece = self._pull(wanted)
            except http.client.IncompleteRead as exc:
                if not pieces:
                    raise
                self._failure = exc
                break
            if not piece:
                break
            pieces.append(piece[:wanted] if len(piece) > wanted else piece)
            self._piece, self._offset = piece, min(wanted, len(piece))
            wanted -= self._offset
        if not pieces:
            self._empty_read = True
            return b""
        if len(pieces) == 1:
            return pieces[0]
        return b"".join(pieces)

    def read1(self, amt: int | None = -1) -> bytes:
        if self._offset < len(self._piece):
            return self._taken(len(self._piece) if amt is None or amt < 0 else amt)
        piece = self._pull(None if amt is None or amt < 0 else amt)
        if not piece:
            self._empty_read = True
        if amt is None or amt < 0:
            return piece
        if len(piece) <= amt:
            return piece
        self._piece, self._offset = piece, amt
        return piece[:amt]

    def _taken(self, amt: int) -> bytes:
        """Up to ``amt`` bytes from the piece in hand."""
        offset = self._offset
        if offset == 0 and amt >= len(self._piece):
            data = self._piece
        else:
            data = self._piece[offset : offset + amt]
        self._offset = offset + len(data)
        if self._offset >= len(self._piece):
            self._piece, self._offset = b"", 0
        return data

    def _pull(self, wanted: int | None) -> bytes:
        """The next piece of the body, from at most one read of the socket:
        up to ``wanted`` bytes, or more while the end is not reached."""
        unpulled = self._unpulled
        if unpulled is None:
            # All the response holds, but for the body's last byte once its
            # end has come: the read that takes that byte ends the body.
            response = self.response
            ahead = response._buffered() - (1 if response._end_seen else 0)
            if wanted is not None and ahead > wanted:
                wanted = ahead
            return self._translated(response.read1, wanted)
        if unpulled == 0:
            return b""  # the read that took the last byte ended the body (R4)
        if wanted is None or wanted >= unpulled:
            data = self._translated(self.response.read1, wanted)
        else:
            data = self._translated(self.response.read1, unpulled - 1)
        self._unpulled = unpulled - len(data)
        return data

    def _translated(self, read: Callable[[int | None], bytes], amt: int | None) -> bytes:
        failure = self._failure
        if failure is not None:
            self._failure = None
            raise failure
        try:
            return read(amt)
        except ReadTimeout as exc:
            raise TimeoutError(str(exc)) from exc
        except PoolwatchError as exc:
            if self.response._end_seen:  # whole, but bytes followed it (R10)
                raise http.client.HTTPException(str(exc)) from exc
            raise self._cut_short() from exc

    def _cut_short(self) -> _IncompleteRead:
        """http.client's error for the body cut short, with its counts."""
        received = self.response._exchange.bytes_read - (len(self._piece) - self._offset)
        length = _content_length(self.response)
        return _IncompleteRead(received, None if length is None else length - received)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def isclosed(self) -> bool:
        """Whether reading is over: closed here, or the body read to its
        end. A body cut short, or ended by the transport's close, is not
        over until a read has raised for it (urllib3 stops at the first
        ``isclosed()``, and would take the bytes so far for the whole)."""
        if self.closed:
            return True
        if self._failure is not None or self._offset < len(self._piece):
            return False
        if self._unpulled is None and not self._empty_read:
            # Without a Content-Length, http.client's file says it is closed
            # only once a read has come back empty: io.TextIOWrapper checks
            # before each line it hands over, and would drop what it holds.
            return False
        return self.response.outcome in _COMPLETE

    def fileno(self) -> int:
        """The connection's socket, as ``http.client`` gives it, while the
        body is being read (once it ends, the connection may carry another
        request). Bytes already taken from it do not make it readable."""
        sock = None if self.response.is_closed else self.response.get_extra_info("socket")
        if sock is None:
            raise OSError("the response body has ended: no connection to give the descriptor of")
        return cast(int, sock.fileno())

    def close(self) -> None:
        self._piece, self._offset = b"", 0
        self.response.close()
        super().close()


_COMPLETE = frozenset({"drained", "no_body"})  # outcomes of a body read whole


class _IncompleteRead(http.client.IncompleteRead):
    """``http.client``'s error for a body cut short, counting the bytes read
    (as its message does) without holding them."""

    def __init__(self, received: int, expected: int | None) -> None:
        super().__init__(b"", expected)
        self.received = received

    def __repr__(self) -> str:
        more = "" if self.expected is None else f", {self.expected} more expected"
        return f"IncompleteRead({self.received} bytes read{more})"

    __str__ = __repr__


def _content_length(response: Response) -> int | None:
    """The body's length as its Content-Length gives it, or ``None``."""
    if "transfer-encoding" in response.headers:
        return None
    try:
        return int(response.headers.get("content-length", ""))
    except ValueError:
        return None


class _HTTPResponse(HTTPResponse):
    """urllib3's response, reporting a leak before its finaliser closes it:
    a response dropped unread must count as leaked, not closed (R6)."""

    _poolwatch: Response | None = None
    _as_sent = False  # no Content-Encoding: urllib3's decoder has nothing to do

    def read(
        self,
        amt: int | None = None,
        decode_content: bool | None = None,
        cache_content: bool = False,
    ) -> bytes:
        """As urllib3's. A body sent without a Content-Encoding is read
        straight from the file, past urllib3's decoded-data buffer (which
        would only copy it), with the same end-of-body checks."""
        if not self._as_sent or amt is None or amt <= 0 or self._has_decoded_content:
            return super().read(amt, decode_content, cache_content)
        self._uncached_read_occurred = True
        data = self._read_as_sent(amt)
        if not (self.decode_content if decode_content is None else decode_content):
            return data  # as urllib3: one read of the file
        while 0 < len(data) < amt:
            # As urllib3 does when decoding: read until ``amt`` or an empty
            # read, which closes the file at the end and raises for a body
            # cut short.
            more = self._read_as_sent(amt - len(data))
            if not more:
                break
            data += more
        return data

    def read1(self, amt: int | None = None, decode_content: bool | None = None) -> bytes:
        """As urllib3's. A body sent without a Content-Encoding is read
        straight from the file, as :meth:`read` reads it."""
        if not self._as_sent or self._has_decoded_content or amt == 0:
            return super().read1(amt, decode_content)
        self._uncached_read_occurred = True
        return self._read_as_sent(None if amt is None or amt < 0 else amt, read1=True)

    def _read_as_sent(self, amt: int | None, *, read1: bool = False) -> bytes:
        """urllib3's ``_raw_read(amt)``, its error translation entered only
        when there is an error: the end of the body, a closed file and
        errors all go through urllib3's own code."""
        body = self._fp
        if body is None or body.closed:
            return self._raw_read(amt, read1=read1)
        try:
            data = body.read1(-1 if amt is None else amt) if read1 else body.read(amt)
        except Exception:
            with self._error_catcher():
                raise  # translated as urllib3 translates it
        if not data:
            if self.length_remaining:
                # Closes the file, raises for the cut.
                return self._raw_read(amt, read1=read1)
            # The end: what urllib3's empty read does then (its connection
            # release has no pool to return to here).
            body.close()
            return data
        self._fp_bytes_read += len(data)
        if self.length_remaining is not None:
            self.length_remaining -= len(data)
        return data

    def _decode(self, *args: Any, **kwargs: Any) -> bytes:
        """As urllib3's; a body that does not decode is closed at once, its
        connection torn down (R5), as httpx's client closes one. requests
        raises ``ContentDecodingError`` from inside ``Session.send`` for it
        when not streaming, and the caller never holds the response to
        close."""
        try:
            return super()._decode(*args, **kwargs)
        except DecodeError:
            if self._fp is not None:
                self._fp.close()
            raise

    def stream(self, amt: int | None = 2**16, decode_content: bool | None = None) -> Any:
        """As urllib3's: a chunked body comes chunk by chunk as it arrives
        (poolwatch has already taken the chunk framing off)."""
        if not self.chunked:
            yield from super().stream(amt, decode_content)
            return
        while True:
            data = self.read1(amt, decode_content=decode_content)
            if data:
                yield data
            elif self.isclosed() or self._fp is None or self._fp.isclosed():
                return

    def __del__(self) -> None:
        if self._poolwatch is not None:
            self._poolwatch.report_leak(stacklevel=3)
        super().__del__()


class _OriginalResponse:
    """What cookie extraction reads: ``msg`` with the response headers.
    urllib3 closes it after an error, and then reads nothing more from the
    body, as ``http.client``'s response is its body file."""

    def __init__(self, response: Response, body: _Body) -> None:
        self._body = body
        message = http.client.HTTPMessage()
        # What ``message[name] = value`` stores for each header under the
        # compat32 policy http.client parses with (names and values as
        # they are, in the order received), without a policy call per header.
        message._headers = [  # type: ignore[attr-defined]
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in response.raw_headers
        ]
        self.msg = message

    def isclosed(self) -> bool:
        return True

    def close(self) -> None:
        self._body.close()


class RequestsAdapter(requests.adapters.BaseAdapter):
    """A transport adapter for ``requests`` backed by poolwatch.

    Takes ``HTTPAdapter``'s arguments with the same meaning:
    ``pool_maxsize`` idle connections are kept per host, and with
    ``pool_block`` no more than that many are open per host (requests wait
    for one). ``pool_connections`` has no counterpart (poolwatch keeps one
    pool per origin) and only bounds idle connections overall.
    ``max_retries`` (a number or a urllib3 ``Retry``) is applied as urllib3
    applies it for ``HTTPAdapter``: connect, read and status retries, with
    backoff, ``Retry-After`` and requests' exceptions on exhaustion. Or pass
    an existing ``transport``.
    """

    __attrs__: ClassVar[list[str]] = [
        "max_retries",
        "_pool_connections",
        "_pool_maxsize",
        "_pool_block",
    ]

    def __init__(
        self,
        pool_connections: int = _DEFAULT_POOLSIZE,
        pool_maxsize: int = _DEFAULT_POOLSIZE,
        max_retries: Retry | int | None = 0,
        pool_block: bool = False,
        *,
        transport: Transport | None = None,
    ) -> None:
        super().__init__()
        sizes = {"pool_connections": pool_connections, "pool_maxsize": pool_maxsize}
        for name, value in sizes.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, not {value!r}")
        self.max_retries = requests_retry(max_retries)
        self._pool_connections = pool_connections
        self._pool_maxsize = pool_maxsize
        self._pool_block = pool_block
        self._own_transport = transport is None
        self.transport = transport if transport is not None else self._make_transport()
        self._closed = False  # by close(): the next request reopens the transport
        self._contexts: dict[tuple[Any, Any], ssl.SSLContext] = {}
        self._timeouts: dict[tuple[Any, Timeout], Timeout] = {}

    def _make_transport(self) -> Transport:
        return Transport(
            max_idle_per_host=self._pool_maxsize,
            max_idle=max(self._pool_connections * self._pool_maxsize, self._pool_maxsize),
            max_connections_per_host=self._pool_maxsize if self._pool_block else None,
            connect_timeout=None,
        )

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__attrs__}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)
        self._own_transport = True
        self.transport = self._make_transport()
        self._closed = False
        self._contexts = {}
        self._timeouts = {}

    def stats(self) -> PoolStats:
        """The transport's :class:`~poolwatch.PoolStats`."""
        return self.transport.stats()

    def close(self) -> None:
        """As ``HTTPAdapter.close()``: close the idle connections; responses
        still being read are read to their end, and the adapter can be used
        again (its next request reopens the transport: stats and listeners
        carry on, see :meth:`poolwatch.Transport.reopen`).

        A transport this adapter made is closed, unless requests are in
        flight: then its idle connections are, and those requests'
        connections when their responses end (see ``retire_active`` of
        :meth:`poolwatch.Transport.close_idle_connections`; those still
        being dialled too). A transport passed in is
        left open, its idle connections closed.
        """
        transport = self.transport
        if not self._own_transport:
            transport.close_idle_connections()
            return
        self._closed = True
        if transport._busy():
            transport.close_idle_connections(retire_active=True)
        else:
            transport.close()

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float | None, float | None] | Urllib3Timeout | None = None,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send a prepared request, as ``HTTPAdapter.send`` does."""
        if self._closed and self.transport.reopen():
            self._closed = False
        limits = self._limits(timeout)
        url = request.url or ""
        if "@" in url:
            url = without_userinfo(url)  # requests made its auth of them
        proxy = _proxy_for(url, proxies) if proxies else None
        context = self._context(request, verify, cert) if url.startswith("https:") else None
        if context is not None and context.verify_mode == ssl.CERT_NONE:
            # As urllib3 warns for each request on an unverified connection.
            _warn_unverified(urlsplit(url).hostname)
        proxy_with_context: Proxy | str | None = proxy
        if proxy is not None and proxy[:6].lower() == "https:":
            # The proxy's certificate is checked as ``verify`` says, for http
            # targets too (HTTPAdapter leaves it unchecked then, and warns).
            proxy_context = self._context(request, verify, cert)
            proxy_with_context = parse_proxy(proxy, ssl_context=proxy_context)
        # What urllib3 names in its messages: through an http proxy that
        # forwards the request, the proxy's pool and the absolute URL; the
        # origin's pool and the path otherwise.
        proxied = proxy is not None and proxy[:5].lower() == "http:" and url.startswith("http:")
        if proxied:
            pool, target = PoolName(cast(str, proxy), forwarding=True), url
        else:
            pool, target = PoolName(url), request.path_url
        body_position = set_file_position(request.body, None)
        retries = self.max_retries
        while True:
            try:
                response = self.transport.request(
                    request.method or "GET",
                    url,
                    headers=_header_list(request.headers, url),
                    body=cast("BodyTypes", request.body),
                    timeout=limits,
                    ssl_context=context,
                    proxy=proxy_with_context,
                )
            except PoolwatchError as exc:
                retries = _count_error(retries, exc, request, pool, target)
                retries.sleep()
            else:
                if response.status == 101:
                    # requests gives no way to a switched connection: close it.
                    response.close()
                raw = _raw_response(response, request, target, pool)
                retry_after = bool(raw.headers.get("Retry-After"))
                if not retries.is_retry(request.method or "GET", raw.status, retry_after):
                    break
                counted = _count_response(retries, raw, request, pool, target)
                if counted is None:
                    break  # exhausted, and raise_on_status is off: this one it is
                retries = counted
                raw.drain_conn()
                retries.sleep(raw)
            if body_position is not None:
                rewind_body(cast("IO[str]", request.body), body_position)
        raw.retries = retries  # as urllib3's: its history lists the attempts retried
        return requests.adapters.HTTPAdapter.build_response(self, request, raw)  # type: ignore[arg-type]

    def _limits(
        self, timeout: float | tuple[float | None, float | None] | Urllib3Timeout | None
    ) -> Timeout:
        """``_timeout``, remembered for the few values a session passes."""
        default = self.transport.timeout
        if isinstance(timeout, Urllib3Timeout):
            return _timeout(timeout, default)  # mutable: not a key
        key = (timeout, default)
        try:
            limits = self._timeouts.get(key)
        except TypeError:  # unhashable: not one to remember
            return _timeout(timeout, default)
        if limits is None:
            limits = _timeout(timeout, default)
            if len(self._timeouts) >= _MAX_REMEMBERED:
                self._timeouts.clear()
            self._timeouts[key] = limits
        return limits

    def _context(
        self,
        request: requests.PreparedRequest,
        verify: bool | str,
        cert: str | tuple[str, str] | None,
    ) -> ssl.SSLContext:
        """The TLS context for ``verify`` and ``cert``, made once. Files that
        do not load (a key not matching its certificate, a bundle that is not
        one) raise requests' ``SSLError``, as with ``HTTPAdapter``."""
        key = (verify, cert)
        context = self._contexts.get(key)
        if context is None:
            try:
                context = _make_context(verify, cert)
            except ssl.SSLError as exc:
                raise rexc.SSLError(exc, request=request) from exc
            self._contexts[key] = context
        return context


def _warn_unverified(host: str | None) -> None:
    """urllib3's warning for a request on an unverified connection, with its
    words and from its module, so that the filters people set for it (by
    category, or by module ``urllib3``) apply."""
    import urllib3.connectionpool as pools

    warnings.warn_explicit(
        f"Unverified HTTPS request is being made to host '{host}'. "
        "Adding certificate verification is strongly advised. See: "
        "https://urllib3.readthedocs.io/en/latest/advanced-usage.html#tls-warnings",
        InsecureRequestWarning,
        filename=pools.__file__ or "urllib3/connectionpool.py",
        lineno=pools.HTTPSConnectionPool._validate_conn.__code__.co_firstlineno,
        module=pools.__name__,
        registry=pools.__dict__.setdefault("__warningregistry__", {}),
    )


def _raw_response(
    response: Response, request: requests.PreparedRequest, target: str, pool: PoolName
) -> _HTTPResponse:
    """poolwatch's response as the urllib3 response ``HTTPAdapter`` builds
    on; ``target`` is what urllib3 was asked for (its ``url``), ``pool``
    what its messages name (it holds no connection to give back)."""
    body = _Body(response)
    raw = _HTTPResponse(
        body=body,
        headers=response.headers,
        status=response.status,
        version=int(response.http_version[5:].replace(".", "")),
        version_string=response.http_version,
        reason=response.reason,
        preload_content=False,
        decode_content=False,
        original_response=_OriginalResponse(response, body),  # type: ignore[arg-type]
        request_method=request.method,
        request_url=target,
        enforce_content_length=True,
        pool=cast("HTTPConnectionPool", pool),
    )
    raw._poolwatch = response
    raw._as_sent = "content-encoding" not in response.headers
    return raw


def _header_list(headers: Mapping[str, str | bytes], url: str) -> list[tuple[str, str | bytes]]:
    """The request's headers as (name, value) pairs, in order; with the
    ``Host`` urllib3 sends for a fully qualified host name (its trailing dot
    dropped), unless one is given."""
    if type(headers) is CaseInsensitiveDict:
        # Its store holds each header's (name as last set, value) pair.
        pairs = list(headers._store.values())
    else:
        pairs = list(headers.items())
    if "./" in url or ".:" in url or url.endswith(".") or ".?" in url:  # cheap first look
        host = _undotted_host(url)
        if host is not None and not any(name.lower() == "host" for name, _ in pairs):
            pairs.insert(0, ("Host", host))
    return pairs


def _undotted_host(url: str) -> str | None:
    """The Host urllib3 sends for a URL whose host name ends with a dot
    (fully qualified): the name without it, and the port unless the
    scheme's; ``None`` for any other URL."""
    parts = urlsplit(url)
    name = parts.hostname
    if not name or not name.endswith("."):
        return None
    port = parts.port
    default = 443 if parts.scheme.lower() == "https" else 80
    return name.rstrip(".") if port in (None, default) else f"{name.rstrip('.')}:{port}"


def _count_error(
    retries: Retry,
    exc: PoolwatchError,
    request: requests.PreparedRequest,
    pool: PoolName,
    target: str,
) -> Retry:
    """Count a failed attempt against ``retries``, or raise what
    ``HTTPAdapter`` raises when it may not be retried."""
    error = as_urllib3_error(exc, pool, target)
    if error is None:
        raise _translate(exc, request) from exc
    try:
        return retries.increment(
            request.method, target, error=error, _pool=pool.as_pool(), _stacktrace=None
        )
    except MaxRetryError as exhausted:
        raise max_retries_error(exhausted, request) from exc
    except Exception as raised:
        if raised is error:  # not to be retried: raised as urllib3 raises it
            raise reraised_error(error, request) or _translate(exc, request) from exc
        raise


def _count_response(
    retries: Retry,
    raw: HTTPResponse,
    request: requests.PreparedRequest,
    pool: PoolName,
    target: str,
) -> Retry | None:
    """Count a response to retry against ``retries``; ``None`` when they are
    exhausted but the response is to be returned (``raise_on_status`` off)."""
    try:
        return retries.increment(request.method, target, response=raw, _pool=pool.as_pool())
    except MaxRetryError as exhausted:
        if not retries.raise_on_status:
            return None
        raw.drain_conn()
        raise max_retries_error(exhausted, request) from None


def _make_context(verify: bool | str, cert: str | tuple[str, str] | None) -> ssl.SSLContext:
    """An SSL context as requests builds one for ``verify`` and ``cert``."""
    from requests.utils import DEFAULT_CA_BUNDLE_PATH

    if verify is False:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        bundle = DEFAULT_CA_BUNDLE_PATH if verify is True else verify
        if not bundle or not os.path.exists(bundle):
            # HTTPAdapter.cert_verify's words, before any connection is made.
            raise OSError(
                f"Could not find a suitable TLS CA certificate bundle, invalid path: {bundle}"
            )
        try:
            if os.path.isdir(bundle):
                context = ssl.create_default_context(capath=bundle)
            else:
                context = ssl.create_default_context(cafile=bundle)
        except ssl.SSLError as exc:
            raise _load_error(exc, f"the CA certificates in {bundle}") from exc
    if cert:
        certfile, keyfile = (cert, None) if isinstance(cert, str) else cert
        if certfile and not os.path.exists(certfile):
            raise OSError(f"Could not find the TLS certificate file, invalid path: {certfile}")
        if keyfile and not os.path.exists(keyfile):
            raise OSError(f"Could not find the TLS key file, invalid path: {keyfile}")
        try:
            context.load_cert_chain(certfile, keyfile)
        except ssl.SSLError as exc:
            key = f" with the key {keyfile}" if keyfile else " (no key file given)"
            raise _load_error(exc, f"the client certificate {certfile}{key}") from exc
    return context


def _load_error(exc: ssl.SSLError, what: str) -> ssl.SSLError:
    """``exc``, saying what could not be loaded."""
    return ssl.SSLError(exc.errno, f"could not load {what}: {exc}")


def _timeout(
    value: float | tuple[float | None, float | None] | Urllib3Timeout | None, default: Timeout
) -> Timeout:
    """requests' timeout forms: ``None`` (no limit), a number, ``(connect,
    read)`` or a urllib3 ``Timeout`` (``read`` bounds the sending of the
    request too, as urllib3's socket timeout does); anything else raises the
    ``ValueError`` ``HTTPAdapter`` raises, from urllib3's own checks."""
    if not isinstance(value, Urllib3Timeout):
        if isinstance(value, tuple):
            try:
                connect, read = value
            except ValueError:
                raise ValueError(
                    f"Invalid timeout {value}. Pass a (connect, read) timeout tuple, "
                    f"or a single float to set both timeouts to the same value."
                ) from None
        else:
            connect = read = value
        value = Urllib3Timeout(connect=connect, read=read)
    connect_limit = _seconds(value.connect_timeout)
    read_limit = _seconds(value.read_timeout)
    # The read limit is urllib3's socket timeout, which bounds each send too.
    return default.with_changes(
        connect=connect_limit, write=read_limit, response_header=read_limit, read=read_limit
    )


def _seconds(limit: object) -> float | None:
    """A urllib3 limit in seconds; its "default" marker means none."""
    return limit if isinstance(limit, (int, float)) else None


def _proxy_for(url: str, proxies: Mapping[str, str]) -> str | None:
    from requests.utils import select_proxy

    return select_proxy(url, dict(proxies))


def _translate(exc: PoolwatchError, request: requests.PreparedRequest) -> Exception:
    """poolwatch's exception as the one ``HTTPAdapter`` raises."""
    if isinstance(exc.__cause__, UnicodeEncodeError):
        return exc.__cause__  # http.client lets a non-Latin-1 header through as is
    if isinstance(exc, ProxyError):
        return rexc.ProxyError(exc, request=request)
    if isinstance(exc, TLSError):
        return rexc.SSLError(exc, request=request)
    if isinstance(exc, ConnectTimeout):
        return rexc.ConnectTimeout(exc, request=request)
    if isinstance(exc, (ReadTimeout, WriteTimeout)):
        return rexc.ReadTimeout(exc, request=request)
    if isinstance(exc, PoolTimeout):
        return rexc.ConnectionError(exc, request=request)
    if isinstance(exc, InvalidURL):
        if "scheme" in str(exc):
            return rexc.InvalidSchema(exc, request=request)
        return rexc.InvalidURL(exc, request=request)
    if isinstance(exc, LocalProtocolError) or conflicting_lengths(exc):
        return rexc.InvalidHeader(exc, request=request)
    if isinstance(exc, TimeoutException):
        return rexc.Timeout(exc, request=request)
    return rexc.ConnectionError(exc, request=request)
