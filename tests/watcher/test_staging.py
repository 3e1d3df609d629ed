"""The staging area: group names that never collide, idempotent moves, rejects, retention."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

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
    assert staging.claim_group_name(done, "clip.mp4") == done / "clip.mp4"
    (done / "clip.mp4").write_bytes(b"v")
    assert staging.claim_group_name(done, "clip.mp4") == done / "clip_2.mp4"
    # Another container with the same stem would share clip.csv: it must move aside too.
    assert staging.claim_group_name(done, "clip.mov") == done / "clip_2.mov"
    (done / "clip_2.error.json").write_text("{}")
    assert staging.claim_group_name(done, "clip.mkv") == done / "clip_3.mkv"
    # Subfolder names are flattened, never recreated in done/.
    assert staging.claim_group_name(done, "cam1/clip.mp4") == done / "cam1__clip.mp4"


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
