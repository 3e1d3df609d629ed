"""The bad-input matrix (docs/reliability.md, "Bad input"): what the watcher and the function
do with hostile names, special files, growing, duplicated, replaced, huge and broken videos.

Cases already covered elsewhere are referenced from the matrix, not repeated here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybrid_common.keys import safe_name
from lambda_fn.frames import VideoError, VideoReader
from lambda_fn.known_faces import KnownFaces
from lambda_fn.recognition import recognise
from lambda_fn.settings import RecognitionOptions
from tests.lambda_fn.clips import level_painter, write_clip
from tests.lambda_fn.test_frames import make_big_jpeg, write_mjpeg_bomb
from tests.mounts import small_tmpfs
from tests.servers import free_port
from tests.watcher_daemon import (
    MP4_HEAD,
    Cloud,
    Daemon,
    StandInFunction,
    drop,
    video_bytes,
)
from watcher.clients import aws_clients
from watcher.journal import State
from watcher.settings import WatcherSettings
from watcher.staging import NAME_BUDGET, fit_name
from watcher.uploader import Uploader, UploadFailed, UploadRequest, file_fingerprint

MIB = 1024 * 1024
CSV = "alice,physics,2026\nbob,cs,2027\n"  # what StandInFunction answers


def start(daemons: list[Daemon], root: Path, cloud: Cloud, **settings: object) -> Daemon:
    daemon = Daemon(root, cloud, **settings)
    daemons.append(daemon)
    daemon.start()
    return daemon


def outside_files(tmp_path: Path, root: Path) -> list[Path]:
    """Files under tmp_path that are neither under the staging root nor the daemon's logs."""
    return [
        p
        for p in tmp_path.rglob("*")
        if not p.is_relative_to(root) and not p.name.endswith(".log") and p.is_file()
    ]


# --- names ---

HOSTILE_NAMES = [
    # '/' cannot be in a file name: '\' (Windows, Samba) and %2F (URL-decoding) can become one.
    "clip..\\..\\..\\escape.mp4",
    "x..%2F..%2Fescape.mp4",
    "new\nline.mp4",
    "-rf --no-preserve-root.mp4",  # leading dash: looks like an option to a shell tool
    "Zoë 日本語 ビデオ.mp4",
    "a" * 251 + ".mp4",  # 255 bytes, the longest name Linux allows
    "é" * 125 + "x.mp4",  # 255 bytes of UTF-8, 131 characters
]


@pytest.mark.slow
def test_hostile_names_come_back_beside_the_original(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon]
) -> None:
    daemon = start(daemons, tmp_path / "node", cloud)
    contents = {name: video_bytes(f"name-{n}") for n, name in enumerate(HOSTILE_NAMES)}
    for name, data in contents.items():
        assert len(name.encode()) <= 255
        temp = daemon.root / "drop.tmp"  # `.<255 bytes>.part` would be too long a name
        temp.write_bytes(data)
        temp.rename(daemon.inbox / name)
    # A leading dot marks a writer's temporary file: left alone until renamed, never sent.
    hidden = daemon.inbox / "..\\..\\escape.mp4"
    hidden.write_bytes(video_bytes("hidden"))
    daemon.wait_until(lambda: daemon.concluded(len(HOSTILE_NAMES)))

    subs = {s.original_name: s for s in daemon.submissions()}
    assert set(subs) == set(HOSTILE_NAMES) and len(daemon.submissions()) == len(subs)
    for name, data in contents.items():
        sub = subs[name]
        assert sub.state is State.DONE, (name, sub.error)
        final = Path(sub.final_path or "")
        assert final.parent == daemon.done
        assert final.read_bytes() == data
        if len(name.encode()) < 200:
            assert final.name == name  # the original name, untouched
        else:
            # Shortened so the group's longest companion still fits in 255 bytes.
            stem = name.rsplit(".", 1)[0]
            assert final.suffix == ".mp4"
            assert stem.startswith(final.name.removesuffix(".mp4"))
        assert final.with_name(final.name.removesuffix(".mp4") + ".csv").read_text() == CSV
        # The object key: the node's prefix, the submission, a safe name; nothing else.
        prefix, node, submission, last = sub.key.split("/")
        assert (prefix, node, submission) == ("videos", "node-a", sub.id)
        assert last == safe_name(name)
    assert sorted(cloud.input_keys()) == sorted(s.key for s in subs.values())
    assert all(".." not in k.split("/") for k in cloud.input_keys())
    assert outside_files(tmp_path, daemon.root) == []
    assert list(daemon.inbox.iterdir()) == [hidden]
    assert len(daemon.events("result.received")) == len(HOSTILE_NAMES)


# --- special files ---


def test_symlink_to_etc_passwd_and_a_fifo_are_refused_without_blocking(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon]
) -> None:
    passwd = Path("/etc/passwd")
    before = (passwd.stat().st_mtime_ns, hashlib.sha256(passwd.read_bytes()).hexdigest())
    daemon = start(daemons, tmp_path / "node", cloud)
    (daemon.inbox / "passwd.mp4").symlink_to(passwd)
    os.mkfifo(daemon.inbox / "pipe.mp4")  # no writer: opening it for reading would block
    daemon.wait_until(lambda: daemon.counts().get("rejected", 0) == 2)
    drop(daemon.inbox, "after.mp4", video_bytes("after"))
    daemon.wait_until(lambda: daemon.counts().get("done", 0) == 1)

    assert (daemon.rejected / "passwd.mp4").readlink() == passwd
    assert (daemon.rejected / "pipe.mp4").is_fifo()
    assert (daemon.done / "after.csv").read_text() == CSV
    after = (passwd.stat().st_mtime_ns, hashlib.sha256(passwd.read_bytes()).hexdigest())
    assert after == before
    assert [k.rsplit("/", 1)[-1] for k in cloud.input_keys()] == ["after.mp4"]
    assert daemon.proc is not None and daemon.proc.poll() is None


@pytest.mark.slow
def test_a_file_that_cannot_leave_the_inbox_stays_without_piling_journal_rows(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon]
) -> None:
    """A subfolder of the inbox on another file system (a share mounted there): renaming its
    files into processing/ fails (EXDEV). Regression: each rescan added a `discovered` row, and
    after a restart, recovery crashed on them. Expected: the file stays where it is, each try
    logs `intake.cannot_take` with the reason and leaves no row; other files go on; recovery
    of a row left by a crash before the move drops that row and the daemon keeps running."""
    daemon = Daemon(tmp_path / "node", cloud, rescan_interval_s=0.3, watch_subfolders=True)
    daemons.append(daemon)
    with small_tmpfs(daemon.inbox / "share", "8m") as share:
        far = drop(share, "far.mp4", video_bytes("far"))
        daemon.start()
        refusals = daemon.wait_for("intake.cannot_take", lambda found: len(found) >= 3)
        assert refusals[0]["file"] == "share/far.mp4"
        assert "cross-device" in refusals[0]["error"]
        drop(daemon.inbox, "near.mp4", video_bytes("near"))
        daemon.wait_until(lambda: daemon.concluded(1))
        assert [s.original_name for s in daemon.submissions()] == ["near.mp4"]

        # Killed between recording the far file and moving it: the restart recovers the row.
        daemon.stop()
        daemon.start(WATCHER_TEST_KILL_AT="discovered")
        assert daemon.wait_exit(20) == -signal.SIGKILL
        [left] = [s.id for s in daemon.submissions() if s.original_name == "share/far.mp4"]
        daemon.start()
        # Recovery's refusal, then two of the rescans'. Each try records a row before the move
        # (so a crash mid-move is recoverable) and drops it when the move fails: at any moment
        # at most one far row exists, and never the one the crash left.
        daemon.wait_for("intake.cannot_take", lambda found: len(found) >= 3)
        names = [s.original_name for s in daemon.submissions() if s.id != left]
        assert left not in {s.id for s in daemon.submissions()}
        assert names.count("near.mp4") == 1 and names.count("share/far.mp4") <= 1
        assert far.read_bytes() == video_bytes("far")
        assert daemon.proc is not None and daemon.proc.poll() is None


# --- a file still being written ---

GROWING_WRITER = """
import sys, time
with open(sys.argv[1], "wb") as out:
    out.write(bytes.fromhex(sys.argv[2]))
    for n in range(4):  # pauses longer than the settle time (0.3 s)
        out.flush()
        time.sleep(0.5)
        out.write(b"x" * 65536)
"""


@pytest.mark.slow
def test_a_growing_file_is_taken_only_once_complete(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon]
) -> None:
    daemon = start(daemons, tmp_path / "node", cloud)
    target = daemon.inbox / "growing.mp4"
    subprocess.run([sys.executable, "-c", GROWING_WRITER, str(target), MP4_HEAD.hex()], check=True)
    daemon.wait_until(lambda: daemon.concluded(1))
    (sub,) = daemon.submissions()
    full = len(MP4_HEAD) + 4 * 65536
    assert sub.state is State.DONE and sub.size == full
    head = cloud.s3().head_object(Bucket=cloud.input_bucket, Key=sub.key)
    assert head["ContentLength"] == full


# --- the same file twice ---


@pytest.mark.slow
@pytest.mark.parametrize("on_duplicate", ["reuse", "reprocess"])
def test_the_same_file_dropped_twice(
    tmp_path: Path,
    cloud: Cloud,
    function: StandInFunction,
    daemons: list[Daemon],
    on_duplicate: str,
) -> None:
    daemon = start(daemons, tmp_path / "node", cloud, on_duplicate=on_duplicate)
    data = video_bytes("twice")
    drop(daemon.inbox, "twice.mp4", data)
    daemon.wait_until(lambda: daemon.concluded(1))
    drop(daemon.inbox, "twice.mp4", data)
    daemon.wait_until(lambda: daemon.concluded(2))

    for name in ("twice", "twice_2"):  # both kept, each with its own results
        assert (daemon.done / f"{name}.mp4").read_bytes() == data
        assert (daemon.done / f"{name}.csv").read_text() == CSV
    first, second = sorted(daemon.events("result.received"), key=lambda e: e["path"])
    assert first["reused_from"] is None
    keys = cloud.input_keys()
    if on_duplicate == "reuse":
        assert second["reused_from"] and len(keys) == 1  # answered from the journal
        assert sum(function.answered.values()) == 1
    else:
        assert second["reused_from"] is None and len(keys) == 2  # uploaded again
        assert sorted(function.answered.values()) == [1, 1]


# --- a file changed while it is uploaded ---


@pytest.mark.slow
def test_a_file_changed_during_its_multipart_upload_is_refused(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon]
) -> None:
    # 12 MiB at 4 MiB/s: three 5 MiB parts take ~3 s, time enough to change the file.
    daemon = start(
        daemons, tmp_path / "node", cloud,
        multipart_threshold_mb=5, part_size_mb=5, bandwidth_limit_mbps=4,
    )  # fmt: skip
    drop(daemon.inbox, "changing.mp4", video_bytes("changing", 12 * MIB))

    def uploading() -> bool:
        return any(s.state is State.UPLOADING for s in daemon.submissions())

    daemon.wait_until(uploading, timeout=20)
    (sub,) = daemon.submissions()
    with Path(sub.staged_path).open("r+b") as staged:  # same size, other bytes at the end
        staged.seek(-MIB, os.SEEK_END)
        staged.write(b"\x00" * MIB)
    daemon.wait_until(lambda: daemon.concluded(1))

    (sub,) = daemon.submissions()
    assert sub.state is State.FAILED and "changed while" in (sub.error or "")
    assert (daemon.failed / "changing.error.json").exists()
    assert not (daemon.failed / "changing.csv").exists()
    assert cloud.input_keys() == []  # never completed: nothing for the function to read
    uploads = cloud.s3().list_multipart_uploads(Bucket=cloud.input_bucket)
    assert uploads.get("Uploads", []) == []  # and its parts were aborted
    assert daemon.events("result.received") == []


