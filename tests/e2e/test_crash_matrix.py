"""The crash matrix's environmental faults, each driven for real against a running daemon:
moto's server stopped and replaced by a fresh one (its state lost, re-provisioned), the staging
disk full, and done/ refusing writes. Each test states the expected outcome; in every case the
daemon keeps running and no file is lost or delivered twice. (kill -9 at each journal state:
tests/watcher/test_service.py; runtime worker crash/timeout: tests/local/emulator/test_runtime.py;
config errors → exit 78: tests/watcher/test_settings.py. The table is in docs/reliability.md.)
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import FaultProxy
from tests.mounts import small_tmpfs
from tests.servers import MotoProcess, ServeLocal, provision_stack
from tests.watcher_daemon import (
    Cloud,
    Daemon,
    StandInFunction,
    drop,
    video_bytes,
)
from watcher.journal import State

MIB = 1024 * 1024


# --- moto's server stopped, then a fresh (empty) one re-provisioned ---


def _outage_test(tmp_path: Path, name: str, outage_s: float) -> None:
    """Expected: the daemon and the runtime stay up, log their failed and retried calls, and
    once S3 answers again: a file dropped during the outage is uploaded and done; a file whose
    input object vanished with moto's state before the function answered is found missing when
    it is overdue (`input.vanished`), uploaded again, and done."""
    asyncio.run(_outage(tmp_path, name, outage_s))


async def _outage(tmp_path: Path, name: str, outage_s: float) -> None:
    first = await asyncio.to_thread(MotoProcess)
    second: MotoProcess | None = None
    async with FaultProxy(first.url) as proxy:
        # Blocking calls through the proxy run in a thread: the proxy serves on this loop.
        resources = await asyncio.to_thread(provision_stack, proxy.url, name, 5)
        # The function takes 1.5 s per video: time to stop moto between upload and answer.
        runtime = await asyncio.to_thread(
            ServeLocal,
            resources,
            tmp_path / "stand-in",
            extra_env={"STAND_IN_SLEEP_S": "1.5", "HYBRID_FUNCTION_TIMEOUT_S": "5"},
        )
        cloud = Cloud(proxy.url, resources.input_bucket, resources.output_bucket)
        # A patient retry budget (outlasting the outage); overdue during the outage, so the
        # input check fails at first and is asked again until S3 answers.
        daemon = Daemon(
            tmp_path / "node", cloud, retry_attempts=10_000, retry_max_delay_s=1.0,
            retry_max_seconds=outage_s + 60, result_overdue_s=outage_s / 2,
            result_deadline_s=outage_s * 4, poll_max_interval_s=2.0,
        )  # fmt: skip
        try:
            await asyncio.to_thread(daemon.start)
            await asyncio.to_thread(drop, daemon.inbox, "before.mp4", video_bytes("before"))
            await asyncio.to_thread(daemon.wait_for, "result.received")
            await asyncio.to_thread(drop, daemon.inbox, "pending.mp4", video_bytes("pending"))
            await asyncio.to_thread(daemon.wait_for, "upload.completed", lambda f: len(f) == 2)
            first.stop()
            down_at = time.monotonic()
            await asyncio.to_thread(drop, daemon.inbox, "during.mp4", video_bytes("during"))
            second = await asyncio.to_thread(MotoProcess)  # not reachable until switched to
            await asyncio.to_thread(provision_stack, second.url, name, 5)
            await asyncio.sleep(max(0.0, outage_s - (time.monotonic() - down_at)))
            assert daemon.proc is not None and daemon.proc.poll() is None
            assert runtime.process.poll() is None
            proxy.upstream = second.url
            await asyncio.to_thread(daemon.wait_until, lambda: daemon.concluded(3), 60 + outage_s)
            back_after = time.monotonic() - down_at - outage_s
            assert daemon.proc is not None and daemon.proc.poll() is None
        finally:
            await asyncio.to_thread(daemon.stop)
            assert await asyncio.to_thread(runtime.stop) == 0
            first.stop()
            if second is not None:
                second.stop()

    states = {s.original_name: s.state for s in daemon.submissions()}
    assert states == {
        "before.mp4": State.DONE,
        "during.mp4": State.DONE,
        "pending.mp4": State.DONE,
    }
    assert sorted(p.name for p in daemon.done.iterdir() if p.suffix in {".csv", ".mp4"}) == [
        "before.csv", "before.mp4", "during.csv", "during.mp4", "pending.csv", "pending.mp4",
    ]  # fmt: skip
    assert (daemon.done / "pending.mp4").read_bytes() == video_bytes("pending")
    [vanished] = daemon.events("input.vanished")
    assert vanished["file"] == "pending.mp4" and vanished["action"] == "upload again"
    received = Counter(e["file"] for e in daemon.events("result.received"))
    assert received == {"before.mp4": 1, "during.mp4": 1, "pending.mp4": 1}
    retries = Counter(e["event"] for e in daemon.events() if e["event"].endswith(".retrying"))
    assert retries["upload.retrying"] > 0  # during.mp4 waited out the outage
    assert runtime.named("queue.receive_failed")  # the runtime saw it too, and carried on
    print(
        f"\nmoto down {outage_s:.0f} s: daemon retries {dict(retries)}, runtime receive "
        f"failures {len(runtime.named('queue.receive_failed'))}; all concluded "
        f"{back_after:.1f} s after S3 came back"
    )


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_moto_stopped_and_replaced_keeps_the_daemon_running(
    tmp_path: Path, unique_name: str
) -> None:
    _outage_test(tmp_path, unique_name, outage_s=6)


@pytest.mark.soak
@pytest.mark.timeout(300)
def test_moto_down_for_a_minute_keeps_the_daemon_running(tmp_path: Path, unique_name: str) -> None:
    _outage_test(tmp_path, unique_name, outage_s=60)


# --- the staging disk full ---


def fill(folder: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to free the space)."""
    filler = folder / "filler.bin"
    # Unbuffered: the write that hits ENOSPC raises here, not later in close().
    with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 64 * 1024)
    return filler


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_staging_disk_full_then_freed(tmp_path: Path, cloud: Cloud) -> None:
    """Expected: while the disk is full, results cannot be written and new files cannot be
    recorded; the daemon logs why and keeps running, each file stays where it was (processing/
    or the inbox), and once space returns every one ends in done/ exactly once."""
    root = tmp_path / "node"
    with small_tmpfs(root, "4m"), StandInFunction(cloud, delay_s=1.5) as function:
        daemon = Daemon(root, cloud, rescan_interval_s=0.5)
        try:
            daemon.start()
            for name in ("a.mp4", "b.mp4"):
                drop(daemon.inbox, name, video_bytes(name))
            daemon.wait_for("upload.completed", lambda found: len(found) == 2)
            late = root / "late.mp4"  # written while there was room, moved in when full
            late.write_bytes(video_bytes("late"))
            filler = fill(root)
            late.rename(daemon.inbox / "late.mp4")
            daemon.wait_until(lambda: sum(function.answered.values()) == 2)
            time.sleep(2)  # the results are there: the daemon fails to write them, and retries
            assert daemon.proc is not None and daemon.proc.poll() is None
            assert not daemon.done.exists() or list(daemon.done.iterdir()) == []
            assert (daemon.inbox / "late.mp4").exists()
            complaints = daemon.events("result.collect_failed") + daemon.events(
                "intake.hand_over_failed"
            )
            assert complaints, "the full disk went unnoticed"
            filler.unlink()
            daemon.wait_until(lambda: daemon.concluded(3), timeout=30)
            assert daemon.proc.poll() is None
        finally:
            daemon.stop()
        videos = sorted(p.name for p in daemon.done.iterdir() if p.suffix == ".mp4")
        assert videos == ["a.mp4", "b.mp4", "late.mp4"]
        assert (daemon.done / "a.csv").read_text() == "alice,physics,2026\nbob,cs,2027\n"
        received = Counter(e["file"] for e in daemon.events("result.received"))
        assert received == {"a.mp4": 1, "b.mp4": 1, "late.mp4": 1}
        logged = Counter(e["event"] for e in complaints)
        print(f"\ndisk full: logged {dict(logged)}, then all 3 done once")


