"""The asyncio transport: concurrent requests under a per-host limit, a body
closed early, and the pool's statistics. Run: python examples/async_tour.py"""

from __future__ import annotations

import asyncio

from _server import local_server

import poolwatch


async def main(base: str) -> None:
    async with poolwatch.AsyncTransport(max_connections_per_host=4) as transport:

        async def get(path: str) -> int:
            async with await transport.request("GET", base + path) as resp:
                return len(await resp.read())

        sizes = await asyncio.gather(*(get(f"/bytes/{n}") for n in range(1, 21)))
        print(f"20 concurrent GETs: {sum(sizes)} bytes")
        resp = await transport.request("GET", base + "/bytes/100000")
        await resp.read(10)
        await resp.aclose()  # before the end: the connection is torn down (R5)
        print(f"closed early: outcome={resp.outcome}")
        stats = transport.stats()
        print(
            f"opened={stats.connections_opened} closed={stats.connections_closed} "
            f"requests={stats.requests} workers={stats.workers_alive} (tasks)"
        )
        print(repr(transport))


if __name__ == "__main__":
    with local_server() as base:
        asyncio.run(main(base))
