"""The daemon's status file, `<staging_root>/daemon.json`: what `hybrid-watcher status` reads.

systemd gets the same summary as `STATUS=`, but only systemctl can read that back, and only
while the unit runs. The file is replaced atomically every heartbeat (a reader never sees
half of it), so its age says whether the daemon is alive, and it stays behind after a crash
to say when the daemon was last seen.
"""

from __future__ import annotations

import json
import os
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

STATE_FILE = "daemon.json"
HEARTBEAT_S = 1.0
# A heartbeat older than this means the daemon is hung or gone, whatever its pid says.
STALE_AFTER_S = 15.0


def package_version() -> str:
    try:
        return version("hybridsphere")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def state_path(staging_root: Path) -> Path:
    return staging_root / STATE_FILE


def write_state(path: Path, doc: dict[str, Any]) -> None:
    """Replace the file atomically. No fsync: losing the last heartbeat to a power cut is
    harmless, and an fsync a second would be the daemon's most frequent disk flush."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(doc, default=str), encoding="utf-8")
    temp.replace(path)


def read_state(path: Path) -> dict[str, Any] | None:
    """The last state written, or None if there is none (or it is unreadable)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def pid_alive(pid: int) -> bool:
    if pid <= 0:  # kill(0 or -N, 0) would ask about whole process groups
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's (the daemon runs as its own user)
        return True
    return True


def is_running(doc: dict[str, Any], now: float | None = None) -> bool:
    """Whether the daemon that wrote `doc` is alive: not stopped, pid alive, heartbeat fresh."""
    now = time.time() if now is None else now
    if doc.get("stopped"):
        return False
    age = now - float(doc.get("heartbeat_at", 0.0))
    return age < STALE_AFTER_S and pid_alive(int(doc.get("pid", 0)))


def upload_figures(upload: dict[str, Any], now: float) -> dict[str, Any]:
    """Percent, rate (this attempt's bytes over its time) and ETA of one upload in flight."""
    total, sent = int(upload["total"]), int(upload["sent"])
    elapsed = max(1e-3, now - float(upload["started_at"]))
    rate = (sent - int(upload.get("resumed", 0))) / elapsed
    eta = (total - sent) / rate if rate > 0 else None
    percent = 100.0 * sent / total if total else 100.0
    return {**upload, "percent": round(percent, 1), "rate_bps": round(rate), "eta_s": eta}