# --- done/ refusing writes ---


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """`folder` refuses new names (`chattr +i`: root ignores chmod 000) until the block ends."""
    folder.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["chattr", "+i", str(folder)], check=False).returncode:
        pytest.skip("chattr +i is not supported on this filesystem")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_done_folder_not_writable_across_a_restart_then_fixed(tmp_path: Path, cloud: Cloud) -> None:
    """Expected: each result is fetched and kept (journal + processing/), the failed move is
    logged, and the daemon keeps running — also when restarted while done/ still refuses
    writes: recovery logs the group it cannot deliver and the inbox is read. A second
    `clip.mp4` gets its own name (the first one's is reserved, across the restart too). Once
    done/ is writable again, both arrive without a restart, announced once each; a file put
    at a reserved name meanwhile is never replaced (the group takes the next free name)."""
    daemon = Daemon(tmp_path / "node", cloud)
    first, second = video_bytes("first"), video_bytes("second")
    with StandInFunction(cloud):
        try:
            daemon.start()
            with locked(daemon.done):
                drop(daemon.inbox, "clip.mp4", first)
                daemon.wait_for("result.collect_failed")
                daemon.stop()
                daemon.start()  # used to exit 1 here, at every start (systemd: every 5 s)
                assert daemon.events("recovery.delivery_failed", run=2)
                drop(daemon.inbox, "clip.mp4", second)  # the inbox is read
                daemon.wait_until(lambda: len(daemon.submissions()) == 2)
                daemon.wait_until(
                    lambda: all(s.final_path for s in daemon.submissions()), timeout=20
                )
                time.sleep(1)
                assert daemon.proc is not None and daemon.proc.poll() is None
                assert list(daemon.done.iterdir()) == []
                finals = {s.id: Path(s.final_path or "").name for s in daemon.submissions()}
                assert sorted(finals.values()) == ["clip.mp4", "clip_2.mp4"]
                for sub in daemon.submissions():
                    assert sub.result is not None and sub.result["people"] == ["alice", "bob"]
                # Frozen while done/ is unlocked and someone puts a file at the first
                # group's reserved name: no housekeeping tick can come in between.
                daemon.signal(signal.SIGSTOP)
            try:
                (daemon.done / "clip.mp4").write_bytes(b"an operator's own clip.mp4")
            finally:
                daemon.signal(signal.SIGCONT)
            daemon.wait_until(lambda: daemon.concluded(2), timeout=20)
            assert daemon.proc.poll() is None
        finally:
            daemon.stop()
    assert sorted(p.name for p in daemon.done.iterdir()) == [
        "clip.mp4",
        "clip_2.csv", "clip_2.faces.jpg", "clip_2.json", "clip_2.mp4",
        "clip_3.csv", "clip_3.faces.jpg", "clip_3.json", "clip_3.mp4",
    ]  # fmt: skip
    assert (daemon.done / "clip.mp4").read_bytes() == b"an operator's own clip.mp4"
    assert (daemon.done / "clip_2.mp4").read_bytes() == second
    assert (daemon.done / "clip_3.mp4").read_bytes() == first
    assert list((daemon.root / "processing").iterdir()) == []
    received = {e["submission"]: Path(e["path"]).name for e in daemon.events("result.received")}
    assert sorted(received.values()) == ["clip_2.mp4", "clip_3.mp4"]
    assert len(daemon.events("result.received")) == 2
    [renamed] = daemon.events("delivery.renamed")
    assert Path(renamed["from"]).name == "clip.mp4" and Path(renamed["to"]).name == "clip_3.mp4"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_done_folder_on_another_file_system_delivers(tmp_path: Path, cloud: Cloud) -> None:
    """Expected: done/ being another file system (a share mounted there: every rename is
    EXDEV) changes nothing visible: each group is copied in and announced once; nothing is
    left in processing/, no temporary in done/, and a restart finds nothing to redo."""
    root = tmp_path / "node"
    with small_tmpfs(root / "done", "8m"), StandInFunction(cloud):
        daemon = Daemon(root, cloud)
        try:
            daemon.start()
            drop(daemon.inbox, "clip.mp4", video_bytes("clip"))
            drop(daemon.inbox, "broken.mp4", video_bytes("broken"))
            daemon.wait_until(lambda: daemon.concluded(2), timeout=30)
            daemon.stop()
            daemon.start()
            time.sleep(1)
            assert daemon.proc is not None and daemon.proc.poll() is None
        finally:
            daemon.stop()
        assert sorted(p.name for p in daemon.done.iterdir()) == [
            "clip.csv", "clip.faces.jpg", "clip.json", "clip.mp4",
        ]  # fmt: skip
        assert (daemon.done / "clip.mp4").read_bytes() == video_bytes("clip")
        assert (daemon.done / "clip.csv").read_text() == "alice,physics,2026\nbob,cs,2027\n"
    assert sorted(p.name for p in daemon.failed.iterdir()) == ["broken.error.json", "broken.mp4"]
    assert list((root / "processing").iterdir()) == []
    assert len(daemon.events("result.received")) == 1
    assert daemon.events("delivery.failed") == daemon.events("recovery.delivering") == []


