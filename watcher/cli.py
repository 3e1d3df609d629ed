"""`hybrid-watcher` commands: run the daemon, inspect the journal, retry, submit, load students.

Each subcommand is one entry of COMMANDS: (name, help, add_arguments, handler). A handler
gets the parsed arguments and returns the exit status; settings errors exit 78.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from hybrid_common.aws_credentials import missing_credentials_exit, require_credentials
from hybrid_common.config import json_logs
from hybrid_common.logs import configure_logging, get_logger
from hybrid_common.students import StudentsFileError, load_students, read_students
from hybrid_common.version import version_line
from watcher.doctor import add_doctor_arguments, cmd_doctor
from watcher.faces_cli import add_faces_arguments, cmd_faces
from watcher.journal import TERMINAL, JournalStore, State, Submission
from watcher.report import add_report_arguments, cmd_report
from watcher.settings import WatcherSettings, load_settings
from watcher.staging import Staging
from watcher.status import add_status_arguments, cmd_status

log = get_logger(__name__)

AddArguments = Callable[[argparse.ArgumentParser], None]
Handler = Callable[[argparse.Namespace], int]

EXIT_FAILED = 1  # some submission failed or timed out
EXIT_WAIT_TIMEOUT = 3  # `submit --wait --timeout` expired first
EX_NOINPUT = 66  # sysexits.h: an input file did not exist or was not readable


def _settings() -> WatcherSettings:
    return load_settings()


def _staging(settings: WatcherSettings) -> Staging:
    # Resolved, so paths written by the daemon and the CLI compare equal as strings.
    return Staging(settings.staging_root.resolve())


def _open_journal(settings: WatcherSettings, *, readonly: bool = False) -> JournalStore | None:
    """The daemon's journal; read-only for commands that only look (operators may not own it)."""
    if not settings.journal_path.exists():
        return None
    journal = JournalStore(settings.journal_path, readonly=readonly)
    if readonly:
        try:
            journal.counts()
        except sqlite3.OperationalError:  # the daemon has created the file, not yet its tables
            journal.close()
            return None
    return journal


def _when(epoch: float | None) -> str:
    if not epoch:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _shown(name: str, value: object) -> str:
    if value is None:
        return ""
    if name == "result":
        return json.dumps(value, ensure_ascii=False)
    if name.endswith("_at") and isinstance(value, float):
        return _when(value)
    return str(value)


def _outcome(sub: Submission) -> str:
    """One line of what came out: the people found, or why not."""
    if sub.state is State.DONE and sub.result is not None:
        people = sub.result.get("people") or []
        return ", ".join(people) if people else "(nobody known)"
    return sub.error or ""


# --- run ---


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # `run` takes everything from settings (env HYBRID_*, config file)


def cmd_run(args: argparse.Namespace) -> int:
    from watcher.service import WatcherService  # the daemon's imports only when running it

    settings = _settings()
    configure_logging(settings.log_level, json=json_logs(settings.log_format))
    # Missing AWS credentials: one line and exit 77 now, not a daemon failing every request.
    require_credentials(
        settings.endpoint_url, settings.lambda_endpoint_url or settings.endpoint_url
    )
    service = WatcherService(settings)
    try:
        asyncio.run(service.serve())
    except Exception:
        log.exception("service.crashed")
        return 1
    return 0


# --- show ---


def add_show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref", metavar="ID|FILE", help="submission id (or prefix), name or path")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _find(journal: JournalStore, ref: str) -> list[Submission]:
    found = journal.find(ref)
    if not found and os.sep in ref:
        found = journal.find(str(Path(ref).resolve()))
    return found


