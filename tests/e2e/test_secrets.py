"""No secret leaves through an output: the function's result objects, the watcher's done/ files,
its journal or its logs, with recognisable credentials in the environment of both.

tests/common/test_logs.py proves the log redaction itself; these tests run the real handler
and the real daemon with the secrets in their environment and search everything they wrote.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import structlog

from hybrid_common.logs import configure_logging
from lambda_fn.handler import Runtime
from lambda_fn.known_faces import KnownFaces
from lambda_fn.safe_pickle import load_course_encodings
from lambda_fn.settings import FunctionSettings, RecognitionOptions
from tests.watcher_daemon import Daemon, StandInFunction, drop, make_cloud, video_bytes

# Shaped like real AWS credentials (so a redactor keyed on shapes would also have to work),
# and unique enough that a hit can only be a leak.
SECRET = "wJalrXUtnFEMI/K7MDENG/LeakCanary0SecretKeyXYZ"
TOKEN = "FwoGZXIvYXdzELeakCanary0SessionTokenQWERTY0123456789"
NEEDLES = [SECRET.encode(), TOKEN.encode()]


@dataclass
class Context:
    aws_request_id: str = "req-secrets"
    function_version: str = "$LATEST"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def leaks(data: bytes) -> list[bytes]:
    return [needle for needle in NEEDLES if needle in data]


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Debug-level JSON logs of this process (botocore's records included), restored after."""
    root_handlers = list(logging.getLogger().handlers)
    out = io.StringIO()
    configure_logging("debug", json=True, stream=out)
    yield out
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = root_handlers


@pytest.mark.slow
def test_handler_outputs_and_logs_hold_no_secret(
    moto_endpoint: str,
    shared_data: Path,
    tmp_path: Path,
    secret_env: None,
    log_stream: io.StringIO,
) -> None:
    suffix = uuid.uuid4().hex[:10]
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    dynamodb = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")
    inputs, outputs, table = f"in-{suffix}", f"out-{suffix}", f"students-{suffix}"
    for bucket in (inputs, outputs):
        s3.create_bucket(Bucket=bucket)
    dynamodb.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "name", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "name", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    known = KnownFaces.from_lists(*load_course_encodings(shared_data / "cse546" / "encoding"))
    s3.put_object(Bucket=inputs, Key="config/known_faces.json", Body=known.to_bytes())
    settings = FunctionSettings(
        endpoint_url=moto_endpoint,
        output_bucket=outputs,
        table=table,
        known_faces=f"s3://{inputs}/config/known_faces.json",
        tmp_dir=tmp_path / "lambda-tmp",
    )
    # No clients passed: the runtime builds its own from the environment, secrets included.
    runtime = Runtime(settings, RecognitionOptions())
    clip = (shared_data / "cse546" / "test_case_1" / "test_0.mp4").read_bytes()
    records = []
    for key, body in {
        "videos/vm-1/s-secret/clip.mp4": clip,  # a full result: CSV, details, contact sheet
        "videos/vm-1/s-secret/junk.mp4": b"not a video " + SECRET.encode(),  # an error doc
    }.items():
        s3.put_object(Bucket=inputs, Key=key, Body=body)
        records.append(
            {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
             "s3": {"bucket": {"name": inputs}, "object": {"key": key, "size": len(body)}}}
        )  # fmt: skip
    response = runtime.handle({"Records": records}, Context())
    runtime.pool.close()

    assert sorted(r["status"] for r in response["results"]) == ["error", "ok"], response
    written = s3.list_objects_v2(Bucket=outputs).get("Contents", [])
    names = sorted(o["Key"].rsplit("/", 1)[-1] for o in written)
    assert names == ["clip.csv", "clip.faces.jpg", "clip.json", "junk.error.json"], names
    for item in written:
        body = s3.get_object(Bucket=outputs, Key=item["Key"])["Body"].read()
        assert not leaks(body), item["Key"]
    assert not leaks(json.dumps(response).encode())
    text = log_stream.getvalue()
    assert "runtime.ready" in text  # the logs were captured, so their absence of secrets counts
    assert not leaks(text.encode())


@pytest.mark.slow
def test_watcher_done_files_journal_and_logs_hold_no_secret(
    moto_endpoint: str, tmp_path: Path, unique_name: str
) -> None:
    cloud = make_cloud(moto_endpoint, unique_name)
    daemon = Daemon(tmp_path / "node", cloud, log_level="debug")
    daemon.env.update({"AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN})
    with StandInFunction(cloud):
        daemon.start()
        try:
            for name in ("good.mp4", "broken.mp4"):
                drop(daemon.inbox, name, video_bytes(name))
            daemon.wait_until(lambda: daemon.concluded(2), timeout=60)
        finally:
            daemon.stop()

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any("done" in p.parts for p in files)
    assert any("failed" in p.parts for p in files)
    assert any(p.name.endswith(".log") for p in files)
    assert daemon.events("intake.taken")  # the debug-level logs were captured
    for path in files:  # done/, failed/, the journal (and its WAL), every run's log
        assert not leaks(path.read_bytes()), path
