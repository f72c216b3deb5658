"""The synchronous transport: a connection pool whose connections each run a
reader and a writer thread (R1-R14, R18)."""

from __future__ import annotations

import codecs
import os
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from queue import Empty, SimpleQueue
from types import TracebackType
from typing import Any

from typing_extensions import Self

from .._core.book import Book, ConnectionInfo, can_retry, emit
from .._core.dialing import interleaved
from .._core.exchange import BODY
from .._core.failures import connect_error, dial_error
from .._core.handle import close_when_dropped, new_handle
from .._core.netinfo import dialed
from .._core.pool import Decision, Limits, PoolState, Waiter
from .._core.stats import PoolStats
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
    PreparedRequests,
    Proxy,
    Timeout,
    check_listener,
    check_transport_options,
    ip_family,
)
from .connection import NO_TIMEOUT, Connection, Exchange
from .dial import connect_first, connect_one
from .response import Response
from .streams import (
    RawSocket,
    ReadStream,
    TLSSession,
    WriteStream,
    open_plain,
    open_socks,
    open_tls,
    open_tls_socket,
    open_tunnel,
)
from .wakeup import EventPool
from .workers import WorkerPool, refuse_green_threads

__all__ = ["ConnectionInfo", "Transport", "live_transports"]

# A reused connection the server closed under us fails before any response
# byte; the retry goes to another connection, which may be stale too. Bound
# the chain (Go retries as long as the connection was reused).
MAX_RETRIES = 3


