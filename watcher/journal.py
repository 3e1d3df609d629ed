"""The submissions journal: SQLite in WAL mode, the daemon's memory across crashes.

Every state change is committed *before* the action it announces (`uploading` before the
PUT, `done` before the files move into done/), so after a crash at any instant the journal
says what may be half-done and recovery redoes exactly that. The daemon reaches SQLite only
through `AsyncJournal`, whose one worker thread owns the connection: the event loop never
waits on a disk flush. The CLI reads the same file with `JournalStore` directly (WAL lets
readers and the writer work at once).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

SCHEMA_VERSION = 2  # 2: submissions.replaces and the reruns table (`retry --done`)


class State(StrEnum):
    """Where a submission stands."""

    DISCOVERED = "discovered"  # taken from the inbox; its file is (being moved) in processing/
    UPLOADING = "uploading"  # an upload attempt may be in flight
    UPLOADED = "uploaded"  # the object is in S3; waiting for the function's result
    DONE = "done"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    REJECTED = "rejected"


TERMINAL = frozenset({State.DONE, State.FAILED, State.TIMED_OUT, State.REJECTED})
OPEN = frozenset(State) - TERMINAL

# Allowed transitions. UPLOADING → UPLOADING is a new attempt after a crash or a retry;
# UPLOADED → UPLOADING, a new upload because the input object vanished before its result came.
TRANSITIONS: Mapping[State, frozenset[State]] = {
    State.DISCOVERED: frozenset({State.UPLOADING, State.DONE, State.FAILED}),
    State.UPLOADING: frozenset({State.UPLOADING, State.UPLOADED, State.FAILED}),
    State.UPLOADED: frozenset({State.UPLOADING, State.DONE, State.FAILED, State.TIMED_OUT}),
}


class JournalConflict(RuntimeError):
    """A transition that the submission's current state does not allow."""


def new_submission_id(now: float | None = None) -> str:
    """Unique, readable and in time order to the second: `20261127T190601Z-1a2b3c4d`.

    Within one second the random tail decides, so the journal lists rows in the order they
    were made (SQLite's rowid; nothing here VACUUMs, which could renumber it), never by id.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(4)}"


@dataclass(frozen=True, slots=True)
class Submission:
    """One row of the journal."""

    id: str
    original_name: str
    source_path: str
    staged_path: str
    key: str
    state: State
    size: int | None = None
    sha256: str | None = None
    attempts: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    uploaded_at: float | None = None
    finished_at: float | None = None
    final_path: str | None = None
    etag: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    overdue: bool = False
    triggered: bool = False
    delivered: bool = False
    replaces: str | None = None  # a re-run (`retry --done`): the submission it answers again

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a submission's history."""

    seq: int
    submission_id: str
    at: float
    event: str
    detail: dict[str, Any] = field(default_factory=dict)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    id            TEXT PRIMARY KEY,
    original_name TEXT NOT NULL,
    source_path   TEXT NOT NULL,
    staged_path   TEXT NOT NULL,
    key           TEXT NOT NULL,
    state         TEXT NOT NULL,
    size          INTEGER,
    sha256        TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    uploaded_at   REAL,
    finished_at   REAL,
    final_path    TEXT,
    etag          TEXT,
    result        TEXT,
    error         TEXT,
    overdue       INTEGER NOT NULL DEFAULT 0,
    triggered     INTEGER NOT NULL DEFAULT 0,
    delivered     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS submissions_state ON submissions(state);
CREATE INDEX IF NOT EXISTS submissions_sha256 ON submissions(sha256);
CREATE INDEX IF NOT EXISTS submissions_source ON submissions(source_path);
CREATE TABLE IF NOT EXISTS events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    submission_id TEXT NOT NULL,
    at            REAL NOT NULL,
    event         TEXT NOT NULL,
    detail        TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_submission ON events(submission_id, seq);
