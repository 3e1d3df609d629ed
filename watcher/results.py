"""Collecting results: list this node's prefix of the output bucket, fetch what is final.

One listing from a cursor (`StartAfter`) answers for every pending submission at once, where a
HEAD per pending file would cost a request each (1,000 HEADs ~4.5 s against moto, one listing
~10 ms). The function writes the CSV (or `<stem>.error.json`) last, so only those two kinds
mean "finished"; the details JSON and the contact sheet are fetched beside them.

Everything in the output bucket is treated as untrusted: each file has a size limit checked
before its body is read, the bytes held in memory across all fetches are bounded by a shared
budget, a final file that cannot be read ends its submission (`ResultUnreadable`) instead of
being fetched again every poll, and a bad details file only loses the details.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybrid_common.json_errors import NOT_JSON
from hybrid_common.keys import ResultKind, node_prefix
from hybrid_common.logs import get_logger
from hybrid_common.results import ErrorDoc, PersonRow, iter_csv, write_csv
from watcher.retry import RetryBudget, error_code
from watcher.settings import WatcherSettings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = get_logger(__name__)

FINAL_KINDS = (ResultKind.CSV, ResultKind.ERROR)
# Listing and GETs are cheap and the next tick tries again: a short retry budget.
POLL_ATTEMPTS = 3
POLL_SECONDS = 10.0
# Bytes of result files in memory at once, across all concurrent fetches. With the default
# limits one result holds at most 8 MiB CSV + 8 MiB contact sheet + a 256 KiB details JSON
# (x JSON_EXPANSION parsed): 24 MiB. A result over this runs alone.
FETCH_BUDGET_BYTES = 32 * 1024 * 1024
# json.loads makes objects up to ~25x the document's size (measured: 256 KiB of `[{},{},...]`
# peaks at 6.6 MB under tracemalloc); the budget counts a JSON document 32 times.
JSON_EXPANSION = 32
# What a result may put in the journal and the logs, whatever its files hold.
SUMMARY_PEOPLE = 50
SUMMARY_CHARS = 200
SUMMARY_TIMINGS = 32
ERROR_MESSAGE_CHARS = 2000


class ResultUnreadable(Exception):
    """A final result file that will never be readable: its submission fails with `code`."""

    def __init__(self, code: str, message: str, raw: bytes | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.raw = raw  # the bytes as fetched, kept beside the video for a person to look at


@dataclass(frozen=True)
class ResultReady:
    """A final result file seen in the output bucket, with the sizes the listing gave."""

    stem: str  # the input key without its extension: matches `keys.stem_of(input key)`
    kind: ResultKind  # CSV or ERROR
    key: str
    last_modified: datetime
    size: int = 0
    details_size: int | None = None  # None: no details file was listed
    faces_size: int | None = None


@dataclass
class ResultFiles:
    """What was fetched for one result; optional files missing, too large or bad are None."""

    csv: bytes | None  # as fetched; `prepare_csv` checks and renders it
    details: bytes | None  # as fetched (stored byte for byte), a JSON object within the limit
    timings: dict[str, float] | None  # from the details, bounded
    faces_jpg: bytes | None
    error: ErrorDoc | None  # its fields bounded


@dataclass
class CsvSummary:
    """The first rows of a CSV (fields cut short) and how many rows it had."""

    rows: list[PersonRow] = field(default_factory=list)
    count: int = 0
    complete: bool = True  # `rows` is the whole CSV, nothing cut


class ByteBudget:
    """Bytes that may be held at once; requests are served in order (a large one is not
    starved by a stream of small ones). A request over the capacity takes all of it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0
        self.peak = 0
        self._order = asyncio.Lock()
        self._released = asyncio.Event()

    @asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        size = min(max(size, 0), self.capacity)
        async with self._order:
            while self.held + size > self.capacity:
                self._released.clear()
                await self._released.wait()
            self.held += size
            self.peak = max(self.peak, self.held)
        try:
            yield
        finally:
            self.held -= size
            self._released.set()