def cmd_show(args: argparse.Namespace) -> int:
    settings = _settings()
    journal = _open_journal(settings, readonly=True)
    found = _find(journal, args.ref) if journal else []
    events = {sub.id: journal.events(sub.id) for sub in found} if journal else {}
    if journal:
        journal.close()
    if not found:
        print(f"no submission matches {args.ref!r}", file=sys.stderr)
        return 2
    if args.json:
        docs = [{**asdict(s), "events": [asdict(e) for e in events[s.id]]} for s in found]
        print(json.dumps(docs, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for sub in found:
        facts = Table(show_header=False, title=f"submission {sub.id}")
        for name, value in asdict(sub).items():
            facts.add_row(name, _shown(name, value))
        console.print(facts)
        history = Table("when", "event", "detail", title="history")
        for event in events[sub.id]:
            history.add_row(_when(event.at), event.event, json.dumps(event.detail))
        console.print(history)
    return 0


# --- retry ---


def add_retry_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("ref", nargs="?", metavar="ID", help="submission id (or prefix)")
    group.add_argument("--failed", action="store_true", help="every failed or timed-out one")
    group.add_argument(
        "--done", action="store_true",
        help="process done videos again (no reuse); each new result replaces the old one",
    )  # fmt: skip
    parser.add_argument("--since", metavar="DATE", help="with --done: finished since DATE (UTC)")
    parser.add_argument(
        "--only-unknown", action="store_true", help="with --done: results with unknown faces"
    )


def cmd_retry(args: argparse.Namespace) -> int:
    """Put failed videos back into the inbox: the daemon takes them as new submissions."""
    settings = _settings()
    staging = _staging(settings)
    journal = _open_journal(settings)
    if journal is None:
        print("no journal yet: nothing to retry", file=sys.stderr)
        return 2
    if args.done:
        from watcher.rerun import retry_done

        try:
            return retry_done(journal, staging, since=args.since, only_unknown=args.only_unknown)
        finally:
            journal.close()
    if args.since or args.only_unknown:
        journal.close()
        print("--since and --only-unknown go with --done", file=sys.stderr)
        return 2
    retryable = {State.FAILED, State.TIMED_OUT}
    if args.failed:
        subs = journal.in_states(retryable)
    else:
        subs = [s for s in journal.find(args.ref) if s.state in retryable]
    retried = 0
    for sub in subs:
        video = Path(sub.final_path) if sub.final_path else None
        if video is None or not video.exists():
            if not args.failed:
                print(f"{sub.id}: the video is no longer in failed/", file=sys.stderr)
            continue
        target = staging.claim_group_name(staging.inbox, Path(sub.original_name).name)
        journal.record(sub.id, "retried", {"inbox_path": str(target)})
        # A rename into the inbox: the daemon sees it arrive complete, like an operator's `mv`,
        # and takes it as a new submission (a new key: the old one has an error result).
        video.rename(target)
        staging.companion(video, ".error.json").unlink(missing_ok=True)
        print(f"{sub.id}: {sub.original_name} → {target}")
        retried += 1
    journal.close()
    if not retried:
        print("nothing to retry", file=sys.stderr)
        return 2
    return 0


# --- submit ---


def add_submit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--wait", action="store_true", help="print results as they arrive")
    parser.add_argument("--timeout", type=float, default=None, help="give up waiting after S s")


def copy_into_inbox(
    staging: Staging, source: Path, before_rename: Callable[[Path], None] | None = None
) -> Path:
    """Copy under a hidden temporary name, fsync, then rename: the daemon never sees half.

    `before_rename(target)` runs once the name is claimed, before the file appears there.
    """
    staging.inbox.mkdir(parents=True, exist_ok=True)
    temp = staging.inbox / f".{source.name}.{secrets.token_hex(4)}.part"
    try:
        with source.open("rb") as src, temp.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
            dst.flush()
            os.fsync(dst.fileno())
        target = staging.claim_group_name(staging.inbox, source.name)
        if before_rename is not None:
            before_rename(target)
        temp.rename(target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target


def cmd_submit(args: argparse.Namespace) -> int:
    settings = _settings()
    staging = _staging(settings)
    missing = [f for f in args.files if not f.is_file()]
    if missing:
        print(f"not files: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    started = time.time()
    placed = [copy_into_inbox(staging, f) for f in args.files]
    for path in placed:
        print(f"submitted {path}")
    if not args.wait:
        return 0
    return _wait_for(settings, placed, started, args.timeout)


def _wait_for(
    settings: WatcherSettings, placed: list[Path], started: float, timeout: float | None
) -> int:
    """Poll the journal until every placed file has concluded; print each as it does."""
    from rich.progress import Progress

    waiting = {str(p): p for p in placed}
    failures = 0
    deadline = None if timeout is None else time.monotonic() + timeout
    with Progress(disable=not sys.stdout.isatty(), transient=True) as progress:
        bar = progress.add_task("waiting for results", total=len(placed))
        while waiting:
            journal = _open_journal(settings, readonly=True)
            for source in list(waiting):
                sub = _latest_for(journal, source, started) if journal else None
                if sub is None or sub.state not in TERMINAL or not sub.delivered:
                    continue
                del waiting[source]
                failures += sub.state is not State.DONE
                progress.console.print(_result_line(sub))
                progress.advance(bar)
            if journal:
                journal.close()
            if waiting and deadline is not None and time.monotonic() > deadline:
                for source in waiting:
                    print(f"{source}: still waiting after {timeout} s", file=sys.stderr)
                return EXIT_WAIT_TIMEOUT
            if waiting:
                time.sleep(0.25)
    return EXIT_FAILED if failures else 0


def _latest_for(journal: JournalStore, source: str, since: float) -> Submission | None:
    matches = [
        s for s in journal.find(source) if s.source_path == source and s.created_at >= since - 1
    ]
    return matches[-1] if matches else None


def _result_line(sub: Submission) -> str:
    latency = (sub.result or {}).get("latency_s")
    took = f" ({latency:.1f} s)" if isinstance(latency, int | float) else ""
    return f"{sub.original_name}: {sub.state.value}{took}: {_outcome(sub)} → {sub.final_path}"


# --- students load ---


def add_students_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    load = actions.add_parser("load", help="put every student of FILE.json into the table")
    load.add_argument("file", type=Path, help="students JSON ([{name, major, year}, ...])")


def cmd_students(args: argparse.Namespace) -> int:
    """The table the function reads, filled from the course's file (real AWS or any endpoint)."""
    import boto3  # only this command talks to DynamoDB, synchronously
    from botocore.config import Config

    settings = _settings()
    try:
        students = read_students(args.file)
    except StudentsFileError as error:
        print(f"students load: {error}", file=sys.stderr)
        return EX_NOINPUT
    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}),
    )
    count = load_students(dynamodb, settings.table, students)
    print(f"loaded {count} students into {settings.table}")
    return 0


# --- config ---


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_config(args: argparse.Namespace) -> int:
    """The effective settings and where each came from; secrets are never printed."""
    from watcher import effective_config as ec

    settings = _settings()
    rows = ec.effective_settings(settings)
    render = ec.render_json if args.json else ec.render_text
    print(render(rows, ec.config_file_origin(), ec.aws_credentials_origin()))
    return 0


# Each subcommand: (name, help, add_arguments, handler). Add new commands as new entries.
COMMANDS: list[tuple[str, str, AddArguments, Handler]] = [
    ("run", "run the daemon in the foreground", add_run_arguments, cmd_run),
    (
        "status",
        "is the daemon running, uploads in flight, counts and the latest submissions",
        add_status_arguments,
        cmd_status,
    ),
    ("show", "one submission's history and result", add_show_arguments, cmd_show),
    ("retry", "put failed videos back into the inbox", add_retry_arguments, cmd_retry),
    ("submit", "copy videos into the inbox atomically", add_submit_arguments, cmd_submit),
    (
        "config",
        "the effective settings and where each came from (secrets hidden)",
        add_config_arguments,
        cmd_config,
    ),
    (
        "students",
        "manage the students table",
        add_students_arguments,
        cmd_students,
    ),
    ("faces", "see unknown faces, enrol people, roll out the set", add_faces_arguments, cmd_faces),
    ("report", "what this node did over a period (--since 24h)", add_report_arguments, cmd_report),
    (
        "doctor",
        "check this node's configuration, cloud and disks",
        add_doctor_arguments,
        cmd_doctor,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybrid-watcher",
        description="Submit videos from this VM for face recognition and collect the results.",
    )
    parser.add_argument("--version", action="version", version=version_line("hybrid-watcher"))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, add_arguments, handler in COMMANDS:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        sub.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":
        # Commands print their answers on stdout; logs (warnings only) go to stderr.
        configure_logging("warning", stream=sys.stderr)
    handler: Handler = args.handler
    with missing_credentials_exit("hybrid-watcher"):
        return handler(args)


__all__ = ["COMMANDS", "build_parser", "main"]
