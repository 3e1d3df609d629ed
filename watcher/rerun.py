"""Re-running past videos (`retry --done`): the one deliberate replacement of a result in done/.

Asking (the CLI): a copy of the done/ video goes into the inbox, its name registered in the
journal as a re-run of that submission *before* it appears there, so the daemon takes it as
a re-run: reuse by content is bypassed (the point is a new answer) and the result replaces
the old one beside the video that stayed in done/. The journal keeps both answers: the old
row as it was (with a `result.replaced` event), the new row with `replaces` = the old id.

Replacing (the daemon): only when the done/ video still is the video processed (same
SHA-256); otherwise the new result is filed under a new name, as any result. The companions
are copied beside the video under hidden temporary names, then the old CSV goes, the other
files are renamed over theirs, and the new CSV comes last: a CSV in done/ always sits beside
the details and sheet of its own run (while none is there, the group is being replaced). The
staged CSV is removed first once all is in place: as long as it exists, redoing everything
after a crash is right; once it is gone, only the staged leftovers remain to delete.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from hybrid_common.keys import ResultKind
from hybrid_common.logs import get_logger
from watcher.journal import JournalStore, State, Submission
from watcher.moves import temporary_for
from watcher.staging import RESULT_SUFFIXES, Staging, fsync_dir

log = get_logger(__name__)

CSV = ResultKind.CSV.value


# --- the daemon's side: put a re-run's result in place of the old one ---


def replace_results(staging: Staging, staged_video: Path, final_video: Path) -> list[Path]:
    """Install the staged group's results beside `final_video`, replacing its old ones; delete
    the staged copy of the video (done/ holds the same bytes). Idempotent after a crash."""
    sources = {suffix: staging.companion(staged_video, suffix) for suffix in RESULT_SUFFIXES}
    targets = {suffix: staging.companion(final_video, suffix) for suffix in RESULT_SUFFIXES}
    installed = [targets[s] for s in RESULT_SUFFIXES if sources[s].exists()]
    if sources[CSV].exists():
        temps: dict[str, Path] = {}
        for suffix, source in sources.items():
            if source.exists():
                temps[suffix] = temporary_for(targets[suffix])
                _copy_durably(source, temps[suffix])
        targets[CSV].unlink(missing_ok=True)  # from here the group reads as incomplete
        for suffix in RESULT_SUFFIXES:
            if suffix == CSV:
                continue
            if suffix in temps:
                temps[suffix].replace(targets[suffix])
            else:  # the old run had it, the new one has not: it would describe the old run
                targets[suffix].unlink(missing_ok=True)
        temps[CSV].replace(targets[CSV])
        fsync_dir(final_video.parent)
    # The staged CSV first: its absence says "installed" to a run after a crash.
    for suffix in (CSV, *(s for s in RESULT_SUFFIXES if s != CSV)):
        sources[suffix].unlink(missing_ok=True)
    staged_video.unlink(missing_ok=True)
    return installed


def _copy_durably(source: Path, target: Path) -> None:
    with source.open("rb") as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1024 * 1024)
        dst.flush()
        os.fsync(dst.fileno())


# --- the CLI's side: choose past results and ask for them again ---


def latest_answers(journal: JournalStore) -> list[Submission]:
    """The latest delivered `done` submission of each video in done/, oldest first."""
    latest: dict[str, Submission] = {}
    for sub in journal.in_states([State.DONE]):
        if sub.delivered and sub.final_path:
            latest[sub.final_path] = sub  # in_states orders by id: later ones win
    return sorted(latest.values(), key=lambda s: s.id)


def had_unknown_faces(staging: Staging, sub: Submission) -> bool | None:
    """Whether the result in done/ lists (or counted) faces it did not know; None: no details."""
    details = staging.companion(Path(sub.final_path or ""), ResultKind.DETAILS.value)
    try:
        document = json.loads(details.read_bytes())
    except (OSError, ValueError):
        return None
    unknown = document.get("unknown_faces") if isinstance(document, dict) else None
    if isinstance(unknown, list):
        return bool(unknown)
    if isinstance(unknown, int) and not isinstance(unknown, bool):
        return unknown > 0  # a function that only counted them
    return None


def parse_since(text: str) -> float:
    """`2026-11-30` or an ISO date-time (UTC unless it says otherwise) → epoch seconds."""
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def select(
    journal: JournalStore,
    staging: Staging,
    *,
    since: float | None = None,
    only_unknown: bool = False,
) -> tuple[list[Submission], list[str]]:
    """The done submissions to re-run, and a line for each one passed over (and why)."""
    pending = journal.pending_reruns()
    chosen: list[Submission] = []
    passed: list[str] = []
    for sub in latest_answers(journal):
        if since is not None and (sub.finished_at or sub.created_at) < since:
            continue
        if sub.id in pending:
            passed.append(f"{sub.id}: a re-run is already under way")
            continue
        if not Path(sub.final_path or "").exists():
            passed.append(f"{sub.id}: {sub.final_path} is no longer in done/")
            continue
        if only_unknown:
            unknown = had_unknown_faces(staging, sub)
            if unknown is None:
                passed.append(f"{sub.id}: no details file says whether faces were unknown")
            if not unknown:
                continue
        chosen.append(sub)
    return chosen, passed


def request(journal: JournalStore, staging: Staging, sub: Submission) -> Path:
    """Put a copy of `sub`'s done/ video into the inbox as a re-run of it; returns its path."""
    from watcher.cli import copy_into_inbox  # the one way files enter the inbox from the CLI

    video = Path(sub.final_path or "")

    def registered(target: Path) -> None:
        journal.request_rerun(str(target), sub.id)

    try:
        return copy_into_inbox(staging, video, before_rename=registered)
    except BaseException:
        # The copy never appeared: a later file at that name is not a re-run.
        for path in _requested_paths(journal, sub.id):
            journal.cancel_rerun(path)
        raise


def _requested_paths(journal: JournalStore, submission_id: str) -> Iterable[str]:
    return [
        str(e.detail.get("inbox_path"))
        for e in journal.events(submission_id, "rerun.requested")
        if journal.rerun_of(str(e.detail.get("inbox_path"))) == submission_id
    ]


def retry_done(
    journal: JournalStore, staging: Staging, *, since: str | None, only_unknown: bool
) -> int:
    """`hybrid-watcher retry --done`: ask for each chosen video again; 2 if there was none."""
    try:
        after = parse_since(since) if since else None
    except ValueError:
        print(f"--since {since!r}: not a date (YYYY-MM-DD or an ISO date-time)", file=sys.stderr)
        return 2
    chosen, passed = select(journal, staging, since=after, only_unknown=only_unknown)
    for line in passed:
        print(line, file=sys.stderr)
    for sub in chosen:
        target = request(journal, staging, sub)
        print(f"{sub.id}: {sub.original_name} → {target} (re-run; replaces {sub.final_path})")
    if not chosen:
        print("nothing to re-run", file=sys.stderr)
        return 2
    return 0
