"""`hybrid-watcher retry --done`: past videos processed again with reuse bypassed, the new result
replacing the old one in done/ (never a CSV beside another run's details), both answers kept."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from hybrid_common.keys import ResultKind, result_key
from hybrid_common.results import render_csv
from tests.watcher_daemon import PEOPLE, Cloud, Daemon, StandInFunction, drop, video_bytes
from watcher import rerun
from watcher.cli import main
from watcher.journal import JournalStore, State
from watcher.staging import Staging

SUFFIXES = (".csv", ".json", ".faces.jpg")


class TaggingFunction(StandInFunction):
    """The stand-in function, with each answer's details naming its input key (so a test can
    tell which run a file in done/ came from) and one unknown group."""

    def answer(self, key: str) -> None:
        with self._lock:
            self.answered[key] += 1
        out = self.cloud.output_bucket
        details = {"key": key, "people": [p.name for p in PEOPLE], "unknown_faces": [
            {"id": "u1", "first_seen_s": 0.0, "last_seen_s": 1.0, "samples": 2,
             "descriptor": [0.0] * 128, "nearest": None}]}  # fmt: skip
        self._s3.put_object(
            Bucket=out, Key=result_key(key, ResultKind.DETAILS), Body=json.dumps(details)
        )
        self._s3.put_object(Bucket=out, Key=result_key(key, ResultKind.FACES), Body=key.encode())
        csv = render_csv(PEOPLE)
        self._s3.put_object(Bucket=out, Key=result_key(key, ResultKind.CSV), Body=csv)


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "node"
    monkeypatch.setenv("HYBRID_CONFIG", "")  # no config file: the environment alone
    monkeypatch.setenv("HYBRID_STAGING_ROOT", str(root))
    root.mkdir()
    return root


def test_a_done_video_is_processed_again_and_its_result_replaced_in_place(
    cloud: Cloud, daemons: list[Daemon], cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with TaggingFunction(cloud) as function:
        daemon = Daemon(cli_env, cloud, on_duplicate="reuse")
        daemons.append(daemon)
        daemon.start()
        drop(daemon.inbox, "clip.mp4", video_bytes("clip"))
        daemon.wait_until(lambda: daemon.concluded(1))
        [first] = daemon.submissions()
        old_details = json.loads((daemon.done / "clip.json").read_text())
        assert old_details["key"] == first.key

        assert main(["retry", "--done"]) == 0
        assert "re-run; replaces" in capsys.readouterr().out
        assert main(["retry", "--done"]) == 2  # asked once, not twice
        assert "already under way" in capsys.readouterr().err
        daemon.wait_until(lambda: daemon.concluded(2))
        [new] = [s for s in daemon.submissions() if s.id != first.id]

    # Processed again (not answered from the journal), under a new key.
    assert new.replaces == first.id and new.state is State.DONE
    assert function.answered == {first.key: 1, new.key: 1}
    # done/ holds one group: the video that stayed, the new run's companions.
    assert sorted(p.name for p in daemon.done.iterdir()) == sorted(
        ["clip.mp4", *(f"clip{s}" for s in SUFFIXES)]
    )
    assert (daemon.done / "clip.mp4").read_bytes() == video_bytes("clip")
    assert json.loads((daemon.done / "clip.json").read_text())["key"] == new.key
    assert (daemon.done / "clip.faces.jpg").read_bytes() == new.key.encode()
    assert not list((cli_env / "processing").iterdir()) and not list(daemon.inbox.iterdir())
    # Both answers kept: same final path, the old row with a `result.replaced` event.
    assert new.final_path == first.final_path == str(daemon.done / "clip.mp4")
    assert (new.result or {})["replaces"] == first.id
    [replaced] = [e for e in daemon.events("result.received") if e["replaces"]]
    assert replaced["submission"] == new.id
    assert main(["show", "clip.mp4", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [s["id"] for s in shown] == [first.id, new.id]
    assert {"rerun.requested", "result.replaced"} <= {e["event"] for e in shown[0]["events"]}


def test_a_done_video_changed_since_is_filed_under_a_new_name(
    cloud: Cloud, daemons: list[Daemon], cli_env: Path
) -> None:
    """If done/'s video is no longer the bytes processed, its results are not replaced."""
    with TaggingFunction(cloud):
        daemon = Daemon(cli_env, cloud)
        daemons.append(daemon)
        daemon.start()
        drop(daemon.inbox, "clip.mp4", video_bytes("clip"))
        daemon.wait_until(lambda: daemon.concluded(1))
        [first] = daemon.submissions()
        # The copy for the re-run is taken (daemon stopped); then done/'s video changes.
        daemon.stop()
        assert main(["retry", "--done"]) == 0
        original = daemon.done / "clip.mp4"
        saved = original.read_bytes()
        original.write_bytes(saved + b"edited")
        daemon.start()
        daemon.wait_until(lambda: daemon.concluded(2))
    assert json.loads((daemon.done / "clip.json").read_text())["key"] == first.key
    assert (daemon.done / "clip_2.mp4").read_bytes() == saved
    assert (daemon.done / "clip_2.csv").exists()
    assert daemon.events("rerun.not_replacing")


