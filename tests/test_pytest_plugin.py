"""The pytest plugin, run on small suites in a pytest subprocess (pytester)
against a loopback server each suite starts itself.

The plugin is loaded the way an installed poolwatch loads it: through a
``pytest11`` entry point, declared here by a throwaway distribution's
metadata on the subprocess's path.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = """
import pytest
from tests.servers import http_server

@pytest.fixture(scope="session")
def base():
    with http_server() as srv:
        yield f"http://127.0.0.1:{srv.port}"
"""


def entry_point() -> str:
    """The plugin module named by pyproject.toml's pytest11 entry point."""
    text = (ROOT / "pyproject.toml").read_text()
    found = re.search(r'^\[project\.entry-points\.pytest11\]\npoolwatch = "([\w.]+)"', text, re.M)
    assert found is not None, "pyproject.toml declares no pytest11 entry point"
    return found.group(1)


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester directory where poolwatch's plugin is installed (entry
    point metadata only) and ``base`` is a loopback server's URL."""
    site = pytester.mkdir("site")
    dist = site / "poolwatch_plugin_under_test-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: poolwatch-plugin-under-test\nVersion: 0\n"
    )
    (dist / "entry_points.txt").write_text(f"[pytest11]\npoolwatch = {entry_point()}\n")
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{site}")
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    # Other installed plugins only slow each run down; ``run`` loads this one.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeconftest(CONFTEST)
    return pytester


def run(suite: pytest.Pytester, *args: str) -> pytest.RunResult:
    """Run pytest on ``suite`` in a subprocess, with the plugin loaded."""
    return suite.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", entry_point(), *args, timeout=60
    )


def line_of(source: str, marker: str) -> int:
    """The line number, in ``source`` as written to a file, of ``marker``."""
    lines = textwrap.dedent(source).strip().splitlines()  # as pytester writes it
    return next(i for i, line in enumerate(lines, 1) if marker in line)


def error_section(result: pytest.RunResult, test: str) -> str:
    """The plugin's report in the teardown error of ``test`` (without the
    captured output pytest prints after it)."""
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if f"ERROR at teardown of {test} " in line)
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i][:3] in ("___", "---", "===")),
        len(lines),
    )
    return "\n".join(lines[start:end])


MAIN = """
import gc
import requests, httpx, pytest
import mylib

held = []

def test_leak_requests(base):
    r = requests.Session().get(base + "/leak-requests", stream=True)  # LEAK-R
    assert r.status_code == 200

def test_leak_httpx(base):
    client = httpx.Client()
    request = client.build_request("GET", base + "/leak-httpx")
    held.append(client.send(request, stream=True))  # LEAK-X

def test_leak_in_code_under_test(base):
    held.append(mylib.fetch(base + "/leak-lib"))

def test_clean(base):
    assert requests.get(base + "/ok").text == "hello world!\\n"
    assert httpx.get(base + "/ok").text == "hello world!\\n"
    with requests.Session().get(base + "/stream", stream=True) as r:
        assert r.raw.read(10)

def test_drained_not_closed(base):
    session, client = requests.Session(), httpx.Client()
    r = session.get(base + "/chunked/5000", stream=True)
    assert len(r.raw.read()) == 5000  # R4: read to the end, never closed
    x = client.send(client.build_request("GET", base + "/bytes/5000"), stream=True)
    assert len(x.read()) == 5000
    held.extend([r, x])

def test_closed_early(base):
    session, client = requests.Session(), httpx.Client()
    r = session.get(base + "/stream", stream=True)
    r.raw.read(5)
    r.close()  # R5
    x = client.send(client.build_request("GET", base + "/stream"), stream=True)
    x.close()
    held.extend([r, x])

@pytest.mark.poolwatch_ignore
def test_ignored(base):
    held.append(requests.Session().get(base + "/leak-ignored", stream=True))

@pytest.mark.poolwatch(mode="off")
def test_marker_off(base):
    held.append(requests.Session().get(base + "/leak-off", stream=True))

@pytest.mark.poolwatch("warn")
def test_marker_warn(base):
    held.append(requests.Session().get(base + "/leak-warn", stream=True))

abandoned = []

def test_abandoned_session(base):
    session = requests.Session()
    session.get(base + "/ok")
    abandoned.append(session.get_adapter(base).transport)
    del session
    gc.collect()

def test_abandoned_session_idle_connection_closed():
    transport = abandoned[0]
    transport.settle()
    assert (transport.stats().connections_opened, transport.stats().workers_alive) == (1, 0)

def test_stats(base, poolwatch_stats):
    session = requests.Session()
    for _ in range(3):
        session.get(base + "/ok")
    with httpx.Client() as client:
        client.get(base + "/ok")
        client.get(base + "/ok")
    stats = poolwatch_stats()
    assert len(poolwatch_stats.transports) == 2
    assert (stats.requests, stats.connections_opened, stats.reused_requests) == (5, 2, 3)
"""

