"""``httpx`` transports over poolwatch: :class:`HTTPXTransport` over a
:class:`~poolwatch.Transport`, :class:`AsyncHTTPXTransport` over an
:class:`~poolwatch.AsyncTransport`.

Pass one to a client and nothing else changes::

    transport = poolwatch.HTTPXTransport(limits=httpx.Limits(max_connections=50))
    client = httpx.Client(transport=transport)
    async_client = httpx.AsyncClient(transport=poolwatch.AsyncHTTPXTransport())

The response stream's ``close()`` is the release point: a body read to the
end has already returned its connection (R4); one closed before the end
tears it down (R5). Errors are httpx's own exception types.
"""

from __future__ import annotations

import math
import os
import ssl
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any, TypeAlias
from urllib.parse import quote

import httpcore
import httpx
from typing_extensions import Self

from .. import _events as pw_events
from .. import _exceptions as pw
from .._async.response import AsyncResponse
from .._async.transport import AsyncTransport
from .._async.upgraded import AsyncUpgradedStream
from .._core.stats import PoolStats
from .._events import Listener
from .._leaks import skip_module_directory
from .._models import BodyTypes, Proxy, Timeout, parse_proxy, without_userinfo
from .._sync.response import Response
from .._sync.transport import Transport
from .._sync.upgraded import UpgradedStream

__all__ = ["DEFAULT_LIMITS", "AsyncHTTPXTransport", "HTTPXTransport"]

DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's

skip_module_directory(httpx.__file__)

# poolwatch's exceptions and the httpx ones they become, most specific first.
_ERRORS: tuple[tuple[type[pw.PoolwatchError], type[httpx.HTTPError]], ...] = (
    (pw.PoolTimeout, httpx.PoolTimeout),
    (pw.ConnectTimeout, httpx.ConnectTimeout),
    (pw.ReadTimeout, httpx.ReadTimeout),
    (pw.WriteTimeout, httpx.WriteTimeout),
    (pw.ProxyError, httpx.ProxyError),
    (pw.ConnectError, httpx.ConnectError),
    (pw.RemoteDisconnected, httpx.RemoteProtocolError),  # as httpcore says it
    (pw.ReadError, httpx.ReadError),
    (pw.WriteError, httpx.WriteError),
    (pw.RemoteProtocolError, httpx.RemoteProtocolError),
    (pw.LocalProtocolError, httpx.LocalProtocolError),
    (pw.InvalidURL, httpx.UnsupportedProtocol),
    (pw.PoolClosed, httpx.TransportError),
)


def translate_error(exc: pw.PoolwatchError, request: httpx.Request) -> httpx.HTTPError:
    """poolwatch's exception as the one httpx's own transport raises."""
    for ours, theirs in _ERRORS:
        if isinstance(exc, ours):
            if theirs is httpx.UnsupportedProtocol and "scheme" not in str(exc):
                return httpx.LocalProtocolError(str(exc), request=request)
            return theirs(str(exc), request=request)  # type: ignore[call-arg]
    return httpx.TransportError(str(exc), request=request)


def request_timeout(request: httpx.Request, default: Timeout) -> Timeout:
    """The request's ``timeout`` extension (connect, read, write, pool)."""
    given = request.extensions.get("timeout")
    if not given:
        return default
    key = (given.get("connect"), given.get("read"), given.get("write"), given.get("pool"))
    try:
        limits = _TIMEOUTS.get(key)
    except TypeError:  # an unhashable value: checked and refused below
        limits = None
    if limits is None:
        connect, read, write, pool = map(_limit, key)
        limits = Timeout(connect=connect, write=write, response_header=read, read=read, pool=pool)
        if len(_TIMEOUTS) >= _MAX_TIMEOUTS:
            _TIMEOUTS.clear()
        _TIMEOUTS[key] = limits
    return limits


