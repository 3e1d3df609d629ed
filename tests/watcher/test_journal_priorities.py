"""Under systemd, each log line carries its syslog priority, as the unit tells journald to read.

The real daemon runs with its stdout on a file that JOURNAL_STREAM names (by device:inode, as
systemd does for the journal socket); its S3 endpoint is a closed loopback port, so it warns.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "hybrid-watcher.service"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def run_daemon(tmp_path: Path, journal_stream: bool) -> list[str]:
    """Start `hybrid-watcher run`, wait for a warning, stop it; its stdout's lines."""
    out_path = tmp_path / f"stdout-{journal_stream}.log"
    env = {
        **os.environ,
        "HYBRID_STAGING_ROOT": str(tmp_path / "staging"),
        "HYBRID_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}",
        "HYBRID_LOG_FORMAT": "json",
        "HYBRID_RETRY_ATTEMPTS": "1",
    }
    with out_path.open("w") as out:
        if journal_stream:
            info = os.fstat(out.fileno())
            env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
        else:
            env["JOURNAL_STREAM"] = "1:1"  # inherited, but stdout is elsewhere: no prefixes
        daemon = subprocess.Popen(
            [str(BIN / "hybrid-watcher"), "run"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while '"level": "warning"' not in out_path.read_text():
            assert daemon.poll() is None, out_path.read_text()[-3000:]
            assert time.monotonic() < deadline, out_path.read_text()[-3000:]
            time.sleep(0.2)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    return [line for line in out_path.read_text().splitlines() if line.strip()]


def test_unit_lets_journald_parse_the_priority_prefix() -> None:
    directives = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line[:40]
    )
    assert directives.get("SyslogLevelPrefix", "yes") == "yes"
    assert directives.get("StandardOutput", "journal").startswith("journal")


def test_daemon_lines_carry_their_syslog_priority_on_the_journal_stream(tmp_path: Path) -> None:
    lines = run_daemon(tmp_path, journal_stream=True)
    priorities = {"debug": "<7>", "info": "<6>", "warning": "<4>", "error": "<3>"}
    seen = set()
    for line in lines:
        prefix, _, body = line.partition(">")
        event = json.loads(body)  # every line: <N> then one JSON document
        assert f"{prefix}>" == priorities[event["level"]], line
        seen.add(event["level"])
    assert {"info", "warning"} <= seen


def test_no_prefix_when_stdout_is_not_the_journal(tmp_path: Path) -> None:
    lines = run_daemon(tmp_path, journal_stream=False)
    assert all(line.startswith("{") for line in lines), lines[:3]
