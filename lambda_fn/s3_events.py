"""Typed views of what invokes the function: S3 event notifications, or the same wrapped in SQS.

Modelled on aws-powertools' `S3Event` data class: thin read-only wrappers over the event dict,
with the object key URL-decoded (S3 event keys are URL-encoded with '+' for spaces, so a
literal '+' arrives as '%2B'). Parsing is pure; the handler decides what to do with each record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import unquote_plus

from hybrid_common.json_errors import NOT_JSON

# The message S3 sends to a queue or topic when a notification is configured; not an object.
TEST_EVENT = "s3:TestEvent"


class EventFormatError(ValueError):
    """The payload is not an S3 notification, an SQS batch of them, or an S3 test event."""


class Source(StrEnum):
    """How the function was invoked."""

    S3 = "aws:s3"
    SQS = "aws:sqs"
    TEST = "s3:TestEvent"


@dataclass(frozen=True, slots=True)
class S3ObjectRef:
    """One object named by an S3 event record; `key` is already URL-decoded."""

    bucket: str
    key: str
    event_name: str = "ObjectCreated:Put"
    size: int | None = None
    etag: str | None = None
    version_id: str | None = None
    sequencer: str | None = None
    event_time: str | None = None  # the record's eventTime (ISO 8601), as S3 wrote it

    @property
    def is_object_created(self) -> bool:
        """Only new objects are videos to process; removals, restores etc. are ignored."""
        return self.event_name.startswith("ObjectCreated:")

    @property
    def identity(self) -> tuple[str, str, str]:
        """What makes two records the same upload (a multipart completion yields two events)."""
        return (self.bucket, self.key, self.etag or self.sequencer or "")


class S3EventRecord:
    """One record of an S3 event notification."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    @property
    def event_source(self) -> str:
        return str(self._data.get("eventSource", ""))

    @property
    def event_name(self) -> str:
        return str(self._data.get("eventName", ""))

    @property
    def aws_region(self) -> str:
        return str(self._data.get("awsRegion", ""))

    @property
    def bucket_name(self) -> str:
        return str(self._s3["bucket"]["name"])

    @property
    def object_key(self) -> str:
        """The key as stored in S3: event keys are URL-encoded, spaces as '+'."""
        return unquote_plus(str(self._s3["object"]["key"]))

    @property
    def object(self) -> S3ObjectRef:
        """The record as a plain value; raises EventFormatError if bucket or key is missing."""
        try:
            obj = self._s3["object"]
            size = obj.get("size")
            return S3ObjectRef(
                bucket=self.bucket_name,
                key=self.object_key,
                event_name=self.event_name,
                size=int(size) if size is not None else None,
                etag=_optional_str(obj.get("eTag")),
                version_id=_optional_str(obj.get("versionId")),
                sequencer=_optional_str(obj.get("sequencer")),
                event_time=_optional_str(self._data.get("eventTime")),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise EventFormatError(f"S3 record without bucket or object key: {error}") from error

    @property
    def _s3(self) -> Mapping[str, Any]:
        s3 = self._data.get("s3")
        if not isinstance(s3, Mapping):
            raise EventFormatError("S3 record without an 's3' section")
        return s3


class S3Event:
    """An S3 event notification: one or more records."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    @property
    def records(self) -> Iterator[S3EventRecord]:
        for record in self._data.get("Records") or []:
            yield S3EventRecord(record)

    @property
    def objects(self) -> list[S3ObjectRef]:
        """Every record's object, duplicates (same bucket, key and ETag) dropped, order kept."""
        seen: dict[tuple[str, str, str], S3ObjectRef] = {}
        for record in self.records:
            ref = record.object
            seen.setdefault(ref.identity, ref)
        return list(seen.values())


class SQSRecord:
    """One SQS message whose body is an S3 event notification (or S3's test event)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    @property
    def message_id(self) -> str:
        return str(self._data.get("messageId", ""))

    @property
    def body(self) -> str:
        return str(self._data.get("body", ""))

    @property
    def is_test_event(self) -> bool:
        try:
            return is_test_event(json.loads(self.body))
        except NOT_JSON:
            return False

    @property
    def s3_event(self) -> S3Event:
        """The S3 event in the body; raises EventFormatError when the body is something else."""
        try:
            body = json.loads(self.body)
        except NOT_JSON as error:
            raise EventFormatError(f"SQS message body is not JSON: {error}") from error
        if not isinstance(body, Mapping) or not isinstance(body.get("Records"), list):
            raise EventFormatError("SQS message body is not an S3 event notification")
        return S3Event(body)


class SQSEvent:
    """A batch of SQS messages delivered by the SQS event source mapping."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    @property
    def records(self) -> Iterator[SQSRecord]:
        for record in self._data.get("Records") or []:
            yield SQSRecord(record)


def is_test_event(payload: Any) -> bool:
    """True for `{"Service": "Amazon S3", "Event": "s3:TestEvent", ...}`."""
    return isinstance(payload, Mapping) and payload.get("Event") == TEST_EVENT


def source_of(event: Any) -> Source:
    """Which kind of invocation this is; raises EventFormatError for anything else."""
    if is_test_event(event):
        return Source.TEST
    records = event.get("Records") if isinstance(event, Mapping) else None
    if not isinstance(records, list) or not records or not isinstance(records[0], Mapping):
        raise EventFormatError("event has no Records: not an S3 or SQS event")
    source = records[0].get("eventSource")
    if source == Source.SQS.value:
        return Source.SQS
    if source == Source.S3.value or "s3" in records[0]:
        return Source.S3
    raise EventFormatError(f"unsupported event source {source!r}")


def _optional_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
