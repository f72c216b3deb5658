"""Make a few requests and read the pool's statistics, connections,
events and each response's timings. Run: python examples/stats_tour.py"""

from __future__ import annotations

from _server import local_server

import poolwatch


def main() -> None:
    with local_server() as base, poolwatch.Transport() as transport:
        transport.add_listener(lambda event: print(f"  event {event.name} {dict(event.data)}"))
        for path in ("/", "/bytes/1000", "/"):
            with transport.request("GET", base + path) as resp:
                body = resp.read()
                print(f"{resp.status} {path}: {len(body)} bytes, reused={resp.reused_connection}")
            t = resp.timings
            print(f"  timings: head after {t.response_head:.6f}s, body done {t.body_done:.6f}s")
        stats = transport.stats()
        print(
            f"opened={stats.connections_opened} reused={stats.reused_requests} "
            f"drained={stats.bodies_drained} workers={stats.workers_alive}"
        )
        for conn in transport.connections():
            print(f"  {conn}")
        print(repr(transport))


if __name__ == "__main__":
    main()
