"""Parsing of S3 notifications, SQS-wrapped notifications and S3's test event."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lambda_fn.s3_events import (
    EventFormatError,
    S3Event,
    S3EventRecord,
    Source,
    SQSEvent,
    is_test_event,
    source_of,
)

EVENTS = Path(__file__).resolve().parent.parent / "events"


def load_event(name: str) -> Any:
    """A sample payload from tests/events (as powertools' tests do)."""
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def test_put_event_gives_one_object_with_its_metadata() -> None:
    event = load_event("s3_put.json")
    assert source_of(event) is Source.S3
    (ref,) = S3Event(event).objects
    assert ref.bucket == "hybridsphere-input"
    assert ref.key == "videos/vm-1/2026-11-27T190000Z-0001/test_0.mp4"
    assert ref.size == 322588
    assert ref.etag == "0123456789abcdef0123456789abcdef"
    assert ref.is_object_created


def test_key_with_spaces_plus_and_unicode_is_decoded() -> None:
    (ref,) = S3Event(load_event("s3_key_special_chars.json")).objects
    assert ref.key == "videos/vm-1/s-0003/my clip+1 été.mp4"


def test_multi_record_event_drops_the_duplicate_multipart_announcement() -> None:
    refs = S3Event(load_event("s3_multi_record.json")).objects
    assert [r.key.rsplit("/", 1)[-1] for r in refs] == ["test_1.mp4", "test_2.mp4", "old.mp4"]
    assert [r.is_object_created for r in refs] == [True, True, False]


def test_test_event_is_recognised_directly_and_inside_sqs() -> None:
    assert source_of(load_event("s3_test_event.json")) is Source.TEST
    assert is_test_event(load_event("s3_test_event.json"))
    batch = load_event("sqs_s3_batch.json")
    assert source_of(batch) is Source.SQS
    flags = [record.is_test_event for record in SQSEvent(batch).records]
    assert flags == [True, False, False]


def test_sqs_bodies_are_s3_events() -> None:
    records = list(SQSEvent(load_event("sqs_s3_batch.json")).records)
    assert records[1].message_id == "2e1424d4-f796-459a-8184-9c92662be6da"
    keys = [ref.key for record in records[1:] for ref in record.s3_event.objects]
    assert keys == [
        "videos/vm-1/2026-11-27T190000Z-0001/test_0.mp4",
        "videos/vm-1/s-0003/my clip+1 été.mp4",
    ]


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        '{"Message": "an SNS envelope"}',
        "[" * 100_000 + "]" * 100_000,  # deeper than the parser's stack: RecursionError
        "[" + "9" * 5000 + "]",  # past Python's 4,300-digit integer limit: ValueError
    ],
    ids=["text", "list", "sns", "deep", "huge-int"],
)
def test_sqs_body_that_is_not_an_s3_event_is_a_format_error(body: str) -> None:
    (record,) = SQSEvent({"Records": [{"messageId": "m1", "body": body}]}).records
    assert not record.is_test_event
    with pytest.raises(EventFormatError):
        _ = record.s3_event


@pytest.mark.parametrize(
    "event",
    [{}, {"Records": []}, {"Records": [{"eventSource": "aws:sns"}]}, [], "text", None],
)
def test_unknown_payloads_are_format_errors(event: Any) -> None:
    with pytest.raises(EventFormatError):
        source_of(event)


def test_record_without_object_key_is_a_format_error() -> None:
    record = S3EventRecord({"eventSource": "aws:s3", "s3": {"bucket": {"name": "b"}}})
    with pytest.raises(EventFormatError):
        _ = record.object


@given(st.text(min_size=1, max_size=60).filter(lambda s: "\x00" not in s))
def test_any_key_survives_s3_url_encoding(key: str) -> None:
    # S3 encodes keys in notifications like quote_plus (spaces as '+', '+' as %2B).
    event = {
        "Records": [
            {
                "eventSource": "aws:s3",
                "s3": {"bucket": {"name": "b"}, "object": {"key": quote_plus(key, safe="/")}},
            }
        ]
    }
    assert S3Event(event).objects[0].key == key
