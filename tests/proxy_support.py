"""proxy.py on loopback for the proxy tests, started per module."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

CREDENTIALS = "user:secret"


def free_port() -> int:
    """A loopback port nothing listens on (closed again at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def proxy_py(*options: str) -> Iterator[int]:
    """Run proxy.py on 127.0.0.1 with basic authentication (``CREDENTIALS``)
    and ``options``; yield its port once it accepts connections."""
    port = free_port()
    command = [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", str(port)]
    command += ["--basic-auth", CREDENTIALS, "--num-acceptors", "1", "--num-workers", "1"]
    process = subprocess.Popen(
        [*command, *options], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait_until_listening(port, process)
        yield port
    finally:
        process.terminate()
        process.wait(10)
        assert process.stderr is not None
        process.stderr.close()


def _wait_until_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    """Connect until the proxy accepts (each attempt blocks on the kernel)."""
    for _ in range(200):
        if process.poll() is not None:
            raise RuntimeError("proxy.py exited at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            # Not listening yet: wait on the process briefly instead of spinning.
            try:
                process.wait(0.05)
            except subprocess.TimeoutExpired:
                pass
    raise RuntimeError("proxy.py did not start listening")
