"""`hybrid-watcher status`: is the daemon running, what is it uploading, where do things stand.

Liveness and uploads in flight come from the daemon's status file (`watcher.daemon_state`);
counts and the latest submissions from the journal, read-only (the daemon keeps writing).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from watcher.daemon_state import is_running, read_state, state_path, upload_figures
from watcher.journal import JournalStore, State
from watcher.settings import WatcherSettings

REFRESH_S = 1.0


def _when(epoch: float | None) -> str:
    if not epoch:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _span(seconds: float | None) -> str:
    """`1h 02m`, `3m 05s`, `12s`: short enough for a table cell."""
    if seconds is None:
        return "?"
    s = int(max(0, seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def collect(settings: WatcherSettings, limit: int) -> dict[str, Any]:
    """Everything `status` shows, as one document (the --json output)."""
    now = time.time()
    state = read_state(state_path(settings.staging_root.resolve()))
    daemon: dict[str, Any] | None = None
    if state is not None:
        running = is_running(state, now)
        daemon = {
            **{k: v for k, v in state.items() if k != "uploads"},
            "running": running,
            "uptime_s": now - float(state.get("started_at", now)) if running else None,
            "heartbeat_age_s": now - float(state.get("heartbeat_at", now)),
        }
    uploads = [upload_figures(u, now) for u in (state or {}).get("uploads", [])]
    if daemon is not None and not daemon["running"]:
        uploads = []  # whatever it was sending stopped with it
    journal_exists = settings.journal_path.exists()
    counts = {s.value: 0 for s in State}
    latest = []
    if journal_exists:
        journal = JournalStore(settings.journal_path, readonly=True)
        try:
            counts, latest = journal.counts(), journal.latest(limit)
        except sqlite3.OperationalError:  # the daemon has created the file, not yet its tables
            journal_exists = False
        finally:
            journal.close()
    return {
        "daemon": daemon,
        "uploads": uploads,
        "journal": str(settings.journal_path) if journal_exists else None,
        "counts": counts,
        "latest": [asdict(sub) for sub in latest],
    }


def daemon_line(doc: dict[str, Any], settings: WatcherSettings) -> str:
    daemon = doc["daemon"]
    if daemon is None:
        return (
            f"daemon: not running (no status file in {settings.staging_root}: never started here)"
        )
    if not daemon["running"]:
        how = "stopped" if daemon.get("stopped") else "last seen"
        age = _span(daemon["heartbeat_age_s"])
        return f"daemon: not running ({how} {_when(daemon.get('heartbeat_at'))}, {age} ago)"
    return (
        f"daemon: running, pid {daemon['pid']}, up {_span(daemon['uptime_s'])}, "
        f"version {daemon.get('version')}, node {daemon.get('node')}, "
        f"heartbeat {_span(daemon['heartbeat_age_s'])} ago\n"
        f"  buckets {daemon.get('input_bucket')} → {daemon.get('output_bucket')}, "
        f"trigger {daemon.get('trigger_mode')}; {daemon.get('status')}"
    )


def render(doc: dict[str, Any], settings: WatcherSettings) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(daemon_line(doc, settings), markup=False, highlight=False)
    if doc["uploads"]:
        table = Table(title="uploads in flight")
        for column in ("file", "sent", "size", "%", "rate", "ETA"):
            table.add_column(column, justify="left" if column == "file" else "right")
        for u in doc["uploads"]:
            table.add_row(
                u["file"], _bytes(u["sent"]), _bytes(u["total"]), f"{u['percent']:.1f}",
                f"{_bytes(u['rate_bps'])}/s", _span(u["eta_s"]),
            )  # fmt: skip
        console.print(table)
    if doc["journal"] is None:
        console.print(
            f"no journal yet at {settings.journal_path}: nothing has been submitted on this "
            "node (or staging_root points elsewhere)",
            markup=False,
        )
        return
    summary = Table(title=f"hybrid-watcher {settings.node_id}: submissions by state")
    for name in doc["counts"]:
        summary.add_column(name, justify="right")
    summary.add_row(*(str(n) for n in doc["counts"].values()))
    console.print(summary)
    table = Table(title="latest submissions")
    for column in ("id", "file", "state", "updated", "result"):
        table.add_column(column)
    for sub in doc["latest"]:
        table.add_row(sub["id"], sub["original_name"], sub["state"], _when(sub["updated_at"]),
                      _outcome(sub))  # fmt: skip
    console.print(table)


def _outcome(sub: dict[str, Any]) -> str:
    """One line of what came out: the people found, or why not."""
    if sub["state"] == State.DONE and sub.get("result") is not None:
        people = sub["result"].get("people") or []
        return ", ".join(people) if people else "(nobody known)"
    return str(sub.get("error") or "")


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--limit", type=int, default=15, help="latest submissions to list")
    parser.add_argument("--watch", action="store_true", help="refresh every second until Ctrl-C")


def cmd_status(args: argparse.Namespace) -> int:
    from watcher import cli  # the CLI's settings lookup (config discovery lives there)

    settings = cli._settings()
    if args.json and not args.watch:
        print(json.dumps(collect(settings, args.limit), indent=2, default=str))
        return 0
    if not args.watch:
        render(collect(settings, args.limit), settings)
        return 0
    try:
        while True:
            doc = collect(settings, args.limit)
            if args.json:
                print(json.dumps(doc, default=str), flush=True)
            else:
                sys.stdout.write("\x1b[H\x1b[2J")  # home + clear: redraw in place
                render(doc, settings)
                sys.stdout.flush()
            time.sleep(REFRESH_S)
    except KeyboardInterrupt:
        return 0
