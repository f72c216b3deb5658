"""The asyncio transport: the same pool, rules and options as
:class:`~poolwatch.Transport`, with a reader and a writer task per connection
(R1-R14, R16-R18)."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import sys
import threading
from collections.abc import AsyncIterable, Sequence
from types import TracebackType
from typing import Any

from typing_extensions import Self

from .._core.book import Book, ConnectionInfo, can_retry, emit
from .._core.dialing import interleaved
from .._core.exchange import RECV_SIZE
from .._core.failures import connect_error, dial_error
from .._core.handle import close_when_dropped, new_handle
from .._core.netinfo import dialed
from .._core.pool import Decision, Limits, PoolState, Waiter
from .._core.socks import SocksError, SocksHandshake
from .._core.stats import PoolStats
from .._core.tls import offer_http11
from .._core.tunnel import TunnelHandshake
from .._events import Listener, without
from .._exceptions import (
    ConnectError,
    ConnectTimeout,
    NetworkError,
    PoolClosed,
    PoolTimeout,
    PoolwatchError,
    ProxyError,
    os_reason,
)
from .._leaks import OpenBody, capture_call_site
from .._models import (
    BodyTypes,
    HeaderTypes,
    Origin,
    PreparedRequests,
    Proxy,
    Timeout,
    check_listener,
    check_transport_options,
    ip_family,
)
from .._sync.transport import MAX_RETRIES, _live_transports
from .connection import AsyncConnection
from .dial import connect_first
from .exchange import AsyncExchange, wait_or_expire, wake, within
from .response import AsyncResponse
from .streams import NO_HANDSHAKE_TIMER, RecvBuffer, open_streams

__all__ = ["AsyncTransport"]

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
# Enough for a CONNECT answer in one read.
_TUNNEL_RECV = 64 * 1024


class AsyncTransport:
    """An asyncio HTTP/1.1 connection pool with instrumented connections.

    The twin of :class:`~poolwatch.Transport`: same options, pool and body
    rules, and the same :meth:`stats`, :meth:`connections` and
    :meth:`open_bodies`; each connection has a reader and a writer *task* for
    its whole life, and ``workers_alive`` counts those tasks. A transport
    belongs to the event loop that makes its first request.

    Cancelling a request while it waits for the pool or a connection leaves
    the pool as it was; cancelling it after its first byte was written, or
    while its body is read, closes its connection.

    Close it when done (``async with`` does). One garbage-collected
    unclosed, with no response of it still held, is closed then, on its
    event loop.
    """

    _core: AsyncTransport  # what connections hold (see poolwatch._core.handle)

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        return new_handle(cls)

    def __init__(
        self,
        *,
        max_connections: int | None = None,
        max_connections_per_host: int | None = None,
        max_idle: int | None = 100,
        max_idle_per_host: int | None = 10,
        idle_timeout: float | None = 90.0,
        keep_alive: bool = True,
        drain_on_close: bool = False,
        connect_timeout: float | None = 30.0,
        write_timeout: float | None = None,
        response_header_timeout: float | None = None,
        read_timeout: float | None = None,
        pool_timeout: float | None = None,
        call_site_depth: int = 4,
        ssl_context: ssl.SSLContext | None = None,
        expect_continue_timeout: float = 1.0,
        local_address: str | None = None,
        socket_options: Sequence[tuple[int, int, int | bytes]] = (),
        uds: str | os.PathLike[str] | None = None,
    ) -> None:
        self.limits = Limits(
            max_connections=max_connections,
            max_connections_per_host=max_connections_per_host,
            max_idle=max_idle,
            max_idle_per_host=max_idle_per_host if keep_alive else 0,
            idle_timeout=idle_timeout,
        )
        self.timeout = Timeout(
            connect=connect_timeout,
            write=write_timeout,
            response_header=response_header_timeout,
            read=read_timeout,
            pool=pool_timeout,
        )
        self.keep_alive = keep_alive
        self.drain_on_close = drain_on_close
        # Set on each new socket with setsockopt().
        self.socket_options = check_transport_options(
            call_site_depth=call_site_depth,
            expect_continue_timeout=expect_continue_timeout,
            uds=uds,
            ssl_context=ssl_context,
            local_address=local_address,
            socket_options=socket_options,
        )
        self.call_site_depth = call_site_depth
        self.expect_continue_timeout = expect_continue_timeout
        self._local_address = local_address
        # Connect to this Unix socket instead of each origin's host.
        self.uds = None if uds is None else os.fspath(uds)
        self._tls_context = ssl_context  # made on the first https dial if None
        # Held only for bookkeeping, never across an await: stats() may be
        # called from another thread (the command line's watcher).
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: PoolState[AsyncConnection] = PoolState(self.limits)
        self._book: Book[AsyncConnection] = Book(self._pool)  # pool lock
        self._waiters: dict[Waiter[AsyncConnection], asyncio.Future[None]] = {}
        self._closed = False  # pool lock
        self._listeners: tuple[Listener, ...] = ()
        # Every connection's reads land here first (on the loop, one at a time).
        self._recv_buffer = RecvBuffer(RECV_SIZE)
        self._prepared = PreparedRequests()  # heads of requests made before
        _live_transports.add(self._core)  # type: ignore[arg-type]
        close_when_dropped(self, _close_on_its_loop)

    def _loop_now(self) -> asyncio.AbstractEventLoop:
        """The running loop, which must be the transport's own while that
        one lives (its connections' tasks and futures belong to it)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "poolwatch.AsyncTransport runs on an asyncio event loop (uvloop"
                " included), and none is running here: under trio or another"
                " library, use poolwatch.Transport from a worker thread"
            ) from None
        if self._loop is not loop:
            if self._loop is not None and not self._loop.is_closed():
                raise RuntimeError("this AsyncTransport belongs to another event loop, still open")
            self._loop = loop
        return loop

    # -- the request API -------------------------------------------------------

    async def request(
        self,
        method: str,
        url: str,
        headers: HeaderTypes | None = None,
        body: BodyTypes | AsyncIterable[bytes | str] = None,
        timeout: Timeout | float | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        proxy: str | Proxy | None = None,
        listener: Listener | None = None,
        server_hostname: str | None = None,
        target: str | bytes | None = None,
    ) -> AsyncResponse:
        """Send a request and return the response once its head has arrived.

        As :meth:`Transport.request`; ``body`` may also be an async iterable
        of bytes. Read the body to its end or close the response
        (``async with`` does): otherwise its connection stays checked out (R6).
        """
        if listener is not None:
            check_listener(listener)  # the other options: when first prepared
        loop = self._loop_now()
        request = self._prepared.prepare(
            method,
            url,
            headers,
            _as_sync_body(body),
            keep_alive=self.keep_alive,
            ssl_context=ssl_context,
            proxy=proxy,
            uds=self.uds,
            server_hostname=server_hostname,
            target=target,
        )
        if request.body is _ASYNC_PLACEHOLDER:
            request.body = body  # type: ignore[assignment]
        limits = Timeout.coerce(timeout, self.timeout)
        call_site = capture_call_site(self.call_site_depth)
        retries = 0
        started = 0.0
        try:
            while True:
                exchange = AsyncExchange(request, limits, call_site, listener, loop)
                if retries:  # durations run from the call, not from this attempt
                    exchange.marks["start"] = started
                started = exchange.marks["start"]
                conn = await self._get_connection(exchange, loop)
                exchange.marks["got_conn"] = loop.time()
                if self._listeners or listener is not None:
                    self._emit_got_conn(exchange, conn)
                try:
                    await conn.round_trip(exchange)
                except NetworkError as exc:
                    if retries >= MAX_RETRIES or not can_retry(exchange, exc):
                        raise
                    retries += 1
                    with self._lock:
                        conn.counters.retries += 1
                    self._emit("retry", conn, exchange, error=exc)
                    continue
                return AsyncResponse(exchange, drain_on_close=self.drain_on_close, owner=self)
        except Exception as exc:
            # poolwatch's errors, and the request body's own (R18's errors)
            if isinstance(exc, PoolwatchError) or exc is exchange.write_error:
                self._request_failed(exchange, exc, loop.time())
            raise

    def _request_failed(self, exchange: AsyncExchange, error: Exception, now: float) -> None:
        """Count a call that raised before its response (R18's errors) and
        tell the listeners, with the error and how long the call took."""
        with self._lock:
            self._book.counters_for(exchange.request.origin).request_errors += 1
        if self._listeners or exchange.listener is not None:
            elapsed = now - exchange.marks["start"]
            method = exchange.request.method
            self._emit(
                "request_failed", None, exchange, error=error, method=method, elapsed=elapsed
            )

    def _emit_got_conn(self, exchange: AsyncExchange, conn: AsyncConnection) -> None:
        was_idle = exchange.was_idle
        idle_time = exchange.marks["got_conn"] - conn.idle_since if was_idle else 0.0
        self._emit(
            "got_conn",
            conn,
            exchange,
            reused=exchange.reused,
            was_idle=was_idle,
            idle_time=idle_time,
            wait=exchange.marks["got_conn"] - exchange.marks["start"],
        )

    # -- getting a connection ------------------------------------------------

    async def _get_connection(
        self, exchange: AsyncExchange, loop: asyncio.AbstractEventLoop
    ) -> AsyncConnection:
        origin = exchange.request.origin
        deadline: float | None = None
        retirements: int | None = None  # the pool's, when this request began
        if self._listeners or exchange.listener is not None:
            self._emit("get_conn", None, exchange)
        while True:
            with self._lock:
                if self._closed:
                    raise self._closed_error(exchange)
                if retirements is None:
                    retirements = self._pool.retirements
                decision = self._pool.checkout_locked(origin, loop.time())
                conn = decision.connection
                if conn is not None:
                    self._book.assign_locked(exchange, conn, was_idle=True)
                waiter = decision.waiter
                if waiter is not None:
                    self._book.counters_for(origin).pool_waits += 1
                    self._waiters[waiter] = loop.create_future()
            self._act(decision)
            if conn is not None:
                return conn
            if decision.dial:
                return await self._dial(exchange, retirements)
            assert waiter is not None
            if deadline is None and exchange.timeout.pool is not None:
                deadline = loop.time() + exchange.timeout.pool
            conn = await self._wait_in_queue(exchange, waiter, deadline, retirements)
            if conn is not None:
                return conn

    async def _wait_in_queue(
        self,
        exchange: AsyncExchange,
        waiter: Waiter[AsyncConnection],
        deadline: float | None,
        retirements: int,
    ) -> AsyncConnection | None:
        """Wait for the pool to serve ``waiter`` (R12). Returns a connection,
        or ``None`` to try the checkout again. Cancelled, it leaves the queue
        and passes on whatever it was given."""
        loop = self._loop_now()
        future = self._waiters[waiter]
        self._emit("pool_wait_start", None, exchange)
        woken = True
        try:
            if deadline is None:
                await future
            else:
                woken = await wait_or_expire(future, max(deadline - loop.time(), 0.0))
        except asyncio.CancelledError:
            with self._lock:
                self._waiters.pop(waiter, None)
                decision = self._pool.cancel_wait_locked(waiter, loop.time())
            self._act(decision)
            raise
        with self._lock:
            self._waiters.pop(waiter, None)
            if not woken:
                decision = self._pool.cancel_wait_locked(waiter, loop.time())
            elif waiter.connection is not None and not waiter.connection.closing:
                self._book.assign_locked(exchange, waiter.connection, was_idle=False)
        self._emit("pool_wait_done", None, exchange)
        if not woken:
            self._act(decision)
            raise PoolTimeout(
                f"no connection available within {exchange.timeout.pool}s "
                f"({self._pool.slots(waiter.origin)} in use for {waiter.origin})",
                method=exchange.request.method,
                url=exchange.request.url,
            )
        if waiter.may_dial:
            return await self._dial(exchange, retirements)
        handed: AsyncConnection | None = waiter.connection
        if handed is None:
            raise self._closed_error(exchange)
        # None: handed a connection that closed meanwhile: again.
        return handed if exchange.connection is handed else None

    async def _dial(self, exchange: AsyncExchange, retirements: int) -> AsyncConnection:
        """Open a connection for ``exchange`` in the slot reserved for it (R1);
        ``retirements``: the pool's when the request began. Cancelled or
        failed, the slot is given back."""
        origin = exchange.request.origin
        try:
            streams, tls_version = await self._open_streams(exchange)
        except BaseException:
            with self._lock:
                decision = self._pool.discard_locked(origin)
            self._act(decision)
            raise
        conn = AsyncConnection(self._core, origin, streams, tls_version)
        with self._lock:
            closed = self._closed
            if not closed:
                self._book.opened_locked(conn)
                self._pool.opened_locked(conn, retirements)
                self._book.assign_locked(exchange, conn, was_idle=False)
            else:
                decision = self._pool.forget_locked(conn)
        if closed:
            streams[1].transport.abort()
            self._act(decision)
            raise self._closed_error(exchange)
        conn.start()
        return conn

    async def _open_streams(self, exchange: AsyncExchange) -> tuple[Streams, str | None]:
        """Connect (through the proxy's SOCKS, TLS or CONNECT step, if any;
        and for https, handshake) in the caller's task. Every step after the
        TCP connect runs within the connect timeout too."""
        request = exchange.request
        origin = request.origin
        limit = exchange.timeout.connect
        loop = self._loop_now()
        self._emit("connect_start", None, exchange)
        proxy = origin.proxy
        host, port = (origin.host, origin.port) if proxy is None else (proxy.host, proxy.port)
        try:
            if origin.uds is not None:
                sock = await self._connect_unix(origin.uds, limit)
            else:
                sock = await self._connect(host, port, limit)
        except (OSError, asyncio.TimeoutError) as exc:
            if (
                proxy is not None
                and isinstance(exc, OSError)
                and not isinstance(exc, TimeoutError)
            ):
                raise ProxyError(
                    f"could not connect to proxy {proxy} for {origin}: {os_reason(exc)}",
                    method=request.method,
                    url=request.url,
                ) from exc
            what = "could not connect" if proxy is None else f"could not connect to proxy {proxy}"
            raise self._connect_error(exchange, exc, what) from exc
        stage = "connection setup failed"  # what failed, for an OSError
        streams: Streams | None = None
        try:
            exchange.marks["connected"] = loop.time()
            if self._listeners or exchange.listener is not None:
                self._emit("connect_done", None, exchange, **dialed(sock))
            if proxy is not None and proxy.is_socks():
                stage = f"SOCKS handshake with proxy {proxy} failed"
                await within(limit, self._socks(sock, origin, proxy))
            elif proxy is not None and proxy.scheme == "https":
                stage = f"TLS handshake with proxy {proxy} failed"
                proxy_context = (
                    proxy.ssl_context or origin.ssl_context or await self._ssl_context()
                )
                streams = await open_streams(
                    sock,
                    self._recv_buffer,
                    ssl_context=proxy_context,
                    server_hostname=proxy.host,
                    ssl_handshake_timeout=limit,
                )
                if origin.scheme != "https":  # absolute-form requests over TLS
                    return streams, _tls_version(streams)
                stage = f"CONNECT through proxy {proxy} failed"
                await within(limit, _tunnel_over_streams(streams, origin, proxy))
            if origin.scheme != "https":
                return await open_streams(sock, self._recv_buffer), None
            if proxy is not None and streams is None and not proxy.is_socks():
                stage = f"CONNECT through proxy {proxy} failed"
                await within(limit, self._tunnel(sock, origin, proxy))
            stage = "TLS handshake failed"
            self._emit("tls_handshake_start", None, exchange)
            context = origin.ssl_context or await self._ssl_context()
            if streams is None:
                streams = await open_streams(
                    sock,
                    self._recv_buffer,
                    ssl_context=context,
                    server_hostname=origin.tls_name,
                    ssl_handshake_timeout=limit,
                )
            elif sys.version_info >= (3, 11):  # TLS inside the TLS session with the proxy
                name = origin.tls_name
                await within(limit, _start_tls_in_tunnel(streams[1], context, name))
            else:
                raise ProxyError(
                    f"https through the https proxy {proxy} needs Python 3.11 or newer",
                    method=request.method,
                    url=request.url,
                )
            version = _tls_version(streams)
            exchange.marks["tls_done"] = loop.time()
            self._emit("tls_handshake_done", None, exchange, version=version)
            return streams, version
        except BaseException as exc:
            if streams is not None:
                streams[1].transport.abort()
            sock.close()
            timed_out = isinstance(exc, TimeoutError | asyncio.TimeoutError)
            error = dial_error(exchange, exc, timed_out, stage)
            if error is exc:
                raise
            raise error from exc

    async def _connect_unix(self, path: str, limit: float | None) -> socket.socket:
        """A connected non-blocking Unix socket."""
        loop = self._loop_now()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await within(limit, loop.sock_connect(sock, path))
        except BaseException:
            sock.close()
            raise
        return sock

    async def _socks(self, sock: socket.socket, origin: Origin, proxy: Proxy) -> None:
        """The SOCKS handshake on ``sock``: on return it speaks to the origin."""
        loop = self._loop_now()
        host = origin.host
        if not proxy.resolves_names():
            family = socket.AF_INET if proxy.scheme == "socks4" else socket.AF_UNSPEC
            try:
                infos = await loop.getaddrinfo(host, None, family=family, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise SocksError(f"could not resolve {host} locally: {exc}") from exc
            host = str(infos[0][4][0])
        handshake = SocksHandshake.for_proxy(proxy, host, origin.port)
        try:
            await loop.sock_sendall(sock, handshake.data_to_send())
            while not handshake.done:
                handshake.receive_data(await loop.sock_recv(sock, _TUNNEL_RECV))
                data = handshake.data_to_send()
                if data:
                    await loop.sock_sendall(sock, data)
        except TimeoutError:
            raise
        except OSError as exc:  # a reset: the proxy's doing, like a refusal
            raise SocksError(f"the connection to the proxy failed: {exc}") from exc

    async def _connect(self, host: str, port: int, limit: float | None) -> socket.socket:
        """A connected non-blocking socket; name resolution off the loop,
        and the addresses of a name raced (see :mod:`.dial`)."""
        loop = self._loop_now()
        family = ip_family(host)
        if family is not None:
            addresses = [(family, socket.SOCK_STREAM, 0, "", (host, port))]
        else:
            found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses = interleaved(found)
        sock = await within(limit, connect_first(loop, addresses, self._prepare))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _prepare(self, sock: socket.socket) -> None:
        """Set a new socket up before it connects."""
        for option in self.socket_options:
            sock.setsockopt(*option)
        if self._local_address is not None:
            sock.bind((self._local_address, 0))

    async def _tunnel(self, sock: socket.socket, origin: Origin, proxy: Proxy) -> None:
        loop = self._loop_now()
        handshake = TunnelHandshake(origin.host, origin.port, proxy.authorization, proxy.headers)
        await loop.sock_sendall(sock, handshake.request)
        while not handshake.receive(await loop.sock_recv(sock, _TUNNEL_RECV)):
            pass

    def _connect_error(
        self, exchange: AsyncExchange, exc: BaseException, what: str
    ) -> ConnectError | ConnectTimeout:
        timed_out = isinstance(exc, TimeoutError | asyncio.TimeoutError)
        return connect_error(exchange, exc, what, timed_out)

    async def _ssl_context(self) -> ssl.SSLContext:
        context = self._tls_context
        if context is None:
            # Loading the system's CA certificates reads files: off the loop.
            loop = self._loop_now()
            context = await loop.run_in_executor(None, ssl.create_default_context)
            self._tls_context = context
        return context

    def _closed_error(self, exchange: AsyncExchange) -> PoolClosed:
        request = exchange.request
        return PoolClosed("the transport is closed", method=request.method, url=request.url)

    # -- called by connections ------------------------------------------------

    def _act(self, decision: Decision[AsyncConnection]) -> None:
        """Carry out a pool decision, with no lock held."""
        if decision.close:
            now = self._loop_now().time()
            for conn in decision.close:
                expired = self._pool.has_expired(conn, now)
                conn.close("idle_timeout" if expired else "evicted")
        for waiter in decision.wake:
            wake(self._waiters.get(waiter))

    def _emit(
        self,
        name: str,
        conn: AsyncConnection | None,
        exchange: AsyncExchange | None = None,
        **data: Any,
    ) -> None:
        """Tell the listeners about an event (on the loop, no lock held)."""
        emit(self._listeners, name, conn, exchange, **data)

    # -- observing -------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every :class:`~poolwatch.Event` (R19),
        on the event loop."""
        check_listener(listener)
        with self._lock:  # two threads adding at once both get theirs in
            self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``: the first added that is equal to it
        (``obj.method`` makes a new bound method each time, equal to the one
        added); one added twice is called once fewer."""
        with self._lock:
            self._listeners = without(self._listeners, listener)

    def stats(self) -> PoolStats:
        """An immutable snapshot: totals and a per-origin breakdown (R18);
        ``workers_alive`` counts live worker tasks."""
        with self._lock:
            snapshots = self._book.stats_locked()
        return Book.merge(snapshots)

    def connections(self) -> list[ConnectionInfo]:
        """Every open connection: id, origin, idle or active, requests served,
        age and idle time."""
        now = self._clock()
        with self._lock:
            return self._book.connections_locked(now)

    def open_bodies(self) -> list[OpenBody]:
        """Responses whose body is neither read to the end nor closed, with
        the call site that made each request (R6)."""
        now = self._clock()
        with self._lock:
            exchanges = list(self._book.open)
        return Book.open_bodies(exchanges, now)

    def _clock(self) -> float:
        loop = self._loop
        return loop.time() if loop is not None else 0.0

    def __repr__(self) -> str:
        with self._lock:
            summary = self._book.summary_locked()
        state = "closed " if self._closed else ""
        return f"<{state}AsyncTransport {summary}>"

    async def settle(self) -> None:
        """Wait until the workers of every closed connection have exited, so
        that :meth:`stats` describes the transport at rest (R18). A response
        dropped unclosed hands its connection to the loop from its finaliser:
        that runs first, and such a connection is waited for too (R6)."""
        await asyncio.sleep(0)
        with self._lock:
            closing = self._book.settling_locked()
        for conn in closing:
            await conn.wait_closed()

    # -- closing -------------------------------------------------------------

    async def close_idle_connections(self, *, retire_active: bool = False) -> None:
        """Close every idle connection and wait for its workers; active ones
        are left alone (R14), or with ``retire_active`` closed once their
        responses end, as :meth:`Transport.close_idle_connections` says."""
        with self._lock:
            conns = self._pool.take_all_idle_locked()
            if retire_active:
                self._pool.retire_locked(self._book.live)
        for conn in conns:
            conn.close("close_idle")
        for conn in conns:
            await conn.wait_closed()

    async def aclose(self) -> None:
        """Close every connection, wait for every worker task to exit, and
        refuse further requests with :class:`~poolwatch.PoolClosed` (R14)."""
        with self._lock:
            self._closed = True
            waiters = self._pool.drain_waiters_locked()
            conns = list(self._book.live)
        for waiter in waiters:
            wake(self._waiters.get(waiter))
        for conn in conns:
            conn.close("transport_closed")
        with self._lock:
            unsettled = list(self._book.unsettled)
        for conn in unsettled:
            await conn.wait_closed()

    def reopen(self) -> bool:
        """After :meth:`aclose`, take requests again, on new connections, as
        :meth:`Transport.reopen` does. Whether the transport takes requests
        now: not while a closed connection's worker tasks are still exiting
        (an ``aclose()`` cut short), nor while a connection the close cut
        short is still being dialled."""
        with self._lock:
            if not self._closed:
                return True
            if self._book.live or self._book.unsettled or self._pool.slots():
                return False
            self._pool = PoolState(self.limits)
            self._book.pool = self._pool
            self._waiters = {}
            self._closed = False
            return True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class _AsyncBodyPlaceholder:
    """Stands for an async iterable body while the request is validated."""

    def __iter__(self) -> Any:
        return iter(())


_ASYNC_PLACEHOLDER = _AsyncBodyPlaceholder()


def _as_sync_body(body: Any) -> Any:
    """Request validates sync bodies; an async iterable passes as a stand-in
    of unknown length (sent chunked unless a Content-Length is given)."""
    if hasattr(body, "__aiter__"):
        return _ASYNC_PLACEHOLDER
    return body


async def _start_tls_in_tunnel(
    writer: asyncio.StreamWriter, context: ssl.SSLContext, server_hostname: str
) -> None:
    """TLS with the origin inside the TLS session with the proxy. When that
    handshake fails, asyncio's TLS-over-TLS transport (CPython 3.11) fails
    its own clean-up with a ``TypeError`` (``SSLProtocol._abort()`` given an
    argument): the handshake's own error is raised instead."""
    if sys.version_info < (3, 11):  # pragma: no cover - refused before this on 3.10
        raise RuntimeError("StreamWriter.start_tls() needs Python 3.11")
    offer_http11(context)
    try:
        await writer.start_tls(
            context, server_hostname=server_hostname, ssl_handshake_timeout=NO_HANDSHAKE_TIMER
        )
    except TypeError as exc:
        failure = exc.__context__
        if isinstance(failure, OSError):
            raise failure from None
        raise ssl.SSLError(f"the TLS handshake in the proxy's tunnel failed ({exc})") from None


async def _tunnel_over_streams(streams: Streams, origin: Origin, proxy: Proxy) -> None:
    """Ask the proxy at the other end of ``streams`` (a TLS session to it)
    for a tunnel to ``origin``."""
    reader, writer = streams
    handshake = TunnelHandshake(origin.host, origin.port, proxy.authorization, proxy.headers)
    writer.write(handshake.request)
    while not handshake.receive(await reader.read(_TUNNEL_RECV)):
        pass


def _tls_version(streams: Streams) -> str | None:
    tls = streams[1].get_extra_info("ssl_object")
    return tls.version() if tls is not None else None


_closing: set[asyncio.Task[None]] = set()  # held until done: the loop keeps tasks weakly


def _close_on_its_loop(transport: AsyncTransport) -> None:
    """Close a transport dropped unclosed (see :mod:`poolwatch._core.handle`)
    on its event loop. The finaliser that calls this may run on any thread,
    so it only schedules the close."""
    loop = transport._loop
    if loop is None or transport._closed:
        return
    try:
        loop.call_soon_threadsafe(_start_closing, transport)
    except RuntimeError:
        pass  # the loop has closed, and its worker tasks with it


def _start_closing(transport: AsyncTransport) -> None:
    if transport._closed:
        return
    task = asyncio.ensure_future(transport.aclose())
    _closing.add(task)
    task.add_done_callback(_closing.discard)