class Transport:
    """A thread-safe HTTP/1.1 connection pool with instrumented connections.

    Each connection has a reader and a writer thread for its whole life. A
    response body read to its end returns the connection to the pool during
    that read; one closed early tears the connection down; one that is
    neither keeps it checked out and is reported by :meth:`open_bodies`
    (see BEHAVIOUR.md, R1-R14).

    Defaults follow Go's ``http.DefaultTransport`` where it has one: no limit
    on connections, 100 idle connections in all, a 90 s idle timeout, a 30 s
    connect timeout and no other timeout. ``max_idle_per_host`` is 10 rather
    than Go's 2, which is too few for threaded Python clients (urllib3 also
    keeps 10).

    With ``uds``, every connection goes to that Unix socket instead of the
    host in the URL (which still gives the ``Host`` header and the TLS
    server name); stats key its origins ``"http://host:port via unix:PATH"``.

    Close it when done (``with`` does). One garbage-collected unclosed,
    with no response of it still held, is closed then.
    """

    _core: Transport  # what connections hold (see poolwatch._core.handle)

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
        uds: str | os.PathLike[str] | None = None,
        socket_options: Sequence[tuple[int, int, int | bytes]] = (),
    ) -> None:
        refuse_green_threads()
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
        self.expect_continue_timeout = expect_continue_timeout  # Go's default
        self._source_address = None if local_address is None else (local_address, 0)
        # Connect to this Unix socket instead of each origin's host.
        self.uds = None if uds is None else os.fspath(uds)
        self._tls_context = ssl_context  # made on the first https dial if None
        self._closed = False  # pool lock
        self._close_finished = False  # close() ran to its end
        self._start_empty()
        self._prepared = PreparedRequests()  # heads of requests made before
        self._listeners: tuple[Listener, ...] = ()
        _live_transports.add(self._core)
        close_when_dropped(self, _close_in_background)

    def _start_empty(self) -> None:
        """An empty pool, with its lock, stats and workers."""
        self._lock = threading.Lock()
        self._pool: PoolState[Connection] = PoolState(self.limits)
        self._book: Book[Connection] = Book(self._pool)  # pool lock
        self._waiter_locks: dict[Waiter[Connection], threading.Lock] = {}  # pool lock
        # Bodies dropped after their reader may have exited (R6): queued by the
        # finaliser, which may run inside the pool lock and so takes none.
        self._late_leaks: SimpleQueue[tuple[Connection, Exchange]] = SimpleQueue()
        # What callers wait for their heads on, and parked workers for a job.
        self._events = EventPool()
        self._workers = WorkerPool(events=self._events)  # threads for the connections' workers

    def _start_afresh_after_fork(self) -> None:
        """In a child process just forked (one thread, in the fork handler):
        the connections' workers are the parent's threads and did not come
        along, so a request handed to one would wait for ever. Each
        connection is given up, its socket closed in the child only (no
        shutdown and no TLS close, which would end it for the parent too),
        and the transport starts with an empty pool, locks and workers of
        its own, and zeroed stats. A response open at the fork cannot be
        read in the child."""
        for conn in list(self._book.live):
            conn.forget_after_fork()
        self._start_empty()

    # -- the request API -------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        headers: HeaderTypes | None = None,
        body: BodyTypes = None,
        timeout: Timeout | float | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        proxy: str | Proxy | None = None,
        listener: Listener | None = None,
        server_hostname: str | None = None,
        target: str | bytes | None = None,
    ) -> Response:
        """Send a request and return the response once its head has arrived.

        ``headers`` is a mapping or pairs; ``body`` is bytes, str (sent as
        UTF-8), an iterable of bytes (or str pieces, sent as UTF-8) or a file
        (sent chunked when its length is unknown, R16). ``timeout`` is a number (every
        limit) or a :class:`Timeout`; by default the transport's.
        ``ssl_context`` and ``proxy`` replace the transport's for this
        request, and ``listener`` hears its events. ``server_hostname`` is
        the name TLS asks for and checks the certificate against, when not
        the URL's host (httpcore's ``sni_hostname``); ``target`` is sent in
        the request line in place of the URL's path and query (``*``).

        Read the body to its end or close the response (``with`` does):
        otherwise its connection stays checked out (R6).
        """
        if listener is not None:
            check_listener(listener)  # the other options: when first prepared
        request = self._prepared.prepare(
            method,
            url,
            headers,
            body,
            keep_alive=self.keep_alive,
            ssl_context=ssl_context,
            proxy=proxy,
            uds=self.uds,
            server_hostname=server_hostname,
            target=target,
        )
        limits = Timeout.coerce(timeout, self.timeout)
        call_site = capture_call_site(self.call_site_depth)
        if not self._late_leaks.empty():
            self._settle_late_leaks()
        retries = 0
        started = 0.0
        try:
            while True:
                exchange = Exchange(request, limits, call_site, listener, self._events)
                if retries:  # durations run from the call, not from this attempt
                    exchange.marks["start"] = started
                started = exchange.marks["start"]
                conn = self._get_connection(exchange)
                try:
                    exchange.marks["got_conn"] = time.monotonic()
                    if self._listeners or listener is not None:
                        self._emit_got_conn(exchange, conn)
                    conn.round_trip(exchange)
                except NetworkError as exc:
                    if retries >= MAX_RETRIES or not self._can_retry(exchange, exc):
                        raise
                    retries += 1
                    with self._lock:
                        conn.counters.retries += 1
                    self._emit("retry", conn, exchange, error=exc)
                    continue
                except PoolwatchError:
                    raise
                except BaseException:  # KeyboardInterrupt, a signal handler's exception
                    conn.interrupted(exchange)
                    raise
                return Response(exchange, drain_on_close=self.drain_on_close, owner=self)
        except Exception as exc:
            # poolwatch's errors, and the request body's own (R18's errors)
            if isinstance(exc, PoolwatchError) or exc is exchange.write_error:
                self._request_failed(exchange, exc, time.monotonic())
            raise

    def _request_failed(self, exchange: Exchange, error: Exception, now: float) -> None:
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

    def _emit_got_conn(self, exchange: Exchange, conn: Connection) -> None:
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

    @staticmethod
    def _can_retry(exchange: Exchange, error: BaseException) -> bool:
        return can_retry(exchange, error)

    # -- getting a connection ------------------------------------------------

    def _get_connection(self, exchange: Exchange) -> Connection:
        origin = exchange.request.origin
        deadline: float | None = None
        retirements: int | None = None  # the pool's, when this request began
        self._emit("get_conn", None, exchange)
        while True:
            with self._lock:
                if self._closed:
                    raise self._closed_error(exchange)
                if retirements is None:
                    retirements = self._pool.retirements
                decision = self._pool.checkout_locked(origin, time.monotonic())
                conn = decision.connection
                if conn is not None:
                    self._assign_locked(exchange, conn, was_idle=True)
                waiter = decision.waiter
                if waiter is not None:
                    self._book.counters_for(origin).pool_waits += 1
                    waiter_lock = self._waiter_locks.setdefault(waiter, _locked())
            self._act(decision)
            if conn is not None:
                return conn
            if decision.dial:
                return self._dial(exchange, retirements)
            assert waiter is not None
            if deadline is None and exchange.timeout.pool is not None:
                deadline = time.monotonic() + exchange.timeout.pool
            conn = self._wait_in_queue(exchange, waiter, waiter_lock, deadline, retirements)
            if conn is not None:
                return conn

    def _wait_in_queue(
        self,
        exchange: Exchange,
        waiter: Waiter[Connection],
        waiter_lock: threading.Lock,
        deadline: float | None,
        retirements: int,
    ) -> Connection | None:
        """Wait for the pool to serve ``waiter`` (R12). Returns a connection,
        or ``None`` to try the checkout again."""
        try:
            self._emit("pool_wait_start", None, exchange)
            wait = -1.0 if deadline is None else max(deadline - time.monotonic(), 0.0)
            woken = waiter_lock.acquire(timeout=wait)
        except BaseException:  # interrupted: leave the queue
            with self._lock:
                self._waiter_locks.pop(waiter, None)
                decision = self._pool.cancel_wait_locked(waiter, time.monotonic())
            self._act(decision)
            raise
        with self._lock:
            self._waiter_locks.pop(waiter, None)
            if not woken:
                decision = self._pool.cancel_wait_locked(waiter, time.monotonic())
            elif waiter.connection is not None and not waiter.connection.closing:
                self._assign_locked(exchange, waiter.connection, was_idle=False)
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
            return self._dial(exchange, retirements)
        handed: Connection | None = waiter.connection
        if handed is None:
            raise self._closed_error(exchange)
        # None: handed a connection that closed meanwhile: again.
        return handed if exchange.connection is handed else None

    def _dial(self, exchange: Exchange, retirements: int) -> Connection:
        """Open a connection for ``exchange`` in the slot reserved for it (R1);
        ``retirements``: the pool's when the request began."""
        request = exchange.request
        origin = request.origin
        try:
            streams, tls, sock = self._open_streams(exchange)
        except BaseException:
            with self._lock:
                decision = self._pool.discard_locked(origin)
            self._act(decision)
            raise
        conn = Connection(self._core, origin, streams, tls, sock)
        with self._lock:
            closed = self._closed
            if not closed:
                self._book.opened_locked(conn)
                self._pool.opened_locked(conn, retirements)
                self._assign_locked(exchange, conn, was_idle=False)
                # Under the lock: a close() finds the connection with its
                # workers started, and joins them.
                conn.start()
            else:
                decision = self._pool.forget_locked(conn)
        if closed:
            conn.discard_unstarted()
            self._act(decision)
            raise self._closed_error(exchange)
        return conn

    def _open_streams(
        self, exchange: Exchange
    ) -> tuple[tuple[ReadStream, WriteStream], TLSSession | None, socket.socket]:
        """Connect (and for https, handshake) on the caller's thread: the
        workers' streams, the TLS session if any, and the TCP socket."""
        request = exchange.request
        origin = request.origin
        connect = exchange.timeout.connect
        self._emit("connect_start", None, exchange)
        proxy = origin.proxy
        address = (origin.host, origin.port) if proxy is None else (proxy.host, proxy.port)
        try:
            if origin.uds is not None:
                sock = _connect_unix(origin.uds, NO_TIMEOUT if connect is None else connect)
            else:
                sock = _connect_tcp(
                    address, NO_TIMEOUT if connect is None else connect, self._prepare
                )
        except OSError as exc:
            if proxy is not None and not isinstance(exc, TimeoutError):
                raise ProxyError(
                    f"could not connect to proxy {proxy} for {origin}: {os_reason(exc)}",
                    method=request.method,
                    url=request.url,
                ) from exc
            what = "could not connect" if proxy is None else f"could not connect to proxy {proxy}"
            raise self._connect_error(exchange, exc, what) from exc
        stage = "connection setup failed"  # what failed, for an OSError
        try:
            if origin.uds is None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            exchange.marks["connected"] = time.monotonic()
            if self._listeners or exchange.listener is not None:
                self._emit("connect_done", None, exchange, **dialed(sock))
            raw: RawSocket = sock
            if proxy is not None and proxy.is_socks():
                stage = f"SOCKS handshake with proxy {proxy} failed"
                open_socks(sock, proxy, origin.host, origin.port)
            elif proxy is not None and proxy.scheme == "https":
                stage = f"TLS handshake with proxy {proxy} failed"
                proxy_context = proxy.ssl_context or origin.ssl_context or self._ssl_context()
                if origin.scheme != "https":  # absolute-form requests over TLS
                    reader, writer, session = open_tls(sock, proxy_context, proxy.host)
                    return (reader, writer), session, sock
                raw = open_tls_socket(sock, proxy_context, proxy.host)
            if origin.scheme != "https":
                return open_plain(sock), None, sock
            if proxy is not None and not proxy.is_socks():
                stage = f"CONNECT through proxy {proxy} failed"
                open_tunnel(raw, origin.host, origin.port, proxy)
            stage = "TLS handshake failed"
            self._emit("tls_handshake_start", None, exchange)
            context = origin.ssl_context or self._ssl_context()
            name = origin.tls_name
            reader, writer, session = open_tls(raw, context, name)
            exchange.marks["tls_done"] = time.monotonic()
            self._emit("tls_handshake_done", None, exchange, version=session.version)
            return (reader, writer), session, sock
        except BaseException as exc:
            sock.close()
            error = dial_error(exchange, exc, isinstance(exc, TimeoutError), stage)
            if error is exc:
                raise
            raise error from exc

    def _prepare(self, sock: socket.socket) -> None:
        """Set a new socket up before it connects."""
        for option in self.socket_options:
            sock.setsockopt(*option)
        if self._source_address is not None:
            sock.bind(self._source_address)

    def _connect_error(
        self, exchange: Exchange, exc: OSError, what: str
    ) -> ConnectError | ConnectTimeout:
        return connect_error(exchange, exc, what, timed_out=isinstance(exc, TimeoutError))

    def _ssl_context(self) -> ssl.SSLContext:
        context = self._tls_context
        if context is None:
            context = self._tls_context = ssl.create_default_context()
        return context

    def _assign_locked(self, exchange: Exchange, conn: Connection, was_idle: bool) -> None:
        self._book.assign_locked(exchange, conn, was_idle)

    def _closed_error(self, exchange: Exchange) -> PoolClosed:
        request = exchange.request
        return PoolClosed("the transport is closed", method=request.method, url=request.url)

    # -- called by connections ------------------------------------------------

    def _act(self, decision: Decision[Connection]) -> None:
        """Carry out a pool decision, with no lock held."""
        if decision.close:
            now = time.monotonic()
            for conn in decision.close:
                expired = self._pool.has_expired(conn, now)
                conn.close("idle_timeout" if expired else "evicted", join=False)
        for waiter in decision.wake:
            lock = self._waiter_locks.get(waiter)
            if lock is not None:
                lock.release()

    def _emit(
        self,
        name: str,
        conn: Connection | None,
        exchange: Exchange | None = None,
        **data: Any,
    ) -> None:
        """Tell the transport's listeners, and the request's own, about an
        event. Never called with a lock held."""
        emit(self._listeners, name, conn, exchange, **data)

    # -- observing -------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every :class:`~poolwatch.Event` (R19)."""
        check_listener(listener)
        with self._lock:  # two threads adding at once both get theirs in
            self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``: the first added that is equal to it
        (``obj.method`` makes a new bound method each time, equal to the one
        added); one added twice is called once fewer."""
        with self._lock:
            self._listeners = without(self._listeners, listener)

    def _settle_late_leaks(self) -> None:
        """Count the queued leaks whose connection is closing: its reader may
        be past counting them, for the server hung up first (R6). Counting
        twice is impossible (``_body_released`` checks under the lock); the
        others are left to their reader, or to the next look."""
        later = []
        while True:
            try:
                conn, exchange = self._late_leaks.get_nowait()
            except Empty:
                break
            if conn.closing:
                conn._body_released(exchange)
            elif exchange.state == BODY:
                later.append((conn, exchange))
        for item in later:
            self._late_leaks.put(item)

    def stats(self) -> PoolStats:
        """An immutable snapshot: totals and a per-origin breakdown (R18)."""
        self._settle_late_leaks()
        with self._lock:
            snapshots = self._book.stats_locked()
        return Book.merge(snapshots)

    def connections(self) -> list[ConnectionInfo]:
        """Every open connection: id, origin, idle or active, requests served,
        age and idle time."""
        now = time.monotonic()
        with self._lock:
            return self._book.connections_locked(now)

    def open_bodies(self) -> list[OpenBody]:
        """Responses whose body is neither read to the end nor closed, with
        the call site that made each request (R6)."""
        self._settle_late_leaks()
        now = time.monotonic()
        with self._lock:
            exchanges = list(self._book.open)
        return Book.open_bodies(exchanges, now)

    def __repr__(self) -> str:
        with self._lock:
            summary = self._book.summary_locked()
        state = "closed " if self._closed else ""
        return f"<{state}Transport {summary}>"

    def settle(self) -> None:
        """Wait until the workers of every closed connection have exited
        (and told the listeners, ``conn_closed``), so that :meth:`stats`
        describes the transport at rest (R18); also those of a connection
        whose response was just garbage-collected unclosed, once they have
        counted the leak (R6)."""
        with self._lock:
            closing = self._book.settling_locked()
        for conn in closing:
            conn.join()
        self._settle_late_leaks()

    # -- closing -------------------------------------------------------------

    def close_idle_connections(self, *, retire_active: bool = False) -> None:
        """Close every idle connection; active ones are left alone (R14), or
        with ``retire_active`` closed once their responses end instead of
        going back to the pool, as a requests session's ``close()`` leaves
        the connections in use (so are those being dialled, or that
        requests already waiting for a connection will dial)."""
        with self._lock:
            conns = self._pool.take_all_idle_locked()
            if retire_active:
                self._pool.retire_locked(self._book.live)
        for conn in conns:
            conn.close("close_idle")

    def close(self) -> None:
        """Close every connection, wait for every worker to exit, and refuse
        further requests with :class:`~poolwatch.PoolClosed` (R14). Open
        bodies become unreadable."""
        with self._lock:
            self._closed = True
            waiters = self._pool.drain_waiters_locked()
            conns = list(self._book.live)
        for waiter in waiters:
            lock = self._waiter_locks.get(waiter)
            if lock is not None:
                lock.release()
        for conn in conns:
            conn.close("transport_closed")
        with self._lock:
            unsettled = list(self._book.unsettled)
        for conn in unsettled:
            conn.join()
        self._workers.close()
        self._events.close()
        self._settle_late_leaks()
        self._close_finished = True

    def reopen(self) -> bool:
        """After :meth:`close`, take requests again, on new connections;
        settings, listeners and the stats' totals carry on. Whether the
        transport takes requests now: not while a close is still under way
        (or was interrupted: call :meth:`close` again), nor while a
        connection it cut short is still being dialled."""
        with self._lock:
            if not self._closed:
                return True
            if not self._close_finished or self._pool.slots():
                return False
            self._pool = PoolState(self.limits)
            self._book.pool = self._pool
            self._waiter_locks = {}
            self._events = EventPool()
            self._workers = WorkerPool(events=self._events)
            self._close_finished = False
            self._closed = False
            return True

    def _busy(self) -> bool:
        """Whether a request is in flight: a connection being dialled or
        checked out, or a caller waiting for one."""
        with self._lock:
            return self._pool.slots() > self._pool.idle_count() or self._pool.waiting() > 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_live_transports: weakref.WeakSet[Transport] = weakref.WeakSet()

# getaddrinfo() encodes host names with the idna codec, which Python imports
# on its first use. Looked up now, on import: a fork() while another thread
# is importing it leaves the child's own name lookups waiting for ever on
# that import's lock.
codecs.lookup("idna")


def _start_afresh_in_child() -> None:
    """After ``fork()``, in the child: every transport starts afresh (see
    :meth:`Transport._start_afresh_after_fork`)."""
    for transport in list(_live_transports):
        if isinstance(transport, Transport):
            transport._start_afresh_after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_start_afresh_in_child)


def _close_in_background(transport: Transport) -> None:
    """Close a transport dropped unclosed (see :mod:`poolwatch._core.handle`),
    on a thread of its own: a finaliser may run on any thread, even one
    inside the transport's lock. A close that was interrupted (Ctrl-C while
    it waited for a worker) is finished."""
    if transport._close_finished:
        return
    closer = threading.Thread(target=transport.close, name="poolwatch-close", daemon=True)
    try:
        closer.start()
    except RuntimeError:
        pass  # no thread to be had (the interpreter is exiting): the workers die with it


def live_transports() -> list[Transport]:
    """Every transport not yet garbage-collected (for ``poolwatch stats``)."""
    return list(_live_transports)


def _connect_tcp(
    address: tuple[str, int], timeout: float, prepare: Callable[[socket.socket], None]
) -> socket.socket:
    """A socket connected to ``address``, within ``timeout`` seconds, with
    that as its timeout; a name's addresses raced (see :mod:`.dial`). An IP
    address is connected to without the name lookup: ``getaddrinfo()`` and
    the conversion of its results cost more than the rest of the connect on
    loopback."""
    host, port = address
    family = ip_family(host)
    if family is not None:
        return connect_one((family, socket.SOCK_STREAM, 0, "", address), timeout, prepare)
    return connect_first(
        interleaved(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)), timeout, prepare
    )


def _connect_unix(path: str, timeout: float) -> socket.socket:
    """A socket connected to the Unix socket at ``path``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


def _locked() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock
