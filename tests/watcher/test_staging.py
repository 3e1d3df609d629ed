"""The staging area: group names that never collide, idempotent moves, rejects, retention."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mounts import small_tmpfs
from watcher.staging import Staging, split_stem, write_atomic


@pytest.fixture
def staging(tmp_path: Path) -> Staging:
    area = Staging(tmp_path / "root")
    area.ensure()
    return area


def test_folders_are_created(staging: Staging) -> None:
    assert sorted(p.name for p in staging.root.iterdir()) == [
        "done", "failed", "inbox", "processing", "rejected",
    ]  # fmt: skip


def test_split_stem() -> None:
    assert split_stem("clip.mp4") == ("clip", ".mp4")
    assert split_stem("a.b.mov") == ("a.b", ".mov")
    assert split_stem("noext") == ("noext", "")
    assert split_stem(".hidden") == (".hidden", "")


def test_group_names_avoid_videos_and_results(staging: Staging) -> None:
    done = staging.done

    def claim(name: str) -> Path:
        """A claim whose group then goes elsewhere: only the folder's files hold names."""
        claimed = staging.claim_group_name(done, name)
        staging.release(claimed)
        return claimed

    assert claim("clip.mp4") == done / "clip.mp4"
    (done / "clip.mp4").write_bytes(b"v")
    assert claim("clip.mp4") == done / "clip_2.mp4"
    # Another container with the same stem would share clip.csv: it must move aside too.
    assert claim("clip.mov") == done / "clip_2.mov"
    (done / "clip_2.error.json").write_text("{}")
    assert claim("clip.mkv") == done / "clip_3.mkv"
    # Subfolder names are flattened, never recreated in done/.
    assert claim("cam1/clip.mp4") == done / "cam1__clip.mp4"


def test_move_group_moves_results_and_is_idempotent(staging: Staging) -> None:
    staged = staging.processing_path("20260101T000000Z-0000aaaa", "clip.mp4")
    staged.write_bytes(b"video")
    for suffix, data in ((".csv", b"a,b,c\n"), (".json", b"{}"), (".faces.jpg", b"\xff\xd8")):
        staging.companion(staged, suffix).write_bytes(data)
    final = staging.claim_group_name(staging.done, "clip.mp4")
    moved = staging.move_group(staged, final)
    assert sorted(p.name for p in moved) == ["clip.csv", "clip.faces.jpg", "clip.json", "clip.mp4"]
    assert list(staging.processing.iterdir()) == []
    assert (staging.done / "clip.csv").read_bytes() == b"a,b,c\n"
    # After a crash between the moves and the journal update, doing it again is harmless.
    assert staging.move_group(staged, final) == []
    assert (staging.done / "clip.mp4").read_bytes() == b"video"


def test_reject_moves_a_symlink_not_its_target(staging: Staging, tmp_path: Path) -> None:
    target = tmp_path / "secret.mp4"
    target.write_bytes(b"precious")
    link = staging.inbox / "link.mp4"
    link.symlink_to(target)
    rejected = staging.reject(link, "not a regular file", "symlink")
    assert rejected == staging.rejected / "link.mp4" and rejected.is_symlink()
    assert target.read_bytes() == b"precious"
    reason = json.loads((staging.rejected / "link.mp4.reason.json").read_text())
    assert reason["reason"] == "not a regular file" and reason["detail"] == "symlink"
    assert reason["file"] == "link.mp4"


def test_reject_a_fifo_without_opening_it(staging: Staging) -> None:
    fifo = staging.inbox / "pipe.mp4"
    os.mkfifo(fifo)
    rejected = staging.reject(fifo, "not a regular file", "fifo")  # would hang if opened
    assert rejected.is_fifo()


