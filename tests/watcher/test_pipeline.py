"""`Pipeline` in process: each step of a submission called directly, against moto's server over
HTTP, a real SQLite journal in tmp_path and a stand-in function answering in a thread.

The subprocess tests (test_service.py, e2e/) prove the whole daemon; these pin down what each
step does to the journal, the folders and the awaited results, one call at a time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.watcher_daemon import Cloud, StandInFunction, drop, video_bytes
from watcher.clients import aws_clients
from watcher.journal import AsyncJournal, State, Submission
from watcher.metrics import Metrics
from watcher.pipeline import Pipeline, make_invoke
from watcher.results import ResultPoller
from watcher.settings import WatcherSettings
from watcher.staging import Staging
from watcher.uploader import Uploader

CSV = "alice,physics,2026\nbob,cs,2027\n"


@pytest.fixture
def settings(cloud: Cloud, tmp_path: Path) -> WatcherSettings:
    root = tmp_path / "node"
    root.mkdir()
    return WatcherSettings(
        endpoint_url=cloud.endpoint, input_bucket=cloud.input_bucket,
        output_bucket=cloud.output_bucket, staging_root=root, node_id="node-a",
        retry_base_delay_s=0.01, retry_max_delay_s=0.05, retry_attempts=2,
    )  # fmt: skip


@asynccontextmanager
async def open_pipeline(settings: WatcherSettings) -> AsyncIterator[Pipeline]:
    """A pipeline wired as `WatcherService.startup` wires it; closed (journal too) at the end."""
    async with AsyncExitStack() as stack:
        staging = Staging(settings.staging_root.resolve())
        staging.ensure()
        journal = AsyncJournal(settings.journal_path)
        await journal.open()
        stack.push_async_callback(journal.close)
        clients = await stack.enter_async_context(aws_clients(settings))
        yield Pipeline(
            settings, journal, staging, Metrics(), Uploader(clients.s3, settings),
            ResultPoller(clients.s3, settings), make_invoke(clients.lambda_, settings),
        )  # fmt: skip


async def collect_results(
    pipeline: Pipeline, until: Callable[[], bool] | None = None, within_s: float = 10
) -> None:
    """Poll and collect, as the service's poll tick does, until nothing is awaited (or `until`)."""
    done = until or (lambda: pipeline.awaiting_count == 0)
    deadline = time.monotonic() + within_s
    while not done():
        for sub, ready in await pipeline.list_results():
            await pipeline.collect(sub, ready)
        assert time.monotonic() < deadline, f"{pipeline.awaiting_count} result(s) never came"
        await asyncio.sleep(0.05)


async def take(pipeline: Pipeline, name: str, data: bytes) -> Submission:
    """Drop a file and admit it; it must be taken (not rejected)."""
    path = drop(pipeline.staging.inbox, name, data)
    sub = await pipeline.admit(path)
    assert sub is not None and sub.state is State.DISCOVERED
    return sub


async def test_a_video_goes_from_the_inbox_to_done_with_its_results(
    settings: WatcherSettings, function: StandInFunction
) -> None:
    async with open_pipeline(settings) as pipeline:
        sub = await take(pipeline, "clip.mp4", video_bytes("clip"))
        staged = Path(sub.staged_path)
        assert staged.parent == pipeline.staging.processing
        assert sorted(pipeline.staging.processing.iterdir()) == [staged]
        assert list(pipeline.staging.inbox.iterdir()) == []

        await pipeline.upload(sub.id)
        uploaded = await pipeline.journal.get(sub.id)
        assert uploaded.state is State.UPLOADED and uploaded.etag
        assert pipeline.awaiting_count == 1
        assert function.cloud.input_keys() == [sub.key]

        with capture_logs() as logs:
            await collect_results(pipeline)
        final = await pipeline.journal.get(sub.id)
        assert final.state is State.DONE and final.delivered
        assert final.result is not None and final.result["people"] == ["alice", "bob"]
        done = pipeline.staging.done
        assert sorted(p.name for p in done.iterdir()) == [
            "clip.csv", "clip.faces.jpg", "clip.json", "clip.mp4",
        ]  # fmt: skip
        assert (done / "clip.csv").read_text() == CSV
        assert (done / "clip.mp4").read_bytes() == video_bytes("clip")
        [received] = [e for e in logs if e["event"] == "result.received"]
        assert received["file"] == "clip.mp4" and received["people"] == ["alice", "bob"]
        assert list(pipeline.staging.processing.iterdir()) == []


