"""Find the code that forgot to read or close a response.
Run: python examples/find_leaks.py"""

from __future__ import annotations

from _server import local_server

import poolwatch


def fetch_status(transport: poolwatch.Transport, url: str) -> int:
    """Looks harmless, but never reads or closes the body."""
    return transport.request("GET", url).status


def main() -> None:
    with local_server() as base, poolwatch.Transport() as transport:
        kept = [transport.request("GET", base + "/") for _ in range(2)]  # held, unread
        print("status:", fetch_status(transport, base + "/"))
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
