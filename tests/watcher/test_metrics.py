"""watcher/metrics.py: names an operator can graph, the retry hook, and the shipped dashboard."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from watcher.metrics import Metrics
from watcher.retry import RETRY_OBSERVER, RetryBudget

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "hybrid-watcher.json"
# A series name in PromQL: ours or the process collector's.
SERIES = re.compile(r"\b(?:hybrid_watcher|process)_[a-z0-9_]+\b")
UNIT_SUFFIXES = ("_seconds", "_bytes", "_files", "_submissions", "_info", "_total")


def test_names_follow_prometheus_conventions() -> None:
    metrics = Metrics()
    ours = {family.name: family.type for family in metrics.registry.collect()}
    for name, kind in ours.items():
        if name.startswith("process_"):
            continue
        assert name.startswith("hybrid_watcher_"), name
        if kind == "counter":
            assert f"{name}_total" in metrics.names()
        elif kind != "info":
            assert name.endswith(UNIT_SUFFIXES), f"{name}: no unit at the end"
    names = metrics.names()
    for wanted in (
        "hybrid_watcher_build_info",
        "hybrid_watcher_retries_total",
        "hybrid_watcher_uploaded_bytes_total",
        "hybrid_watcher_last_result_timestamp_seconds",
        "hybrid_watcher_results_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert wanted in names, wanted


def test_build_info_names_the_installed_version() -> None:
    sample = Metrics().registry.get_sample_value(
        "hybrid_watcher_build_info", {"version": _version()}
    )
    assert sample == 1.0


def _version() -> str:
    return metadata.version("hybridsphere")


def _throttled() -> ClientError:
    return ClientError({"Error": {"Code": "SlowDown", "Message": "slow down"}}, "PutObject")


async def test_retries_are_counted_by_operation_through_the_observer() -> None:
    metrics = Metrics()
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise _throttled()
        return "ok"

    token = RETRY_OBSERVER.set(metrics.retried)
    try:
        budget = RetryBudget.start(attempts=5, seconds=30, base_delay=0.001, max_delay=0.002)
        assert await budget.call("upload", flaky) == "ok"
    finally:
        RETRY_OBSERVER.reset(token)
    value = metrics.registry.get_sample_value(
        "hybrid_watcher_retries_total", {"operation": "upload"}
    )
    assert value == 2.0


async def test_without_an_observer_retries_still_work() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 2:
            raise _throttled()
        return "ok"

    budget = RetryBudget.start(attempts=3, seconds=30, base_delay=0.001, max_delay=0.002)
    assert await budget.call("results.poll", flaky) == "ok"


def _queries(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        if isinstance(node.get("query"), str):
            found.append(node["query"])
        return found + [q for v in node.values() for q in _queries(v)]
    if isinstance(node, list):
        return [q for item in node for q in _queries(item)]
    return []


def test_every_series_the_dashboard_queries_exists() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = _queries(dashboard)
    assert len(queries) >= 8
    used = {name for query in queries for name in SERIES.findall(query)}
    assert used, "the dashboard queries no watcher series"
    assert used <= Metrics().names(), used - Metrics().names()


def test_the_dashboard_check_can_fail() -> None:
    """A renamed series (the old `watcher_uploads_total` style) is caught by the check above."""
    queries = ["rate(hybrid_watcher_upload_total[5m])"]
    used = {name for query in queries for name in SERIES.findall(query)}
    assert not used <= Metrics().names()


@pytest.mark.parametrize("panel_type", ["timeseries", "stat"])
def test_dashboard_panels_use_the_datasource_variable(panel_type: str) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] == panel_type]
    assert panels
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"