async def test_a_function_error_fails_the_submission_with_its_error_document(
    settings: WatcherSettings, function: StandInFunction
) -> None:
    async with open_pipeline(settings) as pipeline:
        sub = await take(pipeline, "broken.mp4", video_bytes("broken"))
        await pipeline.upload(sub.id)
        await collect_results(pipeline)
        final = await pipeline.journal.get(sub.id)
        assert final.state is State.FAILED
        assert final.error == "decode_failed: no video stream"
        failed = pipeline.staging.failed
        assert json.loads((failed / "broken.error.json").read_text())["code"] == "decode_failed"
        assert (failed / "broken.mp4").exists()


async def test_a_file_that_is_not_a_video_is_rejected_and_recorded(
    settings: WatcherSettings,
) -> None:
    async with open_pipeline(settings) as pipeline:
        path = drop(pipeline.staging.inbox, "notes.mp4", b"meeting notes, not a video")
        assert await pipeline.admit(path) is None
        rejected = pipeline.staging.rejected
        assert (rejected / "notes.mp4").read_bytes() == b"meeting notes, not a video"
        reason = json.loads((rejected / "notes.mp4.reason.json").read_text())
        assert reason["reason"] == "not a video"
        [row] = await pipeline.journal.in_states([State.REJECTED])
        assert row.original_name == "notes.mp4" and row.error is not None
        assert pipeline.awaiting_count == 0


async def test_a_file_gone_before_it_is_admitted_is_ignored(settings: WatcherSettings) -> None:
    async with open_pipeline(settings) as pipeline:
        assert await pipeline.admit(pipeline.staging.inbox / "gone.mp4") is None
        assert not any((await pipeline.journal.counts()).values())


async def test_the_same_bytes_again_reuse_the_recorded_result_without_an_upload(
    settings: WatcherSettings, function: StandInFunction
) -> None:
    async with open_pipeline(settings) as pipeline:
        first = await take(pipeline, "clip.mp4", video_bytes("clip"))
        await pipeline.upload(first.id)
        await collect_results(pipeline)
        again = await take(pipeline, "clip-again.mp4", video_bytes("clip"))
        await pipeline.upload(again.id)
        final = await pipeline.journal.get(again.id)
        assert final.state is State.DONE and final.delivered
        assert final.result is not None and final.result["reused_from"] == first.id
        assert (pipeline.staging.done / "clip-again.csv").read_text() == CSV
        assert pipeline.awaiting_count == 0
        assert len(function.cloud.input_keys()) == 1


async def test_a_result_that_never_comes_is_overdue_once_then_timed_out(
    settings: WatcherSettings, function: StandInFunction
) -> None:
    settings = settings.model_copy(update={"result_overdue_s": 1.0, "result_deadline_s": 5.0})
    async with open_pipeline(settings) as pipeline:
        sub = await take(pipeline, "never.mp4", video_bytes("never"))
        await pipeline.upload(sub.id)
        uploaded_at = (await pipeline.journal.get(sub.id)).uploaded_at
        assert uploaded_at is not None

        with capture_logs() as logs:
            assert await pipeline.check_deadlines(uploaded_at + 0.5) == []
            assert await pipeline.check_deadlines(uploaded_at + 1.5) == []
            assert await pipeline.check_deadlines(uploaded_at + 2.5) == []
        # Overdue is logged (and recorded) once; the input object is still there: no re-upload.
        assert [e["event"] for e in logs if e["event"].startswith("result.")] == ["result.overdue"]
        assert (await pipeline.journal.get(sub.id)).overdue
        assert pipeline.awaiting_count == 1

        with capture_logs() as logs:
            assert await pipeline.check_deadlines(uploaded_at + 5.0) == []
        final = await pipeline.journal.get(sub.id)
        assert final.state is State.TIMED_OUT and final.delivered
        assert pipeline.awaiting_count == 0
        failed = pipeline.staging.failed
        assert json.loads((failed / "never.error.json").read_text())["code"] == "timed_out"
        assert [e["event"] for e in logs if e["event"] == "result.timed_out"] == [
            "result.timed_out"
        ]


