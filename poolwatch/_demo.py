"""The seed experiment: what happens to a connection when a response body is
read or not, closed or not.

Four loops of five GETs, each with a fresh transport, against a loopback
server started here. After each loop the transport settles and the live
workers are counted plus one for the main thread, as Go's
``runtime.NumGoroutine()`` would count them (BEHAVIOUR.md, "The seed
experiment"). Through the asyncio transport (``--client httpx-async``) the
workers are tasks, counted plus one for the main task.
"""

from __future__ import annotations

import asyncio
import gc
import http.server
import threading
import warnings
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

from ._exceptions import LeakWarning
from ._sync.transport import Transport

__all__ = ["LOOPS", "LoopResult", "run_demo", "run_loop"]

T = TypeVar("T")

REQUESTS_PER_LOOP = 5


@dataclass(frozen=True)
class Loop:
    """One row of the experiment: whether bodies are read, whether closed,
    and the count Go's transport gives."""

    number: int
    read: bool
    close: bool
    expected: int


LOOPS = (
    Loop(1, read=False, close=False, expected=1 + 2 * REQUESTS_PER_LOOP),
    Loop(2, read=False, close=True, expected=1),
    Loop(3, read=True, close=False, expected=3),
    Loop(4, read=True, close=True, expected=3),
)


@dataclass(frozen=True)
class LoopResult:
    """What one loop measured: workers by the stats, and worker threads
    actually alive (each plus one for the main thread)."""

    loop: Loop
    workers: int
    threads: int
    connections_opened: int

    @property
    def ok(self) -> bool:
        """Whether both counts match the expected one."""
        return self.workers == self.threads == self.loop.expected


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = b"hello world!\n"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def loopback_server() -> Iterator[str]:
    """A keep-alive HTTP/1.1 server on 127.0.0.1; yields its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="demo-server")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _worker_threads() -> int:
    """Threads working for a connection (parked spare workers are not)."""
    names = ("poolwatch-reader-", "poolwatch-writer-")
    return sum(1 for t in threading.enumerate() if t.name.startswith(names))


class DemoClient:
    """One way of making the demo's requests: the native API, or requests or
    httpx with poolwatch underneath. ``get`` returns the client's response
    object; ``read`` and ``close`` act on it."""

    name = "native"

    def __init__(self) -> None:
        self.transport = Transport()

    def get(self, url: str) -> Any:
        return self.transport.request("GET", url)

    def read(self, response: Any) -> None:
        response.read()

    def close(self, response: Any) -> None:
        response.close()

    def shutdown(self) -> None:
        self.transport.close()

    def settle(self) -> None:
        """Wait until closed connections' workers have exited."""
        self.transport.settle()

    def workers_alive(self) -> int:
        """Worker threads (or tasks) actually alive."""
        return _worker_threads()

    def stats(self) -> Any:
        """The transport's stats."""
        return self.transport.stats()


class RequestsClient(DemoClient):
    """``requests.Session`` with :class:`~poolwatch.RequestsAdapter` mounted."""

    name = "requests"

    def __init__(self) -> None:
        import requests

        from .adapters.requests import RequestsAdapter

        adapter = RequestsAdapter()
        self.transport = adapter.transport
        self.session = requests.Session()
        self.session.mount("http://", adapter)

    def get(self, url: str) -> Any:
        return self.session.get(url, stream=True)

    def read(self, response: Any) -> None:
        _ = response.content

    def shutdown(self) -> None:
        self.session.close()


class HTTPXClient(DemoClient):
    """``httpx.Client`` with :class:`~poolwatch.HTTPXTransport`."""

    name = "httpx"

    def __init__(self) -> None:
        import httpx

        from .adapters.httpx import HTTPXTransport

        transport = HTTPXTransport()
        self.transport = transport.transport
        self.client = httpx.Client(transport=transport)

    def get(self, url: str) -> Any:
        return self.client.send(self.client.build_request("GET", url), stream=True)

    def shutdown(self) -> None:
        self.client.close()


