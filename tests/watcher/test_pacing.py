"""Upload pacing: the bandwidth token bucket and the request-rate cap, timed for real."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from watcher.pacing import MIB, ByteBucket, Pacer
from watcher.settings import WatcherSettings


async def test_byte_bucket_caps_the_average_rate() -> None:
    bucket = ByteBucket(rate=4 * MIB, burst=MIB)
    started = time.monotonic()
    for _ in range(3):
        await bucket.take(MIB)  # the first is the burst; the next two wait 0.25 s each
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 1.5


async def test_no_limits_means_no_waiting(tmp_path: Path) -> None:
    pacer = Pacer(WatcherSettings(staging_root=tmp_path))
    started = time.monotonic()
    await asyncio.gather(*(pacer.request(64 * MIB) for _ in range(100)))
    assert time.monotonic() - started < 0.5


async def test_request_rate_is_capped(tmp_path: Path) -> None:
    pacer = Pacer(WatcherSettings(staging_root=tmp_path, requests_per_second=10))
    started = time.monotonic()
    await asyncio.gather(*(pacer.request() for _ in range(25)))
    elapsed = time.monotonic() - started
    assert 2.0 <= elapsed < 4.0  # 10 now, 10 a second later, 5 a second after that


async def test_bandwidth_cap_applies_across_requests(tmp_path: Path) -> None:
    settings = WatcherSettings(staging_root=tmp_path, bandwidth_limit_mbps=10.0, part_size_mb=5)
    pacer = Pacer(settings)
    started = time.monotonic()
    await asyncio.gather(*(pacer.request(5 * MIB) for _ in range(4)))  # 20 MiB, 10 in the bucket
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.5
