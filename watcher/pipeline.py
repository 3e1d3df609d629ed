"""One submission's way through the daemon: admit → hash → upload → result → deliver.

Each step commits its journal transition first and acts second, so `recover()` after a
crash at any instant knows exactly what may be half-done:

| state (committed)   | what may be unfinished             | recovery                          |
| ------------------- | ---------------------------------- | --------------------------------- |
| discovered          | move inbox → processing, hashing   | finish the move, queue the upload |
| uploading           | the upload                         | upload again (multipart resumes)  |
| uploaded            | the invoke (trigger_mode=invoke)   | invoke if not marked triggered    |
| done/failed/...     | moving the group, the announcement | move what is left, announce       |

The announcement (`result.received` etc.) is logged after the files are in place and then
marked in the journal: only a crash between those two lines could repeat it.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import stat
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import structlog

from hybrid_common.keys import InputKey, ResultKind, node_prefix, safe_name
from hybrid_common.logs import get_logger
from hybrid_common.results import ErrorDoc, PersonRow, render_csv
from watcher.awaiting import AwaitedResults
from watcher.journal import OPEN, AsyncJournal, State, Submission, new_submission_id
from watcher.metrics import Metrics
from watcher.rerun import replace_results
from watcher.results import (
    CsvSummary,
    ResultFiles,
    ResultPoller,
    ResultReady,
    ResultUnreadable,
    prepare_csv,
)
from watcher.settings import WatcherSettings
from watcher.sniff import kind_of, normalise_extensions, sniff
from watcher.staging import RAW_RESULT_SUFFIX, Staging, write_atomic
from watcher.trigger import TriggerFailed, invoke_function
from watcher.uploader import (
    Uploader,
    UploadFailed,
    UploadRequest,
    file_fingerprint,
    upload_metadata,
)

log = get_logger(__name__)

HASH_CHUNK = 1024 * 1024
# What an operator can do about a file that cannot be moved out of the inbox.
MOVE_HINTS = {
    errno.EXDEV: "a file system is mounted inside the inbox: drop files onto the staging "
    "root's own file system (move them, don't mount)",
    errno.EACCES: "the daemon's user cannot write the file's folder",
    errno.EPERM: "the file or its folder is immutable or append-only",
    errno.EROFS: "the file's folder is on a read-only mount",
}
# Uploads of one file in all, crash retries and uploads after its input vanished included: a
# bucket that keeps losing objects must not make an endless loop (the deadline then decides).
MAX_UPLOAD_ATTEMPTS = 5
INPUT_CHECKS_AT_ONCE = 8
INPUT_CHECKS_PER_TICK = 256
# New names tried for one group whose name keeps being taken before it moves in.
MAX_RENAMES = 5


def sha256_of(path: Path) -> tuple[str, int]:
    """The file's SHA-256 hex digest and size (run in a thread)."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def submission_key(settings: WatcherSettings, submission_id: str, file_name: str) -> str:
    """The input object key of a dropped file: always under this node's prefix, 3 more segments."""
    return InputKey(settings.key_prefix, settings.node_id, submission_id, safe_name(file_name)).key