@pytest.fixture
async def s3_settings(moto_endpoint: str, tmp_path: Path, unique_name: str) -> WatcherSettings:
    return WatcherSettings(
        endpoint_url=moto_endpoint, staging_root=tmp_path / "staging",
        input_bucket=f"{unique_name}-in", output_bucket=f"{unique_name}-out", node_id="node-a",
    )  # fmt: skip


async def test_a_file_changed_after_hashing_is_not_left_in_the_bucket(
    tmp_path: Path, s3_settings: WatcherSettings
) -> None:
    """Single PUT: moto does not check x-amz-checksum-sha256 (S3 does), so the uploader looks
    at the file again after the PUT and deletes what it stored if the file changed."""
    path = tmp_path / "clip.mp4"
    data = video_bytes("single", 64 * 1024)
    path.write_bytes(data)
    fingerprint = file_fingerprint(path)
    sha = hashlib.sha256(data).hexdigest()
    await asyncio.sleep(0.01)  # a later mtime even on coarse-clock file systems
    path.write_bytes(data[:-4] + b"EDIT")  # same size, other content
    key = "videos/node-a/20261127T190000Z-0001/clip.mp4"
    request = UploadRequest(path, key, sha, len(data), {}, fingerprint)
    async with aws_clients(s3_settings) as clients:
        await clients.s3.create_bucket(Bucket=s3_settings.input_bucket)
        with pytest.raises(UploadFailed, match="changed while") as caught:
            await Uploader(clients.s3, s3_settings).upload(request)
        assert not caught.value.retryable
        listed = await clients.s3.list_objects_v2(Bucket=s3_settings.input_bucket)
    assert listed.get("KeyCount", 0) == 0


# --- a 5 GB sparse file: multipart with bounded memory ---


@pytest.fixture
def sink() -> Iterator[str]:
    """bench/s3_sink.py: an S3 endpoint that discards bodies (moto would keep 5 GB in RAM)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "bench/s3_sink.py", str(port)],
        stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    try:
        assert proc.stdout is not None and b"listening" in proc.stdout.readline()
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def sparse_video(path: Path, size: int) -> Path:
    """A video header then a hole: `size` bytes on paper, almost nothing on disk."""
    with path.open("wb") as out:
        out.write(MP4_HEAD)
        out.truncate(size)
    return path


def upload_huge_file(tmp_path: Path, endpoint: str, size: int) -> tuple[int, int, float]:
    """Run the daemon against `endpoint` until the file is uploaded.

    Returns the watcher's RSS when idle and at its peak, and the seconds the upload took.
    """
    cloud = Cloud(endpoint, "sink-in", "sink-out")
    daemon = Daemon(tmp_path / "node", cloud, part_size_mb=64)
    try:
        daemon.start()
        assert daemon.proc is not None
        watcher = psutil.Process(daemon.proc.pid)
        peak, stop = [watcher.memory_info().rss], threading.Event()

        def sample() -> None:
            while not stop.wait(0.1):
                try:
                    peak.append(watcher.memory_info().rss)
                except psutil.Error:
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        sparse_video(daemon.inbox / ".huge.mp4", size).rename(daemon.inbox / "huge.mp4")
        completed = daemon.wait_for("upload.completed", timeout=600)
        seconds = time.monotonic() - started
        stop.set()
        sampler.join(5)
    finally:
        daemon.stop()
    assert completed[0]["bytes"] == size and completed[0]["multipart"] is True
    return peak[0], max(peak), seconds


RSS_LIMIT = 200 * MIB


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_1_gib_sparse_file_goes_multipart_with_bounded_memory(tmp_path: Path, sink: str) -> None:
    idle, peak, seconds = upload_huge_file(tmp_path, sink, 1024 * MIB)
    print(f"1 GiB: RSS idle {idle / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB, {seconds:.1f} s")
    assert peak < RSS_LIMIT


@pytest.mark.soak
@pytest.mark.timeout(900)
def test_a_5_gb_sparse_file_goes_multipart_with_bounded_memory(tmp_path: Path, sink: str) -> None:
    idle, peak, seconds = upload_huge_file(tmp_path, sink, 5 * 1024 * MIB)
    print(f"5 GiB: RSS idle {idle / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB, {seconds:.1f} s")
    assert peak < RSS_LIMIT


# --- the function: corrupt and oversized videos ---


def test_corrupt_video_is_a_video_error_quickly(tmp_path: Path) -> None:
    """Passes the watcher's sniffing (an ftyp box), but is noise after it."""
    path = tmp_path / "corrupt.mp4"
    noise = np.random.default_rng(7).integers(0, 256, 2 * MIB, dtype=np.uint8).tobytes()
    path.write_bytes(MP4_HEAD + noise)
    known = KnownFaces.from_lists(["nobody"], [np.zeros(128)])
    started = time.perf_counter()
    with pytest.raises(VideoError) as caught:
        recognise(path, known, RecognitionOptions())
    assert caught.value.code in {"not_a_video", "decode_failed"}
    assert time.perf_counter() - started < 3.0