def _limit(value: Any) -> Any:
    """One of httpx's limits as poolwatch takes it: infinity is none (as
    httpx's asyncio backend has it); zero or less is a limit already
    reached (``pool=0``: never wait for a connection), which raises
    httpx's timeout exception for whatever has to wait."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value == math.inf:
            return None
        if value <= 0:
            return _REACHED
    return value


_REACHED = 1e-9  # the least limit poolwatch takes: any wait exceeds it

# The Timeout for each set of values seen: a client passes one or a few, so
# this spares building one per request. A caller making up a new set per
# request only refills the table.
_TIMEOUTS: dict[tuple[Any, ...], Timeout] = {}
_MAX_TIMEOUTS = 64

# httpx's own argument types, written out (httpx keeps its aliases private).
CertTypes: TypeAlias = "str | tuple[str, str] | tuple[str, str, str]"
ProxyTypes: TypeAlias = "str | httpx.URL | httpx.Proxy"
SocketOptions: TypeAlias = "Iterable[tuple[int, int, int | bytes | bytearray]]"


def request_body(request: httpx.Request) -> BodyTypes:
    """Bytes when httpx holds the whole body (so it can be replayed, R13),
    otherwise its stream."""
    stream = request.stream
    if isinstance(stream, httpx.ByteStream):
        return b"".join(stream)
    return stream  # type: ignore[return-value]


def transport_options(
    *,
    verify: ssl.SSLContext | str | bool,
    cert: CertTypes | None,
    trust_env: bool,
    http2: bool,
    limits: httpx.Limits,
    proxy: ProxyTypes | None,
    uds: str | os.PathLike[str] | None,
    local_address: str | None,
    socket_options: SocketOptions | None,
) -> dict[str, Any]:
    """``HTTPTransport``'s arguments as :class:`Transport` options."""
    if http2:
        raise ValueError("poolwatch speaks HTTP/1.1 only: http2=True is not supported")
    if isinstance(verify, ssl.SSLContext) and cert is None:
        context = verify
    else:
        # As httpx's transport: a given context gets ``cert`` loaded into it.
        context = httpx.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)
    if not isinstance(context, ssl.SSLContext):  # httpx hands back what it does not know
        raise TypeError(
            f"verify must be True, False, the path of CA certificates or an ssl.SSLContext,"
            f" not {verify!r}"
        )
    keepalive = limits.max_keepalive_connections
    expiry = limits.keepalive_expiry
    if expiry == 0:  # httpcore: a connection expires as soon as it is idle
        keepalive, expiry = 0, None
    return {
        "max_connections": limits.max_connections,
        "max_idle": keepalive,
        "max_idle_per_host": keepalive,
        "idle_timeout": expiry,
        "connect_timeout": None,
        "ssl_context": context,
        "local_address": local_address,
        "uds": uds,
        "socket_options": socket_options or (),
    }


def _proxy_url(proxy: ProxyTypes | None) -> Proxy | None:
    """``HTTPTransport``'s ``proxy`` (a URL or ``httpx.Proxy``) as poolwatch's."""
    if proxy is None:
        return None
    if isinstance(proxy, str | httpx.URL):
        proxy = httpx.Proxy(proxy)
    elif not isinstance(proxy, httpx.Proxy):
        raise TypeError(f"proxy must be a URL or an httpx.Proxy, not {proxy!r}")
    url = proxy.url
    # httpcore always hands the SOCKS5 proxy the host name to resolve, so
    # httpx's socks5:// is poolwatch's socks5h://.
    scheme = {"http": "http", "https": "https", "socks5": "socks5h", "socks5h": "socks5h"}.get(
        url.scheme
    )
    if scheme is None:
        raise ValueError(
            f"poolwatch supports http://, https://, socks5:// and socks5h:// proxies, "
            f"not {proxy.url}"
        )
    userinfo = ""
    if proxy.auth:
        user, password = (quote(part, safe="") for part in proxy.auth)
        userinfo = f"{user}:{password}@"
    port = f":{url.port}" if url.port else ""
    context = proxy.ssl_context
    if scheme == "https" and context is None:
        context = httpx.create_ssl_context()  # httpcore's default for the proxy
    url_text = f"{scheme}://{userinfo}{url.host}{port}"
    return parse_proxy(url_text, ssl_context=context, headers=proxy.headers.raw)