CREATE TABLE IF NOT EXISTS reruns (
    inbox_path    TEXT PRIMARY KEY,
    replaces      TEXT NOT NULL,
    requested_at  REAL NOT NULL
);
"""

# Columns a caller may set besides the state (guards the f-string SQL below).
_UPDATABLE = frozenset(
    {
        "staged_path", "size", "sha256", "attempts", "uploaded_at", "finished_at", "final_path",
        "etag", "result", "error", "overdue", "triggered", "delivered", "source_path",
    }
)  # fmt: skip


def _row_to_submission(row: sqlite3.Row) -> Submission:
    data = dict(row)
    data["state"] = State(data["state"])
    data["result"] = json.loads(data["result"]) if data["result"] else None
    for flag in ("overdue", "triggered", "delivered"):
        data[flag] = bool(data[flag])
    return Submission(**data)


class JournalStore:
    """Synchronous access to the journal file; one instance per thread."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            self._db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=10)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA busy_timeout = 10000")
        if not readonly:
            self._db.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed transition survives power loss, not only a killed process;
            # moves happen after commits, so losing a commit would leave a file ahead of it.
            self._db.execute("PRAGMA synchronous = FULL")
            with self._db:
                self._db.executescript(_SCHEMA)
                columns = {row[1] for row in self._db.execute("PRAGMA table_info(submissions)")}
                if "replaces" not in columns:  # a journal from before schema 2
                    self._db.execute("ALTER TABLE submissions ADD COLUMN replaces TEXT")
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    # --- writes ---

    def create(
        self,
        *,
        submission_id: str,
        original_name: str,
        source_path: str,
        staged_path: str,
        key: str,
        size: int | None,
        state: State = State.DISCOVERED,
        error: str | None = None,
        detail: Mapping[str, Any] | None = None,
        replaces: str | None = None,
    ) -> Submission:
        """Insert a new submission and its first event in one transaction.

        A re-run (`replaces` set) consumes its request in the same transaction.
        """
        now = time.time()
        with self._db:
            self._db.execute(
                "INSERT INTO submissions (id, original_name, source_path, staged_path, key, "
                "state, size, error, created_at, updated_at, replaces) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (submission_id, original_name, source_path, staged_path, key, state.value,
                 size, error, now, now, replaces),
            )  # fmt: skip
            if replaces is not None:
                self._db.execute("DELETE FROM reruns WHERE inbox_path = ?", (source_path,))
                detail = {**(detail or {}), "replaces": replaces}
            self._add_event(submission_id, now, str(state), detail or {})
        return self.get(submission_id)

    def transition(
        self,
        submission_id: str,
        to: State,
        *,
        event: str | None = None,
        detail: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> Submission:
        """Move to state `to` (checked against TRANSITIONS) and set `fields`, atomically."""
        now = time.time()
        with self._db:
            current = self._state_of(submission_id)
            if to not in TRANSITIONS.get(current, frozenset()):
                raise JournalConflict(f"{submission_id}: {current} → {to} is not allowed")
            if to in TERMINAL:
                fields.setdefault("finished_at", now)
            self._update(submission_id, now, {"state": to.value, **fields})
            self._add_event(submission_id, now, event or str(to), detail or {})
        return self.get(submission_id)

    def discard(self, submission_id: str) -> None:
        """Forget a `discovered` submission whose file never left the inbox (it could not)."""
        with self._db:
            current = self._state_of(submission_id)
            if current is not State.DISCOVERED:
                raise JournalConflict(f"{submission_id}: only a discovered row can be discarded")
            self._db.execute("DELETE FROM events WHERE submission_id = ?", (submission_id,))
            self._db.execute("DELETE FROM submissions WHERE id = ?", (submission_id,))

    def update(
        self,
        submission_id: str,
        *,
        event: str | None = None,
        detail: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> Submission:
        """Set fields without a state change (hash, trigger, overdue, delivery flags)."""
        now = time.time()
        with self._db:
            self._state_of(submission_id)
            self._update(submission_id, now, fields)
            if event:
                self._add_event(submission_id, now, event, detail or {})
        return self.get(submission_id)

    def request_rerun(self, inbox_path: str, replaces: str) -> None:
        """Mark the file about to appear at `inbox_path` as a re-run of `replaces`.

        Committed before the file is put there, so the daemon never takes it as a new video.
        """
        now = time.time()
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO reruns (inbox_path, replaces, requested_at) VALUES (?,?,?)",
                (inbox_path, replaces, now),
            )
            self._add_event(replaces, now, "rerun.requested", {"inbox_path": inbox_path})

    def cancel_rerun(self, inbox_path: str) -> None:
        """Forget a re-run request whose file never reached the inbox."""
        with self._db:
            self._db.execute("DELETE FROM reruns WHERE inbox_path = ?", (inbox_path,))

    def rerun_of(self, inbox_path: str) -> str | None:
        """The submission a file at `inbox_path` re-runs, if it was put there for that."""
        row = self._db.execute(
            "SELECT replaces FROM reruns WHERE inbox_path = ?", (inbox_path,)
        ).fetchone()
        return str(row[0]) if row else None

    def pending_reruns(self) -> set[str]:
        """Submissions with a re-run requested or under way (not concluded yet)."""
        requested = {r[0] for r in self._db.execute("SELECT replaces FROM reruns")}
        open_states = [s.value for s in OPEN]
        marks = ",".join("?" * len(open_states))
        running = self._db.execute(
            f"SELECT replaces FROM submissions WHERE replaces IS NOT NULL AND state IN ({marks})",  # noqa: S608 -- only '?' placeholders are interpolated
            open_states,
        )
        return requested | {r[0] for r in running}

    def record(self, submission_id: str, event: str, detail: Mapping[str, Any]) -> None:
        """Add a history line (e.g. `retried`) without touching the row."""
        with self._db:
            self._add_event(submission_id, time.time(), event, detail)

    def _state_of(self, submission_id: str) -> State:
        row = self._db.execute(
            "SELECT state FROM submissions WHERE id = ?", (submission_id,)
        ).fetchone()
        if row is None:
            raise KeyError(submission_id)
        return State(row[0])

    def _update(self, submission_id: str, now: float, fields: Mapping[str, Any]) -> None:
        unknown = set(fields) - _UPDATABLE - {"state"}
        if unknown:
            raise ValueError(f"not journal fields: {sorted(unknown)}")
        values = {
            k: json.dumps(v) if k == "result" and v is not None else v for k, v in fields.items()
        }
        assignments = ", ".join(f"{name} = ?" for name in values)
        self._db.execute(
            f"UPDATE submissions SET {assignments}, updated_at = ? WHERE id = ?",  # noqa: S608 -- column names come from _UPDATABLE only
            (*values.values(), now, submission_id),
        )

    def _add_event(
        self, submission_id: str, at: float, event: str, detail: Mapping[str, Any]
    ) -> None:
        self._db.execute(
            "INSERT INTO events (submission_id, at, event, detail) VALUES (?,?,?,?)",
            (submission_id, at, event, json.dumps(dict(detail), default=str)),
        )

    # --- reads ---

    def get(self, submission_id: str) -> Submission:
        row = self._db.execute(
            "SELECT * FROM submissions WHERE id = ?", (submission_id,)
        ).fetchone()
        if row is None:
            raise KeyError(submission_id)
        return _row_to_submission(row)

    def find(self, ref: str) -> list[Submission]:
        """Submissions matching an id, an id prefix, a path, or an original file name."""
        rows = self._db.execute(
            "SELECT * FROM submissions WHERE id = ? OR id LIKE ? OR original_name = ? "
            "OR source_path = ? OR staged_path = ? OR final_path = ? ORDER BY rowid",
            (ref, f"{ref}%", ref, ref, ref, ref),
        ).fetchall()
        return [_row_to_submission(r) for r in rows]

    def in_states(self, states: Iterable[State]) -> list[Submission]:
        wanted = [s.value for s in states]
        marks = ",".join("?" * len(wanted))
        rows = self._db.execute(
            f"SELECT * FROM submissions WHERE state IN ({marks}) ORDER BY rowid",  # noqa: S608 -- only '?' placeholders are interpolated
            wanted,
        ).fetchall()
        return [_row_to_submission(r) for r in rows]

    def newest_listed(self, limit: int) -> tuple[list[Submission], int]:
        """The `limit` newest concluded submissions whose files have left processing/ (newest
        first, by when they finished), and how many there are in all."""
        where = (
            f"state IN ({','.join('?' * len(TERMINAL))}) AND (delivered = 1 OR state = 'rejected')"
        )
        states = [s.value for s in TERMINAL]
        rows = self._db.execute(
            f"SELECT * FROM submissions WHERE {where} "  # noqa: S608 -- only '?' placeholders are interpolated
            "ORDER BY COALESCE(finished_at, updated_at) DESC, rowid DESC LIMIT ?",
            [*states, limit],
        ).fetchall()
        (total,) = self._db.execute(
            f"SELECT COUNT(*) FROM submissions WHERE {where}",  # noqa: S608 -- only '?' placeholders are interpolated
            states,
        ).fetchone()
        return [_row_to_submission(r) for r in rows], int(total)

    def undelivered(self) -> list[Submission]:
        """Finished submissions whose files have not (all) moved out of processing/ yet."""
        # Not rejections: they are moved to rejected/ before their row is written, and have
        # no processing/ group to deliver (a restart used to crash on them).
        delivering = [s.value for s in TERMINAL if s is not State.REJECTED]
        marks = ",".join("?" * len(delivering))
        rows = self._db.execute(
            f"SELECT * FROM submissions WHERE delivered = 0 AND state IN ({marks}) ORDER BY rowid",  # noqa: S608 -- only '?' placeholders are interpolated
            delivering,
        ).fetchall()
        return [_row_to_submission(r) for r in rows]

    def prune(self, before: float) -> int:
        """Forget concluded submissions (and their events) last changed before `before`.

        Only rows whose files have left processing/ (delivered, or rejected at once): an open
        or undelivered submission is never forgotten, whatever its age.
        """
        final = [s.value for s in TERMINAL]
        marks = ",".join("?" * len(final))
        old = (
            f"SELECT id FROM submissions WHERE state IN ({marks}) AND updated_at < ? "  # noqa: S608 -- only '?' placeholders are interpolated
            "AND (delivered = 1 OR state = 'rejected')"
        )
        with self._db:
            self._db.execute(f"DELETE FROM events WHERE submission_id IN ({old})", (*final, before))  # noqa: S608 -- `old` holds only '?' placeholders
            removed = self._db.execute(
                f"DELETE FROM submissions WHERE id IN ({old})",  # noqa: S608 -- as above
                (*final, before),
            ).rowcount
        return int(removed)

    def concluded_count(self) -> int:
        """How many submissions have reached a final state and left processing/."""
        final = [s.value for s in TERMINAL]
        marks = ",".join("?" * len(final))
        (count,) = self._db.execute(
            f"SELECT COUNT(*) FROM submissions WHERE delivered = 1 AND state IN ({marks})",  # noqa: S608 -- only '?' placeholders are interpolated
            final,
        ).fetchone()
        return int(count)

    def done_with_sha256(self, sha256: str, exclude_id: str) -> Submission | None:
        """The latest delivered `done` submission with this content, if any."""
        row = self._db.execute(
            "SELECT * FROM submissions WHERE sha256 = ? AND state = 'done' AND delivered = 1 "
            "AND id != ? ORDER BY rowid DESC LIMIT 1",
            (sha256, exclude_id),
        ).fetchone()
        return _row_to_submission(row) if row else None

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, COUNT(*) FROM submissions GROUP BY state")
        found = {state: count for state, count in rows}
        return {s.value: found.get(s.value, 0) for s in State}

    def latest(self, limit: int = 20) -> list[Submission]:
        rows = self._db.execute(
            "SELECT * FROM submissions ORDER BY rowid DESC LIMIT ?", (limit,)
        ).fetchall()
        return [_row_to_submission(r) for r in rows]

    def events(self, submission_id: str | None = None, event: str | None = None) -> list[Event]:
        query, args = "SELECT * FROM events WHERE 1=1", list[str]()
        if submission_id is not None:
            query, args = query + " AND submission_id = ?", [*args, submission_id]
        if event is not None:
            query, args = query + " AND event = ?", [*args, event]
        rows = self._db.execute(query + " ORDER BY seq", args).fetchall()
        return [
            Event(r["seq"], r["submission_id"], r["at"], r["event"], json.loads(r["detail"]))
            for r in rows
        ]


class AsyncJournal:
    """The journal for the event loop: every call runs on one dedicated thread."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._store: JournalStore | None = None

    async def open(self) -> None:
        self._store = await self._in_thread(JournalStore, self._path)

    async def close(self) -> None:
        if self._store is not None:
            await self._in_thread(self._store.close)
            self._store = None
        self._executor.shutdown(wait=True)

    @property
    def store(self) -> JournalStore:
        if self._store is None:
            raise RuntimeError("journal is not open")
        return self._store

    async def _in_thread(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def create(self, **kwargs: Any) -> Submission:
        return await self._in_thread(self.store.create, **kwargs)

    async def transition(self, submission_id: str, to: State, **kwargs: Any) -> Submission:
        return await self._in_thread(self.store.transition, submission_id, to, **kwargs)

    async def update(self, submission_id: str, **kwargs: Any) -> Submission:
        return await self._in_thread(self.store.update, submission_id, **kwargs)

    async def get(self, submission_id: str) -> Submission:
        return await self._in_thread(self.store.get, submission_id)

    async def in_states(self, states: Iterable[State]) -> list[Submission]:
        return await self._in_thread(self.store.in_states, list(states))

    async def discard(self, submission_id: str) -> None:
        await self._in_thread(self.store.discard, submission_id)

    async def prune(self, before: float) -> int:
        return await self._in_thread(self.store.prune, before)

    async def undelivered(self) -> list[Submission]:
        return await self._in_thread(self.store.undelivered)

    async def rerun_of(self, inbox_path: str) -> str | None:
        return await self._in_thread(self.store.rerun_of, inbox_path)

    async def record(self, submission_id: str, event: str, detail: Mapping[str, Any]) -> None:
        await self._in_thread(self.store.record, submission_id, event, detail)

    async def done_with_sha256(self, sha256: str, exclude_id: str) -> Submission | None:
        return await self._in_thread(self.store.done_with_sha256, sha256, exclude_id)

    async def counts(self) -> dict[str, int]:
        return await self._in_thread(self.store.counts)
