"""``python -m poolwatch get``: phases, reuse, errors and JSON output."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import poolwatch
from poolwatch.__main__ import main
from poolwatch._cli import get_urls
from tests.servers import HTTPServer


def test_get_shows_reuse_and_phases(server: HTTPServer) -> None:
    """Two URLs of one origin: the second reuses the first's connection."""
    out = io.StringIO()
    status = get_urls([server.url("/"), server.url("/bytes/100")], out, verbose=True)
    text = out.getvalue()
    assert status == 0
    assert "on connection #" in text and "(new)" in text and "(reused)" in text
    assert "connected" in text and "< Content-Length: 100" in text
    assert "2 requests, 1 connections opened, 1 reused" in text
    assert all(len(line) <= 80 for line in text.splitlines() if not line.startswith("* GET"))
    assert server.accepted == 1


def test_get_json_and_failure_status(server: HTTPServer) -> None:
    """--json gives one record per URL; a refused URL makes the exit status 1."""
    out = io.StringIO()
    status = get_urls([server.url("/"), "http://127.0.0.1:1/"], out, as_json=True)
    data = json.loads(out.getvalue())
    assert status == 1
    first, second = data["requests"]
    assert first["status"] == 200 and first["bytes"] == 13 and first["outcome"] == "drained"
    assert first["timings_ms"]["body_done"] >= first["timings_ms"]["response_head"]
    assert "ConnectError" in second["error"]
    assert data["stats"]["connections_opened"] == 1


def test_get_never_prints_a_password(server: HTTPServer) -> None:
    """A URL's password is sent (as Basic auth) but shown as ``***``, in
    text and JSON, for a request that succeeds and for one that fails."""
    good = server.url("/").replace("://", "://alice:s3cr3t@")
    refused = "http://alice:s3cr3t@127.0.0.1:1/"
    for as_json in (False, True):
        out = io.StringIO()
        assert get_urls([good, refused], out, as_json=as_json) == 1
        assert "s3cr3t" not in out.getvalue()
        assert "alice:***@127.0.0.1" in out.getvalue()


def test_main_dispatches_get(server: HTTPServer, capsys: object) -> None:
    """The command line parses ``get`` and its flags."""
    assert main(["get", server.url("/")]) == 0


def test_stats_watches_a_load(server: HTTPServer) -> None:
    """``stats`` prints every live transport's per-origin stats while a load
    runs, and once more at the end (JSON lines with --json)."""
    import poolwatch
    from poolwatch._cli import watch_stats

    transport = poolwatch.Transport()

    def load() -> None:
        for _ in range(3):
            transport.request("GET", server.url()).read()

    out = io.StringIO()
    try:
        assert watch_stats(load, out, interval=0.01, as_json=True) == 0
        last = json.loads(out.getvalue().splitlines()[-1])
        mine = [row for row in last if row["origin"] == server.origin]
        assert [row["requests"] for row in mine] == [3]
        table = io.StringIO()
        watch_stats(lambda: None, table, interval=0.01)
        lines = table.getvalue().splitlines()
        assert lines[0].split()[:2] == ["tr", "origin"] and "reus" in lines[0]
        assert any(server.origin in line for line in lines)
        assert all(len(line) <= 80 for line in lines)
    finally:
        transport.close()


def test_stats_reports_a_failing_load() -> None:
    """A load that raises makes the exit status 1."""
    from poolwatch._cli import watch_stats

    def load() -> None:
        raise RuntimeError("boom")

    out = io.StringIO()
    assert watch_stats(load, out, interval=0.01) == 1
    assert "boom" in out.getvalue()


class _SharedOutput(io.StringIO):
    """Standard output shared with the program being watched, which gets a
    line of its own in after every write of the watcher."""

    def write(self, text: str) -> int:
        written = super().write(text)
        super().write("the watched program's line\n")
        return written


@pytest.mark.parametrize("as_json", [True, False])
def test_stats_snapshots_are_not_split_by_other_output(server: HTTPServer, as_json: bool) -> None:
    """Each snapshot leaves in one write, so output of the program being
    watched never lands inside one of its lines."""
    from poolwatch._cli import watch_stats

    with poolwatch.Transport() as transport:
        transport.request("GET", server.url()).read()  # a row to show
        out = _SharedOutput()
        assert watch_stats(lambda: None, out, interval=0.01, as_json=as_json) == 0
    ours = [line for line in out.getvalue().splitlines() if "watched program" not in line]
    if as_json:
        rows = [row for line in ours for row in json.loads(line)]
        assert [row["requests"] for row in rows if row["origin"] == server.origin] == [1]
    else:
        assert ours[0].split()[:2] == ["tr", "origin"] and ours[-1] == ""
        rows = ours[1:-1]
        assert any(server.origin in row for row in rows)
        assert all(row.split()[1].startswith(("http://", "https://")) for row in rows)


