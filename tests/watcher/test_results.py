"""The result poller against moto's server and SeaweedFS (`s3_backend`): listing from a
cursor, fetching what is final."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from hybrid_common.keys import ResultKind, result_key
from hybrid_common.results import ErrorDoc, PersonRow, parse_csv, render_csv
from tests.faults import FaultProxy
from tests.watcher_daemon import Cloud, Daemon, drop, video_bytes
from watcher.clients import aws_clients
from watcher.results import (
    ResultFiles,
    ResultPoller,
    ResultReady,
    ResultUnreadable,
    prepare_csv,
    read_details,
    read_error_doc,
)
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
            *(fetch(poller, ready[name]) for name in ("full", "bare", "bad", "broken"))
        )

    assert full.csv is not None and parse_csv(full.csv.decode()) == rows
    assert full.details == json.dumps(details).encode()  # byte for byte
    assert full.timings == {"decode_s": 0.2}
    assert full.faces_jpg == b"\xff\xd8jpeg" and full.error is None
    assert bare.csv == b"" and bare.details is None and bare.faces_jpg is None
    assert bad.error == error and bad.csv is None
    assert broken.csv == b"x\n" and broken.details is None


async def fetch(poller: ResultPoller, ready: ResultReady) -> ResultFiles:
    async with poller.fetch(ready) as files:
        return files


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
            await fetch(poller, ready)


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


# --- hostile and unreadable results, through the real daemon (tests/watcher_daemon.py) ---

MIB = 1024 * 1024
# The daemon's documented bound (README, docs/reliability.md: the soak's target).
RSS_LIMIT = 150 * MIB
# Past this the test stops the daemon rather than let a regression eat the shared machine.
RSS_GUARD = 600 * MIB


class RssSampler:
    """Samples a process's RSS every 0.1 s; kills it once over `guard`."""

    def __init__(self, pid: int, guard: int) -> None:
        self.process = psutil.Process(pid)
        self.guard = guard
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                rss = self.process.memory_info().rss
            except psutil.Error:
                return
            self.samples.append(rss)
            if rss > self.guard:
                self.process.kill()
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return max(self.samples, default=0)


def uploaded_keys(daemon: Daemon, cloud: Cloud, n: int) -> list[str]:
    """Drop n videos (no function answers them) and return their input keys once uploaded."""
    for i in range(n):
        drop(daemon.inbox, f"clip{i}.mp4", video_bytes(f"hostile-{i}"))
    daemon.wait_until(lambda: len(cloud.input_keys()) == n)
    daemon.wait_until(lambda: daemon.counts().get("uploaded", 0) == n)
    by_name = {key.rsplit("/", 1)[-1]: key for key in cloud.input_keys()}
    return [by_name[f"clip{i}.mp4"] for i in range(n)]


