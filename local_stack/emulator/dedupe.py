"""Dropping duplicate S3 events for an object version the runtime already owns.

S3 delivers at least once, and moto sends two events for one multipart completion
(`ObjectCreated:Put` and `ObjectCreated:CompleteMultipartUpload`). The first message that
names an object version owns it; other messages naming only owned versions are dropped,
while the owner's own redeliveries (retries) still go through. Memory is bounded: the
oldest versions are forgotten first.

The same bytes uploaded again to the same key (the watcher does so when an input object
vanished) have the same ETag, but S3 records the new upload at a later time: an event more
than `SAME_UPLOAD_WINDOW_S` from the owned one's `eventTime` is a new upload, not a duplicate.
A redelivered event carries its original time; moto's twin events are milliseconds apart.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from datetime import datetime
from typing import Any, NamedTuple

from lambda_fn.s3_events import EventFormatError, S3Event

SAME_UPLOAD_WINDOW_S = 1.0


class ObjectVersion(NamedTuple):
    bucket: str
    key: str
    version_id: str
    etag: str  # or the sequencer; empty when the event has neither
    uploaded_at: float | None = None  # the event's time (epoch seconds), if it says

    @property
    def identity(self) -> tuple[str, str, str, str]:
        return (self.bucket, self.key, self.version_id, self.etag)


def _epoch(event_time: str | None) -> float | None:
    if not event_time:
        return None
    try:
        return datetime.fromisoformat(event_time).timestamp()
    except ValueError:
        return None


def object_versions(event: Any) -> list[ObjectVersion]:
    """The object versions an S3 event names; empty for test events and other payloads."""
    if not isinstance(event, dict) or not isinstance(event.get("Records"), list):
        return []
    try:
        return [
            ObjectVersion(
                ref.bucket,
                ref.key,
                ref.version_id or "",
                ref.etag or ref.sequencer or "",
                _epoch(ref.event_time),
            )
            for ref in S3Event(event).objects
            if ref.is_object_created
        ]
    except (EventFormatError, KeyError, TypeError, AttributeError):
        return []


def versions_in_body(body: str) -> list[ObjectVersion]:
    """The object versions in an SQS message body that holds an S3 event."""
    try:
        return object_versions(json.loads(body))
    except ValueError:
        return []


class DedupeRegistry:
    """Which message (or invocation) owns each recently seen object version; thread-safe."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        # identity → (owner, the owned event's time)
        self._owners: OrderedDict[tuple[str, str, str, str], tuple[str, float | None]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def claim(self, owner: str, versions: list[ObjectVersion]) -> bool:
        """True if `owner` should process these versions: some are new or already its own.

        Versions without an ETag cannot be told apart from a re-upload and are never deduped.
        """
        known = [v for v in versions if v.etag]
        if not versions or len(known) < len(versions):
            return True
        with self._lock:
            fresh = [v for v in known if self._is_new_to(owner, v)]
            if not fresh:
                return False
            for version in fresh:
                self._owners[version.identity] = (owner, version.uploaded_at)
            for version in known:
                self._owners.move_to_end(version.identity)
            while len(self._owners) > self._capacity:
                self._owners.popitem(last=False)
            return True

    def _is_new_to(self, owner: str, version: ObjectVersion) -> bool:
        """Unseen, already `owner`'s, or uploaded again since its owner's event."""
        seen = self._owners.get(version.identity)
        if seen is None or seen[0] == owner:
            return True
        owned_at, at = seen[1], version.uploaded_at
        return owned_at is not None and at is not None and abs(at - owned_at) > SAME_UPLOAD_WINDOW_S

    def __len__(self) -> int:
        with self._lock:
            return len(self._owners)
