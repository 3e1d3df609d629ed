"""Upload pacing: bounded files and parts in flight, a request-rate cap, a bandwidth cap.

The bandwidth cap is a token bucket over bytes, charged per request before it is sent: the
average rate over a few seconds is capped, not the instantaneous one (aiohttp streams the body
at full speed once started). A request larger than the bucket borrows and the next one waits.
"""

from __future__ import annotations

import asyncio
import time

from asyncio_throttle.throttler import Throttler

from watcher.settings import WatcherSettings

MIB = 1024 * 1024


class ByteBucket:
    """A token bucket of bytes refilled at `rate` per second, holding at most `burst`."""

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._updated = time.monotonic()
        # Held while a taker waits: takers are served first come, first served.
        self._lock = asyncio.Lock()

    async def take(self, nbytes: int) -> None:
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
            self._updated = now
            self._tokens -= nbytes
            if self._tokens < 0:
                await asyncio.sleep(-self._tokens / self._rate)


class Pacer:
    """Shared by every upload of one process, so the limits hold across files."""

    def __init__(self, settings: WatcherSettings) -> None:
        self.files = asyncio.Semaphore(settings.upload_concurrency)
        # Parts are read into memory while in flight: this bounds that memory to
        # part_concurrency x part size, whatever the number of files.
        self.parts = asyncio.Semaphore(settings.part_concurrency)
        self._throttler = (
            Throttler(rate_limit=settings.requests_per_second)
            if settings.requests_per_second
            else None
        )
        rate = settings.bandwidth_limit_mbps * MIB
        self._bandwidth = (
            ByteBucket(rate, burst=max(rate, settings.part_size_mb * MIB)) if rate else None
        )

    async def request(self, nbytes: int = 0) -> None:
        """Wait until one more request of `nbytes` body may be sent."""
        if self._throttler is not None:
            # asyncio-throttle ships no annotations for acquire().
            await self._throttler.acquire()  # type: ignore[no-untyped-call]
        if self._bandwidth is not None and nbytes:
            await self._bandwidth.take(nbytes)