async def test_an_overdue_submission_whose_input_vanished_is_reopened_for_upload(
    settings: WatcherSettings, cloud: Cloud
) -> None:
    settings = settings.model_copy(update={"result_overdue_s": 1.0, "result_deadline_s": 60.0})
    async with open_pipeline(settings) as pipeline:
        sub = await take(pipeline, "lost.mp4", video_bytes("lost"))
        await pipeline.upload(sub.id)
        cloud.s3().delete_object(Bucket=cloud.input_bucket, Key=sub.key)
        now = time.time() + 2
        assert await pipeline.check_deadlines(now) == [sub.id]
        reopened = await pipeline.journal.get(sub.id)
        assert reopened.state is State.UPLOADING and not reopened.overdue
        assert pipeline.awaiting_count == 0
        assert await pipeline.check_deadlines(now) == []  # asked once

        await pipeline.upload(sub.id)  # what the service does with the returned ids
        assert cloud.input_keys() == [sub.key]
        assert (await pipeline.journal.get(sub.id)).attempts == 2
        assert pipeline.awaiting_count == 1


async def test_recovery_in_a_new_pipeline_waits_again_and_delivers_what_was_left(
    settings: WatcherSettings, function: StandInFunction
) -> None:
    """A restart: a second pipeline over the same journal and folders finds an uploaded
    submission (waits for it), a discovered one (uploads it) and a concluded one that was not
    moved yet (moves and announces it)."""
    async with open_pipeline(settings) as first:
        waiting = await take(first, "waiting.mp4", video_bytes("waiting"))
        await first.upload(waiting.id)
        queued = await take(first, "queued.mp4", video_bytes("queued"))
        unmoved = await take(first, "unmoved.mp4", video_bytes("unmoved"))
        final = first.staging.claim_group_name(first.staging.failed, "unmoved.mp4")
        await first.journal.transition(
            unmoved.id, State.FAILED, final_path=str(final), error="x: y"
        )

    async with open_pipeline(settings) as second:
        with capture_logs() as logs:
            to_upload = await second.recover()
        assert to_upload == [queued.id]
        assert second.awaiting_count == 1
        assert (second.staging.failed / "unmoved.mp4").exists()
        assert (await second.journal.get(unmoved.id)).delivered
        assert [e["file"] for e in logs if e["event"] == "submission.failed"] == ["unmoved.mp4"]
        await second.upload(queued.id)
        await collect_results(second)
        states = {s.original_name: s.state for s in await second.journal.in_states(State)}
        assert states == {
            "waiting.mp4": State.DONE, "queued.mp4": State.DONE, "unmoved.mp4": State.FAILED,
        }  # fmt: skip


async def test_a_result_that_cannot_be_filed_is_awaited_again(
    settings: WatcherSettings, function: StandInFunction
) -> None:
    """A failure while filing one result (here: a folder where its CSV goes) is logged and the
    submission waits again; it is filed at a later poll once the cause is gone."""
    async with open_pipeline(settings) as pipeline:
        sub = await take(pipeline, "clip.mp4", video_bytes("clip"))
        await pipeline.upload(sub.id)
        in_the_way = pipeline.staging.companion(Path(sub.staged_path), ".csv")
        (in_the_way / "a file").mkdir(parents=True)
        with capture_logs() as logs:
            await collect_results(
                pipeline, until=lambda: any(e["event"] == "result.collect_failed" for e in logs)
            )
        assert (await pipeline.journal.get(sub.id)).state is State.UPLOADED
        assert pipeline.awaiting_count == 1
        (in_the_way / "a file").rmdir()
        in_the_way.rmdir()
        await collect_results(pipeline)
        assert (await pipeline.journal.get(sub.id)).state is State.DONE
        assert (pipeline.staging.done / "clip.csv").read_text() == CSV
