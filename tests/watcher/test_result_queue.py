"""Result notifications: the output bucket notifies a per-node SQS queue (moto's server really
delivers them), the real daemon long-polls it. Results arrive long before the LIST tick; a
queue that is missing leaves LIST polling to deliver; unknown keys and duplicates change nothing.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import boto3
import pytest

from hybrid_common.keys import ResultKind
from local_stack.provision import ensure_queue, ensure_result_notification
from tests.servers import free_port
from tests.watcher_daemon import Cloud, Daemon, StandInFunction, drop, video_bytes
from watcher.journal import State
from watcher.result_queue import results_in

PREFIX = "videos/node-a/"
# LIST polling this slow cannot deliver within the tests' bounds: only the queue can.
SLOW_POLL = {"poll_interval_s": 30.0, "poll_max_interval_s": 30.0}


def s3_event(bucket: str, key: str, event: str = "ObjectCreated:Put") -> str:
    return json.dumps(
        {
            "Records": [
                {
                    "eventName": event,
                    "eventTime": "2026-11-30T12:00:00.000Z",
                    "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key)}},
                }
            ]
        }
    )


def result_queue(cloud: Cloud, name: str) -> str:
    """A queue the output bucket notifies of node-a's final results; returns its URL."""
    sqs: Any = boto3.client("sqs", endpoint_url=cloud.endpoint, region_name="us-east-1")
    url, arn = ensure_queue(sqs, name, {})
    ensure_result_notification(cloud.s3(), cloud.output_bucket, PREFIX, arn)
    return url


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_results_in_reads_only_final_results_of_this_bucket_and_prefix() -> None:
    out = "out-bucket"
    with_space = f"{PREFIX}s1/my clip.csv"
    [ready] = results_in(s3_event(out, with_space), out, PREFIX)
    assert (ready.key, ready.stem, ready.kind) == (
        with_space,
        f"{PREFIX}s1/my clip",
        ResultKind.CSV,
    )
    [error] = results_in(s3_event(out, f"{PREFIX}s1/c.error.json"), out, PREFIX)
    assert error.kind is ResultKind.ERROR and error.stem == f"{PREFIX}s1/c"
    for body in (
        json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}),
        "not json",
        "[" * 100_000 + "]" * 100_000,  # deeper than the parser's stack: RecursionError
        "[" + "9" * 5000 + "]",  # past Python's 4,300-digit integer limit: ValueError
        "[1, 2]",
        json.dumps({"Records": [{"s3": "nonsense"}, 7]}),
        s3_event("another-bucket", f"{PREFIX}s1/c.csv"),
        s3_event(out, "videos/node-b/s1/c.csv"),
        s3_event(out, f"{PREFIX}s1/c.json"),
        s3_event(out, f"{PREFIX}s1/c.faces.jpg"),
        s3_event(out, f"{PREFIX}s1/c.csv", "ObjectRemoved:Delete"),
    ):
        assert results_in(body, out, PREFIX) == [], body


def test_results_arrive_through_the_queue_long_before_the_list_tick(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon],
    unique_name: str,
) -> None:  # fmt: skip
    port = free_port()
    url = result_queue(cloud, f"{unique_name}-results")
    daemon = Daemon(tmp_path / "node", cloud, result_queue=url, metrics_port=port, **SLOW_POLL)
    daemons.append(daemon)
    daemon.start()
    daemon.wait_for("result_queue.answering")
    for name in ("alpha.mp4", "broken.mp4"):
        drop(daemon.inbox, name, video_bytes(name))
    daemon.wait_until(lambda: daemon.concluded(2), timeout=15)

    [received] = daemon.events("result.received")
    [key] = [k for k in function.csv_written_at if "alpha" in k]
    received_at = datetime.fromisoformat(received["timestamp"]).timestamp()
    assert received_at - function.csv_written_at[key] < 3.0  # the LIST tick: 30 s
    assert (daemon.failed / "broken.error.json").exists()
    assert metric(port, "hybrid_watcher_result_notifications_total") >= 2
    # No listing at all: notified results are fetched directly; the backstop's tick is 30 s away.
    listings = 'hybrid_watcher_cloud_requests_total{operation="ListObjectsV2",service="s3"}'
    assert metric(port, re.escape(listings)) == 0