def hostile_details(size: int) -> bytes:
    """A valid details document of `size` bytes: what a broken or hostile function might write."""
    person = {"name": "x" * 200, "major": "y" * 200, "year": "z", "frames": 1}
    one = len(json.dumps(person)) + 2
    doc = {"format": "hybridsphere.result", "people": [person] * (size // one),
           "timings": {f"t{n}": 0.1 for n in range(1000)}}  # fmt: skip
    return json.dumps(doc).encode()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_hostile_results_keep_the_daemon_within_its_memory_bound(
    tmp_path: Path, cloud: Cloud, daemons: list[Daemon]
) -> None:
    # 8 awaited videos (the daemon fetches 8 results at once), each answered with a 28 MB
    # details JSON (it took the daemon from 89 to 1279 MiB), a 4 MiB CSV of formulas and a
    # 4 MiB contact sheet.
    daemon = Daemon(tmp_path / "node", cloud)
    daemons.append(daemon)
    daemon.start()
    assert daemon.proc is not None
    keys = uploaded_keys(daemon, cloud, 8)
    s3 = cloud.s3()
    details = hostile_details(28_000_000)
    row = b'=HYPERLINK("http://evil.example"),@SUM(1),-1\n'
    csv = row * (4 * MIB // len(row))
    faces = b"\xff\xd8" + b"\x00" * (4 * MIB)
    sampler = RssSampler(daemon.proc.pid, RSS_GUARD)
    try:
        for key in keys:
            s3.put_object(Bucket=cloud.output_bucket, Key=result_key(key, ResultKind.DETAILS),
                          Body=details)  # fmt: skip
            s3.put_object(Bucket=cloud.output_bucket, Key=result_key(key, ResultKind.FACES),
                          Body=faces)  # fmt: skip
        for key in keys:
            s3.put_object(Bucket=cloud.output_bucket, Key=result_key(key, ResultKind.CSV),
                          Body=csv)  # fmt: skip
        daemon.wait_until(lambda: daemon.concluded(8), timeout=120)
    finally:
        peak = sampler.stop()
    idle = sampler.samples[0] if sampler.samples else 0
    print(f"daemon RSS with hostile results: idle {idle / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB")
    assert peak <= RSS_LIMIT
    assert daemon.counts() == {"done": 8}
    for i in range(8):
        assert not (daemon.done / f"clip{i}.json").exists()  # over result_json_max_bytes
        assert (daemon.done / f"clip{i}.faces.jpg").stat().st_size == len(faces)
        with (daemon.done / f"clip{i}.csv").open() as done_csv:
            assert done_csv.readline() == '"\'=HYPERLINK(""http://evil.example"")",\'@SUM(1),\'-1\n'
    # What reaches the journal and the logs is bounded, whatever the files held.
    for sub in daemon.submissions():
        assert sub.result is not None and len(json.dumps(sub.result)) < 16_000
        # 50 people shown; the rows are not recorded since they would not be the whole answer.
        assert sub.result["people_count"] == len(csv) // len(row)
        assert len(sub.result["people"]) == 50 and "rows" not in sub.result
    for run in range(1, daemon.runs + 1):
        for line in daemon.log_path(run).read_text().splitlines():
            assert len(line) < 16_000


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_unreadable_results_end_in_failed_at_once_and_bad_details_only_drop_the_details(
    tmp_path: Path, cloud: Cloud, daemons: list[Daemon]
) -> None:
    daemon = Daemon(tmp_path / "node", cloud)
    daemons.append(daemon)
    daemon.start()
    keys = uploaded_keys(daemon, cloud, 6)
    s3 = cloud.s3()
    out = cloud.output_bucket
    unreadable = {
        0: (ResultKind.ERROR, b'{"code": "decode_failed", "message": "\xff\xfe"}'),
        1: (ResultKind.ERROR, b'["not", "an", "object"]'),
        2: (ResultKind.CSV, b"caf\xe9,math,2026\n"),  # Latin-1, not UTF-8
    }
    for i, (kind, body) in unreadable.items():
        s3.put_object(Bucket=out, Key=result_key(keys[i], kind), Body=body)
    bad_details = {
        3: b"[" * 100_000 + b"]" * 100_000,  # RecursionError in json.loads
        4: b"\xff not json",
        5: b'["a list"]',
    }
    for i, body in bad_details.items():
        s3.put_object(Bucket=out, Key=result_key(keys[i], ResultKind.DETAILS), Body=body)
        s3.put_object(Bucket=out, Key=result_key(keys[i], ResultKind.CSV), Body=b"bob,cs,2027\n")
    daemon.wait_until(lambda: daemon.concluded(6), timeout=30)

    for i, (_, body) in unreadable.items():
        error = json.loads((daemon.failed / f"clip{i}.error.json").read_text())
        assert error["code"] == "result_unreadable", error
        assert (daemon.failed / f"clip{i}.result.raw").read_bytes() == body
        assert not (daemon.failed / f"clip{i}.csv").exists()
    for i in bad_details:
        assert (daemon.done / f"clip{i}.csv").read_text() == "bob,cs,2027\n"
        assert not (daemon.done / f"clip{i}.json").exists()
    dropped = daemon.events("result.details_dropped")
    assert len(dropped) == 3
    assert [e["people"] for e in daemon.events("result.received")] == [["bob"]] * 3


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_classic_csv_key_and_header_are_found_and_filed(
    tmp_path: Path, cloud: Cloud, daemons: list[Daemon]
) -> None:
    daemon = Daemon(tmp_path / "node", cloud, csv_key="{stem}", csv_header="true")
    daemons.append(daemon)
    daemon.start()
    [key] = uploaded_keys(daemon, cloud, 1)
    details = b'{"format": "hybridsphere.result", "timings": {"total": 0.5}}'
    s3 = cloud.s3()
    s3.put_object(Bucket=cloud.output_bucket, Key=result_key(key, ResultKind.DETAILS), Body=details)
    s3.put_object(
        Bucket=cloud.output_bucket, Key=key.rsplit(".", 1)[0],
        Body=b"name,major,year\nalice,physics,2026\n",
    )  # fmt: skip
    daemon.wait_until(lambda: daemon.concluded(1), timeout=30)
    assert (daemon.done / "clip0.csv").read_text() == "name,major,year\nalice,physics,2026\n"
    assert (daemon.done / "clip0.json").read_bytes() == details  # byte for byte
    [received] = daemon.events("result.received")
    assert received["people"] == ["alice"]


async def test_bytes_in_flight_stay_within_the_shared_budget(
    s3_endpoint: str, tmp_path: Path, unique_name: str, s3: Any
) -> None:
    bucket = unique_name
    body = b"bob,cs,2027\n" * (6 * MIB // 12)  # 6 MiB each: 8 at once would hold 48 MiB
    for n in range(8):
        await put(s3, bucket, f"{PREFIX}s{n}/clip.csv", body)
        await put(s3, bucket, f"{PREFIX}s{n}/clip.faces.jpg", body[: 2 * MIB])
    settings = settings_for(s3_endpoint, tmp_path, bucket)
    async with aws_clients(settings) as clients:
        poller = ResultPoller(clients.s3, settings)
        found = await poller.poll_once("")
        sizes = await asyncio.gather(*(fetch_size(poller, ready) for ready in found))
    assert sizes == [8 * MIB] * 8  # every byte of every result, in turn
    assert poller.budget.peak <= poller.budget.capacity == 32 * MIB
    assert poller.budget.held == 0


async def fetch_size(poller: ResultPoller, ready: ResultReady) -> int:
    async with poller.fetch(ready) as files:
        await asyncio.sleep(0.05)  # while the bytes are held, others wait
        return len(files.csv or b"") + len(files.faces_jpg or b"")


async def test_a_final_file_over_its_limit_is_unreadable_not_fetched(
    s3_endpoint: str, tmp_path: Path, unique_name: str, s3: Any
) -> None:
    bucket = unique_name
    await put(s3, bucket, f"{PREFIX}s1/big.csv", b"x" * 4096)
    await put(s3, bucket, f"{PREFIX}s2/big.error.json", b"{}" + b" " * 4096)
    await put(s3, bucket, f"{PREFIX}s3/ok.csv", b"a,b,c\n")
    await put(s3, bucket, f"{PREFIX}s3/ok.json", b"{}" + b" " * 4096)  # over: dropped
    settings = settings_for(
        s3_endpoint, tmp_path, bucket, result_max_bytes=1024, result_json_max_bytes=1024
    )
    async with aws_clients(settings) as clients:
        poller = ResultPoller(clients.s3, settings)
        big_csv, big_error, ok = await poller.poll_once("")
        for ready in (big_csv, big_error):
            with pytest.raises(ResultUnreadable) as caught:
                await fetch(poller, ready)
            assert caught.value.code == "result_too_large" and caught.value.raw is None
        files = await fetch(poller, ok)
    assert files.csv == b"a,b,c\n" and files.details is None


async def test_classic_csv_key_is_listed_for_its_stem(
    s3_endpoint: str, tmp_path: Path, unique_name: str, s3: Any
) -> None:
    bucket = unique_name
    await put(s3, bucket, f"{PREFIX}s1/test_0", b"alice,physics,2026\n")
    await put(s3, bucket, f"{PREFIX}s1/test_0.json", b"{}")
    await put(s3, bucket, f"{PREFIX}s2/clip.error.json", b'{"code": "x"}')
    settings = settings_for(s3_endpoint, tmp_path, bucket, csv_key="{stem}")
    async with aws_clients(settings) as clients:
        found = await ResultPoller(clients.s3, settings).poll_once("")
    readings = {(r.stem, r.kind) for r in found}
    assert (f"{PREFIX}s1/test_0", ResultKind.CSV) in readings
    assert (f"{PREFIX}s2/clip", ResultKind.ERROR) in readings
    [csv_ready] = [r for r in found if r.stem == f"{PREFIX}s1/test_0"]
    assert csv_ready.details_size == 2


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"\xff\xfe{}", "not UTF-8"), (b"[1]", "not a JSON object"), (b"{", "not JSON"),
     (b"[" * 100_000, "not JSON")],
)  # fmt: skip
def test_unreadable_error_documents(body: bytes, reason: str) -> None:
    with pytest.raises(ResultUnreadable, match=reason) as caught:
        read_error_doc(body, "k.error.json")
    assert caught.value.code == "result_unreadable" and caught.value.raw == body


