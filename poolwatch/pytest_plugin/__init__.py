"""A pytest plugin that fails tests which leak HTTP response bodies.

Shipped with poolwatch and registered through the ``pytest11`` entry point,
it does nothing unless asked for: ``pytest --poolwatch`` (or
``--poolwatch=warn``, or the ini option ``poolwatch = fail|warn|off``). Then
every ``requests.Session`` and ``httpx.Client`` (and ``httpx.AsyncClient``
when poolwatch has ``AsyncHTTPXTransport``) made without an explicit
transport runs over poolwatch, and at the end of each test every response
body the test left open, or dropped unclosed, is reported with its method,
URL and the line that made the request. See docs/pytest-plugin.md.
"""

from __future__ import annotations

import argparse
import gc
from collections.abc import Generator
from typing import Any

import pytest

from .._core.stats import PoolStats
from .._leaks import skip_module_directory
from ._tracking import OUTSIDE_TESTS, Leak, Record, StatsSource, Tracker, merge_stats

__all__ = ["MODES", "PoolwatchStats", "poolwatch_stats"]

skip_module_directory(__file__)  # a request's call site is the user's line

#: What the plugin does with a leak: fail the test, report it, or nothing.
MODES = ("fail", "warn", "off")
_PLUGIN_NAME = "poolwatch-active"
_LEAK_PROPERTY = "poolwatch_leak"  # user_properties name: carried to xdist's controller
_LATE_OUTPUT = "poolwatch_late"  # xdist workeroutput key


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--poolwatch[=fail|warn|off]`` and the ``poolwatch`` ini option."""
    group = parser.getgroup("poolwatch", "poolwatch: leaked HTTP response bodies")
    group.addoption(
        "--poolwatch",
        action="store_const",
        const="fail",
        dest="poolwatch",
        default=None,
        help="run requests and httpx over poolwatch and fail tests that leak response "
        "bodies; --poolwatch=warn reports them instead, --poolwatch=off disables",
    )
    # An optional value would swallow the next argument (``--poolwatch tests/``,
    # as addopts puts it first), so each ``--poolwatch=MODE`` is its own option.
    for mode in MODES:
        group.addoption(
            f"--poolwatch={mode}",
            action="store_const",
            const=mode,
            dest="poolwatch",
            help=argparse.SUPPRESS,
        )
    parser.addini(
        "poolwatch",
        "poolwatch leak checking: fail, warn or off (the default)",
        default="off",
    )


def _configured_mode(config: pytest.Config) -> str:
    mode = config.getoption("poolwatch") or str(config.getini("poolwatch")).strip() or "off"
    if mode not in MODES:
        raise pytest.UsageError(
            f"poolwatch: ini option poolwatch = {mode!r}; expected one of {', '.join(MODES)}"
        )
    return mode


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers; activate the plugin if asked to."""
    config.addinivalue_line(
        "markers",
        "poolwatch(mode): poolwatch leak checking for this test: 'fail', 'warn' or 'off'",
    )
    config.addinivalue_line(
        "markers", "poolwatch_ignore: do not check this test for leaked response bodies"
    )
    mode = _configured_mode(config)
    if mode != "off":
        config.pluginmanager.register(ActivePlugin(config, mode), _PLUGIN_NAME)


def _active(config: pytest.Config) -> ActivePlugin | None:
    plugin = config.pluginmanager.get_plugin(_PLUGIN_NAME)
    return plugin if isinstance(plugin, ActivePlugin) else None


def _marker_mode(item: pytest.Item, default: str) -> str:
    if item.get_closest_marker("poolwatch_ignore") is not None:
        return "off"
    marker = item.get_closest_marker("poolwatch")
    if marker is None:
        return default
    mode = marker.kwargs.get("mode", marker.args[0] if marker.args else default)
    if mode not in MODES:
        raise pytest.UsageError(
            f"{item.nodeid}: @pytest.mark.poolwatch(mode={mode!r}); "
            f"expected one of {', '.join(MODES)}"
        )
    return str(mode)


def _report(leaks: list[Leak], heading: str) -> str:
    count = f"{len(leaks)} response bod{'y' if len(leaks) == 1 else 'ies'}"
    return "\n".join([f"poolwatch: {count} {heading}", *(leak.describe() for leak in leaks)])


