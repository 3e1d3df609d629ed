"""Uploads in flight and how far each has got, for `hybrid-watcher status`.

The uploader reports once per part (8 MiB by default), never per byte: a 5 GiB file is 640
updates, each a few dictionary operations on the event loop. The heartbeat copies a snapshot
into the status file once a second.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass


@dataclass(slots=True)
class InFlight:
    """One file being uploaded."""

    key: str
    file: str
    total: int
    started_at: float
    sent: int = 0  # bytes S3 has confirmed, resumed parts included
    resumed: int = 0  # of which were already there from an earlier attempt


class UploadProgress:
    """The registry the uploader writes and the heartbeat reads (both on the event loop)."""

    def __init__(self) -> None:
        self._uploads: dict[str, InFlight] = {}

    def start(self, key: str, file: str, total: int) -> None:
        self._uploads[key] = InFlight(key, file, total, time.time())

    def advance(self, key: str, sent: int, *, resumed: bool = False) -> None:
        upload = self._uploads.get(key)
        if upload is not None:
            upload.sent = min(upload.total, upload.sent + sent)
            if resumed:
                upload.resumed += sent

    def finish(self, key: str) -> None:
        self._uploads.pop(key, None)

    def snapshot(self) -> list[dict[str, object]]:
        return [asdict(u) for u in sorted(self._uploads.values(), key=lambda u: u.started_at)]
