"""Inbox intake: decide when a dropped file is complete, then hand it over exactly once.

Three sources feed one candidate table: inotify events through `watchfiles.awatch`, a full
rescan every `rescan_interval_s` (inotify queues overflow and NFS has none) and a scan at
start-up. A candidate is taken when no process holds it open for writing and either

* the writer is known to be done: an inotify event was seen (or its mtime is older than the
  settle time) and the open-files scan of /proc can see every process that could write it
  (we are root, or the file is ours): the fast path, for files renamed into the inbox; or
* its size and mtime stayed unchanged for `settle_s` under our own observation: the only
  evidence for files whose writers we cannot see (other users, NFS clients, containers),
  and the only rule when `fast_intake` is off.

inotify reports no close event through watchfiles, so a file being copied in (`cp`) is
re-checked every tick until its writer's descriptor disappears from /proc.
Temporary names (`.*`, `*.part`, `*.tmp`, `*~`) are ignored until renamed. Symlinks, FIFOs
and devices are handed over at once, for the caller to reject: they never "complete".
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from watchfiles import Change, awatch

from hybrid_common.logs import get_logger

log = get_logger(__name__)

TEMP_SUFFIXES = (".part", ".tmp", "~")
# Re-check period while candidates wait (writers closing, settle timers running).
TICK_S = 0.1
# awatch: yield a batch once no new event came for STEP_MS, or at the latest after DEBOUNCE_MS.
STEP_MS = 20
DEBOUNCE_MS = 200

OnReady = Callable[[Path], Awaitable[None]]


def is_temporary(name: str) -> bool:
    """Names that writers use while a file is incomplete."""
    return name.startswith(".") or name.endswith(TEMP_SUFFIXES)


@dataclass(slots=True)
class Candidate:
    """A file seen in the inbox and not yet handed over."""

    size: int = -1
    mtime_ns: int = -1
    stable_since: float = 0.0
    event_seen: bool = False


@dataclass(frozen=True, slots=True)
class Observation:
    """One lstat of a candidate; `st` is None when it vanished."""

    path: str
    st: os.stat_result | None


def files_open_for_writing(root: str) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of files under `root` that some process has open for writing.

    Reads /proc/<pid>/fd (like fuser); processes we may not inspect are skipped, which is why
    the caller only trusts an empty answer for files it could see the writers of.
    """
    # Plain os calls on strings: this loop visits every descriptor of every process, and
    # Path objects would triple its cost for nothing.
    prefix = root.rstrip("/") + "/"
    found: set[tuple[int, int]] = set()
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]  # noqa: PTH208 -- see above
    except OSError:
        return found
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)  # noqa: PTH208 -- see above
        except OSError:
            continue
        for fd in fds:
            try:
                if not os.readlink(f"{fd_dir}/{fd}").startswith(prefix):  # noqa: PTH115 -- see above
                    continue
                if _open_for_writing(f"/proc/{pid}/fdinfo/{fd}"):
                    target = os.stat(f"{fd_dir}/{fd}")  # noqa: PTH116 -- see above
                    found.add((target.st_dev, target.st_ino))
            except (OSError, ValueError):
                continue
    return found


def _open_for_writing(fdinfo: str) -> bool:
    """Whether the `flags:` line (octal) of a /proc fdinfo file has write access."""
    with open(fdinfo) as info:  # noqa: PTH123 -- see files_open_for_writing
        for line in info:
            if line.startswith("flags:"):
                return int(line.split()[1], 8) & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
    return False


def writers_visible(st: os.stat_result) -> bool:
    """Can the /proc scan see every process likely to write this file?"""
    return os.geteuid() in (0, st.st_uid)