def test_purge_only_what_is_older_than_retention(staging: Staging) -> None:
    (staging.done / "old.mp4").write_bytes(b"x")
    (staging.done / "sub").mkdir()
    (staging.done / "sub" / "old.csv").write_bytes(b"x")
    assert staging.purge_older_than(staging.done, 3600) == 0
    assert staging.purge_older_than(staging.done, 0) == 0  # 0 keeps forever
    assert staging.purge_older_than(staging.done, 3600, now=time.time() + 7200) == 2
    assert not (staging.done / "old.mp4").exists()


def test_write_atomic_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "x.csv"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["x.csv"]


def test_half_written_temporaries_are_cleared(staging: Staging) -> None:
    (staging.processing / ".x_clip.csv.123.tmp").write_bytes(b"half")
    (staging.processing / "x_clip.mp4").write_bytes(b"video")
    assert staging.clear_temporaries() == 1
    assert [p.name for p in staging.processing.iterdir()] == ["x_clip.mp4"]


# --- names are reserved when claimed; a move never replaces anything ---


def _staged_group(staging: Staging, tag: str, *suffixes: str) -> Path:
    """A video in processing/ with the given companions, each holding `tag`."""
    staged = staging.processing_path(f"20260101T000000Z-{abs(hash(tag)) % 2**32:08x}", "clip.mp4")
    staged.write_bytes(f"video {tag}".encode())
    for suffix in suffixes:
        staging.companion(staged, suffix).write_text(f"{suffix} {tag}")
    return staged


def test_a_claimed_name_stays_reserved_while_its_group_cannot_arrive(staging: Staging) -> None:
    """done/ refusing writes: the first `clip.mp4` is concluded but not moved; a second
    `clip.mp4` must not be handed the same name (it would replace the first one later)."""
    first = staging.claim_group_name(staging.done, "clip.mp4")
    second = staging.claim_group_name(staging.done, "clip.mp4")
    assert (first.name, second.name) == ("clip.mp4", "clip_2.mp4")
    # A restart forgets what this process claimed: recovery reserves the journal's names.
    staging.release(first)
    staging.reserve(first)
    assert staging.claim_group_name(staging.done, "clip.mov").name == "clip_3.mov"


def test_a_move_never_replaces_a_video_that_appeared_at_the_target(staging: Staging) -> None:
    staged = _staged_group(staging, "ours", ".csv", ".json")
    final = staging.claim_group_name(staging.done, "clip.mp4")
    (staging.done / "clip.mp4").write_bytes(b"theirs")  # someone else's, after the claim
    with pytest.raises(FileExistsError):
        staging.move_group(staged, final)
    assert (staging.done / "clip.mp4").read_bytes() == b"theirs"
    # Nothing of the group moved: it stays whole in processing/ for a new name.
    assert sorted(p.name for p in staging.done.iterdir()) == ["clip.mp4"]
    assert staged.read_bytes() == b"video ours"
    assert staging.companion(staged, ".csv").read_text() == ".csv ours"


@pytest.mark.parametrize("suffix", [".csv", ".json", ".faces.jpg", ".error.json"])
def test_a_companion_already_at_the_target_is_not_replaced(staging: Staging, suffix: str) -> None:
    staged = _staged_group(staging, "ours", suffix)
    final = staging.claim_group_name(staging.done, "clip.mp4")
    (staging.done / f"clip{suffix}").write_text("theirs")
    with pytest.raises(FileExistsError):
        staging.move_group(staged, final)
    assert (staging.done / f"clip{suffix}").read_text() == "theirs"
    assert staging.companion(staged, suffix).read_text() == f"{suffix} ours"
    assert not (staging.done / "clip.mp4").exists()


