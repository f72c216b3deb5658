"""poolwatch: an instrumented HTTP/1.1 connection pool.

Every connection runs a reader and a writer worker, as in Go's
``net/http.Transport``; every response body is tracked until it is drained,
closed early, or leaked, and the pool's state is readable at any time with
:meth:`Transport.stats`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ._async.response import AsyncResponse
from ._async.transport import AsyncTransport
from ._async.upgraded import AsyncUpgradedStream
from ._core.book import ConnectionInfo
from ._core.pool import Limits
from ._core.stats import OriginStats, PoolStats
from ._core.timings import Timings
from ._events import EVENT_NAMES, Event, Listener
from ._exceptions import (
    ConnectError,
    ConnectTimeout,
    InvalidURL,
    LeakWarning,
    LocalProtocolError,
    NetworkError,
    PoolClosed,
    PoolError,
    PoolTimeout,
    PoolwatchError,
    ProtocolError,
    ProxyError,
    ReadError,
    ReadTimeout,
    RemoteDisconnected,
    RemoteProtocolError,
    ResponseHeaderTimeout,
    TimeoutException,
    TLSError,
    WriteError,
    WriteTimeout,
)
from ._leaks import CallSite, OpenBody
from ._models import Origin, Proxy, Timeout, parse_proxy
from ._sync.response import Response
from ._sync.transport import Transport
from ._sync.upgraded import UpgradedStream

if TYPE_CHECKING:  # at run time, imported on first use by __getattr__
    from .adapters.httpx import AsyncHTTPXTransport, HTTPXTransport
    from .adapters.requests import RequestsAdapter

__version__ = "0.1.0"

# A library logs; the application decides where it goes.
logging.getLogger("poolwatch").addHandler(logging.NullHandler())


def __getattr__(name: str) -> object:
    # The adapters import requests or httpx: only when asked for.
    if name == "RequestsAdapter":
        from .adapters.requests import RequestsAdapter

        return RequestsAdapter
    if name == "HTTPXTransport":
        from .adapters.httpx import HTTPXTransport

        return HTTPXTransport
    if name == "AsyncHTTPXTransport":
        from .adapters.httpx import AsyncHTTPXTransport

        return AsyncHTTPXTransport
    raise AttributeError(f"module 'poolwatch' has no attribute {name!r}")


__all__ = [
    "EVENT_NAMES",
    "AsyncHTTPXTransport",
    "AsyncResponse",
    "AsyncTransport",
    "AsyncUpgradedStream",
    "CallSite",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionInfo",
    "Event",
    "HTTPXTransport",
    "InvalidURL",
    "LeakWarning",
    "Limits",
    "Listener",
    "LocalProtocolError",
    "NetworkError",
    "OpenBody",
    "Origin",
    "OriginStats",
    "PoolClosed",
    "PoolError",
    "PoolStats",
    "PoolTimeout",
    "PoolwatchError",
    "ProtocolError",
    "Proxy",
    "ProxyError",
    "ReadError",
    "ReadTimeout",
    "RemoteDisconnected",
    "RemoteProtocolError",
    "RequestsAdapter",
    "Response",
    "ResponseHeaderTimeout",
    "TLSError",
    "Timeout",
    "TimeoutException",
    "Timings",
    "Transport",
    "UpgradedStream",
    "WriteError",
    "WriteTimeout",
    "__version__",
    "parse_proxy",
]