MYLIB = """
import requests

def fetch(url):
    return requests.get(url, stream=True)  # LEAK-LIB
"""


def test_fail_mode_reports_leaks_and_passes_the_rest(suite: pytest.Pytester) -> None:
    """Leaks through requests, httpx and code under test fail their test,
    naming method, URL and the user's line; drained-but-unclosed (R4) and
    early-closed (R5) bodies, exempted tests and clean tests pass; an
    abandoned session's idle connection is closed after its test."""
    suite.makepyfile(test_main=MAIN, mylib=MYLIB)
    result = run(suite, "--poolwatch", "--strict-markers", "-rA")
    result.assert_outcomes(passed=12, errors=3)
    leak_r = error_section(result, "test_leak_requests")
    assert "1 response body leaked" in leak_r
    assert "/leak-requests: body garbage-collected unclosed" in leak_r
    assert "GET http://127.0.0.1:" in leak_r
    assert f"test_main.py:{line_of(MAIN, 'LEAK-R')} in test_leak_requests" in leak_r
    assert "requests/" not in leak_r and "poolwatch/" not in leak_r
    leak_x = error_section(result, "test_leak_httpx")
    assert "/leak-httpx: body still open" in leak_x
    assert f"test_main.py:{line_of(MAIN, 'LEAK-X')} in test_leak_httpx" in leak_x
    leak_lib = error_section(result, "test_leak_in_code_under_test")
    assert f"mylib.py:{line_of(MYLIB, 'LEAK-LIB')} in fetch" in leak_lib
    assert "test_main.py" in leak_lib  # the test's line below it
    out = result.stdout.str()
    for quiet in ("leak-ignored", "leak-off"):
        assert quiet not in out
    assert "poolwatch: leaked response bodies" in out  # the warn marker's summary
    assert "test_main.py::test_marker_warn: poolwatch: 1 response body leaked" in out


LEAKY = """
import requests

def test_leaks(base):
    requests.Session().get(base + "/leak", stream=True)  # LEAK

def test_clean(base):
    requests.get(base + "/ok")
"""


