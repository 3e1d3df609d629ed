"""The `hybrid-watcher` commands: status, show, retry, submit (and --wait with a real daemon)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.watcher_daemon import REPO, Cloud, Daemon, StandInFunction, video_bytes
from watcher.cli import COMMANDS, build_parser, main
from watcher.journal import JournalStore, State


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    staging_root = tmp_path / "staging"
    monkeypatch.setenv("HYBRID_STAGING_ROOT", str(staging_root))
    monkeypatch.setenv("COLUMNS", "200")  # rich would wrap the tables at 80
    return staging_root


def _journal(root: Path) -> JournalStore:
    return JournalStore(root / "journal.sqlite3")


def _failed_submission(root: Path, sid: str, name: str) -> Path:
    """A submission concluded `failed`, its video and .error.json in failed/."""
    failed = root / "failed"
    failed.mkdir(parents=True, exist_ok=True)
    video = failed / name
    video.write_bytes(video_bytes(name))
    (failed / (name.rsplit(".", 1)[0] + ".error.json")).write_text('{"code": "x"}')
    store = _journal(root)
    store.create(
        submission_id=sid, original_name=name, source_path=str(root / "inbox" / name),
        staged_path=str(root / "processing" / f"{sid}_{name}"), key=f"videos/n/{sid}/{name}",
        size=10,
    )  # fmt: skip
    store.transition(sid, State.FAILED, final_path=str(video), error="upload_failed: denied")
    store.update(sid, delivered=True)
    store.close()
    return video


def test_every_command_is_registered() -> None:
    names = [name for name, *_ in COMMANDS]
    assert {"run", "status", "show", "retry", "submit"} <= set(names)
    parser = build_parser()
    args = parser.parse_args(["submit", "a.mp4", "--wait"])
    assert args.wait and args.files == [Path("a.mp4")]


def test_status_without_a_journal(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["latest"] == [] and set(doc["counts"]) == {s.value for s in State}


def test_status_and_show(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _failed_submission(root, "20260101T000000Z-0000aaaa", "clip.mp4")
    assert main(["status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["counts"]["failed"] == 1
    assert doc["latest"][0]["original_name"] == "clip.mp4"
    assert main(["status"]) == 0
    table = capsys.readouterr().out
    assert "20260101T000000Z-0000aaaa" in table and "upload_failed: denied" in table

    assert main(["show", "clip.mp4", "--json"]) == 0
    [shown] = json.loads(capsys.readouterr().out)
    assert [e["event"] for e in shown["events"]] == ["discovered", "failed"]
    assert main(["show", "20260101T000000Z"]) == 0  # an id prefix
    assert "history" in capsys.readouterr().out
    assert main(["show", "nothing-like-this"]) == 2


def test_retry_puts_the_video_back_into_the_inbox(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = _failed_submission(root, "20260101T000000Z-0000aaaa", "clip.mp4")
    (root / "inbox").mkdir(parents=True)
    (root / "inbox" / "clip.mp4").write_bytes(b"another clip.mp4 waiting")
    assert main(["retry", "20260101T000000Z-0000aaaa"]) == 0
    assert not video.exists() and not (root / "failed" / "clip.error.json").exists()
    # The name was taken in the inbox: the retried video moves aside rather than over it.
    assert (root / "inbox" / "clip_2.mp4").read_bytes() == video_bytes("clip.mp4")
    store = _journal(root)
    assert store.events("20260101T000000Z-0000aaaa")[-1].event == "retried"
    store.close()
    assert main(["retry", "--failed"]) == 2  # nothing left to retry
    assert "nothing to retry" in capsys.readouterr().err


def test_submit_copies_atomically(root: Path, tmp_path: Path) -> None:
    source = tmp_path / "mine.mp4"
    source.write_bytes(video_bytes("mine"))
    assert main(["submit", str(source)]) == 0
    assert [p.name for p in (root / "inbox").iterdir()] == ["mine.mp4"]
    assert (root / "inbox" / "mine.mp4").read_bytes() == source.read_bytes()
    assert source.exists()  # a copy: the operator's file stays
    assert main(["submit", str(tmp_path / "missing.mp4")]) == 2


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"HYBRID_INPUT_BUCKET": "Not_A_Bucket"}, "HYBRID_INPUT_BUCKET"),
        ({"HYBRID_RESULT_OVERDUE_S": "60", "HYBRID_RESULT_DEADLINE_S": "30"}, "result_overdue_s"),
        ({"HYBRID_ON_DUPLICATE": "sometimes"}, "HYBRID_ON_DUPLICATE"),
    ],
)
def test_a_config_error_exits_78(root: Path, bad: dict[str, str], named: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "watcher", "run"],
        env={**os.environ, **bad}, cwd=REPO, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 78
    assert named in done.stderr


@pytest.fixture
def daemon(tmp_path: Path, cloud: Cloud) -> Iterator[Daemon]:
    node = Daemon(tmp_path / "node", cloud)
    try:
        yield node
    finally:
        node.stop()


@pytest.mark.slow
def test_submit_wait_prints_results_as_they_arrive(
    tmp_path: Path, cloud: Cloud, daemon: Daemon
) -> None:
    sources = []
    for name in ("one.mp4", "broken.mp4"):
        sources.append(tmp_path / name)
        sources[-1].write_bytes(video_bytes(name))
    with StandInFunction(cloud):
        daemon.start()
        done = subprocess.run(
            [sys.executable, "-m", "watcher", "submit", *map(str, sources), "--wait",
             "--timeout", "60"],
            env=daemon.env, cwd=REPO, capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr  # one of the two failed
    lines = done.stdout.splitlines()
    assert any(line.startswith("one.mp4: done") and "alice, bob" in line for line in lines)
    assert any(line.startswith("broken.mp4: failed") and "decode_failed" in line for line in lines)
