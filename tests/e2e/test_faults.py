"""The whole local pipeline through a faulty network: the watcher daemon and the local Lambda
runtime both reach moto's server through a FaultProxy that fails 10% of requests at random
(latency, connection resets, 503 SlowDown, 500, truncated answers). Nothing may be lost or
delivered twice, and the retries must show in the daemon's log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.faults import Chaos, FaultProxy
from tests.servers import ServeLocal, provision_stack
from tests.watcher_daemon import Cloud, Daemon, drop, video_bytes

VIDEOS = 50
FAULT_RATE = 0.10


def answers(names: list[str]) -> dict[str, list[list[str]]]:
    """A distinct, checkable answer per video (the stand-in handler returns it as the CSV)."""
    return {name: [[f"person{i:02d}", "major", str(2000 + i)]] for i, name in enumerate(names)}


def retry_events(daemon: Daemon) -> Counter[str]:
    """The daemon's `<call>.retrying` events (watcher/retry.py), by call."""
    return Counter(e["event"] for e in daemon.events() if str(e["event"]).endswith(".retrying"))


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_fifty_videos_through_ten_percent_faults_each_done_once(
    tmp_path: Path, moto_endpoint: str, unique_name: str
) -> None:
    names = [f"v{i:02d}.mp4" for i in range(VIDEOS)]
    expected = answers(names)
    answers_file = tmp_path / "answers.json"
    answers_file.write_text(json.dumps(expected))
    # The queue's visibility timeout is the function's: an answer lost in transit (a truncated
    # ReceiveMessage) makes its message visible again 3 s later, not 15 minutes later.
    resources = provision_stack(moto_endpoint, unique_name, function_timeout_s=3)
    async with FaultProxy(moto_endpoint) as proxy:
        via_proxy = dataclasses.replace(resources, endpoint_url=proxy.url)
        runtime = await asyncio.to_thread(
            ServeLocal,
            via_proxy,
            tmp_path / "stand-in",
            extra_env={
                "STAND_IN_ANSWERS": str(answers_file),
                "STAND_IN_SLEEP_S": "0.02",
                "HYBRID_FUNCTION_TIMEOUT_S": "3",
            },
        )
        cloud = Cloud(proxy.url, resources.input_bucket, resources.output_bucket)
        daemon = Daemon(tmp_path / "node", cloud)
        try:
            await asyncio.to_thread(daemon.start)
            # Faults from here on: start-up against a broken cloud is the crash matrix's part.
            proxy.start_chaos(Chaos(rate=FAULT_RATE, seed=546))
            started = time.monotonic()
            for name in names:
                await asyncio.to_thread(drop, daemon.inbox, name, video_bytes(name))
            await asyncio.to_thread(daemon.wait_until, lambda: daemon.concluded(VIDEOS), 90)
            elapsed = time.monotonic() - started
            await asyncio.sleep(1.0)  # time for a (wrong) second delivery to show
            proxy.stop_chaos()
        finally:
            await asyncio.to_thread(daemon.stop)
            assert await asyncio.to_thread(runtime.stop) == 0

    # Every video in done/ once, beside its own answer; nothing failed, nothing left behind.
    videos = sorted(p.name for p in daemon.done.iterdir() if p.suffix == ".mp4")
    assert videos == names
    for name in names:
        csv = (daemon.done / name.replace(".mp4", ".csv")).read_text()
        assert csv == "".join(",".join(row) + "\n" for row in expected[name]), name
    assert not daemon.failed.exists() or list(daemon.failed.iterdir()) == []
    assert list(daemon.inbox.iterdir()) == []
    assert list((daemon.root / "processing").iterdir()) == []
    received = Counter(e["file"] for e in daemon.events("result.received"))
    assert received == dict.fromkeys(names, 1)
    assert daemon.events("submission.failed") == []
    # One input object per video: a retried upload reuses its key rather than adding another.
    direct = Cloud(moto_endpoint, resources.input_bucket, resources.output_bucket)
    assert len(await asyncio.to_thread(direct.input_keys)) == VIDEOS

    # The faults happened, and the daemon retried through them.
    injected = sum(proxy.chaos_injected.values())
    assert set(proxy.chaos_injected) == {"latency", "reset", "slowdown", "internal", "truncate"}
    retries = retry_events(daemon)
    assert sum(retries.values()) > 0
    sqs = sum(1 for s in proxy.seen if s.headers.get("x-amz-target", "").startswith("AmazonSQS"))
    assert sqs > 0  # the runtime's queue traffic went through the proxy too
    runtime_retries = Counter(
        e["event"]
        for e in runtime.events
        if e["event"] in {"queue.receive_failed", "message.delete_failed", "invocation.completed"}
    )
    print(
        f"\n{VIDEOS} videos through {FAULT_RATE:.0%} faults: all done in {elapsed:.1f} s; "
        f"{len(proxy.seen)} requests, {injected} faults {dict(proxy.chaos_injected)}; "
        f"daemon retries {dict(retries)}; runtime {dict(runtime_retries)}"
    )
