"""Intake: complete files only, temp names ignored, special files at once, renames fast."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from watcher.intake import Intake, files_open_for_writing, is_temporary, writers_visible

MP4 = b"\x00\x00\x00\x18ftypmp42" + bytes(1000)


class Taker:
    """An on_ready that moves each file out of the inbox and notes when it got it."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.taken: dict[str, float] = {}
        self.arrived = asyncio.Event()

    async def __call__(self, path: Path) -> None:
        self.taken[path.name] = time.monotonic()
        await asyncio.to_thread(path.rename, self.out / path.name)
        self.arrived.set()

    async def wait_for(self, name: str, within_s: float) -> float:
        deadline = time.monotonic() + within_s
        while name not in self.taken:
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline and name not in self.taken:
                raise AssertionError(f"{name} not taken within {within_s} s: {self.taken}")
        return self.taken[name]


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, *, settle_s: float, subfolders: bool = False, fast: bool = True
) -> AsyncIterator[tuple[Path, Taker]]:
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir(exist_ok=True)
    out.mkdir(exist_ok=True)
    taker = Taker(out)
    intake = Intake(
        inbox, taker, settle_s=settle_s, rescan_interval_s=60, subfolders=subfolders, fast=fast
    )
    stop = asyncio.Event()
    task = asyncio.create_task(intake.run(stop))
    await asyncio.sleep(0.3)  # the watcher thread is up
    try:
        yield inbox, taker
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def test_temporary_names() -> None:
    assert all(map(is_temporary, [".x.mp4", "x.mp4.part", "x.mp4.tmp", "x.mp4~", ".x"]))
    assert not any(map(is_temporary, ["x.mp4", "x.part.mp4", "tmp.mov"]))


def test_open_writer_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "w.mp4"
    script = (
        f"import time; f = open({str(path)!r}, 'wb'); print('open', flush=True); time.sleep(30)"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as writer:
        try:
            assert writer.stdout is not None and writer.stdout.readline() == "open\n"
            st = path.stat()
            assert (st.st_dev, st.st_ino) in files_open_for_writing(str(tmp_path))
            # Readers do not count: a checksum tool or a viewer must not hold a file back.
            with path.open("rb"):
                writer.kill()
                writer.wait()
                assert files_open_for_writing(str(tmp_path)) == set()
        finally:
            writer.kill()


async def test_renamed_in_file_is_taken_fast(tmp_path: Path) -> None:
    # A 10 s settle time: being taken in well under a second proves the event path did it.
    async with running(tmp_path, settle_s=10) as (inbox, taker):
        latencies = []
        for n in range(5):
            staging = tmp_path / f"c{n}.mp4"
            staging.write_bytes(MP4)
            renamed = time.monotonic()
            staging.rename(inbox / staging.name)
            latencies.append(await taker.wait_for(staging.name, 3) - renamed)
    assert max(latencies) < 0.2, latencies


SLOW_WRITER = """
import sys, time
with open(sys.argv[1], "wb") as out:
    for n in range(8):  # ~2.8 s of writing, with pauses longer than the settle time
        out.write(bytes.fromhex(sys.argv[2]))
        out.flush()
        time.sleep(0.5 if n % 2 else 0.2)
    print("closing", flush=True)
"""


async def test_slow_writer_is_not_taken_early(tmp_path: Path) -> None:
    async with running(tmp_path, settle_s=0.3) as (inbox, taker):
        writer = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SLOW_WRITER, str(inbox / "slow.mp4"), MP4.hex(),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert writer.stdout is not None
        assert await writer.stdout.readline() == b"closing\n"
        closed_at = time.monotonic()
        await writer.wait()
        taken_at = await taker.wait_for("slow.mp4", 3)
    assert taken_at >= closed_at, "taken while its writer still had it open"
    assert taken_at - closed_at < 0.5
    assert (tmp_path / "out" / "slow.mp4").stat().st_size == 8 * len(MP4)


async def test_without_fast_intake_only_settling_counts(tmp_path: Path) -> None:
    """fast_intake off (writers this host cannot see, e.g. NFS): the settle time decides."""
    async with running(tmp_path, settle_s=1.0, fast=False) as (inbox, taker):
        staged = tmp_path / "nfs.mp4"
        staged.write_bytes(MP4)
        renamed = time.monotonic()
        staged.rename(inbox / "nfs.mp4")
        taken = await taker.wait_for("nfs.mp4", 4) - renamed
    assert 1.0 <= taken < 1.6


def test_writer_visibility_rule() -> None:
    ours = Path(__file__).stat()
    assert writers_visible(ours)  # root sees every process; anyone sees their own


async def test_temporary_names_wait_for_their_rename(tmp_path: Path) -> None:
    async with running(tmp_path, settle_s=0.2) as (inbox, taker):
        for name in (".hidden.mp4", "clip.mp4.part", "clip.mp4.tmp", "clip.mp4~"):
            (inbox / name).write_bytes(MP4)
        await asyncio.sleep(1.0)  # five settle times
        assert taker.taken == {}
        (inbox / "clip.mp4.part").rename(inbox / "clip.mp4")
        await taker.wait_for("clip.mp4", 2)
        assert set(taker.taken) == {"clip.mp4"}


async def test_special_files_are_handed_over_at_once(tmp_path: Path) -> None:
    async with running(tmp_path, settle_s=30) as (inbox, taker):
        os.mkfifo(inbox / "pipe.mp4")
        (inbox / "link.mp4").symlink_to("/etc/hostname")
        await taker.wait_for("pipe.mp4", 2)
        await taker.wait_for("link.mp4", 2)


async def test_startup_scan_and_subfolders(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "cam1").mkdir(parents=True)
    (inbox / "before.mp4").write_bytes(MP4)
    (inbox / "cam1" / "nested.mp4").write_bytes(MP4)
    old = time.time() - 60
    os.utime(inbox / "before.mp4", (old, old))
    async with running(tmp_path, settle_s=30) as (_, taker):
        # Present before the start, not open, untouched for longer than the settle time.
        await taker.wait_for("before.mp4", 2)
        await asyncio.sleep(0.5)
        assert "nested.mp4" not in taker.taken  # subfolders are off
    async with running(tmp_path, settle_s=0.2, subfolders=True) as (inbox, taker):
        await taker.wait_for("nested.mp4", 3)
        # A folder moved in whole: inotify reports the folder, the rescan finds its files.
        moved = tmp_path / "cam2"
        moved.mkdir()
        (moved / "inside.mp4").write_bytes(MP4)
        shutil.move(moved, inbox / "cam2")
        await taker.wait_for("inside.mp4", 3)


async def test_files_dropped_while_starting_are_not_missed(tmp_path: Path) -> None:
    """No gap between the start-up scan and the inotify watch (rescans are a minute apart).

    A file the scan finds without an event waits the settle time (1 s here): late, not lost.
    """
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    out.mkdir()
    taker = Taker(out)
    intake = Intake(inbox, taker, settle_s=1.0, rescan_interval_s=60)
    stop = asyncio.Event()
    names = [f"early-{n}.mp4" for n in range(30)]

    def drop_all() -> None:
        for name in names:
            (tmp_path / name).write_bytes(MP4)
            (tmp_path / name).rename(inbox / name)
            time.sleep(0.002)

    dropping = asyncio.get_running_loop().run_in_executor(None, drop_all)
    task = asyncio.create_task(intake.run(stop))
    await dropping
    try:
        for name in names:
            await taker.wait_for(name, 3)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
