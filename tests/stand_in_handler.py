"""A stand-in for the real handler, for tests of the local runtime and the workload.

Same contract as lambda_fn.handler: S3 events, SQS-wrapped S3 events (with batchItemFailures),
`<stem>.csv` written to the output bucket. It answers from STAND_IN_ANSWERS (a JSON file
{video name: [[name, major, year], ...]}) or with an empty CSV, sleeps STAND_IN_SLEEP_S per
video, appends `<key> <pid> <what>` to STAND_IN_STATE/invocations.log, and misbehaves on
request, by object name:
  crash-once  os._exit(3) the first time (a function crash mid-video), then answers
  hang-once   sleeps forever the first time (a timeout), then answers
  fail-always reports the record as failed, every time
  boom        raises (an unhandled function error)
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import boto3

STATE = Path(os.environ.get("STAND_IN_STATE", "/tmp/stand-in-state"))
SLEEP_S = float(os.environ.get("STAND_IN_SLEEP_S", "0.2"))
ANSWERS: dict[str, list[list[str]]] = (
    json.loads(Path(os.environ["STAND_IN_ANSWERS"]).read_text())
    if os.environ.get("STAND_IN_ANSWERS")
    else {}
)
OUTPUT_BUCKET = os.environ.get("HYBRID_OUTPUT_BUCKET", "hybridsphere-output")
# Created once per execution environment, reused while warm, like the real handler's clients.
S3 = boto3.client("s3", endpoint_url=os.environ.get("HYBRID_ENDPOINT_URL"))


def _note(key: str, what: str) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    with (STATE / "invocations.log").open("a", encoding="utf-8") as log:
        log.write(f"{key} {os.getpid()} {what}\n")


def _first_time(key: str, trouble: str) -> bool:
    marker = STATE / f"{trouble}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    try:
        marker.touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


def process(bucket: str, key: str) -> None:
    name = key.rsplit("/", 1)[-1]
    _note(key, "start")
    if "crash-once" in name and _first_time(key, "crash"):
        _note(key, "crash")
        os._exit(3)
    if "hang-once" in name and _first_time(key, "hang"):
        _note(key, "hang")
        time.sleep(3600)
    if "fail-always" in name:
        _note(key, "fail")
        raise RuntimeError(f"stand-in failure for {key}")
    if "boom" in name:
        _note(key, "boom")
        raise ValueError("boom")
    S3.head_object(Bucket=bucket, Key=key)  # the input exists, as the real handler checks
    time.sleep(SLEEP_S)
    rows = _answer_for(name)
    body = "".join(",".join(row) + "\n" for row in rows)
    stem = key.rsplit(".", 1)[0]
    S3.put_object(Bucket=OUTPUT_BUCKET, Key=f"{stem}.csv", Body=body.encode())
    _note(key, "done")


def _answer_for(name: str) -> list[list[str]]:
    """The answer for `clip.mp4`, also when uploaded under a prefixed name (`wl-1-clip.mp4`)."""
    matches = [v for v in ANSWERS if name == v or name.endswith("-" + v)]
    return ANSWERS[max(matches, key=len)] if matches else []


def _objects(s3_event: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (r["s3"]["bucket"]["name"], unquote_plus(r["s3"]["object"]["key"]))
        for r in s3_event.get("Records", [])
    ]


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    records = event.get("Records", [])
    if records and records[0].get("eventSource") == "aws:sqs":
        failures = []
        for record in records:
            body = json.loads(record["body"])
            try:
                for bucket, key in _objects(body):
                    process(bucket, key)
            except Exception:
                failures.append({"itemIdentifier": record["messageId"]})
        return {"batchItemFailures": failures}
    processed = []
    for bucket, key in _objects(event):
        process(bucket, key)
        processed.append(key)
    return {
        "processed": processed,
        "request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