def test_installed_plugin_loads_through_its_entry_point(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With poolwatch installed, ``--poolwatch`` works with no ``-p``."""
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    suite.makepyfile(test_leaky=LEAKY)
    # A path right after the flag stays a path (as with addopts = --poolwatch).
    result = suite.runpytest_subprocess(
        "-p", "no:cacheprovider", "--poolwatch", "test_leaky.py", timeout=60
    )
    result.assert_outcomes(passed=2, errors=1)
    # Named by whichever distribution declares it: poolwatch itself when it
    # is installed, otherwise the stand-in metadata above.
    result.stdout.re_match_lines([r"plugins: .*poolwatch-(0|plugin-under-test)"])
    assert "/leak: body garbage-collected unclosed" in error_section(result, "test_leaks")


@pytest.mark.parametrize(
    ("ini", "args", "reported"),
    [
        ("", ["--poolwatch=warn"], True),
        ("poolwatch = warn", [], True),
        ("poolwatch = fail", ["--poolwatch=off"], False),
        ("", [], False),
    ],
)
def test_warn_and_off_modes_pass(
    suite: pytest.Pytester, ini: str, args: list[str], reported: bool
) -> None:
    """In warn mode a leak is a summary line and the test passes; off (the
    default) changes nothing."""
    suite.makeini(f"[pytest]\n{ini}\n")
    suite.makepyfile(test_leaky=LEAKY)
    result = run(suite, *args)
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert ("test_leaky.py::test_leaks: poolwatch: 1 response body leaked" in out) is reported
    assert ("/leak: body garbage-collected unclosed" in out) is reported


def test_bad_mode_is_a_usage_error(suite: pytest.Pytester) -> None:
    suite.makeini("[pytest]\npoolwatch = loud\n")
    suite.makepyfile(test_leaky=LEAKY)
    result = run(suite)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "poolwatch = 'loud'; expected one of fail, warn, off" in result.stderr.str()


NO_HTTP = """
import sys, threading
import pytest

def test_stats_fixture(request):
    if request.config.getoption("poolwatch") is None:
        with pytest.raises(pytest.fail.Exception, match="needs the plugin on"):
            request.getfixturevalue("poolwatch_stats")
    else:
        stats = request.getfixturevalue("poolwatch_stats")
        assert stats().requests == 0 and stats.transports == []

def test_one():
    assert sum(range(10)) == 45

def test_two(request):
    active = request.config.pluginmanager.get_plugin("poolwatch-active")
    assert (active is not None) is (request.config.getoption("poolwatch") is not None)
    if active is not None:
        assert active.tracker.transports_created == 0
    assert "requests" not in sys.modules and "httpx" not in sys.modules
    assert threading.enumerate() == [threading.main_thread()]
"""


@pytest.mark.parametrize("args", [["--poolwatch"], []])
def test_costs_nothing_without_http(suite: pytest.Pytester, args: list[str]) -> None:
    """With the plugin on and no HTTP used, it imports neither client
    library, makes no transport and starts no thread. The stats fixture
    needs the plugin on."""
    suite.makepyfile(test_plain=NO_HTTP)
    run(suite, *args).assert_outcomes(passed=3)


SHARED = """
import gc
import requests, pytest

held = []

@pytest.fixture(scope="module")
def session():
    with requests.Session() as s:
        yield s

@pytest.fixture(scope="module")
def token(session, base):
    r = session.get(base + "/login", stream=True)  # closed in the fixture's teardown
    yield r
    r.close()

@pytest.fixture(scope="module")
def forgotten(session, base):
    return session.get(base + "/forgotten", stream=True)  # FIXTURE-LEAK

def test_a_leaks_on_shared_session(session, token, forgotten, base):
    held.append(session.get(base + "/shared-a", stream=True))  # SHARED-A

def test_b_clean_on_shared_session(session, base):
    assert session.get(base + "/shared-b").status_code == 200

def test_c_leak_in_a_cycle(session, base):
    gc.disable()
    r = session.get(base + "/cycle-c", stream=True)  # CYCLE-C
    r.cycle = r  # only the collector can free it

def test_d_collects_it(session, base):
    gc.enable()
    gc.collect()
    assert session.get(base + "/clean-d").status_code == 200
"""

OUTSIDE = """
import requests

def test_nothing():
    pass
"""


def test_attribution_shared_session_fixtures_and_late_collection(
    suite: pytest.Pytester,
) -> None:
    """A shared session's leak is charged to the test that made the request;
    a fixture's to the fixture, when it is torn down; a body collected in a
    later test to the test that made it, not the later one; a request made
    outside any test is reported when the session ends."""
    suite.makepyfile(test_shared=SHARED)
    result = run(suite, "--poolwatch")
    result.assert_outcomes(passed=4, errors=3)
    a = error_section(result, "test_a_leaks_on_shared_session")
    assert "/shared-a: body still open" in a
    assert f"test_shared.py:{line_of(SHARED, 'SHARED-A')} in test_a_leaks" in a
    assert "/login" not in a and "/forgotten" not in a
    c = error_section(result, "test_c_leak_in_a_cycle")
    assert "/cycle-c: body still open" in c
    assert f"test_shared.py:{line_of(SHARED, 'CYCLE-C')} in test_c_leak_in_a_cycle" in c
    d = error_section(result, "test_d_collects_it")
    # Dropped by pytest with the fixture's value, so collected by then.
    assert (
        "/forgotten: body garbage-collected unclosed (in fixture 'forgotten', "
        "set up for test_shared.py::test_a_leaks_on_shared_session)"
    ) in d
    assert f"test_shared.py:{line_of(SHARED, 'FIXTURE-LEAK')} in forgotten" in d
    assert "/cycle-c" not in d and "/clean-d" not in d and "/login" not in d


OUTSIDE = """
import requests
from tests.servers import http_server

RUNNING = http_server()
SERVER = RUNNING.__enter__()
LEAKED = requests.get(f"http://127.0.0.1:{SERVER.port}/outside", stream=True)  # AT-IMPORT

def test_nothing():
    pass
"""

# Every process that imported test_outside (each xdist worker does) stops its
# server before the plugin's own end-of-session check.
STOP_AT_END = f"""{CONFTEST}
import sys

def pytest_sessionfinish():
    module = sys.modules.get("test_outside")
    if module is not None:
        module.SERVER.stop()
"""


def test_outside_tests_reported_at_the_end(suite: pytest.Pytester) -> None:
    """A body leaked at collection time fails the run from the summary."""
    suite.makeconftest(STOP_AT_END)
    suite.makepyfile(test_outside=OUTSIDE)
    result = run(suite, "--poolwatch")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    assert "poolwatch: leaked response bodies outside tests" in out
    assert "/outside: body still open" in out
    assert f"test_outside.py:{line_of(OUTSIDE, 'AT-IMPORT')} in <module>" in out
    assert "<frozen" not in out


def test_xdist_workers_report_their_own(suite: pytest.Pytester) -> None:
    """Under pytest-xdist each worker checks the tests it runs, and the
    controller's summary lists what workers found at the end."""
    pytest.importorskip("xdist")
    suite.makeconftest(STOP_AT_END)
    suite.makepyfile(
        test_leaky=LEAKY, test_more=LEAKY.replace("/leak", "/leak-more"), test_outside=OUTSIDE
    )
    result = run(suite, "-p", "xdist", "-n", "2", "--poolwatch")
    result.assert_outcomes(passed=5, errors=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    assert "/leak: body garbage-collected unclosed" in out
    assert "/leak-more: body garbage-collected unclosed" in out
    line = line_of(LEAKY, "# LEAK")
    assert f"test_leaky.py:{line} in test_leaks" in out
    assert f"test_more.py:{line} in test_leaks" in out
    summary = out[out.index("poolwatch: leaked response bodies outside tests") :]
    assert "/outside: body still open" in summary


ASYNC = """
import asyncio, httpx, poolwatch

held = []

def test_async_client_leak(base):
    async def main():
        client = httpx.AsyncClient()
        assert type(client._transport).__mro__[1] is poolwatch.AsyncHTTPXTransport
        request = client.build_request("GET", base + "/bytes/300000?leak-async")
        held.append(await client.send(request, stream=True))  # LEAK-A
    asyncio.run(main())
"""


def test_async_client(suite: pytest.Pytester) -> None:
    """httpx.AsyncClient runs over poolwatch when it has an async transport."""
    import poolwatch

    if getattr(poolwatch, "AsyncHTTPXTransport", None) is None:
        pytest.skip("this poolwatch has no AsyncHTTPXTransport")
    suite.makepyfile(test_async=ASYNC)
    result = run(suite, "--poolwatch")
    result.assert_outcomes(passed=1, errors=1)
    report = error_section(result, "test_async_client_leak")
    # The body is still held when asyncio.run() shuts the loop down: its
    # connection goes, and the body counts as leaked (R6).
    assert "leak-async: body left open until its connection went (leaked)" in report
    assert f"test_async.py:{line_of(ASYNC, '# LEAK-A')} in main" in report
    assert "asyncio" not in report


EXAMPLE = ROOT / "examples" / "leaky_project"


def quiet_env(**extra: str) -> dict[str, str]:
    """This environment, with poolwatch importable, no bytecode written into
    the checkout and no other plugins autoloaded."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env.update(
        PYTHONPATH=str(ROOT),
        PYTHONDONTWRITEBYTECODE="1",
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
        **extra,
    )
    return env


def test_example_project_fails_its_leaking_test() -> None:
    """examples/leaky_project: one line of configuration, one leak found,
    at the line of the package that made the request."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", entry_point(), "-p", "no:cacheprovider"],
        cwd=EXAMPLE,
        env=quiet_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = result.stdout
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, out + result.stderr
    assert "4 passed, 1 error" in out
    assert "ERROR tests/test_weather.py::test_is_up - Failed: poolwatch" in out
    source = (EXAMPLE / "weather" / "client.py").read_text().splitlines()
    line = next(i for i, text in enumerate(source, 1) if "/health" in text)
    assert f"weather{os.sep}client.py:{line} in is_up" in out


def test_example_project_is_not_collected_by_this_repository() -> None:
    """``pytest examples`` here does not run the example's own suite."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "pytest_timeout", "--collect-only", "examples"],
        cwd=ROOT,
        env=quiet_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, result.stdout
    assert "test_weather" not in result.stdout


def test_plugin_module_imports_no_client_library() -> None:
    """Loading the plugin (as every pytest run with poolwatch installed
    does) imports neither requests nor httpx."""
    code = (
        "import sys, poolwatch.pytest_plugin;"
        "print(sorted(m for m in ('requests', 'httpx') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


SCOPED = """
import requests
import pytest

@pytest.fixture(scope="module")
def shared(base):
    with requests.Session() as s:
        s.get(base + "/ok")
        yield s

def test_first(shared, base, poolwatch_stats):
    shared.get(base + "/ok")
    assert poolwatch_stats().requests == 0  # the module's session is no test's
    assert poolwatch_stats.everywhere().requests == 2

def test_second(shared, base, poolwatch_stats):
    session = requests.Session()
    session.get(base + "/ok").close()
    assert poolwatch_stats().requests == 1
"""


@pytest.mark.parametrize("only", [None, "test_second"])
def test_stats_fixture_leaves_out_broader_fixtures(
    suite: pytest.Pytester, only: str | None
) -> None:
    """``poolwatch_stats()`` counts the transports a test made (and its
    function-scoped fixtures), whichever test first set up a module-scoped
    fixture, run alone or not."""
    suite.makepyfile(test_scoped=SCOPED)
    result = run(suite, "--poolwatch", *(["-k", only] if only else []))
    result.assert_outcomes(passed=1 if only else 2)


def test_misspelled_marker_mode_is_a_usage_error(suite: pytest.Pytester) -> None:
    """A marker mode that does not exist stops the run before any test, not
    only when its test leaks."""
    suite.makepyfile(
        test_marker="""
import pytest

@pytest.mark.poolwatch(mode="wran")
def test_clean():
    pass
"""
    )
    result = run(suite, "--poolwatch")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "mode='wran'" in result.stderr.str()
