"""The daemon's lifecycle: `startup()`, `main_loop()`, `shutdown()` and a `should_exit` flag.

The main loop is one `asyncio.TaskGroup`: the intake, `upload_concurrency` upload workers,
the result poller, housekeeping and the systemd watchdog. SIGTERM/SIGINT stop the intake,
let in-flight uploads and result deliveries finish for up to `shutdown_grace_s`, then cancel
the rest; the journal says where each file stands and the next start resumes from there.
A second SIGINT skips the grace period.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from contextlib import AsyncExitStack, suppress
from pathlib import Path

from hybrid_common.keys import node_prefix
from hybrid_common.logs import get_logger
from watcher.clients import aws_clients
from watcher.daemon_state import HEARTBEAT_S, package_version, state_path, write_state
from watcher.intake import Intake
from watcher.journal import OPEN, AsyncJournal, State, Submission
from watcher.metrics import Metrics
from watcher.notify import Notifier
from watcher.pipeline import Pipeline, make_invoke
from watcher.progress import UploadProgress
from watcher.results import ResultPoller, ResultReady
from watcher.results_page import REFRESH_S, ResultsPage
from watcher.retry import RETRY_OBSERVER
from watcher.settings import WatcherSettings
from watcher.staging import Staging
from watcher.uploader import Uploader

log = get_logger(__name__)

DAY_S = 86_400.0
HOUSEKEEPING_S = 5.0
RETENTION_EVERY_S = 3600.0
# Results are fetched a few at a time so a burst of 1,000 does not open 3,000 GETs at once.
FETCH_CONCURRENCY = 8
# Admitted files that may wait for an upload worker before the intake pauses.
BACKLOG_PER_WORKER = 4


class WatcherService:
    """hybrid-watcher's daemon; `await serve()` runs it until a signal."""

    def __init__(self, settings: WatcherSettings, notifier: Notifier | None = None) -> None:
        self.settings = settings
        # Resolved, so paths the daemon records and the CLI looks up compare equal as strings.
        self.staging = Staging(settings.staging_root.resolve())
        self.journal = AsyncJournal(settings.journal_path)
        self.metrics = Metrics()
        self.notifier = notifier or Notifier()
        self.should_exit = False
        self.force_exit = False
        self._exit = asyncio.Event()
        self._force = asyncio.Event()
        self._stop_intake = asyncio.Event()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()  # waiting for or inside an upload worker
        self._backlog = asyncio.Condition()
        self._busy = 0  # upload workers inside a submission
        self._polling = False
        self._poll_wake = asyncio.Event()
        self._stack = AsyncExitStack()
        self._pipeline: Pipeline | None = None
        self._intake: Intake | None = None
        self.progress = UploadProgress()
        self._started_at = time.time()
        self._state_path = state_path(self.staging.root)
        self.results_page = ResultsPage(self.staging.root, settings.journal_path)

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            raise RuntimeError("service not started")
        return self._pipeline

    # --- lifecycle ---

    async def serve(self) -> None:
        """startup → main loop → shutdown, with signal handlers installed for the duration."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.handle_exit, sig)
        try:
            await self.startup()
            await self.main_loop()
        finally:
            await self.shutdown()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def handle_exit(self, sig: int) -> None:
        """First signal: drain and stop. A second SIGINT: stop now."""
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
            self._force.set()
            log.warning("shutdown.forced", signal=signal.Signals(sig).name)
            return
        self.should_exit = True
        self._exit.set()
        log.info("shutdown.requested", signal=signal.Signals(sig).name)

    async def startup(self) -> None:
        s = self.settings
        await asyncio.to_thread(self.staging.ensure)
        if cleared := await asyncio.to_thread(self.staging.clear_temporaries):
            log.info("recovery.temporaries_removed", files=cleared)
        await self.journal.open()
        self._stack.callback(self.metrics.close)
        RETRY_OBSERVER.set(self.metrics.retried)  # inherited by the tasks started below
        clients = await self._stack.enter_async_context(aws_clients(s))
        uploader = Uploader(clients.s3, s, self.progress)
        self._pipeline = Pipeline(
            s, self.journal, self.staging, self.metrics, uploader,
            ResultPoller(clients.s3, s), make_invoke(clients.lambda_, s),
        )  # fmt: skip
        if s.metrics_port:
            self.metrics.serve(s.metrics_port, s.metrics_address)
            log.info("metrics.serving", address=s.metrics_address, port=s.metrics_port)
        # Recovery first: the intake's start-up scan must not see a file a crash left
        # recorded but not yet moved out of the inbox.
        for submission_id in await self.pipeline.recover():
            self._enqueue(submission_id)
        keep = {sub.key for sub in await self.journal.in_states([State.UPLOADING])}
        try:
            await uploader.abort_orphans(node_prefix(s.key_prefix, s.node_id), keep)
        except Exception as error:  # a listing failure must not stop the daemon
            log.warning("upload.orphan_scan_failed", error=str(error))
        self._intake = Intake(
            self.staging.inbox, self._admit, settle_s=s.settle_s,
            rescan_interval_s=s.rescan_interval_s, subfolders=s.watch_subfolders,
            fast=s.fast_intake,
        )  # fmt: skip
        log.info(
            "service.started", node=s.node_id, staging_root=str(s.staging_root),
            input_bucket=s.input_bucket, output_bucket=s.output_bucket,
            trigger_mode=s.trigger_mode, queued=len(self._queued),
            awaiting=self.pipeline.awaiting_count,
        )  # fmt: skip
        self.notifier.ready(self._status_line())
        await self._write_state()

    async def main_loop(self) -> None:
        assert self._intake is not None  # noqa: S101 -- startup() sets it
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(self._intake.run(self._stop_intake), name="intake"),
                group.create_task(self._poll_loop(), name="poller"),
                group.create_task(self._housekeeping_loop(), name="housekeeping"),
                group.create_task(self._watchdog_loop(), name="watchdog"),
                group.create_task(self._heartbeat_loop(), name="heartbeat"),
                group.create_task(self._results_page_loop(), name="results-page"),
            ]
            tasks += [
                group.create_task(self._upload_worker(), name=f"upload-{n}")
                for n in range(self.settings.upload_concurrency)
            ]
            group.create_task(self._stop_when_asked(tasks), name="stopper")

    async def shutdown(self) -> None:
        """Record where each unfinished file stands, then close clients and the journal."""
        self.notifier.stopping("stopping")
        with suppress(Exception):
            open_subs = await self.journal.in_states(OPEN)
            for sub in open_subs[:50]:
                log.info("shutdown.unfinished", submission=sub.id, file=sub.original_name,
                         state=str(sub.state))  # fmt: skip
            counts = await self.journal.counts()
            log.info("service.stopped", unfinished=len(open_subs), **counts)
        await self._stack.aclose()
        await self.journal.close()
        with suppress(Exception):  # the results delivered while draining
            await asyncio.to_thread(self.results_page.refresh)
        with suppress(Exception):  # `status` then says "not running (stopped at …)"
            await self._write_state(stopped=True)

    async def _stop_when_asked(self, tasks: list[asyncio.Task[None]]) -> None:
        """On the first signal: stop intake, drain up to the grace period, cancel the rest."""
        await self._exit.wait()
        self._stop_intake.set()
        self.notifier.stopping(f"draining {self._busy} upload(s)")
        grace = self.settings.shutdown_grace_s
        deadline = time.monotonic() + grace
        while (self._busy or self._polling) and not self.force_exit:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with suppress(TimeoutError):
                await asyncio.wait_for(self._force.wait(), timeout=min(left, 0.05))
        if self._busy or self._polling:
            log.warning("shutdown.cancelling", uploads_in_flight=self._busy,
                        grace_s=grace, forced=self.force_exit)  # fmt: skip
        else:
            log.info("shutdown.drained")
        for task in tasks:
            task.cancel()

    # --- intake → upload queue ---

    async def _admit(self, path: Path) -> None:
        limit = self.settings.upload_concurrency * BACKLOG_PER_WORKER
        async with self._backlog:
            await self._backlog.wait_for(lambda: len(self._queued) < limit or self.should_exit)
        if self.should_exit:
            return  # left in the inbox for the next start
        sub = await self.pipeline.admit(path)
        if sub is not None and sub.state is State.DISCOVERED:
            self._enqueue(sub.id)

    def _enqueue(self, submission_id: str) -> None:
        if submission_id not in self._queued:
            self._queued.add(submission_id)
            self._queue.put_nowait(submission_id)
            self.metrics.queue_depth.set(self._queue.qsize())

    async def _upload_worker(self) -> None:
        while True:
            submission_id = await self._queue.get()
            self.metrics.queue_depth.set(self._queue.qsize())
            if self.should_exit:
                continue  # still `discovered`/`uploading` in the journal: resumed next start
            self._busy += 1
            try:
                await self.pipeline.upload(submission_id)
            except Exception:
                # A bug must not kill the worker; the submission stays open and is retried at
                # the next start.
                log.exception("upload.crashed", submission=submission_id)
            finally:
                self._busy -= 1
                self._queued.discard(submission_id)
                async with self._backlog:
                    self._backlog.notify_all()
            self._poll_wake.set()

    # --- results ---

    async def _poll_loop(self) -> None:
        """List results on a fixed grid of ticks that does not drift with the work done.

        Nothing awaited: no listing at all, the loop sleeps until an upload wakes it. A failed
        listing (S3 unreachable) doubles the period up to poll_max_interval_s.
        """
        s = self.settings
        loop = asyncio.get_running_loop()
        period = s.poll_interval_s
        next_tick = loop.time() + period
        while not self.should_exit:
            if not self.pipeline.awaiting_count:
                await self._poll_wake.wait()
                self._poll_wake.clear()
                period = s.poll_interval_s
                next_tick = loop.time() + period
                continue
            with suppress(TimeoutError):
                await asyncio.wait_for(
                    self._poll_wake.wait(), timeout=max(0.0, next_tick - loop.time())
                )
                self._poll_wake.clear()
                continue  # an upload finished: keep the grid, re-check what is awaited
            listed = await self._poll_tick()
            period = s.poll_interval_s if listed else min(period * 2, s.poll_max_interval_s)
            next_tick += period
            now = loop.time()
            if next_tick <= now:  # the tick overran: skip the missed ticks, keep the grid
                next_tick += ((now - next_tick) // period + 1) * period

    async def _poll_tick(self) -> bool:
        """One listing and the results it found; False if the listing failed."""
        pipeline = self.pipeline
        self._polling = True
        try:
            try:
                found = await pipeline.list_results()
            except Exception as error:
                log.warning("results.poll_failed", error=str(error))
                await self._check_deadlines()  # deadlines hold without S3 too
                return False
            limit = asyncio.Semaphore(FETCH_CONCURRENCY)

            async def collect_one(sub: Submission, ready: ResultReady) -> None:
                async with limit:
                    await pipeline.collect(sub, ready)

            async with asyncio.TaskGroup() as group:
                for sub, ready in found:
                    group.create_task(collect_one(sub, ready))
            await self._check_deadlines()
        finally:
            self._polling = False
        return True

    async def _check_deadlines(self) -> None:
        try:
            upload_again = await self.pipeline.check_deadlines(time.time())
        except Exception:  # logged, retried next tick: a bug here must not stop the daemon
            log.exception("results.deadline_check_failed")
            return
        for submission_id in upload_again:
            self._enqueue(submission_id)

    # --- housekeeping ---

    async def _housekeeping_loop(self) -> None:
        # -inf, not 0: monotonic time starts at boot, and a VM booted under an hour ago would
        # otherwise skip the first purge for the rest of that hour.
        last_purge = float("-inf")
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            pipeline = self.pipeline
            if self._intake is not None:
                self.metrics.waiting.set(self._intake.waiting)
            self.metrics.pending_results.set(pipeline.awaiting_count)
            self.notifier.status(self._status_line())
            await pipeline.retrigger()
            await pipeline.redeliver()  # moves a full disk or a locked done/ stopped
            if time.monotonic() - last_purge >= RETENTION_EVERY_S:
                last_purge = time.monotonic()
                await asyncio.to_thread(self._purge)
                await self._prune_journal()

    def _purge(self) -> None:
        s = self.settings
        for folder, days in (
            (self.staging.done, s.retention_done_days),
            (self.staging.failed, s.retention_failed_days),
            (self.staging.rejected, s.retention_rejected_days),
        ):
            removed = self.staging.purge_older_than(folder, days * DAY_S)
            if removed:
                log.info("retention.purged", folder=folder.name, files=removed)

    async def _prune_journal(self) -> None:
        """Forget submissions whose files every retention has removed (none if any folder is
        kept forever), so the journal stops growing on a node that runs for years."""
        s = self.settings
        days = (s.retention_done_days, s.retention_failed_days, s.retention_rejected_days)
        if min(days) <= 0:
            return
        try:
            removed = await self.journal.prune(time.time() - max(days) * DAY_S)
        except Exception as error:  # a full disk fails the journal too: next round
            log.warning("retention.journal_failed", error=str(error))
            return
        if removed:
            log.info("retention.journal_pruned", submissions=removed)

    async def _watchdog_loop(self) -> None:
        interval = self.notifier.watchdog_interval_s
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def _heartbeat_loop(self) -> None:
        """The status file, every second: liveness and upload progress for `status`."""
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self._write_state()
            except OSError as error:  # a full disk must not stop the daemon
                log.warning("heartbeat.write_failed", error=str(error))

    async def _results_page_loop(self) -> None:
        """Keep index.html in step with deliveries: at most one render per tick however many
        results arrived (the page renders only when the journal changed)."""
        while True:
            started = time.monotonic()
            try:
                await asyncio.to_thread(self.results_page.refresh)
            except Exception as error:  # a full disk, an odd details file: next tick
                log.warning("results_page.failed", error=str(error))
            # A huge journal renders slowly (10,000 results: ~1-2 s): rendering then takes at
            # most a fifth of the time, whatever the rate of deliveries.
            await asyncio.sleep(max(REFRESH_S, 4 * (time.monotonic() - started)))

    async def _write_state(self, *, stopped: bool = False) -> None:
        s = self.settings
        doc = {
            "pid": os.getpid(), "version": package_version(), "node": s.node_id,
            "started_at": self._started_at, "heartbeat_at": time.time(),
            "heartbeat_interval_s": HEARTBEAT_S, "stopped": stopped,
            "input_bucket": s.input_bucket, "output_bucket": s.output_bucket,
            "trigger_mode": s.trigger_mode, "staging_root": str(self.staging.root),
            "status": self._status_line(), "uploads": self.progress.snapshot(),
        }  # fmt: skip
        await asyncio.to_thread(write_state, self._state_path, doc)

    def _status_line(self) -> str:
        waiting = self._intake.waiting if self._intake is not None else 0
        awaiting = self._pipeline.awaiting_count if self._pipeline is not None else 0
        return (
            f"inbox waiting {waiting}, queued {self._queue.qsize()}, uploading {self._busy}, "
            f"awaiting results {awaiting}"
        )
