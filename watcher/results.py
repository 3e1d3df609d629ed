"""Collecting results: list this node's prefix of the output bucket, fetch what is final.

One listing from a cursor (`StartAfter`) answers for every pending submission at once, where a
HEAD per pending file would cost a request each (1,000 HEADs ~4.5 s against moto, one listing
~10 ms). The function writes `<stem>.csv` (or `<stem>.error.json`) last, so only those two
kinds mean "finished"; the details JSON and the contact sheet are fetched beside them.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hybrid_common.keys import ResultKind, node_prefix, split_result_key
from hybrid_common.logs import get_logger
from hybrid_common.results import ErrorDoc
from watcher.retry import RetryBudget, error_code
from watcher.settings import WatcherSettings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = get_logger(__name__)

FINAL_KINDS = (ResultKind.CSV, ResultKind.ERROR)
# Listing and GETs are cheap and the next tick tries again: a short retry budget.
POLL_ATTEMPTS = 3
POLL_SECONDS = 10.0


@dataclass(frozen=True)
class ResultReady:
    """A final result file seen in the output bucket."""

    stem: str  # the input key without its extension: matches `keys.stem_of(input key)`
    kind: ResultKind  # CSV or ERROR
    key: str
    last_modified: datetime


@dataclass
class ResultFiles:
    """What was fetched for one result; optional files missing (or too large) are None."""

    csv_text: str | None
    details: dict[str, Any] | None
    faces_jpg: bytes | None
    error: ErrorDoc | None


class ResultPoller:
    """Lists and fetches this node's results; holds no state between calls."""

    def __init__(self, s3: S3Client, settings: WatcherSettings) -> None:
        self._s3 = s3
        self._settings = settings
        self._bucket = settings.output_bucket
        self._prefix = node_prefix(settings.key_prefix, settings.node_id)

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

    async def poll_once(self, start_after: str) -> list[ResultReady]:
        """Final results under this node's prefix with keys after `start_after`, in key order.

        Transient errors are retried briefly, then raised: the caller logs and tries again at
        its next tick.
        """
        budget = self._budget()
        found: list[ResultReady] = []
        token: str | None = None
        while True:
            args: dict[str, Any] = {
                "Bucket": self._bucket,
                "Prefix": self._prefix,
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
                split = split_result_key(item["Key"])
                if split and split[1] in FINAL_KINDS:
                    found.append(ResultReady(split[0], split[1], item["Key"], item["LastModified"]))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return found

    async def fetch(self, ready: ResultReady) -> ResultFiles:
        """GET the final file and, concurrently, the optional details JSON and contact sheet."""
        budget = self._budget()
        main, details, faces = await asyncio.gather(
            self._get(ready.key, budget, required=True),
            self._get(ready.stem + ResultKind.DETAILS.value, budget),
            self._get(ready.stem + ResultKind.FACES.value, budget),
        )
        if main is None:  # only when over result_max_bytes, which raises for required files
            raise ValueError(f"{ready.key} could not be read")
        details_doc = None
        if details is not None:
            details_doc = _json_object(details, ready.stem + ResultKind.DETAILS.value)
        if ready.kind is ResultKind.ERROR:
            return ResultFiles(None, details_doc, faces, ErrorDoc.from_json(main.decode()))
        return ResultFiles(main.decode("utf-8", "replace"), details_doc, faces, None)

    async def _get(self, key: str, budget: RetryBudget, *, required: bool = False) -> bytes | None:
        """An object's bytes; None if it is missing (optional files) or over the size cap."""

        async def get() -> bytes | None:
            try:
                response = await self._s3.get_object(Bucket=self._bucket, Key=key)
            except Exception as error:
                if not required and error_code(error) in ("NoSuchKey", "404"):
                    return None
                raise
            # The body holds a pooled connection until read or closed: always do one.
            async with response["Body"] as body:
                if response["ContentLength"] > self._settings.result_max_bytes:
                    log.warning("result.too_large", key=key, bytes=response["ContentLength"])
                    if required:
                        raise ValueError(f"{key} is larger than result_max_bytes")
                    return None
                data: bytes = await body.read()
                return data

        return await budget.call("results.fetch", get, key=key)


def _json_object(data: bytes, key: str) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except ValueError:
        log.warning("result.details_unreadable", key=key)
        return None
    return value if isinstance(value, dict) else None