class Intake:
    """Watches the inbox and awaits `on_ready(path)` for each complete file, one at a time.

    `on_ready` must move the file out of the inbox (or reject it); backpressure is simply
    that the next file waits until it returns.
    """

    def __init__(
        self,
        inbox: Path,
        on_ready: OnReady,
        *,
        settle_s: float,
        rescan_interval_s: float,
        subfolders: bool = False,
        fast: bool = True,
    ) -> None:
        self.inbox = inbox
        self.on_ready = on_ready
        self.settle_s = settle_s
        self.rescan_interval_s = rescan_interval_s
        self.subfolders = subfolders
        self.fast = fast
        self._candidates: dict[str, Candidate] = {}
        self._wake = asyncio.Event()
        self._rescans: set[asyncio.Task[None]] = set()  # strong references until done

    @property
    def waiting(self) -> int:
        """Files seen but not yet complete (a gauge for status and metrics)."""
        return len(self._candidates)

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: watch, rescan and hand over complete files."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._watch(stop))
            # The watch task's first step registers the inotify watches (awatch builds its
            # RustNotify before its first await); only then the start-up scan, so a file
            # dropped while we start is seen by one or the other, never by neither.
            await asyncio.sleep(0)
            await self._rescan()
            log.info("intake.started", inbox=str(self.inbox), waiting=self.waiting)
            tasks.create_task(self._rescan_loop(stop))
            tasks.create_task(self._hand_over_loop(stop))
        log.info("intake.stopped", waiting=self.waiting)

    # --- sources ---

    async def _watch(self, stop: asyncio.Event) -> None:
        async for changes in awatch(
            self.inbox,
            watch_filter=None,
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            stop_event=stop,
            recursive=self.subfolders,
            rust_timeout=1000,
        ):
            for change, raw in changes:
                self._on_change(change, raw)
            self._wake.set()

    def _on_change(self, change: Change, raw: str) -> None:
        if not self._eligible(raw):
            return
        if change == Change.deleted:
            self._candidates.pop(raw, None)
            return
        candidate = self._candidates.setdefault(raw, Candidate(stable_since=time.monotonic()))
        candidate.event_seen = True
        if self.subfolders and change == Change.added and Path(raw).is_dir():
            # A folder moved in as a whole brings files inotify never reports.
            self._candidates.pop(raw, None)
            self._wake.set()
            self._rescans.add(task := asyncio.get_running_loop().create_task(self._rescan()))
            task.add_done_callback(self._rescans.discard)

    def _eligible(self, raw: str) -> bool:
        relative = os.path.relpath(raw, self.inbox)
        if relative.startswith(".."):
            return False
        parts = Path(relative).parts
        if len(parts) > 1 and not self.subfolders:
            return False
        return not any(is_temporary(part) for part in parts)

    async def _rescan_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.rescan_interval_s)
            except TimeoutError:
                await self._rescan()

    async def _rescan(self) -> None:
        try:
            found = await asyncio.to_thread(self._scan)
        except OSError as error:
            log.error("intake.rescan_failed", error=str(error))
            return
        now = time.monotonic()
        new = 0
        for raw in found:
            if raw not in self._candidates:
                self._candidates[raw] = Candidate(stable_since=now)
                new += 1
        if new:
            log.info("intake.rescan_found", files=new)
            self._wake.set()

    def _scan(self) -> list[str]:
        found: list[str] = []
        pending = [str(self.inbox)]
        while pending:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    if is_temporary(entry.name):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        if self.subfolders:
                            pending.append(entry.path)
                        continue
                    found.append(entry.path)
        return found

    # --- deciding and handing over ---

    async def _hand_over_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            timeout = TICK_S if self._candidates else None
            stop_wait = asyncio.ensure_future(stop.wait())
            wake_wait = asyncio.ensure_future(self._wake.wait())
            _, still = await asyncio.wait(
                {stop_wait, wake_wait}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for task in still:
                task.cancel()
            self._wake.clear()
            if stop.is_set() or not self._candidates:
                continue
            for raw in await self._ready_now():
                if stop.is_set():
                    return
                self._candidates.pop(raw, None)
                try:
                    await self.on_ready(Path(raw))
                except Exception:
                    # Left in the inbox: the next rescan offers it again.
                    log.exception("intake.hand_over_failed", file=raw)

    async def _ready_now(self) -> list[str]:
        paths = list(self._candidates)
        observations, writers = await asyncio.to_thread(self._observe, paths)
        now, wall = time.monotonic(), time.time()
        ready = []
        for seen in observations:
            candidate = self._candidates.get(seen.path)
            if candidate is None:
                continue
            if seen.st is None or stat.S_ISDIR(seen.st.st_mode):
                self._candidates.pop(seen.path, None)
                continue
            if self._is_ready(candidate, seen.st, writers, now, wall):
                ready.append(seen.path)
        return ready

    def _observe(self, paths: list[str]) -> tuple[list[Observation], set[tuple[int, int]]]:
        observations = []
        for raw in paths:
            try:
                observations.append(Observation(raw, os.lstat(raw)))
            except OSError:
                observations.append(Observation(raw, None))
        regular = any(o.st is not None and stat.S_ISREG(o.st.st_mode) for o in observations)
        writers = files_open_for_writing(str(self.inbox)) if regular else set()
        return observations, writers

    def _is_ready(
        self,
        candidate: Candidate,
        st: os.stat_result,
        writers: set[tuple[int, int]],
        now: float,
        wall: float,
    ) -> bool:
        if not stat.S_ISREG(st.st_mode):
            return True  # symlink, FIFO, device, socket: refused at once by the caller
        if (st.st_size, st.st_mtime_ns) != (candidate.size, candidate.mtime_ns):
            candidate.size, candidate.mtime_ns = st.st_size, st.st_mtime_ns
            candidate.stable_since = now
        if (st.st_dev, st.st_ino) in writers:
            candidate.stable_since = now
            return False
        if (
            self.fast
            and writers_visible(st)
            and (candidate.event_seen or wall - st.st_mtime >= self.settle_s)
        ):
            return True
        return now - candidate.stable_since >= self.settle_s