@pytest.mark.slow
@pytest.mark.parametrize("step", ["done", "moved"])
def test_a_rerun_killed_after_its_conclusion_is_delivered_once_at_restart(
    cloud: Cloud, daemons: list[Daemon], cli_env: Path, step: str
) -> None:
    """kill -9 right after the re-run's `done` commit (or its files moved): recovery puts the
    result in place of the old one, once."""
    with TaggingFunction(cloud):
        daemon = Daemon(cli_env, cloud)
        daemons.append(daemon)
        daemon.start()
        drop(daemon.inbox, "clip.mp4", video_bytes("clip"))
        daemon.wait_until(lambda: daemon.concluded(1))
        daemon.stop()
        daemon.start(WATCHER_TEST_KILL_AT=step)
        assert main(["retry", "--done"]) == 0
        assert daemon.wait_exit(60) == -signal.SIGKILL
        daemon.start()
        daemon.wait_until(lambda: daemon.concluded(2))
        time.sleep(0.5)  # time to (wrongly) announce it twice
    [new] = [s for s in daemon.submissions() if s.replaces]
    assert json.loads((daemon.done / "clip.json").read_text())["key"] == new.key
    assert sorted(p.name for p in daemon.done.iterdir()) == sorted(
        ["clip.mp4", *(f"clip{s}" for s in SUFFIXES)]
    )
    assert not list((cli_env / "processing").iterdir())
    announced = [e for e in daemon.events("result.received") if e["replaces"]]
    assert len(announced) == 1


# --- choosing what to re-run (no daemon) ---


def _done(root: Path, sid: str, name: str, unknown: Any, finished: float) -> None:
    done = root / "done"
    done.mkdir(parents=True, exist_ok=True)
    stem = name.rsplit(".", 1)[0]
    (done / name).write_bytes(video_bytes(name))
    (done / f"{stem}.csv").write_text("name,major,year\n")
    if unknown is not None:
        (done / f"{stem}.json").write_text(json.dumps({"unknown_faces": unknown}))
    store = JournalStore(root / "journal.sqlite3")
    store.create(
        submission_id=sid, original_name=name, source_path="x", staged_path="y",
        key=f"videos/n/{sid}/{name}", size=10,
    )  # fmt: skip
    store.transition(sid, State.DONE, final_path=str(done / name), finished_at=finished)
    store.update(sid, delivered=True)
    store.close()