def test_a_missing_queue_leaves_list_polling_to_deliver(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon],
    unique_name: str,
) -> None:  # fmt: skip
    daemon = Daemon(tmp_path / "node", cloud, result_queue=f"{unique_name}-no-such-queue")
    daemons.append(daemon)
    daemon.start()
    daemon.wait_for("result_queue.unavailable")
    drop(daemon.inbox, "alpha.mp4", video_bytes("alpha"))
    daemon.wait_until(lambda: daemon.concluded(1), timeout=15)
    assert [e["file"] for e in daemon.events("result.received")] == ["alpha.mp4"]
    assert not daemon.events("result_queue.answering")


def test_unknown_keys_and_duplicate_notifications_change_nothing(
    tmp_path: Path, cloud: Cloud, function: StandInFunction, daemons: list[Daemon],
    unique_name: str,
) -> None:  # fmt: skip
    port = free_port()
    url = result_queue(cloud, f"{unique_name}-results")
    daemon = Daemon(tmp_path / "node", cloud, result_queue=url, metrics_port=port, **SLOW_POLL)
    daemons.append(daemon)
    daemon.start()
    drop(daemon.inbox, "alpha.mp4", video_bytes("alpha"))
    daemon.wait_until(lambda: daemon.concluded(1), timeout=15)
    [sub] = daemon.submissions()
    csv_key = sub.key.rsplit(".", 1)[0] + ".csv"
    # A result nobody here awaits, really in the bucket under this node's prefix.
    ghost = f"{PREFIX}20260101T000000Z-ghost/ghost.csv"
    cloud.s3().put_object(Bucket=cloud.output_bucket, Key=ghost, Body=b"mallory,x,1\n")
    sqs: Any = boto3.client("sqs", endpoint_url=cloud.endpoint, region_name="us-east-1")
    for _ in range(2):  # S3 delivers at least once: the same result named twice more
        sqs.send_message(QueueUrl=url, MessageBody=s3_event(cloud.output_bucket, csv_key))
    # 1 real + 1 ghost (S3's own) + 2 duplicates
    deadline = time.monotonic() + 15
    while metric(port, "hybrid_watcher_result_notifications_total") < 4:
        assert time.monotonic() < deadline, "the notifications were not read"
        time.sleep(0.1)
    time.sleep(0.5)  # anything they would wrongly start has had time to run
    assert [e["file"] for e in daemon.events("result.received")] == ["alpha.mp4"]
    [after] = daemon.submissions()
    assert after.state is State.DONE and after.updated_at == sub.updated_at
    assert sorted(p.name for p in daemon.done.iterdir()) == sorted(
        ["alpha.mp4", "alpha.csv", "alpha.json", "alpha.faces.jpg"]
    )
    assert not daemon.events("result.collect_failed")
    assert daemon.proc is not None and daemon.proc.poll() is None


@pytest.mark.parametrize("suffix", [".csv", ".error.json"])
def test_local_provisioning_notifies_the_node_queue_of_final_results_only(
    cloud: Cloud, unique_name: str, suffix: str
) -> None:
    url = result_queue(cloud, f"{unique_name}-results")
    s3 = cloud.s3()
    for key in (f"{PREFIX}s1/c.json", "videos/node-b/s1/c.csv", f"{PREFIX}s1/c{suffix}"):
        s3.put_object(Bucket=cloud.output_bucket, Key=key, Body=b"x")
    sqs: Any = boto3.client("sqs", endpoint_url=cloud.endpoint, region_name="us-east-1")
    keys: list[str] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not keys:
        reply = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in reply.get("Messages", []):
            records = json.loads(message["Body"]).get("Records", [])  # not s3:TestEvent
            keys += [unquote_plus(r["s3"]["object"]["key"]) for r in records]
    assert keys == [f"{PREFIX}s1/c{suffix}"]
