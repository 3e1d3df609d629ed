"""Load: 10,000 small files dropped at once into a real daemon, against moto and a stand-in
function. Every file concludes exactly once, the daemon's memory stays bounded, the journal
agrees with the folders. Minutes long: `make soak` (`pytest -m soak`), not `make test`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import unquote_plus

import boto3
import psutil
import pytest

from tests.watcher_daemon import MP4_HEAD, Daemon, StandInFunction, make_cloud

FILES = int(os.environ.get("SOAK_FILES", "10000"))
RSS_LIMIT_MIB = 150
# The journal events that conclude a submission (watcher/pipeline.py).
CONCLUSIONS = {"result.received", "result.reused", "result.failed", "result.timed_out"}


class QueuedStandIn(StandInFunction):
    """The stand-in function, triggered as the real one is: S3 event notifications to SQS.

    Listing the input bucket to find new videos (the base class) costs moto a scan of every
    object per call, which at 10,000 objects would make moto, not the daemon, the thing tested.
    """

    def __enter__(self) -> QueuedStandIn:
        sqs = boto3.client("sqs", endpoint_url=self.cloud.endpoint, region_name="us-east-1")
        self._sqs = sqs
        self._queue = sqs.create_queue(QueueName=f"{self.cloud.input_bucket}-events")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=self._queue, AttributeNames=["QueueArn"])
        self._s3.put_bucket_notification_configuration(
            Bucket=self.cloud.input_bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {"QueueArn": arn["Attributes"]["QueueArn"], "Events": ["s3:ObjectCreated:*"]}
                ]
            },
        )
        super().__enter__()
        return self

    def _run(self) -> None:
        seen: set[str] = set()
        while not self._stop.is_set():
            messages = self._sqs.receive_message(
                QueueUrl=self._queue, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            for message in messages:
                # S3 event keys are URL-encoded ('+' for spaces); the first message is a TestEvent.
                for record in json.loads(message["Body"]).get("Records", []):
                    key = unquote_plus(record["s3"]["object"]["key"])
                    if key not in seen:  # at-least-once delivery: answer each video once
                        seen.add(key)
                        self._pool.submit(self.answer, key)
            if messages:
                self._sqs.delete_message_batch(
                    QueueUrl=self._queue,
                    Entries=[
                        {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                        for n, m in enumerate(messages)
                    ],
                )


class PeakRss:
    """Samples a process tree's resident memory in a thread; `peak_mib` is the highest seen."""

    def __init__(self, pid: int, every_s: float = 0.2) -> None:
        self.process = psutil.Process(pid)
        self.every_s = every_s
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                tree = [self.process, *self.process.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in tree))
                self.samples += 1
            except psutil.NoSuchProcess:
                return

    @property
    def peak_mib(self) -> float:
        return self.peak / 2**20


@pytest.mark.soak
@pytest.mark.timeout(1500)
def test_ten_thousand_files_dropped_at_once(
    moto_endpoint: str, tmp_path: Path, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # moto's in-process server logs every request; 100,000+ captured records are just noise.
    caplog.set_level(logging.WARNING, logger="werkzeug")
    cloud = make_cloud(moto_endpoint, unique_name)
    daemon = Daemon(tmp_path / "node", cloud)
    # Written beside the inbox (same file system), then renamed in as fast as we can.
    ready = tmp_path / "node" / "ready"
    ready.mkdir()
    names = [f"clip-{n:05d}.mp4" for n in range(FILES)]
    for n, name in enumerate(names):
        (ready / name).write_bytes(MP4_HEAD + n.to_bytes(8, "big") * 64)

    with QueuedStandIn(cloud) as function:
        try:
            daemon.start()
            assert daemon.proc is not None
            with PeakRss(daemon.proc.pid) as rss:
                started = time.monotonic()
                for name in names:
                    (ready / name).rename(daemon.inbox / name)
                dropped_s = time.monotonic() - started
                daemon.wait_until(lambda: daemon.concluded(FILES), timeout=1200)
                seconds = time.monotonic() - started
        finally:
            daemon.stop()
        print(
            f"\nsoak: {FILES} files dropped in {dropped_s:.1f} s, all concluded in {seconds:.0f} s"
            f" ({FILES / seconds:.0f} files/s); daemon peak RSS {rss.peak_mib:.0f} MiB"
            f" ({rss.samples} samples)"
        )

    assert daemon.wait_exit() == 0
    assert rss.samples > 10
    assert rss.peak_mib <= RSS_LIMIT_MIB

    # Exactly once: one object per file in the input bucket, one answer per object.
    keys = cloud.input_keys()
    assert len(keys) == FILES
    assert sorted(k.rsplit("/", 1)[-1] for k in keys) == names
    assert len(function.answered) == FILES
    assert set(function.answered.values()) == {1}

    # The journal: every submission done and delivered, concluded by exactly one result event.
    assert daemon.counts() == {"done": FILES}
    subs = daemon.submissions()
    assert len(subs) == FILES
    assert all(s.delivered for s in subs)
    assert sorted(s.original_name for s in subs) == names
    with daemon.journal() as store:
        conclusions = [e for e in store.events() if e.event in CONCLUSIONS]
    assert Counter(e.event for e in conclusions) == {"result.received": FILES}
    assert len({e.submission_id for e in conclusions}) == FILES

    # The folders agree: nothing left behind, one result per file in done/.
    assert not any(daemon.inbox.iterdir())
    assert not list((tmp_path / "node" / "processing").rglob("*.mp4"))
    results = [p.name for p in daemon.done.rglob("*.csv")]
    assert len(results) == FILES
    assert len(set(results)) == FILES
