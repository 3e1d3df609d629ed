"""`hybrid-watcher report`: done/failed/rejected, people per video, p50/p95 latency, failures by
code, over a real journal file, as text, JSON and CSV, while a writer holds the journal."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.watcher_daemon import REPO
from watcher.journal import JournalStore, State
from watcher.report import parse_span, percentile

WATCHER = REPO / ".venv" / "bin" / "hybrid-watcher"
HOUR = 3600.0


def add(
    store: JournalStore,
    n: int,
    state: State,
    *,
    age_h: float = 1.0,
    error: str | None = None,
    result: dict[str, Any] | None = None,
) -> None:
    """A concluded submission, finished `age_h` hours ago."""
    sid = f"20261130T000000Z-{n:08x}"
    rejected = state is State.REJECTED
    store.create(
        submission_id=sid, original_name=f"v{n}.mp4", source_path=f"/in/v{n}.mp4",
        staged_path=f"/p/{sid}_v{n}.mp4", key=f"videos/node/{sid}/v{n}.mp4", size=10,
        state=State.REJECTED if rejected else State.DISCOVERED, error=error if rejected else None,
    )  # fmt: skip
    finished = time.time() - age_h * HOUR
    if rejected:
        store.update(sid, finished_at=finished)
        return
    store.transition(sid, State.UPLOADING)
    store.transition(sid, State.UPLOADED)
    store.transition(sid, state, result=result, error=error, finished_at=finished)


def done(people: list[str], latency_s: float) -> dict[str, Any]:
    return {"people": people, "latency_s": latency_s}


@pytest.fixture
def journal_root(tmp_path: Path) -> Path:
    store = JournalStore(tmp_path / "journal.sqlite3")
    for n, latency in enumerate([1.0, 2.0, 3.0, 4.0, 10.0], start=1):
        people = ["alice", "bob"] if n % 2 else ["alice"]
        add(store, n, State.DONE, result=done(people, latency))
    add(store, 6, State.DONE, result=done(["=HYPERLINK(1)"], 5.0))
    add(store, 7, State.FAILED, error="decode_failed: no video stream",
        result={"error": {"code": "decode_failed", "message": "no video stream"}})  # fmt: skip
    add(store, 8, State.FAILED, error="upload_failed: AccessDenied")
    add(store, 9, State.TIMED_OUT, error="no result after 3600 s")
    add(store, 10, State.REJECTED, error="not_a_video: no known container signature")
    add(store, 11, State.DONE, age_h=48, result=done(["carol"], 99.0))  # outside 24h
    store.close()
    return tmp_path


def report(root: Path, *args: str) -> str:
    env = {**os.environ, "HYBRID_STAGING_ROOT": str(root), "HYBRID_NODE_ID": "node-r"}
    ran = subprocess.run(
        [str(WATCHER), "report", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


def test_report_json_has_every_figure_of_the_last_day(journal_root: Path) -> None:
    doc = json.loads(report(journal_root, "--json"))
    assert doc["node"] == "node-r"
    assert doc["videos"] == {"done": 6, "failed": 2, "timed_out": 1, "rejected": 1}
    assert doc["people"] == {"alice": 5, "bob": 3, "=HYPERLINK(1)": 1}
    assert doc["latency_s"] == {"p50": 3.0, "p95": 10.0, "count": 6}
    assert doc["failures"] == {"decode_failed": 1, "upload_failed": 1, "timed_out": 1}
    assert doc["rejections"] == {"not_a_video": 1}


def test_since_widens_the_period(journal_root: Path) -> None:
    doc = json.loads(report(journal_root, "--since", "3d", "--json"))
    assert doc["videos"]["done"] == 7 and doc["people"]["carol"] == 1


def test_report_text_reads_as_a_summary(journal_root: Path) -> None:
    text = report(journal_root)
    assert "videos: 6 done, 2 failed, 1 timed out, 1 rejected" in text
    assert "p50 3.0 s, p95 10.0 s (6 videos)" in text
    assert "alice" in text and "decode_failed" in text and "not_a_video" in text


def test_report_csv_is_one_pivotable_table_without_formulas(journal_root: Path) -> None:
    rows = list(csv.reader(io.StringIO(report(journal_root, "--csv"))))
    assert rows[0] == ["section", "name", "value"]
    assert ["videos", "done", "6"] in rows and ["people", "alice", "5"] in rows
    assert ["latency_s", "p95", "10.0"] in rows
    assert ["people", "'=HYPERLINK(1)", "1"] in rows  # a spreadsheet shows it, never runs it


def test_report_reads_while_the_daemon_holds_a_write_transaction(journal_root: Path) -> None:
    writer = sqlite3.connect(journal_root / "journal.sqlite3")
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("BEGIN IMMEDIATE")  # as the daemon does mid-commit
    writer.execute("UPDATE submissions SET attempts = attempts + 1")
    try:
        doc = json.loads(report(journal_root, "--json"))
    finally:
        writer.rollback()
        writer.close()
    assert doc["videos"]["done"] == 6


def test_no_journal_is_said_plainly(tmp_path: Path) -> None:
    env = {**os.environ, "HYBRID_STAGING_ROOT": str(tmp_path)}
    ran = subprocess.run([str(WATCHER), "report"], env=env, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert ran.returncode == 0 and "no journal yet" in ran.stderr
    assert "videos: 0 done" in ran.stdout


def test_a_bad_since_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "HYBRID_STAGING_ROOT": str(tmp_path)}
    ran = subprocess.run([str(WATCHER), "report", "--since", "yesterday"], env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert ran.returncode == 2 and "not a duration" in ran.stderr


def test_parse_span_and_percentile() -> None:
    assert parse_span("24h") == 86_400 and parse_span("1h30m") == 5400
    with pytest.raises(ValueError, match="not a duration"):
        parse_span("24")
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    assert percentile([float(n) for n in range(1, 101)], 95) == 95.0


def test_a_journal_file_without_tables_yet_is_no_journal(tmp_path: Path) -> None:
    (tmp_path / "journal.sqlite3").touch()  # the daemon has created it, not yet its tables
    env = {**os.environ, "HYBRID_STAGING_ROOT": str(tmp_path)}
    ran = subprocess.run([str(WATCHER), "report"], env=env, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert ran.returncode == 0 and "no journal yet" in ran.stderr, ran.stderr
