"""Fixtures for tests that drive the real watcher daemon (see tests/watcher_daemon.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.watcher_daemon import Cloud, Daemon, StandInFunction, make_cloud


@pytest.fixture
def cloud(moto_endpoint: str, unique_name: str) -> Cloud:
    """Buckets of this test's own on the session's moto server."""
    return make_cloud(moto_endpoint, unique_name)


@pytest.fixture
def function(cloud: Cloud) -> Iterator[StandInFunction]:
    """A stand-in for the cloud function, answering every video put in `cloud`."""
    with StandInFunction(cloud) as stand_in:
        yield stand_in


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Every daemon a test starts is stopped at its end, whatever happened."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop()
