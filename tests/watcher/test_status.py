"""`hybrid-watcher status`: whether the daemon runs (from its status file), uploads in flight
with bytes/percent/rate/ETA, and plain words when there is no daemon or no journal yet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import free_port
from tests.watcher_daemon import MP4_HEAD, REPO, Cloud, Daemon, StandInFunction, drop, video_bytes
from watcher.daemon_state import is_running, upload_figures

WATCHER = REPO / ".venv" / "bin" / "hybrid-watcher"
MIB = 1024 * 1024


def status(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WATCHER), "status", *args], env={**env, "COLUMNS": "200"},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip


def status_json(env: dict[str, str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(status(env, "--json").stdout)
    return doc


def test_status_says_plainly_when_nothing_ever_ran_here(tmp_path: Path) -> None:
    env = {**os.environ, "HYBRID_STAGING_ROOT": str(tmp_path)}
    text = status(env).stdout
    assert "daemon: not running (no status file" in text
    assert "no journal yet" in text
    doc = status_json(env)
    assert doc["daemon"] is None and doc["journal"] is None and doc["uploads"] == []


def test_status_shows_the_running_daemon_then_that_it_stopped(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon]
) -> None:
    daemon = Daemon(tmp_path / "node", cloud, node_id="node-s")
    daemons.append(daemon)
    daemon.start()
    assert daemon.proc is not None
    drop(daemon.inbox, "a.mp4", video_bytes("a"))
    daemon.wait_until(lambda: daemon.concluded(1))
    doc = status_json(daemon.env)
    d = doc["daemon"]
    assert d["running"] is True and d["pid"] == daemon.proc.pid
    assert d["node"] == "node-s" and d["input_bucket"] == cloud.input_bucket
    assert d["output_bucket"] == cloud.output_bucket and d["version"]
    assert d["heartbeat_age_s"] < 5 and d["uptime_s"] >= 0
    assert doc["counts"]["done"] == 1
    text = status(daemon.env).stdout
    assert f"daemon: running, pid {daemon.proc.pid}" in text
    assert f"{cloud.input_bucket} → {cloud.output_bucket}" in text

    daemon.stop()
    assert status_json(daemon.env)["daemon"]["running"] is False
    assert "daemon: not running (stopped " in status(daemon.env).stdout


def test_a_killed_daemon_is_not_running_and_last_seen(
    tmp_path: Path, cloud: Cloud, daemons: list[Daemon]
) -> None:
    daemon = Daemon(tmp_path / "node", cloud)
    daemons.append(daemon)
    daemon.start()
    time.sleep(1.5)  # a heartbeat or two
    daemon.signal(signal.SIGKILL)
    daemon.wait_exit()
    text = status(daemon.env).stdout
    assert "daemon: not running (last seen " in text


def test_watch_refreshes_until_interrupted(tmp_path: Path) -> None:
    env = {**os.environ, "HYBRID_STAGING_ROOT": str(tmp_path), "COLUMNS": "200"}
    proc = subprocess.Popen(
        [str(WATCHER), "status", "--watch", "--json"], env=env,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        lines = [proc.stdout.readline() for _ in range(3)]  # one document a second
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        proc.stdout.close()
    assert all(json.loads(line)["daemon"] is None for line in lines)


# --- a 5 GiB upload, visible as it progresses ---


@pytest.fixture
def sink() -> Iterator[str]:
    """bench/s3_sink.py: an S3 endpoint that discards bodies (moto would keep 5 GiB in RAM)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "bench/s3_sink.py", str(port)], stdout=subprocess.PIPE, cwd=REPO
    )
    try:
        assert proc.stdout is not None and b"listening" in proc.stdout.readline()
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_5_gib_upload_is_visible_as_it_progresses(
    tmp_path: Path, sink: str, daemons: list[Daemon]
) -> None:
    size = 5 * 1024 * MIB
    # 8 MiB parts (the default): 640 progress steps; capped at 200 MiB/s so it lasts ~25 s.
    daemon = Daemon(tmp_path / "node", Cloud(sink, "sink-in", "sink-out"),
                    bandwidth_limit_mbps=200)  # fmt: skip
    daemons.append(daemon)
    daemon.start()
    sparse = daemon.inbox / ".huge.mp4"
    with sparse.open("wb") as out:  # a video header, then a hole: 5 GiB on paper only
        out.write(MP4_HEAD)
        out.truncate(size)
    sparse.rename(daemon.inbox / "huge.mp4")
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 240
    while not daemon.events("upload.completed") and time.monotonic() < deadline:
        uploads = status_json(daemon.env)["uploads"]
        if uploads:
            seen.append(uploads[0])
        time.sleep(0.5)
    assert daemon.events("upload.completed"), "the upload did not complete"
    sent = [u["sent"] for u in seen]
    print(f"5 GiB: {len(seen)} samples, sent {[s // MIB for s in sent]} MiB")
    assert len(set(sent)) >= 3, f"progress not seen growing: {sent}"
    assert sent == sorted(sent) and 0 < sent[-1] <= size
    last = seen[-1]
    assert last["file"] == "huge.mp4" and last["total"] == size
    assert 0 < last["percent"] <= 100 and last["rate_bps"] > 0 and last["eta_s"] is not None
    # Done: nothing in flight any more.
    daemon.wait_until(lambda: not status_json(daemon.env)["uploads"], timeout=10)


# --- the pure parts ---


def test_a_stale_heartbeat_is_not_running_whatever_the_pid() -> None:
    now = time.time()
    doc = {"pid": os.getpid(), "heartbeat_at": now - 2, "stopped": False}
    assert is_running(doc, now)
    assert not is_running({**doc, "heartbeat_at": now - 60}, now)
    assert not is_running({**doc, "stopped": True}, now)
    assert not is_running({**doc, "pid": 0}, now)


def test_upload_figures() -> None:
    upload = {"key": "k", "file": "f", "total": 1000, "sent": 600, "resumed": 200,
              "started_at": 100.0}  # fmt: skip
    figures = upload_figures(upload, now=104.0)
    assert figures["percent"] == 60.0
    assert figures["rate_bps"] == 100  # this attempt's 400 bytes over 4 s
    assert figures["eta_s"] == pytest.approx(4.0)


def test_a_journal_file_without_tables_yet_is_no_journal(tmp_path: Path) -> None:
    (tmp_path / "journal.sqlite3").touch()  # the daemon has created it, not yet its tables
    env = {**os.environ, "HYBRID_STAGING_ROOT": str(tmp_path)}
    assert "no journal yet" in status(env).stdout