class Pipeline:
    """The per-submission steps, shared by the live loops and crash recovery."""

    def __init__(  # noqa: PLR0917 -- the collaborators, each named once at start-up
        self,
        settings: WatcherSettings,
        journal: AsyncJournal,
        staging: Staging,
        metrics: Metrics,
        uploader: Uploader,
        poller: ResultPoller,
        invoke: Callable[[str, str, int], Any] | None,
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.staging = staging
        self.metrics = metrics
        self.uploader = uploader
        self.poller = poller
        self._invoke = invoke  # (key, etag, size) -> awaitable; None in trigger_mode "s3"
        self._allowed = normalise_extensions(settings.allowed_extensions)
        self._awaited = AwaitedResults()  # uploaded, waiting for a result
        self._finish_lock = asyncio.Lock()

    @property
    def awaiting_count(self) -> int:
        """Submissions uploaded and waiting for their result."""
        return len(self._awaited)

    # --- intake ---

    async def admit(self, path: Path) -> Submission | None:
        """Reject `path` or record it and move it to processing/; returns the submission."""
        relative = str(path.relative_to(self.staging.inbox))
        st, verdict = await asyncio.to_thread(self._inspect, path)
        if st is None:
            return None  # vanished between the scan and now
        if verdict is not None:
            reason, detail = verdict
            target = await asyncio.to_thread(self.staging.reject, path, reason, detail)
            # Rejections are recorded after the move: the reason file beside it is the record
            # that matters, the journal row only feeds `status`.
            await self.journal.create(
                submission_id=new_submission_id(), original_name=relative,
                source_path=str(path), staged_path=str(target), key="", size=st.st_size,
                state=State.REJECTED, error=f"{reason}: {detail}",
                detail={"reason": reason, "detail": detail},
            )  # fmt: skip
            self.metrics.rejected.labels(reason=reason).inc()
            log.warning("intake.rejected", file=relative, reason=reason, detail=detail)
            return None
        submission_id = new_submission_id()
        staged = self.staging.processing_path(submission_id, relative)
        key = submission_key(self.settings, submission_id, path.name)
        replaces = await self.journal.rerun_of(str(path))  # put there by `retry --done`
        sub = await self.journal.create(
            submission_id=submission_id, original_name=relative, source_path=str(path),
            staged_path=str(staged), key=key, size=st.st_size, replaces=replaces,
        )  # fmt: skip
        staged_sub = await self._stage(sub)
        if staged_sub is not None and staged_sub.state is State.DISCOVERED:
            log.info("intake.taken", submission=sub.id, file=relative, bytes=st.st_size)
        return staged_sub

    def _inspect(self, path: Path) -> tuple[os.stat_result | None, tuple[str, str] | None]:
        try:
            st = path.lstat()
        except FileNotFoundError:
            return None, None
        if not stat.S_ISREG(st.st_mode):
            return st, ("not a regular file", kind_of(st.st_mode))
        verdict = sniff(path, self._allowed)
        return st, None if verdict.ok else (verdict.reason, verdict.detail)

    async def _stage(self, sub: Submission) -> Submission | None:
        """Move the file from the inbox to processing/ (idempotent).

        None if it cannot leave the inbox (another file system mounted inside it, no write
        permission on its folder, a read-only mount): its row is dropped, the file stays where
        it is and is tried again at the next rescan, so it is neither lost nor recorded twice.
        """
        staged, source = Path(sub.staged_path), Path(sub.source_path)

        def move() -> OSError | None:
            if staged.exists():
                return None
            try:
                source.rename(staged)
            except OSError as error:
                return error
            return None

        error = await asyncio.to_thread(move)
        if error is None:
            return sub
        if isinstance(error, FileNotFoundError):
            message = f"{source} disappeared before staging"
            return await self.fail(sub, "intake", "vanished", message)
        await self.journal.discard(sub.id)
        hint = MOVE_HINTS.get(error.errno or 0, "")
        log.warning("intake.cannot_take", file=sub.original_name, error=str(error), hint=hint)
        return None

    # --- upload ---

    async def upload(self, submission_id: str) -> None:
        """Hash (once), reuse a duplicate's result or upload, then wait for the result."""
        with structlog.contextvars.bound_contextvars(submission=submission_id):
            sub = await self.journal.get(submission_id)
            if sub.state not in (State.DISCOVERED, State.UPLOADING):
                return
            staged = Path(sub.staged_path)
            # The hash is recorded with the next transition, not on its own: one commit less
            # per file, and a crash before that transition merely hashes again.
            sha256: str
            size: int
            try:
                # Before hashing: a change from here until the last byte is sent refuses it.
                fingerprint = await asyncio.to_thread(file_fingerprint, staged)
            except FileNotFoundError:
                await self.fail(sub, "intake", "vanished", f"{staged} disappeared")
                return
            if sub.sha256 is not None and sub.size is not None:
                sha256, size = sub.sha256, sub.size
            else:
                try:
                    sha256, size = await asyncio.to_thread(sha256_of, staged)
                except FileNotFoundError:
                    await self.fail(sub, "intake", "vanished", f"{staged} disappeared")
                    return
            # A re-run asks for a new answer: never the journal's old one.
            reuse = self.settings.on_duplicate == "reuse" and sub.replaces is None
            if sub.state is State.DISCOVERED and reuse:
                earlier = await self.journal.done_with_sha256(sha256, sub.id)
                if earlier is not None and await self._reuse(sub, earlier, sha256):
                    return
            # `uploading` already: an attempt that did not reach `uploaded` may have stored it.
            may_be_stored = sub.state is State.UPLOADING
            sub = await self.journal.transition(
                sub.id, State.UPLOADING, attempts=sub.attempts + 1, sha256=sha256, size=size,
                detail={"attempt": sub.attempts + 1, "sha256": sha256},
            )  # fmt: skip
            request = UploadRequest(
                staged, sub.key, sha256, size,
                upload_metadata(sub.original_name, sha256, self.settings.node_id), fingerprint,
                may_be_stored=may_be_stored,
            )  # fmt: skip
            try:
                result = await self.uploader.upload(request)
            except UploadFailed as error:
                self.metrics.failures.labels(stage="upload").inc()
                await self.fail(sub, "upload", "upload_failed", error.reason)
                return
            except asyncio.CancelledError:
                log.warning("upload.interrupted", key=sub.key, state=str(State.UPLOADING))
                raise
            sub = await self.journal.transition(
                sub.id, State.UPLOADED, uploaded_at=time.time(), etag=result.etag,
                detail={"bytes": result.bytes, "seconds": round(result.seconds, 3),
                        "multipart": result.multipart, "resumed_parts": result.resumed_parts},
            )  # fmt: skip
            self.metrics.uploads.inc()
            self.metrics.upload_bytes.inc(result.bytes)
            await self.trigger(sub)

    async def trigger(self, sub: Submission) -> None:
        """Invoke the function (trigger_mode "invoke"); start waiting for the result."""
        if self._invoke is not None and not sub.triggered:
            try:
                await self._invoke(sub.key, sub.etag or "", sub.size or 0)
            except TriggerFailed as error:
                if not error.retryable:
                    await self.fail(sub, "trigger", "trigger_failed", error.reason)
                    return
                log.warning("trigger.deferred", submission=sub.id, reason=error.reason)
            else:
                # A crash from here to the commit invokes again after the restart: invocation
                # is at least once (as Lambda's own async invokes are); the outputs are keyed by
                # the input key, so a repeat rewrites the same result, collected once.
                sub = await self.journal.update(sub.id, triggered=True, event="triggered")
        self._awaited.add(sub)

    async def retrigger(self) -> None:
        """Invoke again for awaited submissions whose invoke failed transiently."""
        if self._invoke is None:
            return
        for sub in self._awaited.untriggered():
            await self.trigger(sub)

    async def _reuse(self, sub: Submission, earlier: Submission, sha256: str) -> bool:
        """Answer from what the journal recorded for an earlier identical video; False (so it
        is uploaded) if the record lacks the CSV rows.

        Never from the earlier result's path: done/ may have been emptied (by a person, or
        retention) and the name given to another video since, whose CSV would be filed here.
        The details JSON and contact sheet are not in the journal, so a reused result has
        only its CSV (`on_duplicate = "reprocess"` gives all of them).
        """
        rows = recorded_rows(earlier.result)
        if rows is None:
            log.info("result.not_reusable", earlier=earlier.id, reason="no rows recorded")
            return False
        target = self.staging.companion(Path(sub.staged_path), ResultKind.CSV.value)
        text = render_csv(rows, header=self.settings.csv_header)
        await asyncio.to_thread(write_atomic, target, text.encode())
        summary = {**(earlier.result or {}), "reused_from": earlier.id}
        summary["latency_s"] = round(time.time() - sub.created_at, 3)
        await self.conclude(sub, State.DONE, result=summary, event="result.reused", sha256=sha256)
        return True

    # --- results ---

    async def list_results(self) -> list[tuple[Submission, ResultReady]]:
        """One listing of the output bucket: the final results of awaited submissions in it.

        It starts just before the oldest awaited submission: Lambda answers concurrently, so a
        newer video's result routinely overtakes an older one, and listing only after the
        newest result seen would leave the straggler waiting. Results newer than the straggler
        are listed again, a cheap page of keys, but never fetched twice (`collect` takes each
        submission out of the awaited ones first). Raises what the listing raised.
        """
        oldest = self._awaited.oldest()
        if oldest is None:
            start = node_prefix(self.settings.key_prefix, self.settings.node_id)
        else:
            start = self.poller.start_before(oldest)
        found = await self.poller.poll_once(start)
        return [(sub, ready) for ready in found if (sub := self._awaited.match(ready))]

    async def collect(self, sub: Submission, ready: ResultReady) -> None:
        """Fetch a result, stage its files beside the video, conclude done or failed."""
        with structlog.contextvars.bound_contextvars(submission=sub.id):
            if self._awaited.pop(sub.id) is None:
                return  # concluded meanwhile (deadline)
            try:
                await self._collect(sub, ready)
            except Exception:
                # One bad result (a full disk, a bug) must not stop the others: wait for it
                # again if it is still unconcluded, else recovery delivers it at the next start.
                log.exception("result.collect_failed", key=ready.key)
                current = await self.journal.get(sub.id)
                if current.state is State.UPLOADED:
                    self._awaited.add(current)

    async def _collect(self, sub: Submission, ready: ResultReady) -> None:
        staged = Path(sub.staged_path)
        latency = round(time.time() - sub.created_at, 3)
        try:
            # The files stay within the poller's byte budget until they are on disk.
            async with AsyncExitStack() as held:
                try:
                    files = await held.enter_async_context(self.poller.fetch(ready))
                except ResultUnreadable:
                    raise
                except Exception as error:
                    log.warning("result.fetch_failed", key=ready.key, error=str(error))
                    self._awaited.add(sub)  # the next poll lists it again
                    return
                doc, timings = files.error, files.timings
                summary = CsvSummary()
                if doc is None:
                    summary = await asyncio.to_thread(self._write_results, staged, files)
                else:
                    await asyncio.to_thread(
                        write_atomic, self.staging.companion(staged, ResultKind.ERROR.value),
                        (doc.to_json() + "\n").encode(),
                    )  # fmt: skip
                del files  # the bytes go with the budget they were counted in
        except ResultUnreadable as bad:
            # Fetching it again cannot help: fail now, keeping what was fetched for a person.
            if bad.raw is not None:
                await asyncio.to_thread(
                    write_atomic, self.staging.companion(staged, RAW_RESULT_SUFFIX), bad.raw
                )
            self.metrics.failures.labels(stage="result").inc()
            await self.fail(sub, "result", bad.code, bad.message)
            return
        if doc is not None:
            reason = {"code": doc.code, "message": doc.message, "request_id": doc.request_id}
            self.metrics.failures.labels(stage="function").inc()
            await self.conclude(
                sub, State.FAILED, result={"error": reason, "latency_s": latency},
                error=f"{doc.code}: {doc.message}", event="result.failed",
            )  # fmt: skip
            return
        result: dict[str, Any] = {
            "people": [row.name for row in summary.rows],
            "people_count": summary.count,
            "latency_s": latency,
            "timings": timings,
            "result_key": ready.key,
        }
        if summary.complete:  # rows cut short must not stand for the answer (e.g. for reuse)
            result["rows"] = [[row.name, row.major, row.year] for row in summary.rows]
        self.metrics.result_latency.observe(latency)
        await self.conclude(sub, State.DONE, result=result, event="result.received")

    def _write_results(self, staged: Path, files: ResultFiles) -> CsvSummary:
        """Stage a result's files beside the video; returns the CSV's (bounded) summary."""
        csv_path = self.staging.companion(staged, ResultKind.CSV.value)
        # Checked and rendered first, renamed into place last: an unreadable CSV fails the
        # submission before anything else is written.
        csv_tmp, summary = prepare_csv(files.csv or b"", csv_path, header=self.settings.csv_header)
        try:
            if files.details is not None:  # byte for byte, as the function wrote it
                write_atomic(
                    self.staging.companion(staged, ResultKind.DETAILS.value), files.details
                )
            if files.faces_jpg is not None:
                write_atomic(
                    self.staging.companion(staged, ResultKind.FACES.value), files.faces_jpg
                )
            # The CSV last, as the function does: its presence means the group is complete.
            csv_tmp.replace(csv_path)
        finally:
            csv_tmp.unlink(missing_ok=True)
        return summary

    async def check_deadlines(self, now: float) -> list[str]:
        """Log `result.overdue` once per submission; past the hard deadline, time it out.

        Returns the submissions to upload again: overdue because their input object vanished
        (a local cloud restarted without its state, a lifecycle rule, a person).
        """
        s = self.settings
        for sub, waited in self._awaited.waited(now, s.result_deadline_s):
            if self._awaited.pop(sub.id) is None:
                continue  # concluded meanwhile
            self.metrics.failures.labels(stage="result").inc()
            message = f"no result {waited:.0f} s after the upload"
            await self._write_error(sub, "timed_out", message)
            await self.conclude(sub, State.TIMED_OUT, error=message, event="result.timed_out")
        to_check: list[Submission] = []
        for sub, waited in self._awaited.waited(now, s.result_overdue_s):
            if not sub.overdue:
                log.warning("result.overdue", submission=sub.id, file=sub.original_name,
                            key=sub.key, waited_s=round(waited, 1))  # fmt: skip
                marked = await self.journal.update(
                    sub.id, overdue=True, event="result.overdue", detail={"waited_s": waited}
                )
                self._awaited.refresh(marked)
            if self._awaited.needs_input_check(sub.id):
                to_check.append(sub)
        # A few HEADs at once, and a bounded number per tick: a backlog of thousands gone
        # overdue together must not hold up the listing of results. Once S3 cannot answer one
        # (an outage, a partition), the rest wait for the next tick instead of timing out too.
        limit = asyncio.Semaphore(INPUT_CHECKS_AT_ONCE)
        s3_silent = asyncio.Event()

        async def check(sub: Submission) -> bool:
            async with limit:
                if s3_silent.is_set():
                    return False
                verdict = await self._input_vanished(sub)
                if verdict is None:
                    s3_silent.set()
                return bool(verdict)

        checked = to_check[:INPUT_CHECKS_PER_TICK]
        vanished = await asyncio.gather(*(check(sub) for sub in checked))
        return [sub.id for sub, gone in zip(checked, vanished, strict=True) if gone]

    async def _input_vanished(self, sub: Submission) -> bool | None:
        """If the input object is gone, reopen the submission for a new upload (bounded).

        True: reopened; False: still there (or no attempts left); None: S3 cannot say now,
        ask again next tick (the deadline still holds meanwhile).
        """
        try:
            present = await self.uploader.stored(sub.key)
        except Exception as error:
            log.warning("input.check_failed", submission=sub.id, key=sub.key, error=str(error))
            return None
        if present or sub.attempts >= MAX_UPLOAD_ATTEMPTS:
            self._awaited.input_present(sub.id)
            if not present:
                log.error(
                    "input.vanished", submission=sub.id, key=sub.key, attempts=sub.attempts,
                    action="none: upload attempts used up",
                )  # fmt: skip
            return False
        if self._awaited.pop(sub.id) is None:
            return False  # concluded meanwhile
        log.warning("input.vanished", submission=sub.id, file=sub.original_name, key=sub.key,
                    action="upload again")  # fmt: skip
        await self.journal.transition(
            sub.id, State.UPLOADING, overdue=False, triggered=False, event="input.vanished"
        )
        return True

    # --- conclusions ---

    async def fail(self, sub: Submission, stage: str, code: str, message: str) -> Submission:
        """Conclude `failed` with an `.error.json` saying why (stage, code, message)."""
        log.warning("submission.failing", submission=sub.id, stage=stage, code=code, error=message)
        await self._write_error(sub, code, message)
        return await self.conclude(
            sub, State.FAILED, error=f"{code}: {message}",
            result={"error": {"code": code, "message": message, "stage": stage}},
        )  # fmt: skip

    async def _write_error(self, sub: Submission, code: str, message: str) -> None:
        doc = ErrorDoc(code=code, message=message, request_id="", input_key=sub.key)
        target = self.staging.companion(Path(sub.staged_path), ResultKind.ERROR.value)
        await asyncio.to_thread(write_atomic, target, (doc.to_json() + "\n").encode())

    async def conclude(
        self,
        sub: Submission,
        state: State,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        event: str | None = None,
        **fields: Any,
    ) -> Submission:
        """Commit the final state (with its destination), then move the group and announce."""
        folder = self.staging.done if state is State.DONE else self.staging.failed
        # One at a time: the free name claimed here must still be free when the group moves.
        async with self._finish_lock:
            final = None
            if state is State.DONE and sub.replaces is not None:
                final = await self._replacement_target(sub)
                if final is not None:
                    result = {**(result or {}), "replaces": sub.replaces}
            if final is None:
                final = await asyncio.to_thread(
                    self.staging.claim_group_name, folder, sub.original_name
                )
            sub = await self.journal.transition(
                sub.id, state, final_path=str(final), result=result, error=error, event=event,
                **fields,
            )  # fmt: skip
            return await self.deliver(sub)

    async def deliver(self, sub: Submission) -> Submission:
        """Move a concluded group out of processing/ and announce it (idempotent).

        If a file has taken one of the group's names since it was claimed, the group moves
        nowhere and gets another name, committed before it moves (`delivery.renamed`).
        """
        assert sub.final_path is not None  # noqa: S101 -- concluded rows have one
        staged, final = Path(sub.staged_path), Path(sub.final_path)
        replaced = (sub.result or {}).get("replaces")
        if replaced is not None:
            await asyncio.to_thread(replace_results, self.staging, staged, final)
            await self.journal.record(str(replaced), "result.replaced", {"by": sub.id})
            self._announce(sub)
            sub = await self.journal.update(sub.id, delivered=True)
            self.staging.release(final)  # held by recovery, like any concluded group's name
            return sub
        for attempt in range(1, MAX_RENAMES + 1):
            try:
                await asyncio.to_thread(self.staging.move_group, staged, final)
                break
            except FileExistsError as error:
                if attempt == MAX_RENAMES:
                    raise
                new = await asyncio.to_thread(
                    self.staging.claim_group_name, final.parent, sub.original_name
                )
                moved = {"from": str(final), "to": str(new), "taken": error.filename}
                log.warning("delivery.renamed", submission=sub.id, **moved)
                sub = await self.journal.update(
                    sub.id, final_path=str(new), event="delivery.renamed", detail=moved
                )
                self.staging.release(final)
                final = new
        self._announce(sub)
        sub = await self.journal.update(sub.id, delivered=True)
        self.staging.release(final)  # the group's files hold its name from now on
        return sub

    async def _replacement_target(self, sub: Submission) -> Path | None:
        """The done/ video a re-run's result goes beside, if it still is the video processed."""
        try:
            old = await self.journal.get(sub.replaces or "")
        except KeyError:
            old = None  # pruned meanwhile
        video = Path(old.final_path) if old is not None and old.final_path else None
        if old is None or video is None or old.state is not State.DONE or not sub.sha256:
            return None

        def same_video() -> bool:
            try:
                return sha256_of(video)[0] == sub.sha256
            except OSError:
                return False

        if not await asyncio.to_thread(same_video):
            log.warning("rerun.not_replacing", submission=sub.id, replaces=sub.replaces,
                        path=str(video), reason="the done/ video is gone or changed")  # fmt: skip
            return None
        return video

    def _announce(self, sub: Submission) -> None:
        result = sub.result or {}
        fields: dict[str, Any] = {
            "submission": sub.id, "file": sub.original_name, "path": sub.final_path,
            "latency_s": result.get("latency_s"),
        }  # fmt: skip
        self.metrics.last_result.set_to_current_time()
        if sub.state is State.DONE:
            self.metrics.results.labels(outcome="done").inc()
            log.info(
                "result.received", **fields, people=result.get("people", []),
                timings=result.get("timings"), reused_from=result.get("reused_from"),
                replaces=result.get("replaces"),
            )  # fmt: skip
        elif sub.state is State.TIMED_OUT:
            self.metrics.results.labels(outcome="timed_out").inc()
            log.error("result.timed_out", **fields, error=sub.error)
        else:
            self.metrics.results.labels(outcome="failed").inc()
            log.error("submission.failed", **fields, error=sub.error)

    # --- recovery ---

    async def redeliver(self) -> None:
        """Retry moving concluded groups whose move failed (done/ unwritable, disk full), so
        they reach done/ once the folder is fixed, without waiting for a restart."""
        # Under the finish lock: a row concluded but not yet moved by conclude() is not stuck.
        async with self._finish_lock:
            refusing: set[Path] = set()
            for sub in await self.journal.undelivered():
                folder = Path(sub.final_path or "").parent
                if folder in refusing:
                    continue  # the same folder will refuse the others too: next tick
                try:
                    await self.deliver(sub)
                except Exception as error:  # a full disk fails the journal too (sqlite3)
                    log.warning("delivery.failed", submission=sub.id, path=sub.final_path,
                                error=str(error))  # fmt: skip
                    refusing.add(folder)

    async def recover(self) -> list[str]:
        """Finish what a crash interrupted; returns the ids to (re-)upload, oldest first.

        A group that cannot be moved now (done/ locked, full) stays in processing/ and is
        retried by `redeliver`: one such group must not stop the daemon from starting.
        """
        undelivered = await self.journal.undelivered()
        # Their names were claimed by an earlier run: no new claim may take them.
        for sub in undelivered:
            if sub.final_path:
                self.staging.reserve(Path(sub.final_path))
        for sub in undelivered:
            log.info("recovery.delivering", submission=sub.id, state=str(sub.state))
            try:
                await self.deliver(sub)
            except Exception as error:
                log.warning("recovery.delivery_failed", submission=sub.id, path=sub.final_path,
                            error=str(error), action="retried every housekeeping tick")  # fmt: skip
        to_upload: list[str] = []
        for found in await self.journal.in_states(OPEN):
            if found.state is State.UPLOADED:
                await self.trigger(found)
                continue
            if found.state is State.DISCOVERED:
                staged = await self._stage(found)
                if staged is None or staged.state is not State.DISCOVERED:
                    continue
            to_upload.append(found.id)
        if to_upload or self._awaited:
            log.info("recovery.resumed", uploads=len(to_upload), awaiting=len(self._awaited))
        return to_upload


def recorded_rows(result: dict[str, Any] | None) -> list[PersonRow] | None:
    """The CSV rows a journal result summary holds, or None if it holds none (older rows)."""
    rows = (result or {}).get("rows")
    if not isinstance(rows, list):
        return None
    parsed = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 3 and all(isinstance(f, str) for f in row)):
            return None
        parsed.append(PersonRow(*row))
    return parsed


def make_invoke(
    lambda_client: Any, settings: WatcherSettings
) -> Callable[[str, str, int], Any] | None:
    """The trigger for trigger_mode "invoke" (None for "s3": the bucket notifies)."""
    if settings.trigger_mode != "invoke":
        return None

    async def invoke(key: str, etag: str, size: int) -> None:
        await invoke_function(lambda_client, settings, settings.input_bucket, key, etag, size)

    return invoke