class HTTPXAsyncClient(DemoClient):
    """``httpx.AsyncClient`` with :class:`~poolwatch.AsyncHTTPXTransport`,
    on an event loop of its own; the workers are tasks."""

    name = "httpx-async"

    def __init__(self) -> None:
        import httpx

        from .adapters.httpx import AsyncHTTPXTransport

        self.loop = asyncio.new_event_loop()
        transport = AsyncHTTPXTransport()
        self.async_transport = transport.transport
        self.client = httpx.AsyncClient(transport=transport)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    async def _get(self, url: str) -> Any:
        return await self.client.send(self.client.build_request("GET", url), stream=True)

    def get(self, url: str) -> Any:
        return self._run(self._get(url))

    def read(self, response: Any) -> None:
        self._run(response.aread())

    def close(self, response: Any) -> None:
        self._run(response.aclose())

    async def _settle(self) -> None:
        await asyncio.sleep(0)  # leak reports scheduled on the loop run first
        await self.async_transport.settle()

    def settle(self) -> None:
        self._run(self._settle())

    def workers_alive(self) -> int:
        tasks = asyncio.all_tasks(self.loop)
        return sum(1 for t in tasks if t.get_name().startswith("poolwatch-"))

    def stats(self) -> Any:
        return self.async_transport.stats()

    def shutdown(self) -> None:
        loop = self.loop
        try:
            self._run(self.client.aclose())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


CLIENTS: dict[str, type[DemoClient]] = {
    "native": DemoClient,
    "requests": RequestsClient,
    "httpx": HTTPXClient,
    "httpx-async": HTTPXAsyncClient,
}


def run_loop(loop: Loop, url: str, client: DemoClient) -> tuple[LoopResult, list[Any]]:
    """Run one loop; return its counts and the responses it kept."""
    kept = []
    for _ in range(REQUESTS_PER_LOOP):
        resp = client.get(url)
        if loop.read:
            client.read(resp)
        if loop.close:
            client.close(resp)
        kept.append(resp)  # held, as Go's goroutines hold their responses
    client.settle()
    stats = client.stats()
    result = LoopResult(
        loop, stats.workers_alive + 1, client.workers_alive() + 1, stats.connections_opened
    )
    return result, kept


def run_demo(out: TextIO, client_name: str = "native") -> bool:
    """Run the experiment through ``client_name``, print the table and loop
    1's leak reports. Returns whether every count matched."""
    make_client = CLIENTS[client_name]
    results = []
    reports: list[str] = []
    with loopback_server() as url:
        for loop in LOOPS:
            client = make_client()
            try:
                result, kept = run_loop(loop, url, client)
                results.append(result)
                if loop.number == 1:
                    reports = _leak_reports(client, kept)
                del kept
            finally:
                client.shutdown()
    _print_table(results, client_name, out)
    print(f"\nLoop 1 kept {len(reports)} response bodies open; dropping them reports:", file=out)
    for report in reports:
        print(f"  {report}", file=out)
    ok = all(r.ok for r in results)
    print("\nall counts as expected" if ok else "\nCOUNTS DIFFER FROM EXPECTED", file=out)
    return ok


def _leak_reports(client: DemoClient, kept: list[Any]) -> list[str]:
    """Drop loop 1's responses and collect the leak warnings they raise (R6)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LeakWarning)
        kept.clear()
        gc.collect()
    client.settle()
    return [str(w.message) for w in caught if issubclass(w.category, LeakWarning)]


def _print_table(results: list[LoopResult], client_name: str, out: TextIO) -> None:
    print(
        f"poolwatch seed experiment ({client_name}): 5 GETs per loop, a fresh transport each\n",
        file=out,
    )
    header = (
        f"{'loop':>4}  {'read':>4}  {'close':>5}  {'expected':>8}  "
        f"{'workers+1':>9}  {'threads+1':>9}  {'conns':>5}  ok"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in results:
        loop = r.loop
        print(
            f"{loop.number:>4}  {'yes' if loop.read else 'no':>4}  "
            f"{'yes' if loop.close else 'no':>5}  {loop.expected:>8}  {r.workers:>9}  "
            f"{r.threads:>9}  {r.connections_opened:>5}  {'yes' if r.ok else 'NO'}",
            file=out,
        )
