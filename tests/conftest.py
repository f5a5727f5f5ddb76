"""pytest fixtures: a real `rafka` process per test (see rafka_harness.py).

`broker` is a running broker with the default configuration; `broker_factory`
starts brokers with extra `--override`s, environment variables or a config
file.  Every broker a test started is stopped (SIGTERM) at teardown, and when
the test fails the tail of each broker's log is attached to the report.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rafka_harness import Broker

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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for i, b in enumerate(item.stash.get(_BROKERS, [])):
            report.sections.append(
                (f"rafka broker {i} log tail ({b.log_path})", b.log_tail()))