def test_error_document_fields_are_cut_to_size() -> None:
    doc = read_error_doc(json.dumps({"code": "c" * 500, "message": "m" * 50_000}).encode(), "k")
    assert len(doc.code) == 64 and len(doc.message) == 2000


@pytest.mark.parametrize(
    "body", [b"[" * 100_000 + b"]" * 100_000, b"\xff", b'"a string"', b"[]", b"{"]
)
def test_bad_details_are_dropped(body: bytes) -> None:
    assert read_details(body, "k.json") == (None, None)


def test_details_timings_are_bounded_and_numbers_only() -> None:
    timings = {f"step{n}": n / 10 for n in range(100)} | {"x" * 100: 1, "bad": "1", "t": True}
    data = json.dumps({"timings": timings}).encode()
    kept, bounded = read_details(data, "k.json")
    assert kept == data
    assert bounded is not None and len(bounded) <= 32
    assert all(len(name) <= 64 and isinstance(v, float) for name, v in bounded.items())


def test_prepare_csv_renders_neutralised_rows_and_summarises_a_bounded_part(
    tmp_path: Path,
) -> None:
    data = b"name,major,year\n" + b"=1+1,@x,-2\n" * 1000
    tmp, summary = prepare_csv(data, tmp_path / "clip.csv", header=True)
    text = tmp.read_text()
    assert text.startswith("name,major,year\n'=1+1,'@x,'-2\n")
    assert summary.count == 1000 and len(summary.rows) == 50 and not summary.complete
    _, whole = prepare_csv(b"a,b,c\n", tmp_path / "whole.csv", header=False)
    assert whole.complete and whole.rows == [PersonRow("a", "b", "c")]
    tmp.unlink()
    (tmp_path / f".whole.csv.{os.getpid()}.tmp").unlink()
    with pytest.raises(ResultUnreadable, match="not UTF-8"):
        prepare_csv(b"caf\xe9\n", tmp_path / "bad.csv", header=False)
    with pytest.raises(ResultUnreadable, match="not a CSV"):
        prepare_csv(b'"' + b"x" * 200_000 + b'"\n', tmp_path / "bad.csv", header=False)
    assert list(tmp_path.iterdir()) == []  # nothing else left