class ResultPoller:
    """Lists and fetches this node's results; holds no state between calls but the budget."""

    def __init__(self, s3: S3Client, settings: WatcherSettings) -> None:
        self._s3 = s3
        self._settings = settings
        self._bucket = settings.output_bucket
        self._prefix = node_prefix(settings.key_prefix, settings.node_id)
        self._naming = settings.naming
        largest = 2 * settings.result_max_bytes + JSON_EXPANSION * settings.result_json_max_bytes
        self.budget = ByteBudget(max(FETCH_BUDGET_BYTES, largest))

    def _budget(self) -> RetryBudget:
        s = self._settings
        return RetryBudget.start(
            POLL_ATTEMPTS, POLL_SECONDS, s.retry_base_delay_s, s.retry_max_delay_s
        )

    def start_before(self, submission_id: str) -> str:
        """The `StartAfter` that lists `submission_id`'s results and every later one's.

        It ends in "/": SeaweedFS lists folder by folder and, given `<id>`, skips the whole
        folder `<id>/`, where AWS and moto compare whole keys; `<id>/` sorts before every key
        in that folder on all three.
        """
        return f"{self._prefix}{submission_id}/"

    async def poll_once(self, start_after: str, folder: str | None = None) -> list[ResultReady]:
        """Final results under this node's prefix with keys after `start_after`, in key order.

        `folder` (a submission's folder, under this node's prefix) lists that folder only: what
        a notified result needs, its own and its companions' sizes, for one small listing.
        Transient errors are retried briefly, then raised: the caller logs and tries again at
        its next tick.
        """
        prefix = self._prefix
        if folder is not None:
            if not folder.startswith(self._prefix) or not folder.endswith("/"):
                raise ValueError(f"{folder!r} is not a folder under {self._prefix!r}")
            prefix = folder
        budget = self._budget()
        listed: list[tuple[str, int, datetime]] = []
        token: str | None = None
        while True:
            args: dict[str, Any] = {
                "Bucket": self._bucket,
                "Prefix": prefix,
                "MaxKeys": self._settings.poll_page_size,
            }
            if token:
                args["ContinuationToken"] = token
            elif start_after:
                args["StartAfter"] = start_after

            async def list_page(args: dict[str, Any] = args) -> dict[str, Any]:
                return dict(await self._s3.list_objects_v2(**args))

            page = await budget.call("results.poll", list_page)
            for item in page.get("Contents", []):
                listed.append((item["Key"], int(item.get("Size", 0)), item["LastModified"]))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                break
        sizes = {key: size for key, size, _ in listed}
        found = []
        for key, size, modified in listed:
            # With the classic CSV key (`{stem}`) one key can be read two ways; the pipeline
            # keeps the reading whose stem it awaits.
            for stem, kind in self._naming.finals(key):
                found.append(
                    ResultReady(
                        stem, kind, key, modified, size,
                        details_size=sizes.get(stem + ResultKind.DETAILS.value),
                        faces_size=sizes.get(stem + ResultKind.FACES.value),
                    )
                )  # fmt: skip
        return found

    @asynccontextmanager
    async def fetch(self, ready: ResultReady) -> AsyncIterator[ResultFiles]:
        """The result's files, held within the shared byte budget until the block ends.

        Raises ResultUnreadable for a final file that is too large or cannot be read, and
        other errors (a vanished object, S3 trouble) for what the next poll may fix.
        """
        async with self.budget.hold(self._reservation(ready)):
            yield await self._fetch(ready)

    def _reservation(self, ready: ResultReady) -> int:
        s = self._settings
        if ready.kind is ResultKind.ERROR:
            return min(ready.size, s.result_json_max_bytes) * JSON_EXPANSION
        total = min(ready.size, s.result_max_bytes)
        if ready.details_size is not None and ready.details_size <= s.result_json_max_bytes:
            total += ready.details_size * JSON_EXPANSION
        if ready.faces_size is not None and ready.faces_size <= s.result_max_bytes:
            total += ready.faces_size
        return total

    async def _fetch(self, ready: ResultReady) -> ResultFiles:
        s = self._settings
        budget = self._budget()
        if ready.kind is ResultKind.ERROR:
            if ready.size > s.result_json_max_bytes:
                raise _too_large(ready.key, ready.size, "result_json_max_bytes")
            data = await self._get(ready.key, budget, ready.size, required=True)
            assert data is not None  # noqa: S101 -- required files raise instead
            return ResultFiles(None, None, None, None, read_error_doc(data, ready.key))
        if ready.size > s.result_max_bytes:
            raise _too_large(ready.key, ready.size, "result_max_bytes")
        details_key = ready.stem + ResultKind.DETAILS.value
        faces_key = ready.stem + ResultKind.FACES.value
        details_size = self._optional(details_key, ready.details_size, s.result_json_max_bytes)
        faces_size = self._optional(faces_key, ready.faces_size, s.result_max_bytes)
        main, details, faces = await asyncio.gather(
            self._get(ready.key, budget, ready.size, required=True),
            self._get(details_key, budget, details_size),
            self._get(faces_key, budget, faces_size),
        )
        details, timings = read_details(details, details_key)
        return ResultFiles(main, details, timings, faces, None)

    @staticmethod
    def _optional(key: str, size: int | None, limit: int) -> int | None:
        """The size to fetch an optional file at, or None to leave it out (logged)."""
        if size is not None and size > limit:
            log.warning("result.details_dropped" if key.endswith(ResultKind.DETAILS.value)
                        else "result.file_dropped", key=key, reason="too_large", bytes=size,
                        limit=limit)  # fmt: skip
            return None
        return size

    async def _get(
        self, key: str, budget: RetryBudget, size: int | None, *, required: bool = False
    ) -> bytes | None:
        """An object's bytes, at most `size` (what the listing said, and the budget holds).

        None for an optional file not listed, gone, or grown since it was listed.
        """
        if size is None:
            return None

        async def get() -> bytes | None:
            try:
                response = await self._s3.get_object(Bucket=self._bucket, Key=key)
            except Exception as error:
                if not required and error_code(error) in ("NoSuchKey", "404"):
                    return None
                raise
            # The body holds a pooled connection until read or closed: always do one.
            async with response["Body"] as body:
                if response["ContentLength"] > size:
                    # Rewritten since the listing: the budget does not cover it. A final
                    # file is tried again at the next poll, with its new size.
                    log.warning("result.changed", key=key, bytes=response["ContentLength"])
                    if required:
                        raise ValueError(f"{key} changed since it was listed")
                    return None
                data: bytes = await body.read()
                return data

        return await budget.call("results.fetch", get, key=key)


