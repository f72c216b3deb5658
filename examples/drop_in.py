"""requests and httpx on poolwatch: one line each, and the pool shows what
streaming responses do. Run: python examples/drop_in.py"""

from __future__ import annotations

import httpx
import requests
from _server import local_server

import poolwatch


def main() -> None:
    with local_server() as base:
        session = requests.Session()
        adapter = poolwatch.RequestsAdapter()
        session.mount("http://", adapter)
        for _ in range(3):
            session.get(base + "/").raise_for_status()
        forgotten = session.get(base + "/", stream=True)  # never read, never closed
        stats = adapter.stats()
        print(
            f"requests: {stats.requests} requests, {stats.connections_opened} connections, "
            f"{stats.open_bodies} open body from {adapter.transport.open_bodies()[0].call_site}"
        )
        forgotten.close()
        session.close()

        transport = poolwatch.HTTPXTransport()
        with httpx.Client(transport=transport) as client:
            for _ in range(3):
                client.get(base + "/").raise_for_status()
            stats = transport.stats()
            print(
                f"httpx: {stats.requests} requests, {stats.connections_opened} connections, "
                f"{stats.reused_requests} reused"
            )


if __name__ == "__main__":
    main()
