"""Dropping duplicate S3 events for an object version the runtime already owns.

S3 delivers at least once, and moto sends two events for one multipart completion
(`ObjectCreated:Put` and `ObjectCreated:CompleteMultipartUpload`). The first message that
names an object version owns it; other messages naming only owned versions are dropped,
while the owner's own redeliveries (retries) still go through. Memory is bounded: the
oldest versions are forgotten first.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

from lambda_fn.events import EventFormatError, S3Event

ObjectVersion = tuple[str, str, str, str]  # bucket, key, version id, ETag (or sequencer)


def object_versions(event: Any) -> list[ObjectVersion]:
    """The object versions an S3 event names; empty for test events and other payloads."""
    if not isinstance(event, dict) or not isinstance(event.get("Records"), list):
        return []
    try:
        return [
            (ref.bucket, ref.key, ref.version_id or "", ref.etag or ref.sequencer or "")
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
        self._owners: OrderedDict[ObjectVersion, str] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, owner: str, versions: list[ObjectVersion]) -> bool:
        """True if `owner` should process these versions: some are new or already its own.

        Versions without an ETag cannot be told apart from a re-upload and are never deduped.
        """
        known = [v for v in versions if v[3]]
        if not versions or len(known) < len(versions):
            return True
        with self._lock:
            owners = {self._owners.get(v) for v in known}
            if None in owners or owner in owners:
                for version in known:
                    self._owners.setdefault(version, owner)
                    self._owners.move_to_end(version)
                while len(self._owners) > self._capacity:
                    self._owners.popitem(last=False)
                return True
            return False

    def __len__(self) -> int:
        with self._lock:
            return len(self._owners)
