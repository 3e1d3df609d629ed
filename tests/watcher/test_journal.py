"""The journal: allowed transitions, history, durability across a killed process, one thread."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hybrid_common.keys import validate_segment
from watcher.journal import (
    OPEN,
    TERMINAL,
    AsyncJournal,
    JournalConflict,
    JournalStore,
    State,
    new_submission_id,
)


def _create(store: JournalStore, sid: str, name: str = "clip.mp4") -> None:
    store.create(
        submission_id=sid, original_name=name, source_path=f"/in/{name}",
        staged_path=f"/proc/{sid}_{name}", key=f"videos/n/{sid}/{name}", size=10,
    )  # fmt: skip


def test_submission_ids_sort_by_time_and_are_key_segments() -> None:
    earlier, later = new_submission_id(1_700_000_000), new_submission_id(1_700_000_001)
    assert earlier < later
    assert earlier.startswith("20231114T221320Z-")
    validate_segment(earlier, "submission id")
    assert new_submission_id(5) != new_submission_id(5)


def test_happy_path_records_each_transition(tmp_path: Path) -> None:
    store = JournalStore(tmp_path / "j.sqlite3")
    _create(store, "s1")
    store.update("s1", sha256="ab" * 32, event="hashed")
    store.transition("s1", State.UPLOADING, attempts=1)
    store.transition("s1", State.UPLOADED, etag='"e"', uploaded_at=123.0)
    done = store.transition("s1", State.DONE, result={"people": ["a"]}, final_path="/done/clip.mp4")
    assert done.state is State.DONE
    assert done.result == {"people": ["a"]}
    assert done.finished_at is not None and done.attempts == 1 and not done.delivered
    events = [e.event for e in store.events("s1")]
    assert events == ["discovered", "hashed", "uploading", "uploaded", "done"]
    assert [s.id for s in store.undelivered()] == ["s1"]
    store.update("s1", delivered=True)
    assert store.undelivered() == []
    assert store.counts()["done"] == 1 and sum(store.counts().values()) == 1


def test_concluded_count_counts_final_and_delivered_rows_only(tmp_path: Path) -> None:
    store = JournalStore(tmp_path / "j.sqlite3")
    for sid in ("s1", "s2", "s3", "s4"):
        _create(store, sid)
    store.transition("s1", State.UPLOADING)  # open
    store.transition("s2", State.FAILED, final_path="/failed/clip.mp4")  # final, not moved yet
    store.transition("s3", State.FAILED, final_path="/failed/clip.mp4")
    store.update("s3", delivered=True)
    store.transition("s4", State.UPLOADING)
    store.transition("s4", State.UPLOADED)
    store.transition("s4", State.DONE, final_path="/done/clip.mp4")
    assert store.concluded_count() == 1
    store.update("s4", delivered=True)
    assert store.concluded_count() == 2


def test_discard_forgets_only_a_discovered_row(tmp_path: Path) -> None:
    store = JournalStore(tmp_path / "j.sqlite3")
    _create(store, "kept")
    _create(store, "gone")
    store.transition("kept", State.UPLOADING)
    store.discard("gone")
    assert [s.id for s in store.latest()] == ["kept"] and store.events("gone") == []
    with pytest.raises(JournalConflict):
        store.discard("kept")  # its file has left the inbox: forgetting it could lose it
    assert store.get("kept").state is State.UPLOADING


def test_prune_forgets_old_concluded_submissions_and_their_events_only(tmp_path: Path) -> None:
    store = JournalStore(tmp_path / "j.sqlite3")
    for sid in ("open", "undelivered", "delivered"):
        _create(store, sid)
    store.create(
        submission_id="rejected", original_name="x.txt", source_path="/in/x.txt",
        staged_path="", key="", size=1, state=State.REJECTED, error="not_a_video",
    )  # fmt: skip
    store.transition("open", State.UPLOADING)
    store.transition("undelivered", State.FAILED, final_path="/failed/clip.mp4")
    store.transition("delivered", State.FAILED, final_path="/failed/clip.mp4")
    store.update("delivered", delivered=True)

    assert store.prune(before=time.time() - 3600) == 0  # nothing is that old
    assert store.prune(before=time.time() + 1) == 2
    assert sorted(s.id for s in store.latest()) == ["open", "undelivered"]
    assert store.events("delivered") == [] and store.events("rejected") == []
    assert [e.event for e in store.events("open")] == ["discovered", "uploading"]


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ([], State.UPLOADED),  # discovered → uploaded skips the upload
        ([State.UPLOADING, State.UPLOADED, State.DONE], State.FAILED),  # terminal stays terminal
        ([State.UPLOADING], State.TIMED_OUT),
        ([State.FAILED], State.UPLOADING),
    ],
)
def test_disallowed_transitions_change_nothing(
    tmp_path: Path, path: list[State], bad: State
) -> None:
    store = JournalStore(tmp_path / "j.sqlite3")
    _create(store, "s1")
    for state in path:
        store.transition("s1", state)
    before = store.get("s1")
    with pytest.raises(JournalConflict):
        store.transition("s1", bad)
    assert store.get("s1") == before
    assert len(store.events("s1")) == 1 + len(path)


def test_unknown_fields_are_refused(tmp_path: Path) -> None:
    store = JournalStore(tmp_path / "j.sqlite3")
    _create(store, "s1")
    with pytest.raises(ValueError, match="not journal fields"):
        store.update("s1", state_of_mind="calm")
    with pytest.raises(KeyError):
        store.transition("nope", State.UPLOADING)


def test_wal_mode_and_every_state_is_open_or_terminal(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    JournalStore(path).close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert set(State) == OPEN | TERMINAL and not OPEN & TERMINAL


def test_a_committed_transition_survives_kill_9(tmp_path: Path) -> None:
    """A writer killed right after a commit, with the connection still open, loses nothing."""
    path = tmp_path / "j.sqlite3"
    store = JournalStore(path)
    _create(store, "s1")
    store.close()
    script = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        from watcher.journal import JournalStore, State
        store = JournalStore(Path({str(path)!r}))
        store.transition("s1", State.UPLOADING, attempts=1)
        print("committed", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    argv = [sys.executable, "-c", script]
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30)
    assert done.returncode == -signal.SIGKILL
    assert "committed" in done.stdout
    again = JournalStore(path)
    row = again.get("s1")
    assert row.state is State.UPLOADING and row.attempts == 1
    assert [e.event for e in again.events("s1")] == ["discovered", "uploading"]


def test_lookups(tmp_path: Path) -> None:
    store = JournalStore(tmp_path / "j.sqlite3")
    for sid, name in (
        ("20260101T000000Z-aaaa0001", "a.mp4"),
        ("20260101T000001Z-bbbb0002", "b.mp4"),
    ):
        _create(store, sid, name)
    assert [s.id for s in store.find("a.mp4")] == ["20260101T000000Z-aaaa0001"]
    assert [s.id for s in store.find("20260101T000001Z")] == ["20260101T000001Z-bbbb0002"]
    assert [s.id for s in store.find("/in/b.mp4")] == ["20260101T000001Z-bbbb0002"]
    assert [s.id for s in store.latest(1)] == ["20260101T000001Z-bbbb0002"]
    # Duplicate content: only a delivered `done` row counts as an earlier result.
    first, second = "20260101T000000Z-aaaa0001", "20260101T000001Z-bbbb0002"
    store.update(first, sha256="f" * 64)
    for state in (State.UPLOADING, State.UPLOADED, State.DONE):
        store.transition(first, state)
    assert store.done_with_sha256("f" * 64, second) is None
    store.update(first, delivered=True)
    found = store.done_with_sha256("f" * 64, second)
    assert found is not None and found.id == first
    assert store.done_with_sha256("f" * 64, first) is None


async def test_async_journal_owns_its_connection_on_one_thread(tmp_path: Path) -> None:
    journal = AsyncJournal(tmp_path / "j.sqlite3")
    await journal.open()
    try:
        await journal.create(
            submission_id="s1", original_name="a.mp4", source_path="/in/a.mp4",
            staged_path="/p/a.mp4", key="videos/n/s1/a.mp4", size=1,
        )  # fmt: skip
        results = await asyncio.gather(*(journal.get("s1") for _ in range(20)))
        assert {r.id for r in results} == {"s1"}
        # The connection was made on the journal's thread: sqlite3 refuses it on the loop's.
        with pytest.raises(sqlite3.ProgrammingError):
            journal.store.get("s1")
        sub = await journal.transition("s1", State.UPLOADING, attempts=1)
        assert sub.state is State.UPLOADING
    finally:
        await journal.close()


def test_submissions_made_in_the_same_second_list_in_the_order_they_were_made(
    tmp_path: Path,
) -> None:
    """Ids carry whole seconds and a random tail: within a second they do not sort by time.

    CI once listed a re-run before the submission it replaced (`show clip.mp4`), and "the
    latest done submission with this content" could pick the older one.
    """
    store = JournalStore(tmp_path / "j.sqlite3")
    first, second = "20261130T174428Z-ffffffff", "20261130T174428Z-00000000"
    for sid in (first, second):
        _create(store, sid)
        store.update(sid, sha256="ab" * 32)
        store.transition(sid, State.DONE, final_path="/done/clip.mp4")
        store.update(sid, delivered=True)
    assert [s.id for s in store.find("clip.mp4")] == [first, second]
    assert [s.id for s in store.in_states([State.DONE])] == [first, second]
    assert [s.id for s in store.latest()] == [second, first]
    found = store.done_with_sha256("ab" * 32, exclude_id="none")
    assert found is not None and found.id == second