def test_pictures_larger_than_8k_are_too_large(tmp_path: Path) -> None:
    """A few frames of 7696x4320 (just over 8K UHD's pixel count): refused before decoding."""
    path = write_clip(
        tmp_path / "huge.mkv",
        level_painter(width=7696, height=4320, frames=1),
        frames=1, codec="mpeg4",
    )  # fmt: skip
    with pytest.raises(VideoError) as caught:
        VideoReader(path)
    assert caught.value.code == "too_large"


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    """A 12000x12000 JPEG of 0.6 MB, built at test time (not committed)."""
    return make_big_jpeg()


def test_pictures_larger_than_8k_mid_stream_are_too_large(tmp_path: Path, big_jpeg: bytes) -> None:
    """The header says 64x64, the second picture is 12000x12000: the function's path refuses it."""
    path = write_mjpeg_bomb(tmp_path / "bomb.mkv", big_jpeg, "sB")
    known = KnownFaces.from_lists(["nobody"], [np.zeros(128)])
    with pytest.raises(VideoError) as caught:
        recognise(path, known, RecognitionOptions())
    assert caught.value.code == "too_large"


# Peak RSS of one recognition process, and of a pool of two workers with their parent (the
# sum over the process tree). Measured here on 2026-11-30 (dlib-bin): a course clip 166 MiB
# per process, 335 MiB for the pool; the bombs below 140-142 MiB per process, 344 MiB for the
# pool — and before the fix 1,362 MiB (one 0.6 MB file) and 3,165 MiB (pool, 5 MB file).
PROCESS_RSS_BOUND = 400 * MIB
POOL_RSS_BOUND = 1024 * MIB
# Runs a command; prints its exit, output, the largest peak RSS of any process of its tree
# (ru_maxrss: the kernel's high-water mark, merged up as each process is reaped) and the peak
# of the tree's summed RSS (psutil, sampled every 10 ms: what the function's memory limit sees).
MEASURE = """
import json, resource, subprocess, sys, time
import psutil
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
root, peak = psutil.Process(proc.pid), 0
while proc.poll() is None:
    total = 0
    try:
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        tree = []
    for member in tree:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    peak = max(peak, total)
    time.sleep(0.01)
out, err = proc.communicate()
print(json.dumps({"returncode": proc.returncode, "stdout": out, "stderr": err[-2000:],
    "process_peak": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    "tree_peak": peak}))
"""


