"""pytest fixtures: a real `rafka` process per test (see rafka_harness.py).

`broker` is a running broker with the default configuration; `broker_factory`
starts brokers with extra `--override`s, environment variables or a config
file.  Every broker a test started is stopped (SIGTERM) at teardown, and when
the test fails the tail of each broker's log is attached to the report.

`cluster_factory` does the same for multi-node clusters (rafka_harness.Cluster):
every node of every cluster a test made is stopped at teardown (SIGTERM; SIGKILL
and a RafkaShutdownWarning after a grace period), and a failing test's report
carries the tail of every node's log.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from rafka_harness import CLUSTER_TEARDOWN_GRACE_S, CLUSTERS_KEY, Broker, Cluster, RafkaShutdownWarning

# --------------------------------------------------------------------------
# Fixtures and the failure-report hook
# --------------------------------------------------------------------------

_BROKERS = pytest.StashKey[list]()


@pytest.fixture
def broker_factory(request: pytest.FixtureRequest, tmp_path: Path):
    """Start brokers with custom settings.

    broker_factory(overrides=None, env=None, config_text=None, start=True, port=None) -> Broker
    """
    brokers: list[Broker] = []
    request.node.stash[_BROKERS] = brokers

    def make(overrides: dict[str, str | None] | None = None, env: dict[str, str] | None = None,
             config_text: str | None = None, start: bool = True, port: int | None = None) -> Broker:
        b = Broker(tmp_path / f"broker{len(brokers)}", overrides=overrides, env=env,
                   config_text=config_text, port=port)
        brokers.append(b)
        if start:
            b.start()
        return b

    yield make

    errors = []
    for b in brokers:
        b.drop_clients()
        try:
            b.stop()
        except AssertionError as exc:
            errors.append(str(exc))
    if errors:
        pytest.fail("; ".join(errors), pytrace=False)


@pytest.fixture
def broker(broker_factory) -> Broker:
    """A running broker with the default configuration."""
    return broker_factory()


@pytest.fixture
def cluster_factory(request: pytest.FixtureRequest, tmp_path: Path):
    """Make clusters: cluster_factory(size=3, extra=None, start=True) -> Cluster."""
    clusters: list[Cluster] = []
    request.node.stash[CLUSTERS_KEY] = clusters

    def make(size: int = 3, extra: dict[str, str] | None = None, start: bool = True) -> Cluster:
        c = Cluster(tmp_path / f"cluster{len(clusters)}", size=size, extra=extra)
        clusters.append(c)
        if start:
            elapsed = c.start()
            print(f"cluster of {size} nodes ready in {elapsed:.2f}s")
        return c

    yield make

    errors = []
    for c in clusters:
        try:
            killed = c.teardown()
        except Exception as exc:  # noqa: BLE001 - stop the other clusters all the same
            c.kill_all()
            errors.append(f"{c.workdir}: {exc!r}")
            continue
        if killed:
            warnings.warn(RafkaShutdownWarning(
                f"{request.node.name}: node(s) {killed} of {c.workdir} still running "
                f"{CLUSTER_TEARDOWN_GRACE_S}s after SIGTERM at teardown; killed"))
    if errors:
        pytest.fail("cluster teardown: " + "; ".join(errors), pytrace=False)


_TIMINGS = pytest.StashKey[list]()


@pytest.fixture
def record_timing(request: pytest.FixtureRequest):
    """record_timing(label, seconds): print a measured time now and again in the
    run's terminal summary ("measured timings"), so it is seen without -s."""
    timings = request.config.stash.setdefault(_TIMINGS, [])

    def record(label: str, seconds: float) -> None:
        print(f"[timing] {label}: {seconds:.3f}s")
        timings.append((request.node.name, label, seconds))

    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    timings = config.stash.get(_TIMINGS, [])
    if timings:
        terminalreporter.section("measured timings")
        for test, label, seconds in timings:
            terminalreporter.write_line(f"{seconds:8.3f}s  {label}  ({test})")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for i, b in enumerate(item.stash.get(_BROKERS, [])):
            report.sections.append(
                (f"rafka broker {i} log tail ({b.log_path})", b.log_tail()))
        for c in item.stash.get(CLUSTERS_KEY, []):
            for title, tail in c.log_tails():
                report.sections.append((f"rafka cluster {title} log tail", tail))
