"""gevent's and eventlet's monkey-patching turn threads into green threads
that share one OS thread: the sync transport's workers, which block on
sockets and eventfds, would stop each other and a request would hang past
every timeout. The transport refuses to start instead. Each patched run is
a process of its own (monkey-patching cannot be undone)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from poolwatch._sync.workers import refuse_green_threads

ROOT = Path(__file__).resolve().parent.parent

PATCHES = {
    "gevent": "from gevent import monkey; monkey.patch_all()",
    "eventlet": "import eventlet; eventlet.monkey_patch()",
}

SCRIPT = """
{patch}
import poolwatch
try:
    poolwatch.Transport()
except RuntimeError as exc:
    print("refused:", exc)
else:
    print("made")
"""


@pytest.mark.parametrize("library", sorted(PATCHES))
def test_transport_refuses_monkey_patched_threads(library: str) -> None:
    pytest.importorskip(library)
    script = SCRIPT.format(patch=PATCHES[library])
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        f"refused: poolwatch.Transport needs real threads, and {library} has "
        "monkey-patched threading"
    ), done.stdout
    assert "poolwatch.AsyncTransport" in done.stdout


def test_imported_but_unpatched_is_fine() -> None:
    """gevent imported, threading left alone: real threads, no refusal."""
    pytest.importorskip("gevent")
    import gevent.monkey

    assert not gevent.monkey.is_module_patched("threading")
    refuse_green_threads()