class ActivePlugin:
    """The hooks that run while leak checking is on."""

    def __init__(self, config: pytest.Config, mode: str) -> None:
        from ._patching import Patcher

        self.config = config
        self.mode = mode
        self.tracker = Tracker()
        self.patcher = Patcher(self.tracker)
        self.warned: list[tuple[str, str]] = []  # (node id, report), for the summary
        self.late: list[str] = []  # reports of leaks found when the session ended
        self._ended_fixtures: list[Record] = []  # their records, checked at teardown
        self.patcher.patch()

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Refuse a misspelled marker mode before any test runs (a test
        that never leaks would never read it)."""
        for item in items:
            _marker_mode(item, self.mode)

    # -- scopes ---------------------------------------------------------------

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, object, object]:
        """Charge requests made from here on to ``item``."""
        self.tracker.current_test = item.nodeid
        try:
            return (yield)
        finally:
            self.tracker.current_test = OUTSIDE_TESTS

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> Generator[None, object, object]:
        """Charge requests made while a broader fixture is set up to that
        fixture, checked when it is torn down."""
        if fixturedef.scope == "function":
            return (yield)
        self.tracker.push_fixture(("fixture", id(fixturedef)), fixturedef.argname)
        try:
            return (yield)
        finally:
            self.tracker.pop_fixture()

    def pytest_fixture_post_finalizer(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> None:
        """A broader fixture was torn down: check its requests with the
        current test's teardown."""
        if fixturedef.scope != "function":
            self._ended_fixtures += self.tracker.take(("fixture", id(fixturedef)))

    # -- checking ---------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, object, object]:
        """After the test's fixtures are torn down, check its responses."""
        try:
            result = yield
        except BaseException:
            self._check(item, teardown_failed=True)
            raise
        self._check(item, teardown_failed=False)
        return result

    def _check(self, item: pytest.Item, *, teardown_failed: bool) -> None:
        leaks = self.tracker.test_ended(item.nodeid)
        leaks += self.tracker.settle(self._ended_fixtures)
        self._ended_fixtures = []
        self.tracker.release_abandoned()
        mode = _marker_mode(item, self.mode) if leaks else "off"
        if mode == "off":
            return
        report = _report(leaks, "leaked (neither read to the end nor closed)")
        if mode == "warn":
            item.user_properties.append((_LEAK_PROPERTY, report))
        elif teardown_failed:
            item.add_report_section("teardown", "poolwatch", report)
        else:
            pytest.fail(report, pytrace=False)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Collect warn-mode reports (from this process or xdist workers)."""
        if report.when == "teardown":
            for name, value in report.user_properties:
                if name == _LEAK_PROPERTY:
                    self.warned.append((report.nodeid, str(value)))

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Check requests made outside any test; close the transports."""
        if self._ended_fixtures or self.tracker.has_records():
            gc.collect()  # so that an unreachable owner counts as collected
        leaks = self.tracker.settle(self._ended_fixtures) + self.tracker.session_ended()
        self._ended_fixtures = []
        if leaks:
            self.late.append(_report(leaks, "leaked outside any test or after its scope"))
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput[_LATE_OUTPUT] = self.late
        if self.late and self.mode == "fail" and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        self.tracker.close_transports()

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """xdist's controller: gather a worker's end-of-session reports."""
        self.late.extend(getattr(node, "workeroutput", {}).get(_LATE_OUTPUT, []))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """List warn-mode leaks and leaks found when the session ended."""
        if self.warned:
            terminalreporter.section("poolwatch: leaked response bodies")
            for nodeid, text in self.warned:
                terminalreporter.line(f"{nodeid}: {text}")
        if self.late:
            terminalreporter.section("poolwatch: leaked response bodies outside tests")
            for text in self.late:
                terminalreporter.line(text)

    def pytest_unconfigure(self) -> None:
        """Put requests and httpx back as they were."""
        self.patcher.unpatch()


class PoolwatchStats:
    """What the ``poolwatch_stats`` fixture gives a test: call it for the
    :class:`~poolwatch.PoolStats` of the transports made during this test
    (its sessions and clients), summed over them."""

    def __init__(self, tracker: Tracker, nodeid: str) -> None:
        self._tracker = tracker
        self._nodeid = nodeid

    def __call__(self) -> PoolStats:
        return merge_stats(self.transports)

    @property
    def transports(self) -> list[StatsSource]:
        """The adapters and transports made during this test, oldest first."""
        return self._tracker.transports(self._nodeid)

    def everywhere(self) -> PoolStats:
        """The stats of every live transport the plugin made, including
        those of sessions shared across tests (counters are totals since
        each was created)."""
        return merge_stats(self._tracker.transports())


@pytest.fixture
def poolwatch_stats(request: pytest.FixtureRequest) -> PoolwatchStats:
    """Pool statistics of the sessions and clients this test made (needs
    the plugin on: ``--poolwatch``)."""
    plugin = _active(request.config)
    if plugin is None:
        pytest.fail("the poolwatch_stats fixture needs the plugin on: run pytest --poolwatch")
    return PoolwatchStats(plugin.tracker, request.node.nodeid)
