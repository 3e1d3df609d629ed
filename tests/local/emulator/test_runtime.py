"""`hybrid-local serve` as a real subprocess against moto's server, with a stand-in
handler (tests/stand_in_handler.py) that sleeps, answers, crashes, hangs or fails on request.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from local_stack.provision import MAX_RECEIVE_COUNT, Resources
from tests.servers import (
    REPO,
    SERVE_LOCAL,
    ServeLocal,
    invocation_log,
    provision_stack,
    s3_client,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def stack(moto_endpoint: str, unique_name: str) -> Resources:
    # A 2-second function timeout is also the queue's visibility timeout: retries come fast.
    return provision_stack(moto_endpoint, unique_name, function_timeout_s=2)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "stand-in"


def _runtime(stack: Resources, state_dir: Path, **env: str) -> ServeLocal:
    defaults = {
        "HYBRID_FUNCTION_TIMEOUT_S": "2",
        "HYBRID_IDLE_SCALE_DOWN_S": "1",
        "HYBRID_MAX_CONCURRENCY": "2",
        "HYBRID_ASYNC_RETRY_DELAY_S": "0.2",
    }
    return ServeLocal(stack, state_dir, extra_env={**defaults, **env})


def _stop_cleanly(runtime: ServeLocal) -> None:
    assert runtime.stop() == 0
    assert runtime.named("serve_local.stopped"), "no serve_local.stopped event after SIGTERM"


def _csv_keys(endpoint: str, bucket: str) -> set[str]:
    pages = s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {
        o["Key"] for page in pages for o in page.get("Contents", []) if o["Key"].endswith(".csv")
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_a_burst_scales_concurrency_to_the_limit_and_back_to_zero(
    stack: Resources, state_dir: Path
) -> None:
    runtime = _runtime(stack, state_dir, HYBRID_MAX_CONCURRENCY="4", STAND_IN_SLEEP_S="0.3")
    try:
        s3 = s3_client(stack.endpoint_url or "")
        keys = [f"videos/node/burst-{i:02d}/clip-{i:02d}.mp4" for i in range(24)]
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(lambda k: s3.put_object(Bucket=stack.input_bucket, Key=k, Body=b"v"), keys)
            )
        wait_until(
            lambda: sum(what == "done" for _, what in invocation_log(state_dir)) >= 24,
            60,
            "24 results",
        )
        elapsed = time.monotonic() - started
        runtime.wait_for(
            lambda e: (
                e["event"] == "scale.changed"
                and e["concurrency"] == 0
                and e["reason"] == "idle"
                and e["timestamp"] > runtime.named("invocation.completed")[-1]["timestamp"]
            ),
            15,
        )
    finally:
        _stop_cleanly(runtime)

    scale = [e["concurrency"] for e in runtime.named("scale.changed")]
    assert max(scale) == 4, scale
    assert scale[-1] == 0
    done = Counter(key for key, what in invocation_log(state_dir) if what == "done")
    assert done == Counter(keys), "every object processed exactly once"
    assert {k.removesuffix(".mp4") + ".csv" for k in keys} <= _csv_keys(
        stack.endpoint_url or "", stack.output_bucket
    )
    completed = [e for e in runtime.named("invocation.completed") if e.get("key") in keys]
    assert {"request_id", "duration_ms", "max_memory_mb", "cold", "pid"} <= set(completed[0])
    assert any(not e["cold"] for e in completed), "warm environments are reused"
    assert sum(e["cold"] for e in completed) <= 4
    print(f"\n24-object burst, stand-in 0.3 s each, limit 4: all results in {elapsed:.1f} s")


@pytest.mark.slow
def test_a_crash_and_a_timeout_mid_invocation_end_in_one_retried_result(
    stack: Resources, state_dir: Path
) -> None:
    runtime = _runtime(stack, state_dir)
    crash_key, hang_key = "videos/node/c1/crash-once.mp4", "videos/node/h1/hang-once.mp4"
    try:
        s3 = s3_client(stack.endpoint_url or "")
        s3.put_object(Bucket=stack.input_bucket, Key=crash_key, Body=b"v")
        s3.put_object(Bucket=stack.input_bucket, Key=hang_key, Body=b"v")
        wait_until(
            lambda: (
                {k for k, what in invocation_log(state_dir) if what == "done"}
                >= {crash_key, hang_key}
            ),
            40,
            "both results after their retries",
        )
    finally:
        _stop_cleanly(runtime)

    failed = {e["key"]: e for e in runtime.named("invocation.failed")}
    assert failed[crash_key]["error_type"] == "Runtime.ExitError"
    assert failed[hang_key]["error_type"] == "Sandbox.Timedout"
    assert not _alive(failed[hang_key]["pid"]), "the hung worker was killed"
    reasons = {e["reason"] for e in runtime.named("scale.changed")}
    assert {"crash", "timeout"} <= reasons
    log = invocation_log(state_dir)
    for key in (crash_key, hang_key):
        assert [what for k, what in log if k == key][-1] == "done"
        assert sum(1 for k, what in log if k == key and what == "done") == 1
    assert {crash_key.replace(".mp4", ".csv"), hang_key.replace(".mp4", ".csv")} <= _csv_keys(
        stack.endpoint_url or "", stack.output_bucket
    )


@pytest.mark.slow
def test_a_record_that_keeps_failing_lands_in_the_dead_letter_queue_after_max_receive_attempts(
    stack: Resources, state_dir: Path
) -> None:
    # A failed message is received again after the visibility timeout (the function's timeout).
    runtime = _runtime(stack, state_dir, HYBRID_FUNCTION_TIMEOUT_S="3")
    key = "videos/node/f1/fail-always.mp4"
    sqs = boto3.client("sqs", endpoint_url=stack.endpoint_url, region_name=stack.region)
    dead: list[dict[str, str]] = []
    try:
        s3_client(stack.endpoint_url or "").put_object(
            Bucket=stack.input_bucket, Key=key, Body=b"v"
        )

        def in_dlq() -> bool:
            dead.extend(
                sqs.receive_message(QueueUrl=stack.dead_letter_queue_url, WaitTimeSeconds=1).get(
                    "Messages", []
                )
            )
            return bool(dead)

        wait_until(in_dlq, 3 * MAX_RECEIVE_COUNT + 40, "the message in the dead-letter queue")
    finally:
        _stop_cleanly(runtime)

    attempts = [what for k, what in invocation_log(state_dir) if k == key and what != "start"]
    # Each receive counts towards maxReceiveCount. On a loaded machine a receive can come back
    # while the previous attempt still runs (slow cold start); it is then not run again, so
    # runs + such redeliveries make up the receives.
    redelivered = len(runtime.named("message.redelivered_while_running"))
    assert set(attempts) == {"fail"}
    assert len(attempts) + redelivered == MAX_RECEIVE_COUNT, (attempts, redelivered)
    assert "fail-always.mp4" in dead[0]["Body"]
    exhausted = runtime.named("message.exhausted")
    assert exhausted and exhausted[0]["attempt"] == MAX_RECEIVE_COUNT
    retries = [e["attempt"] for e in runtime.named("message.retry_scheduled")]
    assert retries == sorted(retries) and len(retries) == len(attempts) - 1


@pytest.mark.slow
def test_duplicate_events_for_one_object_version_are_processed_once(
    stack: Resources, state_dir: Path
) -> None:
    runtime = _runtime(stack, state_dir)
    s3 = s3_client(stack.endpoint_url or "")
    key = "videos/node/m1/multipart.mp4"
    try:
        # moto sends two events for one multipart completion (Put and CompleteMultipartUpload).
        upload = s3.create_multipart_upload(Bucket=stack.input_bucket, Key=key)
        part = s3.upload_part(
            Bucket=stack.input_bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=1,
            Body=b"x" * (5 * 1024 * 1024),
        )
        s3.complete_multipart_upload(
            Bucket=stack.input_bucket,
            Key=key,
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
        )
        runtime.wait_for(lambda e: e["event"] == "event.duplicate" and key in e["keys"], 20)
        wait_until(lambda: (key, "done") in invocation_log(state_dir), 20, "the result")
        # A new version of the same key is a new object: processed again.
        s3.put_object(Bucket=stack.input_bucket, Key=key, Body=b"other content")
        wait_until(
            lambda: invocation_log(state_dir).count((key, "done")) == 2, 20, "the new version"
        )
        time.sleep(1.5)  # time for any wrongly admitted duplicate to run
    finally:
        _stop_cleanly(runtime)
    assert invocation_log(state_dir).count((key, "done")) == 2


@pytest.mark.slow
def test_the_invoke_api_answers_boto3_like_lambda(stack: Resources, state_dir: Path) -> None:
    runtime = _runtime(stack, state_dir)
    s3 = s3_client(stack.endpoint_url or "")
    client = boto3.client(
        "lambda",
        endpoint_url=runtime.invoke_url,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}),
    )
    # `.bin` is outside the bucket's notification filter: only the Invoke API runs these.
    keys = {n: f"videos/node/i-{n}/{n}.bin" for n in ("sync", "boom", "event", "fail-always")}
    for key in keys.values():
        s3.put_object(Bucket=stack.input_bucket, Key=key, Body=b"v")

    def event(key: str) -> bytes:
        record = {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}
        record["s3"] = {"bucket": {"name": stack.input_bucket}, "object": {"key": key}}  # type: ignore[assignment]
        return json.dumps({"Records": [record]}).encode()

    try:
        answer = client.invoke(
            FunctionName="hybridsphere-face-recognition",
            Payload=event(keys["sync"]),
            LogType="Tail",
        )
        assert answer["StatusCode"] == 200
        assert "FunctionError" not in answer
        result = json.loads(answer["Payload"].read())
        assert result["processed"] == [keys["sync"]]
        assert 0 < result["remaining_ms"] <= 2000
        assert (
            "REPORT RequestId: " + result["request_id"]
            in base64.b64decode(answer["LogResult"]).decode()
        )

        failure = client.invoke(
            FunctionName="arn:aws:lambda:us-east-1:000000000000:function:hybridsphere-face-recognition",
            Payload=event(keys["boom"]),
        )
        assert failure["StatusCode"] == 200
        assert failure["FunctionError"] == "Unhandled"
        error = json.loads(failure["Payload"].read())
        assert (error["errorType"], error["errorMessage"]) == ("ValueError", "boom")

        queued = client.invoke(
            FunctionName="hybridsphere-face-recognition",
            InvocationType="Event",
            Payload=event(keys["event"]),
        )
        assert queued["StatusCode"] == 202
        client.invoke(
            FunctionName="hybridsphere-face-recognition",
            InvocationType="Event",
            Payload=event(keys["fail-always"]),
        )
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.invoke(FunctionName="no-such-function", Payload=b"{}")

        wait_until(
            lambda: (
                keys["event"].replace(".bin", ".csv")
                in _csv_keys(stack.endpoint_url or "", stack.output_bucket)
            ),
            20,
            "the Event invocation's result",
        )
        runtime.wait_for(lambda e: e["event"] == "invoke.discarded", 20)
    finally:
        _stop_cleanly(runtime)
    # Lambda retries a failed asynchronous invocation twice.
    attempts = [w for k, w in invocation_log(state_dir) if k == keys["fail-always"]]
    assert attempts.count("fail") == 3
    sources = Counter(e["source"] for e in runtime.named("invocation.completed"))
    assert sources["invoke-sync"] == 1 and sources["invoke-event"] == 1


@pytest.mark.slow
async def test_the_watchers_invoke_trigger_mode_runs_the_function(
    stack: Resources, state_dir: Path, tmp_path: Path
) -> None:
    from watcher.clients import aws_clients
    from watcher.settings import WatcherSettings
    from watcher.trigger import invoke_function

    runtime = _runtime(stack, state_dir)
    key = "videos/node/t1/trigger+clip.bin"  # outside the notification filter; + is encoded
    s3 = s3_client(stack.endpoint_url or "")
    etag = s3.put_object(Bucket=stack.input_bucket, Key=key, Body=b"v")["ETag"]
    settings = WatcherSettings(
        endpoint_url=runtime.invoke_url,
        staging_root=tmp_path / "staging",
        input_bucket=stack.input_bucket,
        output_bucket=stack.output_bucket,
    )
    try:
        async with aws_clients(settings) as clients:
            await invoke_function(clients.lambda_, settings, stack.input_bucket, key, etag, 1)
        wait_until(lambda: (key, "done") in invocation_log(state_dir), 20, "the invoked result")
    finally:
        _stop_cleanly(runtime)
    completed = runtime.named("invocation.completed")
    assert [e["source"] for e in completed if e.get("key") == key] == ["invoke-event"]


@pytest.mark.slow
def test_sigterm_lets_the_running_invocation_finish_then_stops_every_worker(
    stack: Resources, state_dir: Path
) -> None:
    runtime = _runtime(stack, state_dir, STAND_IN_SLEEP_S="1.5", HYBRID_IDLE_SCALE_DOWN_S="60")
    key = "videos/node/s1/slow.mp4"
    s3_client(stack.endpoint_url or "").put_object(Bucket=stack.input_bucket, Key=key, Body=b"v")
    wait_until(lambda: (key, "start") in invocation_log(state_dir), 20, "the handler to start")
    _stop_cleanly(runtime)
    completed = [e for e in runtime.named("invocation.completed") if e.get("key") == key]
    assert completed, "the running invocation finished during the grace period"
    assert (key, "done") in invocation_log(state_dir)
    assert not any(_alive(e["pid"]) for e in runtime.named("invocation.completed"))
    assert runtime.named("scale.changed")[-1]["concurrency"] == 0


@pytest.mark.slow
def test_after_the_grace_period_a_stuck_invocation_is_killed_and_its_message_kept(
    stack: Resources, state_dir: Path
) -> None:
    runtime = _runtime(
        stack, state_dir, HYBRID_FUNCTION_TIMEOUT_S="60", HYBRID_SHUTDOWN_GRACE_S="1"
    )
    key = "videos/node/g1/hang-once.mp4"
    s3_client(stack.endpoint_url or "").put_object(Bucket=stack.input_bucket, Key=key, Body=b"v")
    wait_until(lambda: (key, "hang") in invocation_log(state_dir), 20, "the handler to hang")
    started = time.monotonic()
    _stop_cleanly(runtime)
    assert time.monotonic() - started < 15
    assert runtime.named("serve_local.grace_expired")
    failed = [e for e in runtime.named("invocation.failed") if e.get("key") == key]
    assert failed and not _alive(failed[0]["pid"])
    sqs = boto3.client("sqs", endpoint_url=stack.endpoint_url, region_name=stack.region)
    attributes = sqs.get_queue_attributes(
        QueueUrl=stack.queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1", "kept for a retry"


@pytest.mark.slow
def test_a_second_ctrl_c_stops_without_waiting_for_the_grace_period(
    stack: Resources, state_dir: Path
) -> None:
    runtime = _runtime(
        stack, state_dir, HYBRID_FUNCTION_TIMEOUT_S="60", HYBRID_SHUTDOWN_GRACE_S="60"
    )
    key = "videos/node/i1/hang-once.mp4"
    s3_client(stack.endpoint_url or "").put_object(Bucket=stack.input_bucket, Key=key, Body=b"v")
    wait_until(lambda: (key, "hang") in invocation_log(state_dir), 20, "the handler to hang")
    started = time.monotonic()
    runtime.process.send_signal(signal.SIGINT)
    runtime.wait_for(lambda e: e["event"] == "serve_local.stopping", 10)
    runtime.process.send_signal(signal.SIGINT)
    _stop_cleanly(runtime)
    assert time.monotonic() - started < 15, "did not wait for the 60 s grace period"
    failed = [e for e in runtime.named("invocation.failed") if e.get("key") == key]
    assert failed and not _alive(failed[0]["pid"])


def test_a_bad_setting_exits_78_naming_it() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRID_")}
    done = subprocess.run(
        [*SERVE_LOCAL, "--max-concurrency", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 78
    assert "max_concurrency" in done.stderr