def _too_large(key: str, size: int, setting: str) -> ResultUnreadable:
    return ResultUnreadable("result_too_large", f"{key} is {size} bytes, over {setting}")


def read_error_doc(data: bytes, key: str) -> ErrorDoc:
    """`<stem>.error.json` with its fields cut to size; ResultUnreadable if it is not one."""
    try:
        value = json.loads(data.decode("utf-8"))
    except NOT_JSON as error:
        reason = "not UTF-8" if isinstance(error, UnicodeDecodeError) else "not JSON"
        raise ResultUnreadable("result_unreadable", f"{key}: {reason}", raw=data) from None
    if not isinstance(value, dict):
        message = f"{key}: not a JSON object ({type(value).__name__})"
        raise ResultUnreadable("result_unreadable", message, raw=data)
    doc = ErrorDoc.from_json(json.dumps(value))
    return ErrorDoc(
        code=doc.code[:64],
        message=doc.message[:ERROR_MESSAGE_CHARS],
        request_id=doc.request_id[:128],
        input_key=doc.input_key[:1024],
    )


def read_details(data: bytes | None, key: str) -> tuple[bytes | None, dict[str, float] | None]:
    """The details bytes if they are a JSON object, and its timings (bounded); anything
    wrong drops the details only (logged): they are optional, the CSV is the answer."""
    if data is None:
        return None, None
    try:
        value = json.loads(data)
    except NOT_JSON as error:
        reason = "too_deep" if isinstance(error, RecursionError) else "not_json"
        log.warning("result.details_dropped", key=key, reason=reason, bytes=len(data))
        return None, None
    if not isinstance(value, dict):
        log.warning("result.details_dropped", key=key, reason="not_an_object", bytes=len(data))
        return None, None
    timings = value.get("timings")
    if not isinstance(timings, dict):
        return data, None
    bounded = {
        str(name)[:64]: float(seconds)
        for name, seconds in list(timings.items())[:SUMMARY_TIMINGS]
        if isinstance(seconds, int | float) and not isinstance(seconds, bool)
        and math.isfinite(seconds)
    }  # fmt: skip
    return data, bounded


def prepare_csv(data: bytes, target: Path, *, header: bool) -> tuple[Path, CsvSummary]:
    """Check a fetched CSV and write it, as `render_csv` would, to a hidden temp file beside
    `target` (rename it into place last). Row by row: a large CSV is never held as objects.

    Every field is rewritten by the shared renderer, so what lands in done/ is neutralised
    against formula injection whichever function version wrote it. Raises ResultUnreadable
    for bytes that are not a UTF-8 CSV.
    """
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    summary = CsvSummary()

    def rows() -> Iterator[PersonRow]:
        text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline="")
        for row in iter_csv(text, header=header):
            values = (row.name, row.major, row.year)
            if len(summary.rows) < SUMMARY_PEOPLE:
                summary.rows.append(PersonRow(*(value[:SUMMARY_CHARS] for value in values)))
                summary.complete &= all(len(value) <= SUMMARY_CHARS for value in values)
            else:
                summary.complete = False
            yield row

    try:
        with tmp.open("w", encoding="utf-8", newline="") as out:
            summary.count = write_csv(out, rows(), header=header)
            out.flush()
            os.fsync(out.fileno())
    except (UnicodeDecodeError, csv.Error) as error:
        tmp.unlink(missing_ok=True)
        reason = "not UTF-8" if isinstance(error, UnicodeDecodeError) else f"not a CSV ({error})"
        raise ResultUnreadable("result_unreadable", f"{target.name}: {reason}", raw=data) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, summary
