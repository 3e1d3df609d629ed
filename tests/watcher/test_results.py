"""The result poller against moto's server and SeaweedFS (`s3_backend`): listing from a
cursor, fetching what is final."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hybrid_common.keys import ResultKind
from hybrid_common.results import ErrorDoc, PersonRow, parse_csv, render_csv
from tests.faults import FaultProxy
from watcher.clients import aws_clients
from watcher.results import ResultPoller
from watcher.settings import WatcherSettings

PREFIX = "videos/node-a/"


def settings_for(endpoint: str, tmp_path: Path, bucket: str, **overrides: Any) -> WatcherSettings:
    values: dict[str, Any] = {
        "endpoint_url": endpoint,
        "staging_root": tmp_path,
        "output_bucket": bucket,
        "node_id": "node-a",
        "retry_base_delay_s": 0.01,
        "retry_max_delay_s": 0.05,
    } | overrides
    return WatcherSettings(**values)


@pytest.fixture
async def s3(s3_endpoint: str, tmp_path: Path, unique_name: str) -> AsyncIterator[Any]:
    settings = settings_for(s3_endpoint, tmp_path, unique_name)
    async with aws_clients(settings) as clients:
        await clients.s3.create_bucket(Bucket=unique_name)
        yield clients.s3


async def put(s3: Any, bucket: str, key: str, body: bytes | str = b"") -> None:
    await s3.put_object(
        Bucket=bucket, Key=key, Body=body.encode() if isinstance(body, str) else body
    )


async def test_poll_picks_csv_and_error_only_from_this_node_after_the_cursor(
    s3_endpoint: str, tmp_path: Path, unique_name: str, s3: Any
) -> None:
    bucket = unique_name
    for sub in ("s01", "s02", "s03", "s04"):
        await put(s3, bucket, f"{PREFIX}{sub}/clip.json", "{}")
        await put(s3, bucket, f"{PREFIX}{sub}/clip.faces.jpg", b"\xff\xd8")
    await put(s3, bucket, f"{PREFIX}s01/clip.csv", "a,b,c\n")
    await put(s3, bucket, f"{PREFIX}s02/clip.error.json", '{"code": "decode"}')
    await put(s3, bucket, f"{PREFIX}s04/clip.csv", "")
    await put(s3, bucket, "videos/node-b/s01/clip.csv", "someone else's\n")
    await put(s3, bucket, "videos/node-a-x/s01/clip.csv", "a prefix look-alike\n")

    settings = settings_for(s3_endpoint, tmp_path, bucket, poll_page_size=2)
    async with aws_clients(settings) as clients:
        poller = ResultPoller(clients.s3, settings)
        everything = await poller.poll_once("")
        after_s01 = await poller.poll_once(f"{PREFIX}s01/~")  # '~' sorts after any key char
        after_all = await poller.poll_once(f"{PREFIX}s04/clip.csv")

    assert [(r.stem, r.kind) for r in everything] == [
        (f"{PREFIX}s01/clip", ResultKind.CSV),
        (f"{PREFIX}s02/clip", ResultKind.ERROR),
        (f"{PREFIX}s04/clip", ResultKind.CSV),
    ]
    assert everything[1].key == f"{PREFIX}s02/clip.error.json"
    assert everything[0].last_modified.tzinfo is not None
    assert [r.stem for r in after_s01] == [f"{PREFIX}s02/clip", f"{PREFIX}s04/clip"]
    assert after_all == []


async def test_a_listing_from_a_submission_includes_that_submissions_results(
    s3_endpoint: str, tmp_path: Path, unique_name: str, s3: Any
) -> None:
    """The daemon lists from just before its oldest awaited submission. Regression: a
    `StartAfter` of `<prefix><id>` made SeaweedFS skip the whole folder `<id>/` (it lists
    folder by folder; AWS and moto compare whole keys), so there the oldest submission's
    result was never collected."""
    bucket = unique_name
    for sub in ("s01", "s02", "s03"):
        await put(s3, bucket, f"{PREFIX}{sub}/clip.csv")
    settings = settings_for(s3_endpoint, tmp_path, bucket)
    async with aws_clients(settings) as clients:
        poller = ResultPoller(clients.s3, settings)
        found = await poller.poll_once(poller.start_before("s02"))
    assert [r.stem for r in found] == [f"{PREFIX}s02/clip", f"{PREFIX}s03/clip"]


@pytest.mark.slow
async def test_poll_pages_through_more_than_a_thousand_keys(
    s3_endpoint: str, tmp_path: Path, unique_name: str, s3: Any
) -> None:
    bucket = unique_name
    keys = [f"{PREFIX}s{n:05d}/v.csv" for n in range(1005)]
    for start in range(0, len(keys), 50):
        await asyncio.gather(*(put(s3, bucket, key) for key in keys[start : start + 50]))
    await put(s3, bucket, f"{PREFIX}s00001/v.json", "{}")

    async with FaultProxy(s3_endpoint) as proxy:
        settings = settings_for(proxy.url, tmp_path, bucket, poll_page_size=400)
        async with aws_clients(settings) as clients:
            poller = ResultPoller(clients.s3, settings)
            found = await poller.poll_once(f"{PREFIX}s00002/v.csv")

    assert [r.key for r in found] == keys[3:]
    listings = [seen for seen in proxy.seen if seen.method == "GET"]
    assert len(listings) == 3  # 1002 keys at 400 a page
    assert listings[0].query["start-after"] == f"{PREFIX}s00002/v.csv"
    assert all("continuation-token" in seen.query for seen in listings[1:])


async def test_fetch_reads_every_file_and_tolerates_missing_optional_ones(
    s3_endpoint: str, tmp_path: Path, unique_name: str, s3: Any
) -> None:
    bucket = unique_name
    rows = [PersonRow("president_trump", "Physics", "Senior"), PersonRow("a, b", "Math", "Junior")]
    details = {"people": ["president_trump"], "timings": {"decode_s": 0.2}}
    await put(s3, bucket, f"{PREFIX}s1/full.csv", render_csv(rows))
    await put(s3, bucket, f"{PREFIX}s1/full.json", json.dumps(details))
    await put(s3, bucket, f"{PREFIX}s1/full.faces.jpg", b"\xff\xd8jpeg")
    await put(s3, bucket, f"{PREFIX}s2/bare.csv", "")
    error = ErrorDoc("not_a_video", "no video stream", "req-1", f"{PREFIX}s3/bad.mp4")
    await put(s3, bucket, f"{PREFIX}s3/bad.error.json", error.to_json())
    await put(s3, bucket, f"{PREFIX}s4/broken.csv", "x\n")
    await put(s3, bucket, f"{PREFIX}s4/broken.json", "{not json")

    settings = settings_for(s3_endpoint, tmp_path, bucket)
    async with aws_clients(settings) as clients:
        poller = ResultPoller(clients.s3, settings)
        ready = {r.stem.rsplit("/", 1)[-1]: r for r in await poller.poll_once("")}
        full, bare, bad, broken = await asyncio.gather(
            *(poller.fetch(ready[name]) for name in ("full", "bare", "bad", "broken"))
        )

    assert full.csv_text is not None and parse_csv(full.csv_text) == rows
    assert full.details == details and full.faces_jpg == b"\xff\xd8jpeg" and full.error is None
    assert bare.csv_text == "" and bare.details is None and bare.faces_jpg is None
    assert bad.error == error and bad.csv_text is None
    assert broken.csv_text == "x\n" and broken.details is None


async def test_fetch_of_a_vanished_result_raises(
    s3_endpoint: str, tmp_path: Path, unique_name: str, s3: Any
) -> None:
    bucket = unique_name
    await put(s3, bucket, f"{PREFIX}s1/gone.csv", "")
    settings = settings_for(s3_endpoint, tmp_path, bucket)
    async with aws_clients(settings) as clients:
        poller = ResultPoller(clients.s3, settings)
        [ready] = await poller.poll_once("")
        await s3.delete_object(Bucket=bucket, Key=ready.key)
        with pytest.raises(Exception, match="NoSuchKey"):
            await poller.fetch(ready)


async def test_poll_retries_a_throttled_listing(
    s3_endpoint: str, tmp_path: Path, unique_name: str, s3: Any
) -> None:
    bucket = unique_name
    await put(s3, bucket, f"{PREFIX}s1/v.csv", "")
    async with FaultProxy(s3_endpoint) as proxy:
        proxy.fail(2, lambda seen: seen.method == "GET")
        settings = settings_for(proxy.url, tmp_path, bucket)
        async with aws_clients(settings) as clients:
            found = await ResultPoller(clients.s3, settings).poll_once("")
    assert [r.key for r in found] == [f"{PREFIX}s1/v.csv"]
    assert proxy.injected == 2
