"""Trigger mode `invoke`: the event the watcher sends, checked on a recording HTTP server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest

from tests.faults import Recorder
from watcher.clients import aws_clients
from watcher.settings import WatcherSettings
from watcher.trigger import TriggerFailed, invoke_function


def settings_for(endpoint: str, tmp_path: Path, **overrides: Any) -> WatcherSettings:
    values: dict[str, Any] = {
        "endpoint_url": endpoint,
        "staging_root": tmp_path,
        "function_name": "hybrid-fn",
        "region": "eu-west-1",
        "trigger_mode": "invoke",
        "retry_base_delay_s": 0.01,
        "retry_max_delay_s": 0.02,
    } | overrides
    return WatcherSettings(**values)


def lambda_error(status: int, kind: str) -> tuple[int, bytes, dict[str, str]]:
    body = json.dumps({"Type": "User", "message": f"{kind} from the test"}).encode()
    return status, body, {"x-amzn-ErrorType": kind}


async def test_invoke_sends_an_s3_shaped_event_asynchronously(tmp_path: Path) -> None:
    key = "videos/node-a/s1/a b+c.mp4"
    async with Recorder(status=202) as server:
        settings = settings_for(server.url, tmp_path)
        async with aws_clients(settings) as clients:
            await invoke_function(clients.lambda_, settings, "in-bucket", key, '"abc123"', 4242)

    [seen] = server.seen
    assert seen.method == "POST"
    assert seen.path == "/2015-03-31/functions/hybrid-fn/invocations"
    assert seen.headers["x-amz-invocation-type"] == "Event"
    record = json.loads(seen.body)["Records"][0]
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["awsRegion"] == "eu-west-1"
    assert record["eventTime"].endswith("Z")
    assert record["s3"]["bucket"] == {
        "name": "in-bucket",
        "ownerIdentity": {"principalId": "hybrid-watcher"},
        "arn": "arn:aws:s3:::in-bucket",
    }
    obj = record["s3"]["object"]
    assert obj["key"] == "videos/node-a/s1/a+b%2Bc.mp4"  # as S3 encodes it
    assert unquote_plus(obj["key"]) == key
    assert obj["size"] == 4242 and obj["eTag"] == "abc123"


async def test_invoke_retries_throttling(tmp_path: Path) -> None:
    async with Recorder(status=202) as server:
        server.queued = [lambda_error(429, "TooManyRequestsException")] * 2
        settings = settings_for(server.url, tmp_path)
        async with aws_clients(settings) as clients:
            await invoke_function(clients.lambda_, settings, "b-1", "videos/n/s/x.mp4", "e", 1)
    assert len(server.seen) == 3


async def test_invoke_of_a_missing_function_fails_at_once(tmp_path: Path) -> None:
    async with Recorder(status=202) as server:
        server.queued = [lambda_error(404, "ResourceNotFoundException")] * 3
        settings = settings_for(server.url, tmp_path)
        async with aws_clients(settings) as clients:
            with pytest.raises(TriggerFailed) as failed:
                await invoke_function(clients.lambda_, settings, "b-1", "videos/n/s/x.mp4", "e", 1)
    assert failed.value.retryable is False
    assert "ResourceNotFoundException" in failed.value.reason
    assert len(server.seen) == 1


async def test_an_unexpected_status_is_a_retryable_failure(tmp_path: Path) -> None:
    async with Recorder(status=200) as server:
        settings = settings_for(server.url, tmp_path)
        async with aws_clients(settings) as clients:
            with pytest.raises(TriggerFailed) as failed:
                await invoke_function(clients.lambda_, settings, "b-1", "videos/n/s/x.mp4", "e", 1)
    assert failed.value.retryable is True and "200" in failed.value.reason
