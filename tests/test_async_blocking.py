"""No blocking call on the event loop: a representative async workload
(plain, TLS, streaming, uploads, errors, a leak collected) runs under
blockbuster, which fails any blocking call made inside the running loop."""

from __future__ import annotations

import asyncio
import gc
import warnings
from pathlib import Path

import httpx
import pytest
import trustme
from blockbuster import blockbuster_ctx

import poolwatch
from poolwatch.adapters.httpx import AsyncHTTPXTransport
from tests.async_support import assert_at_rest, run
from tests.servers import HTTPServer, ServerConnection, raw_server
from tests.tls_support import client_context, server_context, tls_server

pytestmark = pytest.mark.usefixtures("event_loop_kind")


def _bad_framing(conn: ServerConnection) -> None:
    conn.recv_request_head()
    conn.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")


def test_async_workload_never_blocks_the_loop(server: HTTPServer, tmp_path: Path) -> None:
    ca = trustme.CA()
    upload_file = tmp_path / "upload.bin"
    upload_file.write_bytes(b"f" * 200000)
    context = client_context(ca)  # made (reading files) before the loop runs

    async def upload() -> object:
        yield b"a" * 70000
        yield b"b" * 70000

    async def main(plain: str, tls: str, bad: str) -> None:
        async with (
            poolwatch.AsyncTransport(ssl_context=context, read_timeout=5) as t,
            AsyncHTTPXTransport(verify=context) as adapter,
        ):
            for _ in range(3):
                assert await (await t.request("GET", plain + "bytes/100000")).read()
                assert await (await t.request("GET", tls)).read() == b"hello world!\n"
            stream = await t.request("GET", plain + "stream")
            async for chunk in stream.aiter_bytes():
                assert chunk
                break
            await stream.aclose()
            echoed = await t.request("POST", plain + "echo", body=upload())
            assert len(await echoed.read()) == 140000
            with upload_file.open("rb") as f:  # read in a thread, off the loop
                echoed = await t.request("POST", plain + "echo", body=f)
                assert await echoed.read() == b"f" * 200000
            with pytest.raises(poolwatch.RemoteProtocolError):
                await (await t.request("GET", bad)).read()
            with pytest.raises(poolwatch.ConnectError):
                await t.request("GET", "http://127.0.0.1:1/")
            leaked = await t.request("GET", plain + "stream")
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                del leaked
                gc.collect()
            while t.open_bodies():
                await asyncio.sleep(0)
            await assert_at_rest(t)
            async with httpx.AsyncClient(transport=adapter) as client:
                assert (await client.get(tls)).text == "hello world!\n"

    with tls_server(server_context(ca, "127.0.0.1")) as tls_srv, raw_server(_bad_framing) as bad:
        tls_url = f"https://127.0.0.1:{tls_srv.port}/"
        with blockbuster_ctx() as bb:
            run(lambda: main(server.url("/"), tls_url, bad.url()))
        assert bb.functions  # blockbuster was active
