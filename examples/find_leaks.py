"""Find the code that forgot to read or close a response: the leak report
and the bodies still open each name the line that made the request.
Run: python examples/find_leaks.py"""

from __future__ import annotations

from _server import local_server

import poolwatch


def fetch_status(transport: poolwatch.Transport, url: str) -> int:
    """Looks harmless, but never reads or closes the body."""
    return transport.request("GET", url).status


def main() -> None:
    with local_server() as base, poolwatch.Transport() as transport:
        leaks: list[poolwatch.Event] = []
        transport.add_listener(lambda e: leaks.append(e) if e.name == "leak_detected" else None)
        kept = [transport.request("GET", base + "/") for _ in range(2)]  # held, unread
        print("status:", fetch_status(transport, base + "/"))
        # The dropped response is counted as leaked, and its connection torn
        # down, by the connection's worker: settle() waits for that, so the
        # snapshots below show it as leaked rather than as still open.
        transport.settle()
        for leak in leaks:
            print(f"leaked: {leak.data['method']} {leak.url}, from {leak.data['call_site']}")
        for body in transport.open_bodies():
            print(
                f"open body: {body.method} {body.url}, {body.age:.3f}s old, from {body.call_site}"
            )
        stats = transport.stats()
        print(
            f"open bodies={stats.open_bodies} leaked={stats.bodies_leaked} "
            f"active connections={stats.active_connections}"
        )
        for resp in kept:
            resp.close()


if __name__ == "__main__":
    main()