def process_with_memory(video: Path, faces: Path, workers: int) -> dict[str, Any]:
    """`hybrid-lambda process VIDEO --json` (the handler's pool and recognition), measured."""
    command = [sys.executable, "-m", "lambda_fn", "process", str(video), "--faces", str(faces)]
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *command, "--json", "--workers", str(workers)],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    run: dict[str, Any] = json.loads(done.stdout)
    assert run["stdout"], run["stderr"]
    run["video"] = json.loads(run["stdout"])["videos"][0]
    print(
        f"{video.name}, {workers} worker(s): {run['video'].get('status', 'error')} "
        f"{run['video'].get('code', '')}; peak RSS {run['process_peak'] / MIB:.0f} MiB per "
        f"process, {run['tree_peak'] / MIB:.0f} MiB for the tree"
    )
    return run


def nobody_faces(tmp_path: Path) -> Path:
    path = tmp_path / "faces.json"
    KnownFaces.from_lists(["nobody"], [np.zeros(128)]).save(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("layout", "workers"),
    # 10 samples on two workers: split in two segments, a big picture in each (at 1 s, 7 s).
    [("sB", 1), ("Bs", 1), ("sBsssssBss", 2)],
    ids=["one-process", "first-picture", "pool-of-two"],
)
def test_a_decompression_bomb_is_refused_within_the_memory_bound(
    tmp_path: Path, big_jpeg: bytes, layout: str, workers: int
) -> None:
    """A 64x64 MJPEG stream carrying 12000x12000 pictures took 1.4 GB (3.2 GB on the pool)."""
    path = write_mjpeg_bomb(tmp_path / "bomb.mkv", big_jpeg, layout)
    run = process_with_memory(path, nobody_faces(tmp_path), workers)
    # `process --json` prints the function's own documents: an error.json has a code, no status.
    assert run["video"].get("code") == "too_large" and "status" not in run["video"]
    assert run["returncode"] == 1
    assert run["process_peak"] <= PROCESS_RSS_BOUND
    assert run["tree_peak"] <= POOL_RSS_BOUND


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_a_course_clip_fits_the_same_memory_bound(
    shared_data: Path, tmp_path: Path, workers: int
) -> None:
    """The bound is not one only refusals meet: a real clip, recognised, stays under it."""
    faces = tmp_path / "faces.json"
    subprocess.run(
        [sys.executable, "-m", "lambda_fn", "faces", "import-pickle",
         str(shared_data / "cse546" / "encoding"), "-o", str(faces)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    clip = shared_data / "cse546" / "test_case_1" / "test_0.mp4"
    run = process_with_memory(clip, faces, workers)
    assert run["video"].get("status") == "ok" and run["returncode"] == 0
    assert run["process_peak"] <= PROCESS_RSS_BOUND
    assert run["tree_peak"] <= POOL_RSS_BOUND


def test_audio_only_file_via_recognise(tmp_path: Path) -> None:
    """The handler's path (recognise), not only the reader's: no_video_stream."""
    path = tmp_path / "voice.m4a.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=8000)
        for n in range(5):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 8000, n * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    known = KnownFaces.from_lists(["nobody"], [np.zeros(128)])
    with pytest.raises(VideoError) as caught:
        recognise(path, known, RecognitionOptions())
    assert caught.value.code == "no_video_stream"


# --- name fitting (pure) ---


@given(st.text(min_size=1, max_size=300).filter(lambda n: "/" not in n and "\0" not in n))
def test_fit_name_is_bounded_and_keeps_a_short_extension(name: str) -> None:
    fitted = fit_name(name + ".mp4")
    assert len(fitted.encode()) <= NAME_BUDGET
    assert fitted.endswith(".mp4")
    assert (name + ".mp4").startswith(fitted.removesuffix(".mp4"))
