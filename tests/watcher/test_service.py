"""The real daemon (`python -m watcher run`) against moto's server, with a stand-in function.

Files dropped into the inbox end in done/ with their results, or in failed/ or rejected/ with
the reason; kill -9 at every journal step and a restart still yields each file exactly once;
SIGTERM drains; a burst of 1,000 files; results that never come; two nodes on one bucket pair.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import signal
import socket
import time
import urllib.request
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from tests.faults import FaultProxy
from tests.servers import free_port
from tests.watcher_daemon import (
    Cloud,
    Daemon,
    StandInFunction,
    drop,
    video_bytes,
)
from watcher.journal import State

MIB = 1024 * 1024


def assert_each_once_in(folder: Path, names: list[str], *, with_results: bool = True) -> None:
    """Every name is in `folder` exactly once (no `_2` copies) with its CSV beside it."""
    videos = sorted(p.name for p in folder.iterdir() if p.suffix in {".mp4", ".mov"})
    assert videos == sorted(names)
    for name in names:
        stem = name.rsplit(".", 1)[0]
        if with_results:
            assert (folder / f"{stem}.csv").read_text() == "alice,physics,2026\nbob,cs,2027\n"
            assert json.loads((folder / f"{stem}.json").read_text())["timings"]["total"] == 0.02
            assert (folder / f"{stem}.faces.jpg").read_bytes() == b"\xff\xd8jpg"


def test_dropped_videos_end_in_done_with_results(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon]
) -> None:
    # systemd's side of sd_notify: an abstract-namespace datagram socket.
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_name = f"@hybrid-watcher-test-{os.getpid()}-{time.monotonic_ns()}"
    notify.bind("\0" + notify_name[1:])
    notify.settimeout(10)
    port = free_port()
    daemon = Daemon(tmp_path / "node", cloud, metrics_port=port)
    daemons.append(daemon)
    with notify:
        daemon.start(NOTIFY_SOCKET=notify_name, WATCHDOG_USEC="1000000")
        messages = [notify.recv(4096).decode() for _ in range(2)]
    assert "READY=1" in messages[0].splitlines()
    assert any(line.startswith("STATUS=") for line in messages[0].splitlines())
    assert "WATCHDOG=1" in messages

    originals = {"alpha.mp4": video_bytes("alpha"), "beta.mov": video_bytes("beta")}
    dropped_at = time.time()
    for name, data in originals.items():
        drop(daemon.inbox, name, data)
    drop(daemon.inbox, "broken.mp4", video_bytes("broken"))
    daemon.wait_until(lambda: daemon.concluded(3))

    assert_each_once_in(daemon.done, list(originals))
    assert (daemon.done / "alpha.mp4").read_bytes() == originals["alpha.mp4"]
    error = json.loads((daemon.failed / "broken.error.json").read_text())
    assert error["code"] == "decode_failed"
    assert (daemon.failed / "broken.mp4").exists()
    received = daemon.events("result.received")
    assert sorted(e["file"] for e in received) == sorted(originals)
    for event in received:
        assert event["people"] == ["alice", "bob"]
        assert 0 < event["latency_s"] < time.time() - dropped_at + 1
        assert event["timings"] == {"decode": 0.01, "total": 0.02}
    keys = cloud.input_keys()
    assert len(keys) == 3 and all(k.startswith("videos/node-a/") for k in keys)

    # Same content again: the earlier result is reused, nothing is uploaded.
    drop(daemon.inbox, "alpha-again.mp4", originals["alpha.mp4"])
    daemon.wait_until(lambda: daemon.concluded(4))
    again = [e for e in daemon.events("result.received") if e["file"] == "alpha-again.mp4"]
    assert len(again) == 1 and again[0]["reused_from"] and again[0]["people"] == ["alice", "bob"]
    assert (daemon.done / "alpha-again.csv").exists()
    assert len(cloud.input_keys()) == 3

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    text = metrics.decode()
    assert "\nhybrid_watcher_uploads_total 3.0" in text
    assert '\nhybrid_watcher_results_total{outcome="done"} 3.0' in text
    assert "\nhybrid_watcher_result_latency_seconds_count 2.0" in text
    assert "\nhybrid_watcher_uploaded_bytes_total " in text
    last = re.search(r"^hybrid_watcher_last_result_timestamp_seconds (\S+)$", text, re.M)
    assert last and abs(float(last.group(1)) - time.time()) < 120
    assert re.search(r'^hybrid_watcher_build_info\{version="[^"]+"\} 1\.0$', text, re.M)
    assert re.search(r"^process_resident_memory_bytes ", text, re.M)

    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert list((daemon.root / "processing").iterdir()) == []
    assert list(daemon.inbox.iterdir()) == []


def test_rejected_inputs(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon]
) -> None:
    daemon = Daemon(tmp_path / "node", cloud)
    daemons.append(daemon)
    daemon.start()
    precious = tmp_path / "precious.mp4"
    precious.write_bytes(video_bytes("precious"))
    drop(daemon.inbox, "notes.txt", b"meeting notes")
    drop(daemon.inbox, "fake.mp4", b"this is not a video at all")
    drop(daemon.inbox, "empty.mp4", b"")
    (daemon.inbox / "link.mp4").symlink_to(precious)
    os.mkfifo(daemon.inbox / "pipe.mp4")
    daemon.wait_until(lambda: daemon.counts().get("rejected", 0) == 5)

    reasons = {
        p.name.removesuffix(".reason.json"): json.loads(p.read_text())["reason"]
        for p in daemon.rejected.glob("*.reason.json")
    }
    assert reasons == {
        "notes.txt": "extension", "fake.mp4": "not a video", "empty.mp4": "empty",
        "link.mp4": "not a regular file", "pipe.mp4": "not a regular file",
    }  # fmt: skip
    assert (daemon.rejected / "link.mp4").is_symlink()
    assert (daemon.rejected / "pipe.mp4").is_fifo()
    assert precious.read_bytes() == video_bytes("precious")
    assert cloud.input_keys() == []
    assert len(daemon.events("intake.rejected")) == 5


# Each step the pipeline commits before acting (tests/crash_points.py kills the daemon right
# after it); "moved" is after the files moved but before the announcement; "failed" is the
# conclusion of a function error.
KILL_STEPS = ["discovered", "uploading", "uploaded", "done", "moved", "failed"]


@pytest.mark.slow
@pytest.mark.parametrize("step", KILL_STEPS)
def test_kill_9_at_each_step_then_restart(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon], step: str
) -> None:
    daemon = Daemon(tmp_path / "node", cloud)
    daemons.append(daemon)
    daemon.start(WATCHER_TEST_KILL_AT=step)
    names = ["one.mp4", "two.mp4"]
    for name in names:
        drop(daemon.inbox, name, video_bytes(name))
    drop(daemon.inbox, "broken.mp4", video_bytes("broken"))
    assert daemon.wait_exit(30) == -signal.SIGKILL
    assert daemon.events("test.kill")[0]["step"] == step

    daemon.start()
    daemon.wait_until(lambda: daemon.concluded(3))
    time.sleep(0.5)  # time to (wrongly) log or move anything twice
    assert_each_once_in(daemon.done, names)
    assert sorted(p.name for p in daemon.failed.iterdir()) == ["broken.error.json", "broken.mp4"]
    assert Counter(e["file"] for e in daemon.events("result.received")) == dict.fromkeys(names, 1)
    assert len(daemon.events("submission.failed")) == 1
    assert list((daemon.root / "processing").iterdir()) == []
    assert list(daemon.inbox.iterdir()) == []
    states = Counter(s.state for s in daemon.submissions())
    assert states == {State.DONE: 2, State.FAILED: 1}
    # A re-upload after a crash reuses the same key. (How often each key was *written*, i.e.
    # how many ObjectCreated events AWS would send, is counted in the test that kills the
    # watcher between the PUT and `uploaded`: the stand-in answers a key once however often.)
    assert len(cloud.input_keys()) == 3


@pytest.mark.slow
async def test_killed_after_the_put_returned_the_restart_does_not_put_again(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon]
) -> None:
    """On AWS every PUT is an ObjectCreated event, i.e. one more run of the function: killed
    after S3 stored the video but before `uploaded` was committed, the restart finds the
    object (HEAD: same size and sha256) instead of sending it again."""
    async with FaultProxy(cloud.endpoint) as proxy:
        through_proxy = dataclasses.replace(cloud, endpoint=proxy.url)
        daemon = Daemon(tmp_path / "node", through_proxy)
        daemons.append(daemon)
        await asyncio.to_thread(daemon.start, WATCHER_TEST_KILL_AT="sent")
        await asyncio.to_thread(drop, daemon.inbox, "clip.mp4", video_bytes("clip"))
        assert await asyncio.to_thread(daemon.wait_exit, 30) == -signal.SIGKILL
        [sub] = daemon.submissions()
        assert sub.state is State.UPLOADING  # stored in S3, not yet in the journal

        await asyncio.to_thread(daemon.start)
        await asyncio.to_thread(daemon.wait_until, lambda: daemon.concluded(1))
        puts = [s for s in proxy.seen if s.is_object_put and s.path.endswith(sub.key)]
        assert len(puts) == 1
        assert daemon.events("upload.already_present", run=2)
        assert_each_once_in(daemon.done, ["clip.mp4"])
        await asyncio.to_thread(daemon.stop)


@pytest.mark.slow
def test_sigterm_drains_an_upload_in_flight(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon]
) -> None:
    # 9 MiB through a 3 MiB/s cap with a 5 MiB burst: the upload waits ~1.3 s in flight.
    daemon = Daemon(tmp_path / "node", cloud, bandwidth_limit_mbps=3, part_size_mb=5)
    daemons.append(daemon)
    daemon.start()
    drop(daemon.inbox, "big.mp4", video_bytes("big", 9 * MIB))
    daemon.wait_until(lambda: daemon.counts().get("uploading") == 1)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(20) == 0
    assert daemon.events("shutdown.drained", run=1)
    [sub] = daemon.submissions()
    assert sub.state in {State.UPLOADED, State.DONE}

    daemon.start()
    daemon.wait_until(lambda: daemon.concluded(1))
    assert_each_once_in(daemon.done, ["big.mp4"])


@pytest.mark.slow
def test_second_sigint_skips_the_grace_period(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon]
) -> None:
    daemon = Daemon(tmp_path / "node", cloud, bandwidth_limit_mbps=1, part_size_mb=5)
    daemons.append(daemon)
    daemon.start()
    drop(daemon.inbox, "big.mp4", video_bytes("big", 9 * MIB))  # ~4 s in flight
    daemon.wait_until(lambda: daemon.counts().get("uploading") == 1)
    started = time.monotonic()
    daemon.signal(signal.SIGINT)
    daemon.wait_for("shutdown.requested")
    daemon.signal(signal.SIGINT)
    assert daemon.wait_exit(10) == 0
    assert time.monotonic() - started < 3
    assert daemon.events("shutdown.forced")
    unfinished = daemon.events("shutdown.unfinished")
    assert [(e["file"], e["state"]) for e in unfinished] == [("big.mp4", "uploading")]

    daemon.start()  # the cancelled upload starts again and completes
    daemon.wait_until(lambda: daemon.concluded(1), timeout=40)
    assert_each_once_in(daemon.done, ["big.mp4"])


def test_a_result_that_never_comes_is_overdue_then_timed_out(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon]
) -> None:
    daemon = Daemon(tmp_path / "node", cloud, result_overdue_s=0.6, result_deadline_s=1.5)
    daemons.append(daemon)
    daemon.start()
    drop(daemon.inbox, "never.mp4", video_bytes("never"))
    daemon.wait_until(lambda: daemon.concluded(1))
    overdue = daemon.events("result.overdue")
    timed_out = daemon.events("result.timed_out")
    assert len(overdue) == 1 and len(timed_out) == 1
    assert overdue[0]["timestamp"] < timed_out[0]["timestamp"]
    [sub] = daemon.submissions()
    assert sub.state is State.TIMED_OUT and sub.overdue
    assert json.loads((daemon.failed / "never.error.json").read_text())["code"] == "timed_out"
    assert (daemon.failed / "never.mp4").exists()
    # Its input object was still there: waited for, not uploaded again.
    assert sub.attempts == 1 and not daemon.events("input.vanished")


@pytest.mark.slow
def test_retention_empties_done_and_forgets_the_journal_rows(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon]
) -> None:
    short = 2 / 86_400  # two seconds, in days
    daemon = Daemon(
        tmp_path / "node", cloud, retention_done_days=short, retention_failed_days=short,
        retention_rejected_days=short,
    )  # fmt: skip
    daemons.append(daemon)
    daemon.start()
    drop(daemon.inbox, "old.mp4", video_bytes("old"))
    daemon.wait_until(lambda: daemon.concluded(1))
    daemon.stop()
    time.sleep(2.5)
    # The first round of housekeeping after a start purges (a VM may have booted minutes ago).
    daemon.start()
    daemon.wait_until(lambda: not daemon.submissions() and not any(daemon.done.iterdir()), 20)
    assert daemon.events("retention.purged") and daemon.events("retention.journal_pruned")
    with daemon.journal() as store:
        assert store.events() == []


def test_a_reused_result_is_rebuilt_from_the_journal_not_read_from_the_old_path(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon]
) -> None:
    """`on_duplicate = "reuse"`: the answer for the same bytes comes from what the journal
    recorded for them. After done/ was emptied (by a person, or retention) another group took
    the earlier path `done/clip.csv`; reusing must not file that group's CSV beside this
    video. Without the rows in the journal (an older row), the video is uploaded again."""
    daemon = Daemon(tmp_path / "node", cloud)
    daemons.append(daemon)
    daemon.start()
    data = video_bytes("clip")
    drop(daemon.inbox, "clip.mp4", data)
    daemon.wait_until(lambda: daemon.concluded(1))
    for path in daemon.done.iterdir():
        path.unlink()
    # Another video's group, since: its own CSV at the earlier submission's path.
    (daemon.done / "clip.mp4").write_bytes(video_bytes("another"))
    (daemon.done / "clip.csv").write_text("carol,art,2025\n")

    drop(daemon.inbox, "clip.mp4", data)
    daemon.wait_until(lambda: daemon.concluded(2))
    [reused] = [e for e in daemon.events("result.received") if e["reused_from"]]
    assert Path(reused["path"]).name == "clip_2.mp4" and reused["people"] == ["alice", "bob"]
    assert (daemon.done / "clip_2.csv").read_text() == "alice,physics,2026\nbob,cs,2027\n"
    assert (daemon.done / "clip.csv").read_text() == "carol,art,2025\n"
    assert len(cloud.input_keys()) == 1

    with daemon.journal() as store:  # rows recorded without their CSV rows
        for sub in store.latest():
            assert sub.result is not None
            store.update(sub.id, result={"people": sub.result["people"]})
    drop(daemon.inbox, "clip.mp4", data)
    daemon.wait_until(lambda: daemon.concluded(3))
    last = daemon.events("result.received")[-1]
    assert Path(last["path"]).name == "clip_3.mp4" and last["reused_from"] is None
    assert (daemon.done / "clip_3.csv").read_text() == "alice,physics,2026\nbob,cs,2027\n"
    assert len(cloud.input_keys()) == 2  # answered by the function again


@pytest.mark.slow
def test_an_input_object_that_vanished_is_uploaded_again(
    tmp_path: Path, cloud: Cloud, daemons: list[Daemon]
) -> None:
    daemon = Daemon(tmp_path / "node", cloud, result_overdue_s=1.0, result_deadline_s=60)
    daemons.append(daemon)
    daemon.start()
    drop(daemon.inbox, "lost.mp4", video_bytes("lost"))
    daemon.wait_for("upload.completed")
    # As when a local cloud restarts without its state, or a lifecycle rule runs too early.
    [key] = cloud.input_keys()
    cloud.s3().delete_object(Bucket=cloud.input_bucket, Key=key)
    with StandInFunction(cloud) as function:  # only now: it never saw the first object
        daemon.wait_until(lambda: daemon.concluded(1), timeout=30)
    assert function.answered == {key: 1}
    [vanished] = daemon.events("input.vanished")
    assert vanished["action"] == "upload again" and vanished["key"] == key
    [sub] = daemon.submissions()
    assert sub.state is State.DONE and sub.attempts == 2
    assert_each_once_in(daemon.done, ["lost.mp4"])


def test_a_result_that_overtakes_an_older_one_is_still_collected_promptly(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon]
) -> None:
    """Lambda answers concurrently, so results arrive out of submission order all the time.

    Regression: the poller listed only after the newest result seen, with a sweep from the
    oldest awaited submission every 5th tick, so an overtaken result waited ~5 intervals.
    """
    daemon = Daemon(tmp_path / "node", cloud, poll_interval_s=1.0, poll_max_interval_s=1.0)
    daemons.append(daemon)
    daemon.start()
    drop(daemon.inbox, "a_slow.mp4", video_bytes("a_slow"))
    daemon.wait_for("upload.completed")
    time.sleep(1.1)  # a later second, so the next submission id sorts after this one
    drop(daemon.inbox, "b_fast.mp4", video_bytes("b_fast"))
    daemon.wait_until(lambda: daemon.concluded(2))
    [slow_key] = [k for k in function.csv_written_at if "a_slow" in k]
    [received] = [e for e in daemon.events("result.received") if e["file"] == "a_slow.mp4"]
    received_at = datetime.fromisoformat(received["timestamp"]).timestamp()
    # One poll interval plus the fetch, with room for a loaded machine; the bug took ~5 s.
    assert received_at - function.csv_written_at[slow_key] < 2.5


def test_two_watchers_do_not_take_each_others_results(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon]
) -> None:
    a = Daemon(tmp_path / "a", cloud, node_id="node-a")
    b = Daemon(tmp_path / "b", cloud, node_id="node-b")
    daemons += [a, b]
    a.start()
    b.start()
    # The same file name on both nodes: only the node id in the key tells them apart.
    drop(a.inbox, "clip.mp4", video_bytes("from-a"))
    drop(b.inbox, "clip.mp4", video_bytes("from-b"))
    drop(b.inbox, "only-b.mp4", video_bytes("only-b"))
    a.wait_until(lambda: a.concluded(1))
    b.wait_until(lambda: b.concluded(2))
    time.sleep(0.5)
    assert_each_once_in(a.done, ["clip.mp4"])
    assert_each_once_in(b.done, ["clip.mp4", "only-b.mp4"])
    assert (a.done / "clip.mp4").read_bytes() == video_bytes("from-a")
    assert [e["file"] for e in a.events("result.received")] == ["clip.mp4"]
    assert sorted(e["file"] for e in b.events("result.received")) == ["clip.mp4", "only-b.mp4"]
    assert {s.key.split("/")[1] for s in a.submissions()} == {"node-a"}


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_burst_of_1000_files(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon]
) -> None:
    daemon = Daemon(tmp_path / "node", cloud, upload_concurrency=8)
    daemons.append(daemon)
    daemon.start()
    names = [f"burst-{n:04d}.mp4" for n in range(1000)]
    started = time.monotonic()
    for name in names:
        drop(daemon.inbox, name, video_bytes(name, 512))
    daemon.wait_until(lambda: daemon.concluded(1000), timeout=270)  # coverage slows the daemon
    elapsed = time.monotonic() - started
    assert_each_once_in(daemon.done, names)
    assert len(daemon.events("result.received")) == 1000
    print(f"1000 files: dropped → all results in done/ in {elapsed:.1f} s")


def _listings(proxy: FaultProxy, bucket: str) -> int:
    return sum(
        1 for s in proxy.seen if s.method == "GET" and bucket in s.path and "list-type" in s.query
    )


@pytest.mark.slow
async def test_polling_stops_while_idle_and_keeps_its_grid_while_waiting(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon]
) -> None:
    async with FaultProxy(cloud.endpoint) as proxy:
        through_proxy = dataclasses.replace(cloud, endpoint=proxy.url)
        daemon = Daemon(
            tmp_path / "node", through_proxy, poll_interval_s=0.2, poll_max_interval_s=1.6
        )
        daemons.append(daemon)
        await asyncio.to_thread(daemon.start)
        idle_from = _listings(proxy, cloud.output_bucket)
        await asyncio.sleep(3.0)
        # Nothing awaited: no listing at all (it would be 15 on the 0.2 s grid).
        assert _listings(proxy, cloud.output_bucket) - idle_from == 0

        await asyncio.to_thread(drop, daemon.inbox, "never.mp4", video_bytes("never"))
        await asyncio.to_thread(daemon.wait_for, "upload.completed")
        waiting_from = _listings(proxy, cloud.output_bucket)
        await asyncio.sleep(2.0)
        # One result pending: a listing every 0.2 s, whatever each one costs.
        assert 8 <= _listings(proxy, cloud.output_bucket) - waiting_from <= 11
        await asyncio.to_thread(daemon.stop)


@pytest.mark.slow
async def test_invoke_mode_invokes_once_per_upload_even_across_a_crash(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon]
) -> None:
    """trigger_mode=invoke: killed after `uploaded` but before the invoke, the restart invokes."""
    async with FaultProxy(cloud.endpoint) as proxy:
        # The proxy plays Lambda (202 Accepted for async invokes); S3 requests go on to moto.
        proxy.fail(1000, lambda seen: "/functions/" in seen.path, status=202, code="Accepted")
        through_proxy = dataclasses.replace(cloud, endpoint=proxy.url)
        daemon = Daemon(tmp_path / "node", through_proxy, trigger_mode="invoke")
        daemons.append(daemon)
        await asyncio.to_thread(daemon.start, WATCHER_TEST_KILL_AT="uploaded")
        await asyncio.to_thread(drop, daemon.inbox, "clip.mp4", video_bytes("clip"))
        assert await asyncio.to_thread(daemon.wait_exit, 30) == -signal.SIGKILL
        assert [s for s in proxy.seen if "/functions/" in s.path] == []

        await asyncio.to_thread(daemon.start)
        await asyncio.to_thread(daemon.wait_until, lambda: daemon.concluded(1))
        invokes = [s for s in proxy.seen if "/functions/" in s.path]
        assert len(invokes) == 1
        assert invokes[0].path == "/2015-03-31/functions/hybridsphere-face-recognition/invocations"
        assert invokes[0].headers["x-amz-invocation-type"] == "Event"
        [sub] = daemon.submissions()
        assert sub.triggered and sub.state is State.DONE
        await asyncio.to_thread(daemon.stop)


@pytest.mark.slow
async def test_invoke_mode_killed_between_the_invoke_and_its_commit_invokes_again(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon]
) -> None:
    """What holds in invoke mode is at least once: Lambda accepted the invoke (202) but the
    watcher died before committing `triggered`, so the restart invokes again, for the same
    object. The video is still delivered once, with one result."""
    async with FaultProxy(cloud.endpoint) as proxy:
        proxy.fail(1000, lambda seen: "/functions/" in seen.path, status=202, code="Accepted")
        through_proxy = dataclasses.replace(cloud, endpoint=proxy.url)
        daemon = Daemon(tmp_path / "node", through_proxy, trigger_mode="invoke")
        daemons.append(daemon)
        await asyncio.to_thread(daemon.start, WATCHER_TEST_KILL_AT="invoked")
        await asyncio.to_thread(drop, daemon.inbox, "clip.mp4", video_bytes("clip"))
        assert await asyncio.to_thread(daemon.wait_exit, 30) == -signal.SIGKILL
        assert len([s for s in proxy.seen if "/functions/" in s.path]) == 1

        await asyncio.to_thread(daemon.start)
        await asyncio.to_thread(daemon.wait_until, lambda: daemon.concluded(1))
        await asyncio.sleep(0.5)  # time to (wrongly) invoke or deliver a third time
        invokes = [s for s in proxy.seen if "/functions/" in s.path]
        assert len(invokes) == 2
        [sub] = daemon.submissions()
        assert sub.triggered and sub.state is State.DONE
        assert len(daemon.events("trigger.invoked")) == 2
        assert {e["key"] for e in daemon.events("trigger.invoked")} == {sub.key}
        assert_each_once_in(daemon.done, ["clip.mp4"])
        assert len(daemon.events("result.received")) == 1
        await asyncio.to_thread(daemon.stop)