def test_a_rejection_never_replaces_a_reason_file_put_there_since_the_listing(
    staging: Staging,
) -> None:
    staging.release(staging.claim_group_name(staging.rejected, "warm-up.mp4"))  # listed now
    (staging.rejected / "bad.mp4.reason.json").write_text("theirs")
    (staging.inbox / "bad.mp4").write_text("not a video")
    moved = staging.reject(staging.inbox / "bad.mp4", "not a video")
    assert (staging.rejected / "bad.mp4.reason.json").read_text() == "theirs"
    assert moved.name == "bad_2.mp4" and moved.read_text() == "not a video"
    reason = json.loads((staging.rejected / "bad_2.mp4.reason.json").read_text())
    assert reason["reason"] == "not a video"


# --- done/ on another file system (a share mounted there) ---


@pytest.fixture
def split_staging(tmp_path: Path) -> Iterator[Staging]:
    """Staging whose done/ is another file system (a tmpfs): every rename into it is EXDEV."""
    root = tmp_path / "root"
    with small_tmpfs(root / "done", "8m"):
        area = Staging(root)
        area.ensure()
        yield area


def test_a_group_moves_into_another_file_system(split_staging: Staging) -> None:
    staging = split_staging
    staged = _staged_group(staging, "ours", ".csv", ".json", ".faces.jpg")
    final = staging.claim_group_name(staging.done, "clip.mp4")
    moved = staging.move_group(staged, final)
    assert sorted(p.name for p in moved) == ["clip.csv", "clip.faces.jpg", "clip.json", "clip.mp4"]
    assert sorted(p.name for p in staging.done.iterdir()) == sorted(p.name for p in moved)
    assert (staging.done / "clip.mp4").read_bytes() == b"video ours"
    assert (staging.done / "clip.csv").read_text() == ".csv ours"
    assert list(staging.processing.iterdir()) == []


def test_a_copy_interrupted_after_its_rename_is_completed_not_duplicated(
    split_staging: Staging,
) -> None:
    """kill -9 between the copy's rename into done/ and the unlink of the source: both exist
    with the same bytes. Moving again keeps the one in done/ and removes the source."""
    staging = split_staging
    staged = _staged_group(staging, "ours", ".csv")
    final = staging.claim_group_name(staging.done, "clip.mp4")
    (staging.done / "clip.csv").write_text(".csv ours")  # the CSV's copy had landed
    (staging.done / ".clip.mp4.moving").write_bytes(b"vid")  # the video's copy was cut short
    staging.move_group(staged, final)
    assert sorted(p.name for p in staging.done.iterdir()) == ["clip.csv", "clip.mp4"]
    assert (staging.done / "clip.mp4").read_bytes() == b"video ours"
    assert list(staging.processing.iterdir()) == []


def test_a_copy_never_replaces_a_different_file_at_the_target(split_staging: Staging) -> None:
    staging = split_staging
    staged = _staged_group(staging, "ours", ".csv")
    final = staging.claim_group_name(staging.done, "clip.mp4")
    (staging.done / "clip.csv").write_text("theirs")
    with pytest.raises(FileExistsError):
        staging.move_group(staged, final)
    assert (staging.done / "clip.csv").read_text() == "theirs"
    assert staged.exists() and staging.companion(staged, ".csv").read_text() == ".csv ours"
    assert sorted(p.name for p in staging.done.iterdir()) == ["clip.csv"]


def test_clearing_temporaries_survives_a_done_folder_that_refuses_writes(staging: Staging) -> None:
    """A copy cut short left `.clip.mp4.moving` in done/, then done/ was locked: start-up must
    still work (the next copy overwrites the temporary anyway)."""
    (staging.done / ".clip.mp4.moving").write_bytes(b"half")
    (staging.processing / ".x_clip.csv.123.tmp").write_bytes(b"half")
    if subprocess.run(["chattr", "+i", str(staging.done)], check=False).returncode:
        pytest.skip("chattr +i is not supported on this filesystem")
    try:
        assert staging.clear_temporaries() == 1
    finally:
        subprocess.run(["chattr", "-i", str(staging.done)], check=True)
    assert staging.clear_temporaries() == 1
    assert list(staging.done.iterdir()) == list(staging.processing.iterdir()) == []
