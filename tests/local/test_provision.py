"""Provisioning against moto's server: everything exists, twice is the same as once."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import unquote_plus

from hybrid_common.students import load_students, read_students
from hybrid_common.video_suffixes import TRIGGER_SUFFIXES, VIDEO_SUFFIXES, triggers
from local_stack.provision import (
    KNOWN_FACES_KEY,
    MAX_RECEIVE_COUNT,
    Resources,
    make_clients,
    provision,
)


def resources_for(endpoint: str, name: str) -> Resources:
    return Resources(
        endpoint_url=endpoint,
        region="us-east-1",
        input_bucket=f"{name}-in",
        output_bucket=f"{name}-out",
        table=f"{name}-students",
        queue=f"{name}-events",
    )


def receive_records(sqs: object, queue_url: str, want: int, timeout_s: float = 10) -> list[dict]:
    """Collect S3 event records (skipping s3:TestEvent) until `want` arrive or time runs out."""
    records: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < want and time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages", [])  # type: ignore[attr-defined]
        for message in messages:
            body = json.loads(message["Body"])
            records.extend(body.get("Records", []))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])  # type: ignore[attr-defined]
    return records


def test_provision_is_idempotent_and_wires_notifications(
    moto_endpoint: str, unique_name: str
) -> None:
    clients = make_clients(moto_endpoint, "us-east-1")
    wanted = resources_for(moto_endpoint, unique_name)
    first = provision(clients, wanted, function_timeout_s=60, known_faces=b'{"version": 1}')
    second = provision(clients, wanted, function_timeout_s=60, known_faces=b'{"version": 1}')
    assert first == second

    buckets = {b["Name"] for b in clients.s3.list_buckets()["Buckets"]}
    assert {wanted.input_bucket, wanted.output_bucket} <= buckets
    table = clients.dynamodb.describe_table(TableName=wanted.table)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "name", "KeyType": "HASH"}]
    attrs = clients.sqs.get_queue_attributes(QueueUrl=first.queue_url, AttributeNames=["All"])
    assert attrs["Attributes"]["VisibilityTimeout"] == "60"
    # In the input bucket, as on AWS: the function writes the output bucket at any key.
    redrive = json.loads(attrs["Attributes"]["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == MAX_RECEIVE_COUNT
    assert first.known_faces_uri == f"s3://{wanted.input_bucket}/{KNOWN_FACES_KEY}"

    clients.s3.put_object(Bucket=wanted.input_bucket, Key="videos/n/s/my clip.mp4", Body=b"x")
    clients.s3.put_object(Bucket=wanted.input_bucket, Key="videos/n/s/notes.txt", Body=b"x")
    records = receive_records(clients.sqs, first.queue_url, want=1)
    # Keys arrive URL-encoded (moto also encodes '/'), and the .txt object is filtered out.
    keys = [unquote_plus(r["s3"]["object"]["key"]) for r in records]
    assert keys == ["videos/n/s/my clip.mp4"]


def test_students_load_from_course_file(
    moto_endpoint: str, unique_name: str, shared_data: Path
) -> None:
    clients = make_clients(moto_endpoint, "us-east-1")
    provision(clients, resources_for(moto_endpoint, unique_name), function_timeout_s=60)
    students = read_students(shared_data / "cse546" / "student_data.json")
    assert load_students(clients.dynamodb, f"{unique_name}-students", students) == 8
    item = clients.dynamodb.get_item(
        TableName=f"{unique_name}-students", Key={"name": {"S": "mr_bean"}}
    )["Item"]
    assert item["year"] == {"S": "freshmen"}
    assert item["major"] == {"S": "lawyer"}


def test_notifications_are_the_one_trigger_definition_at_any_key(
    moto_endpoint: str, unique_name: str
) -> None:
    """Every extension the watcher accepts triggers, at any key, as the SAM template's do
    (tests/deploy/test_video_triggers.py): read back from moto and delivered by it."""
    clients = make_clients(moto_endpoint, "us-east-1")
    wanted = resources_for(moto_endpoint, unique_name)
    made = provision(clients, wanted, function_timeout_s=60, known_faces=b'{"version": 1}')
    config = clients.s3.get_bucket_notification_configuration(Bucket=wanted.input_bucket)
    rules = [
        {rule["Name"].lower(): rule["Value"] for rule in c["Filter"]["Key"]["FilterRules"]}
        for c in config["QueueConfigurations"]
    ]
    assert sorted(rule["suffix"] for rule in rules) == sorted(TRIGGER_SUFFIXES)
    assert all("prefix" not in rule for rule in rules)

    puts = [
        *(f"clip{suffix}" for suffix in VIDEO_SUFFIXES),  # the bucket's root: `aws s3 cp`
        "IMG_0001.MOV",
        "other/GX010001.MP4",
        "videos/n/s/clip.ts",
        "clip.Mp4",  # mixed case: nothing, as on AWS
        "notes.txt",
    ]
    for key in puts:
        clients.s3.put_object(Bucket=wanted.input_bucket, Key=key, Body=b"x")
    expected = sorted(key for key in puts if triggers(key))
    records = receive_records(clients.sqs, made.queue_url, want=len(expected))
    time.sleep(0.5)  # anything that should not come has had time to
    records += receive_records(clients.sqs, made.queue_url, want=1, timeout_s=1)
    assert sorted(unquote_plus(r["s3"]["object"]["key"]) for r in records) == expected
    assert len(expected) == len(VIDEO_SUFFIXES) + 3