def test_only_unknown_and_since_choose_the_results(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = time.time() - 10 * 86400, time.time()
    _done(cli_env, "20260101T000000Z-00000001", "a.mp4", [{"id": "u1"}], old)
    _done(cli_env, "20260101T000000Z-00000002", "b.mp4", [], new)
    _done(cli_env, "20260101T000000Z-00000003", "c.mp4", 2, new)  # an older function's count
    _done(cli_env, "20260101T000000Z-00000004", "d.mp4", None, new)  # a reused result
    _done(cli_env, "20260101T000000Z-00000005", "e.mp4", [{"id": "u1"}], new)
    (cli_env / "done" / "e.mp4").unlink()  # retention took it

    since = time.strftime("%Y-%m-%d", time.gmtime(old + 86400))
    assert main(["retry", "--done", "--only-unknown", "--since", since]) == 0
    out, err = capsys.readouterr()
    assert "c.mp4" in out and "a.mp4" not in out and "b.mp4" not in out
    assert "00000004: no details file" in err and "00000005:" in err
    assert sorted(p.name for p in (cli_env / "inbox").iterdir()) == ["c.mp4"]
    store = JournalStore(cli_env / "journal.sqlite3")
    assert store.rerun_of(str((cli_env / "inbox" / "c.mp4").resolve())) == (
        "20260101T000000Z-00000003"
    )
    store.close()
    assert main(["retry", "--done", "--since", "yesterday"]) == 2
    assert main(["retry", "--failed", "--only-unknown"]) == 2


# --- the replacement itself ---


def _groups(tmp_path: Path, run: str) -> tuple[Staging, Path, Path]:
    staging = Staging(tmp_path)
    staging.ensure()
    final = staging.done / "clip.mp4"
    final.write_bytes(b"video")
    for suffix in (".csv", ".json", ".faces.jpg"):
        (staging.done / f"clip{suffix}").write_text(f"old{suffix}")
    staged = staging.processing / "sid_clip.mp4"
    staged.write_bytes(b"video")
    for suffix in (".csv", ".json"):  # the new run made no contact sheet
        (staging.processing / f"sid_clip{suffix}").write_text(f"{run}{suffix}")
    return staging, staged, final


def _consistent(done: Path) -> None:
    """A CSV in done/ sits only beside details of its own run (and no stale sheet)."""
    csv = done / "clip.csv"
    if csv.exists():
        run = csv.read_text().removesuffix(".csv")
        assert (done / "clip.json").read_text() == f"{run}.json"
        sheet = done / "clip.faces.jpg"
        assert not sheet.exists() or sheet.read_text() == f"{run}.faces.jpg"


def test_no_moment_shows_a_csv_beside_another_runs_details(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging, staged, final = _groups(tmp_path, "new")
    steps: list[str] = []
    real_replace, real_unlink = Path.replace, Path.unlink

    def replace(self: Path, target: Any) -> Path:
        result = real_replace(self, target)
        steps.append(f"replace {Path(target).name}")
        _consistent(staging.done)
        return result

    def unlink(self: Path, missing_ok: bool = False) -> None:
        real_unlink(self, missing_ok=missing_ok)
        steps.append(f"unlink {self.name}")
        _consistent(staging.done)

    monkeypatch.setattr(Path, "replace", replace)
    monkeypatch.setattr(Path, "unlink", unlink)
    rerun.replace_results(staging, staged, final)
    monkeypatch.undo()
    assert steps.index("replace clip.csv") > steps.index("replace clip.json")
    assert sorted(p.name for p in staging.done.iterdir()) == ["clip.csv", "clip.json", "clip.mp4"]
    assert (staging.done / "clip.csv").read_text() == "new.csv"
    assert final.read_bytes() == b"video" and not list(staging.processing.iterdir())


@pytest.mark.parametrize("crash_after", range(1, 9))
def test_a_replacement_cut_short_is_finished_by_the_next_delivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_after: int
) -> None:
    """Killed after any step (a rename, an unlink), running it again gives the same end."""
    staging, staged, final = _groups(tmp_path, "new")
    count = 0
    real_replace, real_unlink = Path.replace, Path.unlink

    class Crash(BaseException):
        pass

    def step() -> None:
        nonlocal count
        count += 1
        if count == crash_after:
            raise Crash

    def replace(self: Path, target: Any) -> Path:
        result = real_replace(self, target)
        step()
        return result

    def unlink(self: Path, missing_ok: bool = False) -> None:
        real_unlink(self, missing_ok=missing_ok)
        step()

    monkeypatch.setattr(Path, "replace", replace)
    monkeypatch.setattr(Path, "unlink", unlink)
    with contextlib.suppress(Crash):
        rerun.replace_results(staging, staged, final)
    monkeypatch.undo()
    _consistent(staging.done)
    rerun.replace_results(staging, staged, final)
    names = sorted(p.name for p in staging.done.iterdir() if not p.name.startswith("."))
    assert names == ["clip.csv", "clip.json", "clip.mp4"]
    assert (staging.done / "clip.csv").read_text() == "new.csv"
    assert (staging.done / "clip.json").read_text() == "new.json"
    assert not list(staging.processing.iterdir())


def test_a_journal_from_before_reruns_gains_them_and_reads_as_before(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    store = JournalStore(path)
    store.create(submission_id="s1", original_name="a.mp4", source_path="x", staged_path="y",
                 key="k", size=1)  # fmt: skip
    store.close()
    db = sqlite3.connect(path)
    with db:  # as schema 1 left it
        db.execute("DROP TABLE reruns")
        db.execute("ALTER TABLE submissions DROP COLUMN replaces")
        db.execute("PRAGMA user_version = 1")
    db.close()
    old = JournalStore(path, readonly=True)
    assert old.get("s1").replaces is None  # the CLI reads an old journal as it is
    old.close()
    store = JournalStore(path)
    assert store.get("s1").replaces is None
    store.request_rerun("/inbox/a.mp4", "s1")
    store.create(submission_id="s2", original_name="a.mp4", source_path="/inbox/a.mp4",
                 staged_path="z", key="k2", size=1, replaces="s1")  # fmt: skip
    assert store.get("s2").replaces == "s1"
    assert store.rerun_of("/inbox/a.mp4") is None  # consumed with the row
    assert store.pending_reruns() == {"s1"}
    store.close()