# poolwatch's events under the names httpcore gives them in the request's
# ``trace`` extension; each poolwatch event may end one phase and start the next.
_TRACE_NAMES: dict[str, tuple[str, ...]] = {
    "connect_start": ("connection.connect_tcp.started",),
    "connect_done": ("connection.connect_tcp.complete",),
    "tls_handshake_start": ("connection.start_tls.started",),
    "tls_handshake_done": ("connection.start_tls.complete",),
    "got_conn": ("http11.send_request_headers.started",),
    "wrote_headers": (
        "http11.send_request_headers.complete",
        "http11.send_request_body.started",
    ),
    "wrote_request": (
        "http11.send_request_body.complete",
        "http11.receive_response_headers.started",
    ),
}

Trace = Callable[[str, dict[str, Any]], None]


class Tracer:
    """A poolwatch listener that keeps a request's events for httpx's
    ``trace`` extension, under httpcore's names and with details like
    httpcore's, to be passed on in order from the caller's thread or task
    (:meth:`flush`): the writer's events happen on a thread of its own, and
    a trace that raises must reach the caller. Keeps which phase is under
    way too, so that a failure is reported as httpcore reports it
    (``<phase>.failed``)."""

    def __init__(
        self, request: httpx.Request, dial: dict[str, Any], tls_context: ssl.SSLContext | None
    ) -> None:
        self.request = request
        self.dial = dial  # connection.connect_tcp.started's details
        self.tls_context = tls_context  # the transport's, if made yet
        self.pending: list[tuple[str, dict[str, Any]]] = []
        self.phase: str | None = None  # the last phase started and not complete
        # Set once the writer has reported the request written: the head may
        # come before it has (see :meth:`wait_for_writer`).
        self.written = threading.Event()
        self._lock = threading.Lock()  # the writer's thread adds, the caller's takes

    def __call__(self, event: pw_events.Event) -> None:
        for name in _TRACE_NAMES.get(event.name, ()):
            details = self._details(name, event)
            with self._lock:
                self.pending.append((name, details))
                self.phase = name if name.endswith(".started") else None
        if event.name == "wrote_request":
            self.written.set()

    def wait_for_writer(self, response: Response) -> None:
        """Before the head's event is passed on: let the writer of a request
        it has written report so, as it does right after the last byte went
        out (the server may answer, and the caller wake, before that), so
        that the events keep httpcore's order. A writer still at work (a
        response before the upload ended) is waited for only a little."""
        exchange = response._exchange
        if exchange.write_error is None:
            finished = exchange.write_finished
            self.written.wait(_WRITER_REPORT_WAIT if finished else _WRITER_BUSY_WAIT)

    def _details(self, name: str, event: pw_events.Event) -> dict[str, Any]:
        if name == "connection.connect_tcp.started":
            return dict(self.dial)
        if name == "connection.start_tls.started":
            hostname = self.request.extensions.get("sni_hostname") or self.request.url.host
            return {
                "ssl_context": self.tls_context,
                "server_hostname": hostname,
                "timeout": self.dial["timeout"],
            }
        if name == "connection.connect_tcp.complete":
            return {"return_value": _DialedStream(event.data)}
        if name.endswith(".started"):
            return {"request": self.request}
        return {"return_value": None}

    def failed(self, exc: BaseException) -> None:
        """The phase under way failed with ``exc``."""
        with self._lock:
            if self.phase is not None:
                failed = self.phase.replace(".started", ".failed")
                self.pending.append((failed, {"exception": exc}))
                self.phase = None

    def taken(self, *extra: tuple[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        """The events kept so far, then ``extra`` ones, in order; forgotten here."""
        with self._lock:
            pending, self.pending = self.pending, []
        pending.extend(extra)
        return pending

    def flush(self, trace: Trace, *extra: tuple[str, dict[str, Any]]) -> None:
        """Pass on the events kept so far, then ``extra`` ones."""
        for name, info in self.taken(*extra):
            trace(name, info)


_WRITER_REPORT_WAIT = 1.0  # bounds the wait; the report comes at once
_WRITER_BUSY_WAIT = 0.05  # for a writer that has not finished yet


class _DialedStream(httpcore.NetworkStream):
    """``connection.connect_tcp.complete``'s ``return_value``: the new
    connection's addresses by ``get_extra_info()`` (``client_addr``,
    ``server_addr``); its socket is its workers'."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._addresses = {
            "client_addr": data.get("local_address"),
            "server_addr": data.get("address"),
        }

    def get_extra_info(self, info: str) -> Any:
        return self._addresses.get(info)


def _dial_details(
    request: httpx.Request, timeout: Timeout, proxy: Proxy | None, transport: Any
) -> dict[str, Any]:
    """``connection.connect_tcp.started``'s details, as httpcore gives them."""
    url = request.url
    if proxy is not None:
        host, port = proxy.host, proxy.port
    else:
        host, port = url.host, url.port or (443 if url.scheme == "https" else 80)
    source = getattr(transport, "_source_address", None)  # Transport's (host, 0)
    return {
        "host": host,
        "port": port,
        "local_address": source[0] if source else getattr(transport, "_local_address", None),
        "timeout": timeout.connect,
        "socket_options": transport.socket_options or None,
    }


def request_options(
    request: httpx.Request, default: Timeout, proxy: Proxy | None, listener: Listener | None
) -> dict[str, Any]:
    """The arguments of ``transport.request()`` for an httpx request."""
    url = str(request.url)
    if "@" in url:
        url = without_userinfo(url)  # httpx made its auth of them
    return {
        "method": request.method,
        "url": url,
        "headers": request.headers.raw,
        "body": request_body(request),
        "timeout": request_timeout(request, default),
        "proxy": proxy,
        "listener": listener,
        "server_hostname": request.extensions.get("sni_hostname"),
        "target": request.extensions.get("target"),
    }


def may_retry_connect(exc: pw.PoolwatchError, attempts: int) -> bool:
    """httpx's ``retries``: a failed connect is tried again while attempts
    are left; not a TLS failure, nor a proxy's refusal (a 407, SOCKS
    credentials refused), which would only send the same again."""
    if attempts <= 0 or isinstance(exc, pw.TLSError):
        return False
    if isinstance(exc, pw.ProxyError):
        return isinstance(exc.__cause__, OSError)  # the proxy was not reached
    return isinstance(exc, pw.ConnectError | pw.ConnectTimeout)


def response_head(
    response: Response | AsyncResponse,
) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]:
    """The ``return_value`` of httpcore's ``receive_response_headers.complete``."""
    version = response.http_version.encode("ascii")
    return (version, response.status, response.reason.encode("latin-1"), response.raw_headers)


class _HTTPXResponse(httpx.Response):
    """httpx's response, with two differences that save work and memory:

    - ``read()`` and ``aread()`` ask poolwatch for the whole body at once:
      one read into one buffer (the kernel's copy the only one) instead of
      pieces that httpx joins. Streaming reads still come in pieces as they
      arrive.
    - It is freed as soon as the caller drops it. httpx's client wraps
      the stream in one that holds the response (to set ``elapsed`` when
      it closes), a reference cycle that only the garbage collector breaks:
      a large body would linger and the next one land in fresh memory, and
      a response dropped unclosed would keep its connection checked out,
      and its leak unreported (R6), until a collection ran. The wrapper
      gets a weak reference to the response instead.
    """

    # The stream given at construction (httpx's client wraps ``stream``);
    # ``None`` once unpickled, as httpx's own stream is then gone too.
    _body: _ResponseStream | _AsyncResponseStream | None = None

    def read(self) -> bytes:
        """As httpx's, the body taken in one piece."""
        if self._body is not None:
            self._body.whole = True
        return super().read()

    async def aread(self) -> bytes:
        """As httpx's, the body taken in one piece."""
        if self._body is not None:
            self._body.whole = True
        return await super().aread()

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()
        state.pop("_body", None)  # pickled as httpx pickles: without the stream
        return state

    @property
    def stream(self) -> httpx.SyncByteStream | httpx.AsyncByteStream:
        """The body's stream, as httpx's."""
        stream: httpx.SyncByteStream | httpx.AsyncByteStream = self.__dict__["stream"]
        return stream

    @stream.setter
    def stream(self, value: httpx.SyncByteStream | httpx.AsyncByteStream) -> None:
        if getattr(value, "_response", None) is self:
            # httpx's client binding the stream to the response, to set
            # ``elapsed`` when it closes: the response is alive whenever
            # that happens, so a weak reference is all it needs.
            value._response = weakref.proxy(self)  # type: ignore[union-attr]
        self.__dict__["stream"] = value


_NOT_OFFERED = (
    "poolwatch's connections are read and written by their own workers: "
    "network_stream only answers get_extra_info(), unless the response is a "
    "101 Switching Protocols"
)


class _NetworkStream(httpcore.NetworkStream):
    """The ``network_stream`` extension: what the connection tells through
    ``get_extra_info()`` (see :meth:`poolwatch.Response.get_extra_info`);
    after a ``101 Switching Protocols``, the connection itself (see
    :attr:`poolwatch.Response.upgraded`), raising httpcore's errors."""

    def __init__(self, response: Response) -> None:
        self._response = response

    def get_extra_info(self, info: str) -> Any:
        return (self._response.upgraded or self._response).get_extra_info(info)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _as_httpcore_error():
            return self._upgraded().read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with _as_httpcore_error():
            self._upgraded().write(buffer, timeout)

    def close(self) -> None:
        self._upgraded().close()

    def _upgraded(self) -> UpgradedStream:
        upgraded = self._response.upgraded
        if upgraded is None:
            raise NotImplementedError(_NOT_OFFERED)
        return upgraded


@contextmanager
def _as_httpcore_error() -> Iterator[None]:
    """poolwatch's errors on a switched connection as httpcore raises them."""
    try:
        yield
    except pw.PoolwatchError as exc:
        kind = _HTTPCORE_ERRORS.get(type(exc), httpcore.NetworkError)
        raise kind(str(exc)) from exc


_HTTPCORE_ERRORS: dict[type[Exception], type[Exception]] = {
    pw.ReadError: httpcore.ReadError,
    pw.ReadTimeout: httpcore.ReadTimeout,
    pw.WriteError: httpcore.WriteError,
    pw.WriteTimeout: httpcore.WriteTimeout,
}


class _AsyncNetworkStream(httpcore.AsyncNetworkStream):
    """As :class:`_NetworkStream`, for the async transport."""

    def __init__(self, response: AsyncResponse) -> None:
        self._response = response

    def get_extra_info(self, info: str) -> Any:
        return (self._response.upgraded or self._response).get_extra_info(info)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _as_httpcore_error():
            return await self._upgraded().read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with _as_httpcore_error():
            await self._upgraded().write(buffer, timeout)

    async def aclose(self) -> None:
        await self._upgraded().aclose()

    def _upgraded(self) -> AsyncUpgradedStream:
        upgraded = self._response.upgraded
        if upgraded is None:
            raise NotImplementedError(_NOT_OFFERED)
        return upgraded


def httpx_response(
    response: Response | AsyncResponse, stream: _ResponseStream | _AsyncResponseStream
) -> httpx.Response:
    """The httpx response for a poolwatch one, its body streaming from ``stream``."""
    network = (
        _NetworkStream(response)
        if isinstance(response, Response)
        else _AsyncNetworkStream(response)
    )
    result = _HTTPXResponse(
        status_code=response.status,
        headers=response.raw_headers,
        stream=stream,
        extensions={
            "http_version": response.http_version.encode("ascii"),
            "reason_phrase": response.reason.encode("latin-1"),
            "network_stream": network,
            "poolwatch_response": response,
        },
    )
    result._body = stream
    return result


class _ResponseStream(httpx.SyncByteStream):
    def __init__(
        self, response: Response, request: httpx.Request, trace: tuple[Trace, Tracer] | None
    ) -> None:
        self._response = response
        self._request = request
        self._trace = trace
        self.whole = False  # the body in one piece: httpx reads all of it

    def _flush(self, *events: tuple[str, dict[str, Any]]) -> None:
        if self._trace is not None:
            trace, tracer = self._trace
            tracer.flush(trace, *events)

    def __iter__(self) -> Iterator[bytes]:
        self._flush(("http11.receive_response_body.started", {"request": self._request}))
        try:
            if self.whole:
                yield self._response.read()
            else:
                yield from self._response.iter_bytes()
        except pw.PoolwatchError as exc:
            error = translate_error(exc, self._request)
            self._flush(("http11.receive_response_body.failed", {"exception": error}))
            raise error from exc
        self._flush(("http11.receive_response_body.complete", {"return_value": None}))

    def close(self) -> None:
        self._flush(("http11.response_closed.started", {}))
        self._response.close()
        self._flush(("http11.response_closed.complete", {"return_value": None}))


class HTTPXTransport(httpx.BaseTransport):
    """An ``httpx.BaseTransport`` backed by poolwatch.

    Takes ``httpx.HTTPTransport``'s arguments with the same meaning
    (``verify``, ``cert``, ``trust_env``, ``limits``, ``retries``,
    ``local_address``, ``socket_options``, ``uds``, and a ``proxy``:
    ``http://``, ``https://`` (TLS to the proxy), ``socks5://`` or
    ``socks5h://``, with ``httpx.Proxy``'s ``headers`` for an http(s) proxy);
    HTTP/2 raises ``ValueError``. The request's ``timeout``, ``trace``
    (which hears httpcore's event names), ``sni_hostname`` and ``target``
    extensions are honoured. Or pass an existing poolwatch ``transport``.
    """

    def __init__(
        self,
        verify: ssl.SSLContext | str | bool = True,
        cert: CertTypes | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = DEFAULT_LIMITS,
        proxy: ProxyTypes | None = None,
        uds: str | os.PathLike[str] | None = None,
        local_address: str | None = None,
        retries: int = 0,
        socket_options: SocketOptions | None = None,
        *,
        transport: Transport | None = None,
    ) -> None:
        if transport is None:
            options = transport_options(
                verify=verify,
                cert=cert,
                trust_env=trust_env,
                http2=http2,
                limits=limits,
                proxy=proxy,
                uds=uds,
                local_address=local_address,
                socket_options=socket_options,
            )
            transport = Transport(**options)
        self.transport = transport
        self._closed = False  # by close(): the next request reopens the transport
        self.retries = retries
        self.proxy = _proxy_url(proxy)

    def stats(self) -> PoolStats:
        """The transport's :class:`~poolwatch.PoolStats`."""
        return self.transport.stats()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; the response body streams from the connection."""
        if self._closed and self.transport.reopen():
            self._closed = False
        trace = request.extensions.get("trace")
        options = request_options(request, self.transport.timeout, self.proxy, None)
        tracer = None
        if trace is not None:
            dial = _dial_details(request, options["timeout"], self.proxy, self.transport)
            context = self.transport._tls_context
            tracer = options["listener"] = Tracer(request, dial, context)
        attempts = self.retries
        while True:
            try:
                response = self.transport.request(**options)
                break
            except pw.PoolwatchError as exc:
                if may_retry_connect(exc, attempts):
                    attempts -= 1
                    continue
                error = translate_error(exc, request)
                if trace is not None and tracer is not None:
                    tracer.failed(error)
                    tracer.flush(trace)
                raise error from exc
        if trace is None or tracer is None:
            return httpx_response(response, _ResponseStream(response, request, None))
        try:
            tracer.wait_for_writer(response)
            head = {"return_value": response_head(response)}
            tracer.flush(trace, ("http11.receive_response_headers.complete", head))
        except BaseException:
            response.close()  # the caller never gets it
            raise
        return httpx_response(response, _ResponseStream(response, request, (trace, tracer)))

    def close(self) -> None:
        """Close the poolwatch transport. As with httpx's transport, a later
        request opens new connections: it reopens the transport (see
        :meth:`poolwatch.Transport.reopen`; stats and listeners carry on)."""
        self._closed = True
        self.transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.close()


AsyncTrace = Callable[[str, dict[str, Any]], Awaitable[None]]


class _TraceBuffer:
    """An async ``trace`` fed by poolwatch's (synchronous) listener: events
    are kept in order and passed on at the adapter's next ``await``."""

    def __init__(self, trace: AsyncTrace, listener: Tracer) -> None:
        self.trace = trace
        self.listener = listener

    async def flush(self, *extra: tuple[str, dict[str, Any]]) -> None:
        """Pass on the events kept so far, then ``extra`` ones."""
        for name, info in self.listener.taken(*extra):
            await self.trace(name, info)


class _AsyncResponseStream(httpx.AsyncByteStream):
    def __init__(
        self, response: AsyncResponse, request: httpx.Request, trace: _TraceBuffer | None
    ) -> None:
        self._response = response
        self._request = request
        self._trace = trace
        self.whole = False  # the body in one piece: httpx reads all of it

    async def __aiter__(self) -> AsyncIterator[bytes]:
        trace = self._trace
        request = {"request": self._request}
        if trace is not None:
            await trace.flush(("http11.receive_response_body.started", request))
        try:
            if self.whole:
                yield await self._response.read()
            else:
                async for chunk in self._response.aiter_bytes():
                    yield chunk
        except pw.PoolwatchError as exc:
            error = translate_error(exc, self._request)
            if trace is not None:
                await trace.flush(("http11.receive_response_body.failed", {"exception": error}))
            raise error from exc
        if trace is not None:
            done = {"return_value": None}
            await trace.flush(("http11.receive_response_body.complete", done))

    async def aclose(self) -> None:
        trace = self._trace
        if trace is not None:
            await trace.flush(("http11.response_closed.started", {}))
        await self._response.aclose()
        if trace is not None:
            await trace.flush(("http11.response_closed.complete", {"return_value": None}))


class AsyncHTTPXTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` backed by poolwatch's
    :class:`~poolwatch.AsyncTransport`.

    Takes ``httpx.AsyncHTTPTransport``'s arguments with the same meaning, as
    :class:`HTTPXTransport` does. The ``timeout``, ``sni_hostname`` and
    ``target`` extensions are honoured; an async ``trace`` hears httpcore's
    event names, in order, each passed on at the adapter's next ``await``
    (poolwatch's listeners are synchronous). Or pass an existing poolwatch
    ``transport``.
    """

    def __init__(
        self,
        verify: ssl.SSLContext | str | bool = True,
        cert: CertTypes | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = DEFAULT_LIMITS,
        proxy: ProxyTypes | None = None,
        uds: str | os.PathLike[str] | None = None,
        local_address: str | None = None,
        retries: int = 0,
        socket_options: SocketOptions | None = None,
        *,
        transport: AsyncTransport | None = None,
    ) -> None:
        if transport is None:
            options = transport_options(
                verify=verify,
                cert=cert,
                trust_env=trust_env,
                http2=http2,
                limits=limits,
                proxy=proxy,
                uds=uds,
                local_address=local_address,
                socket_options=socket_options,
            )
            transport = AsyncTransport(**options)
        self.transport = transport
        self._closed = False  # by close(): the next request reopens the transport
        self.retries = retries
        self.proxy = _proxy_url(proxy)

    def stats(self) -> PoolStats:
        """The transport's :class:`~poolwatch.PoolStats`."""
        return self.transport.stats()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; the response body streams from the connection."""
        if self._closed and self.transport.reopen():
            self._closed = False
        given = request.extensions.get("trace")
        options = request_options(request, self.transport.timeout, self.proxy, None)
        trace = None
        if given is not None:
            dial = _dial_details(request, options["timeout"], self.proxy, self.transport)
            context = self.transport._tls_context
            options["listener"] = tracer = Tracer(request, dial, context)
            trace = _TraceBuffer(given, tracer)
        attempts = self.retries
        while True:
            try:
                response = await self.transport.request(**options)
                break
            except pw.PoolwatchError as exc:
                if may_retry_connect(exc, attempts):
                    attempts -= 1
                    continue
                error = translate_error(exc, request)
                if trace is not None:
                    trace.listener.failed(error)
                    await trace.flush()
                raise error from exc
        if trace is not None:
            try:
                head = {"return_value": response_head(response)}
                await trace.flush(("http11.receive_response_headers.complete", head))
            except BaseException:
                await response.aclose()  # the caller never gets it
                raise
        return httpx_response(response, _AsyncResponseStream(response, request, trace))

    async def aclose(self) -> None:
        """Close the poolwatch transport; a later request opens new
        connections, as :meth:`HTTPXTransport.close` says."""
        self._closed = True
        await self.transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()