@pytest.mark.parametrize("interval", ["-1", "0", "nan", "inf", "soon"])
def test_stats_refuses_an_interval_that_is_not_a_time(
    interval: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--interval`` must be a finite number of seconds above 0: a negative
    or zero one printed tables without pause."""
    with pytest.raises(SystemExit) as info:
        main(["stats", "--demo", "--interval", interval])
    assert info.value.code == 2
    assert "not a number of seconds above 0" in capsys.readouterr().err


def test_stats_tells_transports_of_one_origin_apart(server: HTTPServer) -> None:
    """Two transports to one origin are two rows, each with its number."""
    from poolwatch._cli import watch_stats

    with poolwatch.Transport() as first, poolwatch.Transport() as second:
        for transport, count in ((first, 3), (second, 1)):
            for _ in range(count):
                transport.request("GET", server.url()).read()
        out = io.StringIO()
        assert watch_stats(lambda: None, out, interval=0.01, as_json=True) == 0
    rows = [row for row in json.loads(out.getvalue().splitlines()[-1])]
    mine = sorted(
        (row["requests"], row["transport"]) for row in rows if row["origin"] == server.origin
    )
    assert [requests for requests, _ in mine] == [1, 3]
    assert len({number for _, number in mine}) == 2


def _poolwatch_stats(script: Path, *args: str) -> subprocess.Popen[str]:
    # Ctrl-C as a terminal would give it, though the tests' own runner may
    # have been started with SIGINT ignored (as a shell's background jobs
    # are), which a child would inherit.
    return subprocess.Popen(
        [sys.executable, "-m", "poolwatch", "stats", "--interval", "0.05", str(script), *args],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_stats_passes_arguments_and_exit_status(tmp_path: Path) -> None:
    """The script gets its own ``sys.argv``; its ``sys.exit()`` code is the
    command's (0 is success, not a failed load)."""
    script = tmp_path / "load.py"
    script.write_text("import sys\nprint('argv', sys.argv[1:])\nsys.exit(int(sys.argv[1]))\n")
    for code in ("0", "7"):
        with _poolwatch_stats(script, code, "--flag") as process:
            out, _ = process.communicate(timeout=60)
        assert process.returncode == int(code)
        assert f"argv ['{code}', '--flag']" in out
        assert "failed" not in out


def test_stats_stops_on_ctrl_c(tmp_path: Path) -> None:
    """Ctrl-C ends the command at once (status 130), with a last table,
    though the script would run on."""
    script = tmp_path / "forever.py"
    script.write_text("import threading\nprint('started', flush=True)\nthreading.Event().wait()\n")
    with _poolwatch_stats(script) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("tr "):  # a table: the watcher is watching
                break
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "* interrupted" in out


def test_stats_numbers_are_never_given_twice(server: HTTPServer) -> None:
    """A transport's number stays its own, even once others are gone."""
    import gc

    from poolwatch._cli import Numbers

    numbers = Numbers()
    first, second = poolwatch.Transport(), poolwatch.Transport()
    given = [numbers.of(first), numbers.of(second)]
    first.close()
    del first
    gc.collect()
    third = poolwatch.Transport()
    given.append(numbers.of(third))
    assert numbers.of(second) == given[1]
    assert len(set(given)) == 3
    second.close()
    third.close()


def _last_table(out: str) -> list[str]:
    """The last table ``stats`` printed: its header, then its rows."""
    lines = out.splitlines()
    start = max(index for index, line in enumerate(lines) if line.startswith("tr "))
    end = lines.index("", start)
    return lines[start:end]


def test_stats_columns_stay_apart_past_four_digits(server: HTTPServer, tmp_path: Path) -> None:
    """Counters of five digits widen their columns: every value stays its
    own word under its header, and the table still fits in 80 columns."""
    script = tmp_path / "many.py"
    script.write_text(
        "import sys\n"
        "import poolwatch\n"
        "transport = poolwatch.Transport()\n"
        "for _ in range(10_001):\n"
        "    transport.request('GET', sys.argv[1]).read()\n"
        "transport.close()\n"
    )
    with _poolwatch_stats(script, server.url("/zero")) as process:
        out, _ = process.communicate(timeout=120)
    assert process.returncode == 0
    header, *rows = _last_table(out)
    mine = [row for row in rows if server.origin in row]
    assert len(mine) == 1
    labels, values = header.split(), mine[0].split()
    assert len(values) == len(labels)
    shown = dict(zip(labels, values, strict=True))
    assert (shown["reqs"], shown["reus"], shown["wrkr"]) == ("10001", "10000", "0")
    # Numbers end under their labels' ends; the origin starts under its own.
    label_spans = [match.span() for match in re.finditer(r"\S+", header)]
    for row in rows:
        spans = [match.span() for match in re.finditer(r"\S+", row)]
        assert spans[1][0] == label_spans[1][0]
        assert [end for _, end in spans[2:]] == [end for _, end in label_spans[2:]]
    assert all(len(line) <= 80 for line in [header, *rows])


def test_stats_runs_the_script_on_the_main_thread(server: HTTPServer, tmp_path: Path) -> None:
    """The script runs on the main thread, as ``python SCRIPT`` does, so it
    may install a signal handler; a signal it handles ends it with the
    status it chose, and the last table is printed."""
    script = tmp_path / "service.py"
    script.write_text(
        "import signal, sys, threading\n"
        "import poolwatch\n"
        "def stop(signum, frame):\n"
        "    print('stopping', flush=True)\n"
        "    sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "transport = poolwatch.Transport()\n"
        "transport.request('GET', sys.argv[1]).read()\n"
        "main = threading.current_thread() is threading.main_thread()\n"
        "print('main thread:', main, flush=True)\n"
        "try:\n"
        "    threading.Event().wait()\n"
        "finally:\n"
        "    transport.close()\n"
    )
    line = ""
    with _poolwatch_stats(script, server.url()) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("main thread:"):
                process.send_signal(signal.SIGTERM)
                break
        out, _ = process.communicate(timeout=30)
    assert line == "main thread: True\n"
    assert process.returncode == 3
    assert out.startswith("stopping\n")
    header, *rows = _last_table(out)
    mine = [dict(zip(header.split(), row.split(), strict=True)) for row in rows]
    assert [row["reqs"] for row in mine if row["origin"] == server.origin] == ["1"]


def test_stats_runs_a_script_with_asyncio_signal_handlers(
    server: HTTPServer, tmp_path: Path
) -> None:
    """A script that gives its event loop a signal handler (a graceful
    shutdown) runs as it would alone; its exit status is the command's."""
    script = tmp_path / "shutdown.py"
    script.write_text(
        "import asyncio, os, signal, sys\n"
        "import poolwatch\n"
        "async def main() -> int:\n"
        "    stopped = asyncio.Event()\n"
        "    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)\n"
        "    async with poolwatch.AsyncTransport() as transport:\n"
        "        response = await transport.request('GET', sys.argv[1])\n"
        "        await response.read()\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        await stopped.wait()\n"
        "    print('shut down', flush=True)\n"
        "    return 4\n"
        "sys.exit(asyncio.run(main()))\n"
    )
    with _poolwatch_stats(script, server.url()) as process:
        out, _ = process.communicate(timeout=60)
    assert process.returncode == 4
    assert "shut down" in out and "failed" not in out
    assert _last_table(out)[0].split()[:2] == ["tr", "origin"]


def test_stats_ctrl_c_reaches_the_script(tmp_path: Path) -> None:
    """Ctrl-C interrupts the script itself, which may clean up on its way
    out; then the last table is printed and the status is 130."""
    script = tmp_path / "tidy.py"
    script.write_text(
        "import threading\n"
        "try:\n"
        "    print('waiting', flush=True)\n"
        "    threading.Event().wait()\n"
        "except KeyboardInterrupt:\n"
        "    print('cleaning up', flush=True)\n"
        "    raise\n"
    )
    with _poolwatch_stats(script) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if line == "waiting\n":
                process.send_signal(signal.SIGINT)
                break
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "cleaning up" in out
    assert out.index("cleaning up") < out.rindex("tr origin") < out.index("* interrupted")


def test_stats_runs_the_load_on_the_calling_thread() -> None:
    """The load runs on the thread calling ``watch_stats`` while tables are
    printed from another; a ``KeyboardInterrupt`` it raises is Ctrl-C."""
    from poolwatch._cli import watch_stats

    printed = threading.Event()

    class Output(io.StringIO):
        def write(self, text: str) -> int:
            printed.set()
            return super().write(text)

    ran: list[tuple[threading.Thread, bool]] = []

    def load() -> None:
        ran.append((threading.current_thread(), printed.wait(30)))

    out = Output()
    assert watch_stats(load, out, interval=0.01) == 0
    assert ran == [(threading.current_thread(), True)]

    def interrupted() -> None:
        raise KeyboardInterrupt

    out = Output()
    assert watch_stats(interrupted, out, interval=0.01) == 130
    assert out.getvalue().endswith("* interrupted\n")
    assert "failed" not in out.getvalue()


def test_stats_output_failing_lets_the_load_finish() -> None:
    """Output that cannot be written stops the tables, not the load: it
    runs to its end on the calling thread, then the failure is raised."""
    from poolwatch._cli import watch_stats

    tried = threading.Event()

    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            tried.set()
            raise BrokenPipeError("closed")

    finished: list[threading.Thread] = []

    def load() -> None:
        assert tried.wait(30)
        finished.append(threading.current_thread())

    with pytest.raises(BrokenPipeError):
        watch_stats(load, Closed(), interval=0.01)
    assert finished == [threading.current_thread()]
