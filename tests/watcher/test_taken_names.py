"""The index of taken group stems: one folder listing, not one per claimed name."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher import staging as staging_module
from watcher.staging import Staging
from watcher.taken_names import TakenStems, stems_of


def test_stems_of_a_name_are_its_prefixes_before_a_dot() -> None:
    assert list(stems_of("a.b.mp4")) == ["a.b", "a"]
    assert list(stems_of("clip")) == []
    assert list(stems_of("clip.")) == ["clip"]
    assert list(stems_of(".hidden")) == []  # a leading dot starts no stem


def test_a_name_without_a_dot_is_still_taken(tmp_path: Path, index: TakenStems) -> None:
    staging = Staging(tmp_path)
    staging.ensure()
    (staging.done / "clip").touch()  # not in the index: the exact-name check finds it
    assert staging.claim_group_name(staging.done, "clip.mp4").name == "clip_2.mp4"
    assert index.scans == 1


@pytest.fixture
def index(monkeypatch: pytest.MonkeyPatch) -> TakenStems:
    """A fresh index in place of the process-wide one, so its listings can be counted."""
    fresh = TakenStems()
    monkeypatch.setattr(staging_module, "_TAKEN", fresh)
    return fresh


def test_many_conclusions_list_a_big_done_folder_once(tmp_path: Path, index: TakenStems) -> None:
    staging = Staging(tmp_path)
    staging.ensure()
    for n in range(2000):  # results of earlier runs
        (staging.done / f"old-{n}.mp4").touch()
        (staging.done / f"old-{n}.csv").touch()
    for n in range(300):
        staged = staging.processing_path(f"20260101T000000Z-{n:08x}", "clip.mp4")
        staged.write_bytes(b"v")
        staging.companion(staged, ".csv").write_bytes(b"a,b,c\n")
        final = staging.claim_group_name(staging.done, "clip.mp4")
        assert final.name == ("clip.mp4" if n == 0 else f"clip_{n + 1}.mp4")
        staging.move_group(staged, final)
    assert index.scans == 1
    assert len(list(staging.done.glob("clip*.csv"))) == 300


def test_a_name_added_by_someone_else_since_the_listing_is_not_reused(
    tmp_path: Path, index: TakenStems
) -> None:
    staging = Staging(tmp_path)
    staging.ensure()
    assert staging.claim_group_name(staging.done, "clip.mp4").name == "clip.mp4"
    # Not through this process's moves: the index cannot know, the exact-name check does.
    (staging.done / "clip.csv").write_text("x")
    assert staging.claim_group_name(staging.done, "clip.mov").name == "clip_2.mov"
    assert index.scans == 1


def test_the_folder_is_listed_again_after_the_rescan_interval(tmp_path: Path) -> None:
    index = TakenStems(rescan_s=0.0)
    folder = tmp_path / "done"
    folder.mkdir()
    assert "clip" not in index.stems(folder)
    # Another container's video, no results yet: only a new listing can see it.
    (folder / "clip.mkv").touch()
    assert "clip" in index.stems(folder)
    assert index.scans == 2


def test_rejections_claim_their_names_through_the_index(tmp_path: Path, index: TakenStems) -> None:
    staging = Staging(tmp_path)
    staging.ensure()
    for n in range(50):
        (staging.inbox / "bad.mp4").write_text("not a video")
        target = staging.reject(staging.inbox / "bad.mp4", "not_a_video")
        assert target.name == ("bad.mp4" if n == 0 else f"bad_{n + 1}.mp4")
    assert index.scans == 1


def test_a_reserved_name_outlives_new_listings_until_released(tmp_path: Path) -> None:
    """A group concluded while done/ refuses writes has a name and no file: each new listing
    would forget it, so reservations are kept apart from what a listing finds."""
    index = TakenStems(rescan_s=0.0)
    folder = tmp_path / "done"
    folder.mkdir()
    index.reserve(folder, "clip.mp4")
    index.reserve(folder, "noext")
    index.stems(folder)  # listed again: done/ is still empty
    assert index.held(folder) == {"clip", "noext"}
    assert index.reserved(folder) == {"clip.mp4", "noext"}
    index.release(folder, "clip.mp4")
    assert index.held(folder) == {"noext"}
