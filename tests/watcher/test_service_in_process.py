"""`WatcherService` in process: `serve()` as a task on the test's loop, `handle_exit` called
directly (as uvicorn's tests/supervisors do), against moto's server over HTTP with a real
SQLite journal. The subprocess tests in test_service.py send the real signals."""

from __future__ import annotations

import asyncio
import inspect
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.watcher_daemon import Cloud, StandInFunction, drop, video_bytes
from watcher.journal import State
from watcher.notify import Notifier
from watcher.service import WatcherService
from watcher.settings import WatcherSettings

MIB = 1024 * 1024
Make = Callable[..., WatcherSettings]


@pytest.fixture
def make_settings(cloud: Cloud, tmp_path: Path) -> Make:
    def make(**overrides: Any) -> WatcherSettings:
        root = tmp_path / "node"
        root.mkdir(exist_ok=True)
        values: dict[str, Any] = {
            "endpoint_url": cloud.endpoint, "input_bucket": cloud.input_bucket,
            "output_bucket": cloud.output_bucket, "staging_root": root, "node_id": "node-a",
            "settle_s": 0.3, "poll_interval_s": 0.2, "poll_max_interval_s": 0.5,
            "retry_base_delay_s": 0.05, "retry_max_delay_s": 0.2, "shutdown_grace_s": 10,
        } | overrides  # fmt: skip
        return WatcherSettings(**values)

    return make


class Running:
    """A service serving on this loop, and the log events it emitted."""

    def __init__(self, service: WatcherService, task: asyncio.Task[None], logs: list[Any]):
        self.service = service
        self.task = task
        self.logs = logs

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs if e["event"] == name]

    async def wait_for(self, check: Callable[[], Any], within_s: float = 20) -> None:
        """Until `check()` (a value or an awaitable) is true."""
        deadline = time.monotonic() + within_s
        while not await _value(check()):
            assert not self.task.done(), "the service stopped"
            assert time.monotonic() < deadline, "condition not met in time"
            await asyncio.sleep(0.05)

    async def in_state(self, state: State) -> list[Any]:
        return await self.service.journal.in_states([state])

    async def stopped_within(self, seconds: float) -> float:
        """Wait for serve() to return; how long it took."""
        started = time.monotonic()
        await asyncio.wait_for(self.task, seconds)
        return time.monotonic() - started


@pytest.fixture
async def serve(make_settings: Make) -> AsyncIterator[Callable[..., Any]]:
    """Start a service (settings overrides as arguments); it is stopped at the end whatever
    happened."""
    started: list[Running] = []
    with capture_logs() as logs:

        async def start(**overrides: Any) -> Running:
            service = WatcherService(make_settings(**overrides), Notifier(environ={}))
            running = Running(service, asyncio.create_task(service.serve()), logs)
            started.append(running)
            await running.wait_for(lambda: running.events("intake.started"))
            return running

        yield start
        for running in started:
            if not running.task.done():
                running.service.handle_exit(signal.SIGINT)
                running.service.handle_exit(signal.SIGINT)
            await asyncio.wait_for(running.task, 30)


async def _value(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def test_only_a_second_sigint_forces_the_exit(make_settings: Make) -> None:
    service = WatcherService(make_settings(), Notifier(environ={}))
    service.handle_exit(signal.SIGTERM)
    assert service.should_exit and not service.force_exit
    service.handle_exit(signal.SIGTERM)
    assert not service.force_exit  # systemd may repeat SIGTERM: still a drain
    service.handle_exit(signal.SIGINT)
    assert service.force_exit


async def test_dropped_videos_are_done_then_the_first_signal_stops_it(
    serve: Callable[..., Any], function: StandInFunction
) -> None:
    running = await serve()
    inbox = running.service.staging.inbox
    for name in ("one.mp4", "two.mp4", "broken.mp4"):
        drop(inbox, name, video_bytes(name))
    await running.wait_for(
        lambda: len(running.events("result.received")) == 2 and running.events("submission.failed")
    )
    running.service.handle_exit(signal.SIGTERM)
    assert await running.stopped_within(10) < 5
    done = running.service.staging.done
    assert sorted(p.name for p in done.iterdir() if p.suffix == ".mp4") == ["one.mp4", "two.mp4"]
    assert (done / "one.csv").read_text() == "alice,physics,2026\nbob,cs,2027\n"
    assert running.events("shutdown.drained")
    [stopped] = running.events("service.stopped")
    assert stopped["unfinished"] == 0 and stopped["done"] == 2 and stopped["failed"] == 1


async def test_the_first_signal_stops_intake_and_lets_the_upload_in_flight_finish(
    serve: Callable[..., Any],
) -> None:
    # 9 MiB through a 3 MiB/s cap with a 5 MiB burst: the upload is in flight ~1.3 s.
    running = await serve(bandwidth_limit_mbps=3, part_size_mb=5)
    inbox = running.service.staging.inbox
    drop(inbox, "big.mp4", video_bytes("big", 9 * MIB))
    await running.wait_for(lambda: running.in_state(State.UPLOADING))
    running.service.handle_exit(signal.SIGTERM)
    drop(inbox, "late.mp4", video_bytes("late"))  # after the signal: left for the next start
    await running.stopped_within(15)
    assert not running.service.force_exit
    assert running.events("shutdown.drained") and not running.events("shutdown.cancelling")
    [completed] = running.events("upload.completed")
    assert completed["bytes"] == 9 * MIB
    assert (inbox / "late.mp4").exists()
    assert [e["file"] for e in running.events("intake.taken")] == ["big.mp4"]


async def test_the_grace_period_bounds_the_drain(serve: Callable[..., Any]) -> None:
    # ~8 s in flight at 1 MiB/s; the grace period is half a second.
    running = await serve(bandwidth_limit_mbps=1, part_size_mb=5, shutdown_grace_s=0.5)
    drop(running.service.staging.inbox, "big.mp4", video_bytes("big", 9 * MIB))
    await running.wait_for(lambda: running.in_state(State.UPLOADING))
    running.service.handle_exit(signal.SIGTERM)
    took = await running.stopped_within(10)
    assert 0.4 < took < 3
    [cancelling] = running.events("shutdown.cancelling")
    assert cancelling["uploads_in_flight"] == 1 and cancelling["forced"] is False
    assert running.events("upload.interrupted") and not running.events("upload.completed")
    unfinished = running.events("shutdown.unfinished")
    assert [(e["file"], e["state"]) for e in unfinished] == [("big.mp4", "uploading")]


async def test_a_second_sigint_skips_the_grace_period(serve: Callable[..., Any]) -> None:
    running = await serve(bandwidth_limit_mbps=1, part_size_mb=5, shutdown_grace_s=30)
    drop(running.service.staging.inbox, "big.mp4", video_bytes("big", 9 * MIB))
    await running.wait_for(lambda: running.in_state(State.UPLOADING))
    running.service.handle_exit(signal.SIGINT)
    await asyncio.sleep(0.3)
    assert not running.task.done()  # draining
    running.service.handle_exit(signal.SIGINT)
    assert await running.stopped_within(10) < 3
    assert running.service.force_exit and running.events("shutdown.forced")
    [cancelling] = running.events("shutdown.cancelling")
    assert cancelling["forced"] is True
    assert not running.events("upload.completed")