# --- a restart with rejections in the journal ---


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_restart_after_a_rejection_starts_and_delivers(tmp_path: Path, cloud: Cloud) -> None:
    """Rejections are journal rows too (moved first, recorded after): neither a restart's
    recovery nor the housekeeping's redelivery may treat them as undelivered results."""
    daemon = Daemon(tmp_path / "node", cloud)
    with StandInFunction(cloud):
        try:
            daemon.start()
            drop(daemon.inbox, "notes.mp4", b"just some text, not a video at all")
            daemon.wait_for("intake.rejected")
            daemon.stop()
            daemon.start()
            drop(daemon.inbox, "clip.mp4", video_bytes("clip"))
            # concluded() counts delivered rows: a rejection never is.
            daemon.wait_until(lambda: daemon.concluded(1), timeout=20)
            time.sleep(5.5)  # one housekeeping tick (5 s): no redelivery of the rejection
            assert daemon.proc is not None and daemon.proc.poll() is None
        finally:
            daemon.stop()
    assert daemon.events("delivery.failed") == []
    assert daemon.events("recovery.delivering") == []
    assert sorted(p.name for p in daemon.rejected.iterdir()) == [
        "notes.mp4", "notes.mp4.reason.json",
    ]  # fmt: skip
    assert len(daemon.events("result.received")) == 1
