"""Make ``requests.Session``, ``httpx.Client`` and, when poolwatch has it,
``httpx.AsyncClient`` use poolwatch while the plugin is active.

Each client library is patched when it is imported (or at once, if it
already was), so the plugin never imports one itself: a suite that makes no
HTTP requests pays for one extra finder consulted at each first import. A
session or client given an explicit transport or adapter keeps it.
"""

from __future__ import annotations

import functools
import importlib.abc
import sys
import threading
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

import poolwatch

from .._leaks import capture_call_site
from .._sync.response import Response
from .._sync.transport import Transport
from ._tracking import Tracker

__all__ = ["Patcher"]

# The call site: the frames of the caller's stack recorded per request.
CALL_SITE_DEPTH = 4

Undo = Callable[[], None]


class _WatchedTransport(Transport):
    """A transport that remembers, per thread, the last response it returned,
    so that the adapter can pair it with the object that owns it."""

    last = threading.local()

    def request(self, *args: Any, **kwargs: Any) -> Response:
        response = super().request(*args, **kwargs)
        _WatchedTransport.last.response = response
        return response


def _take_last() -> Response | None:
    response: Response | None = getattr(_WatchedTransport.last, "response", None)
    _WatchedTransport.last.response = None
    return response


class Patcher:
    """Installs and removes the patches; records each transport and request
    with ``tracker``."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.pending = {"requests": self._patch_requests, "httpx": self._patch_httpx}
        self._undo: list[Undo] = []
        self._finder = _PatchOnImport(self)

    def patch(self) -> None:
        """Patch the client libraries imported already; the rest on import."""
        self.patch_imported()
        if self.pending:
            sys.meta_path.insert(0, self._finder)

    def patch_imported(self) -> None:
        """Patch each client library that has been imported since last time."""
        for name in [n for n in self.pending if n in sys.modules]:
            self._undo.append(self.pending.pop(name)())
        if not self.pending and self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)

    def unpatch(self) -> None:
        """Restore every patched class."""
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        while self._undo:
            self._undo.pop()()

    # -- requests ---------------------------------------------------------------

    def _patch_requests(self) -> Undo:
        import requests

        from ..adapters.requests import RequestsAdapter

        tracker = self.tracker

        class WatchedRequestsAdapter(RequestsAdapter):
            """``RequestsAdapter`` reporting each response to the tracker."""

            def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
                call_site = capture_call_site(CALL_SITE_DEPTH)
                _take_last()
                try:
                    response = super().send(request, *args, **kwargs)
                finally:
                    watched = _take_last()
                if watched is not None:
                    tracker.track(watched, response.raw, call_site)
                return response

        session_class: Any = requests.Session
        original_init = session_class.__init__

        @functools.wraps(original_init)
        def __init__(session: Any, *args: Any, **kwargs: Any) -> None:
            original_init(session, *args, **kwargs)
            # HTTPAdapter's pool sizes. The adapter does not own the
            # transport: Session.close() leaves open bodies open, as urllib3
            # does, so that they are still found.
            transport = _WatchedTransport(max_idle_per_host=10, max_idle=100, connect_timeout=None)
            adapter = WatchedRequestsAdapter(transport=transport)
            tracker.transport_created(adapter)
            session.mount("https://", adapter)
            session.mount("http://", adapter)

        session_class.__init__ = __init__

        def undo() -> None:
            session_class.__init__ = original_init

        return undo

    # -- httpx ------------------------------------------------------------------

    def _patch_httpx(self) -> Undo:
        import httpx

        from ..adapters.httpx import HTTPXTransport

        tracker = self.tracker

        class WatchedHTTPXTransport(HTTPXTransport):
            """``HTTPXTransport`` reporting each response to the tracker."""

            def handle_request(self, request: httpx.Request) -> httpx.Response:
                call_site = capture_call_site(CALL_SITE_DEPTH)
                response = super().handle_request(request)
                watched = response.extensions.get("poolwatch_response")
                if watched is not None:
                    tracker.track(watched, response, call_site)
                return response

        steps = [
            _patch_init_transport(
                httpx.Client, lambda options: WatchedHTTPXTransport(**options), tracker
            )
        ]
        async_class: Any = getattr(poolwatch, "AsyncHTTPXTransport", None)
        if async_class is not None:
            steps.append(_patch_async(httpx, async_class, tracker))

        def undo() -> None:
            for step in steps:
                step()

        return undo


class _PatchOnImport:
    """A meta path finder that lets the usual finders find a pending client
    library, and patches it as soon as its module has run."""

    def __init__(self, patcher: Patcher) -> None:
        self._patcher = patcher

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in self._patcher.pending:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec: ModuleSpec | None = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PatchingLoader(spec.loader, self._patcher.patch_imported)
                return spec
        return None


class _PatchingLoader(importlib.abc.Loader):
    """The library's own loader, followed by the patch."""

    def __init__(self, loader: Any, then: Callable[[], None]) -> None:
        self._loader = loader
        self._then = then

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._then()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


def _patch_init_transport(
    client_class: Any, make: Callable[[dict[str, Any]], Any], tracker: Tracker
) -> Undo:
    """Replace ``client_class._init_transport`` so that a client made without
    ``transport=`` gets ``make(options)``. Options poolwatch does not support
    (HTTP/2) keep httpx's own transport."""
    original = client_class._init_transport

    @functools.wraps(original)
    def _init_transport(
        client: Any,
        verify: Any = True,
        cert: Any = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: Any = None,
        transport: Any = None,
    ) -> Any:
        options = {"verify": verify, "cert": cert, "trust_env": trust_env, "http2": http2}
        if limits is not None:
            options["limits"] = limits
        if transport is not None or http2 or not http1:
            return original(client, transport=transport, **options, http1=http1)
        made = make(options)
        tracker.transport_created(made)
        return made

    client_class._init_transport = _init_transport

    def undo() -> None:
        client_class._init_transport = original

    return undo


def _patch_async(httpx: Any, async_class: Any, tracker: Tracker) -> Undo:
    """``httpx.AsyncClient`` over poolwatch's ``AsyncHTTPXTransport``."""

    class WatchedAsyncHTTPXTransport(async_class):  # type: ignore[misc]
        """``AsyncHTTPXTransport`` reporting each response to the tracker."""

        async def handle_async_request(self, request: Any) -> Any:
            call_site = capture_call_site(CALL_SITE_DEPTH)
            response = await super().handle_async_request(request)
            watched = response.extensions.get("poolwatch_response")
            if watched is not None:
                tracker.track(watched, response, call_site)
            return response

    return _patch_init_transport(
        httpx.AsyncClient, lambda options: WatchedAsyncHTTPXTransport(**options), tracker
    )
