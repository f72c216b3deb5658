"""Start and stop the loopback server the benchmark talks to, in a process of
its own: Debian's nginx when ``nginx`` is on PATH, otherwise the built-in
asyncio server (:mod:`benchmarks.builtin_server`).

Both serve the same paths (``/tiny``, ``/1m``, ``POST /post``) on
127.0.0.1 and report how many connections they have accepted on
``GET /stats`` (nginx through ``stub_status``), so the harness can tell how
many connections each client opened.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .spec import HOST, ONE_MIB, TINY_BODY

__all__ = ["ServerHandle", "child_setup", "fetch", "start_server"]

STARTUP_TIMEOUT = 10.0  # seconds for the server to accept its first connection
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

_NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
{affinity}
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 100000000;  # nginx's default (1000) would close on us
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen {host}:{port} backlog=4096;
        location = /tiny {{ default_type text/plain; return 200 "{tiny}"; }}
        location = /1m {{ default_type application/octet-stream; root {tmp}/www; }}
        location = /post {{
            client_body_buffer_size 128k;
            client_max_body_size 1m;
            default_type text/plain;
            return 200 "ok";
        }}
        location = /stats {{ stub_status; }}
    }}
}}
"""


@dataclass
class ServerHandle:
    """A running server: its kind, a one-line description and its port."""

    kind: str  # "nginx" or "builtin"
    description: str
    port: int
    pid: int  # the server's (nginx's master) process id

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{HOST}:{self.port}"

    def accepted(self) -> int | None:
        """Connections accepted so far, counting the one this call opens;
        ``None`` if the server cannot tell."""
        try:
            body = fetch(self.port, "/stats")
        except OSError:
            return None
        if self.kind == "builtin":
            return int(json.loads(body)["accepted"])
        # stub_status: "Active connections: 1\nserver accepts handled requests\n 5 5 9\n..."
        lines = body.decode("ascii", "replace").splitlines()
        return int(lines[2].split()[0]) if len(lines) > 2 else None


def fetch(port: int, path: str, context: ssl.SSLContext | None = None) -> bytes:
    """GET ``path`` from 127.0.0.1:``port`` on a fresh connection (over TLS
    with ``context``); the body."""
    with socket.create_connection((HOST, port), timeout=5) as raw:
        sock = raw if context is None else context.wrap_socket(raw, server_hostname=HOST)
        with sock:
            request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
            sock.sendall(request.encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise OSError(f"GET {path} on port {port}: {head[:40]!r}")
    return body


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def child_setup(cpu: int | None) -> Callable[[], None]:
    """A ``preexec_fn`` for a child process: pin it to ``cpu`` (unless
    ``None``) and have the kernel stop it if the harness dies."""

    def setup() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass

    return setup


def _wait_until_listening(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening")
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {HOST}:{port} within {STARTUP_TIMEOUT}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def nginx_version(binary: str) -> str:
    """``nginx/1.22.1``, as ``nginx -v`` prints it."""
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return (out.stderr or out.stdout).strip().rpartition(" ")[2]


@contextmanager
def _nginx(binary: str, cpu: int | None) -> Iterator[ServerHandle]:
    with tempfile.TemporaryDirectory(prefix="poolwatch-bench-") as tmp:
        os.chmod(tmp, 0o755)  # nginx's workers run as nobody and read /1m
        www = Path(tmp, "www")
        www.mkdir(mode=0o755)
        (www / "1m").write_bytes(b"x" * ONE_MIB)
        port = _free_port()
        affinity = "" if cpu is None else f"worker_cpu_affinity {1 << cpu:b};"
        tiny = TINY_BODY.decode().replace("\n", "\\n")
        conf = Path(tmp, "nginx.conf")
        conf.write_text(
            _NGINX_CONF.format(affinity=affinity, tmp=tmp, host=HOST, port=port, tiny=tiny)
        )
        command = [binary, "-p", tmp, "-c", str(conf), "-e", f"{tmp}/error.log"]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, preexec_fn=child_setup(cpu))
        try:
            _wait_until_listening(port, process, "nginx")
            version = nginx_version(binary)
            yield ServerHandle(
                "nginx", f"{version}, 1 worker, stub_status counts", port, process.pid
            )
        finally:
            _stop(process)


@contextmanager
def _builtin(cpu: int | None) -> Iterator[ServerHandle]:
    with run_server_process("benchmarks.builtin_server", [], cpu, "the built-in server") as (
        port,
        pid,
    ):
        try:
            loop = f"uvloop {importlib.metadata.version('uvloop')}"
        except importlib.metadata.PackageNotFoundError:
            loop = "asyncio"
        yield ServerHandle("builtin", f"built-in asyncio server on {loop}", port, pid)


@contextmanager
def run_server_process(
    module: str, args: list[str], cpu: int | None, what: str
) -> Iterator[tuple[int, int]]:
    """Run ``python -m module args`` (a server that prints ``PORT <n>`` and
    stops when its standard input closes, see :func:`serve_until_stopped`)
    for the ``with`` block; yield its port and process id."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdin=subprocess.PIPE,  # closing it stops the server
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
        preexec_fn=child_setup(cpu),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        if not line.startswith("PORT "):
            raise RuntimeError(f"{what} did not start: {line!r}")
        port = int(line.split()[1])
        _wait_until_listening(port, process, what)
        yield port, process.pid
    finally:
        if process.stdin is not None:
            process.stdin.close()
        _stop(process)
        if process.stdout is not None:
            process.stdout.close()


async def serve_until_stopped(server: asyncio.Server) -> None:
    """The server side of :func:`run_server_process`: print ``PORT <n>``,
    then serve until SIGTERM, SIGINT or the end of standard input (the
    harness went away, so a server never outlives it)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    stdin = sys.stdin.fileno()

    def on_stdin() -> None:
        if not os.read(stdin, 4096):
            loop.remove_reader(stdin)
            stop.set()

    loop.add_reader(stdin, on_stdin)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()


@contextmanager
def start_server(kind: str, cpu: int | None) -> Iterator[ServerHandle]:
    """Run a server for the ``with`` block. ``kind`` is ``"nginx"``,
    ``"builtin"`` or ``"auto"`` (nginx when it is on PATH)."""
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if kind == "nginx" and binary is None:
        raise RuntimeError("--server nginx: no nginx on PATH")
    if kind in ("nginx", "auto") and binary is not None:
        with _nginx(binary, cpu) as handle:
            yield handle
    else:
        with _builtin(cpu) as handle:
            yield handle
