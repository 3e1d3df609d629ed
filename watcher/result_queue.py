"""Result notifications: the output bucket's ObjectCreated events for this node, via SQS.

The output bucket notifies a per-node queue when the function writes `<stem>.csv` or
`<stem>.error.json` under this node's prefix; a long poll on that queue hands the result to
the watcher within milliseconds, where the LIST poll waits for its next tick. The LIST poll
stays as the backstop (a lost or late notification, a queue that is down): notifications only
make results earlier, never decide them. A notification is a hint, not a fact: its key must be
a final result under this node's prefix and belong to an awaited submission; the watcher then
fetches it with no listing, each file up to its size limit (a result over a limit, or not there,
is left to the backstop's listing). The SAM template and local provisioning notify on the
default CSV key (`{stem}.csv`); with another HYBRID_CSV_KEY the CSV comes through the backstop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from hybrid_common.json_errors import NOT_JSON
from hybrid_common.keys import ResultNaming, node_prefix
from hybrid_common.logs import get_logger
from watcher.results import ResultReady
from watcher.settings import WatcherSettings

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

log = get_logger(__name__)

# SQS's longest long poll: one request per 20 s while idle, answered as soon as a message lands.
WAIT_SECONDS = 20
BATCH = 10  # SQS's largest receive and delete batch


@dataclass(frozen=True)
class Received:
    """One receive: the final results it named, and the receipts to delete its messages by."""

    results: list[ResultReady]
    receipts: list[str]


def results_in(
    body: str, bucket: str, prefix: str, naming: ResultNaming | None = None
) -> list[ResultReady]:
    """The final results under `prefix` of `bucket` an S3 notification body names.

    Anything else (S3's `s3:TestEvent`, other buckets, other prefixes, details files, bodies
    that are not S3 events at all) yields nothing. S3 URL-encodes keys, '+' for a space.
    """
    try:
        doc = json.loads(body)
    except NOT_JSON:
        return []
    records = doc.get("Records") if isinstance(doc, dict) else None
    naming = naming or ResultNaming()
    found: list[ResultReady] = []
    for record in records if isinstance(records, list) else []:
        try:
            s3 = record["s3"]
            if not str(record["eventName"]).startswith("ObjectCreated:"):
                continue
            if s3["bucket"]["name"] != bucket:
                continue
            key = unquote_plus(str(s3["object"]["key"]))
        except (KeyError, TypeError):
            continue
        if not key.startswith(prefix):
            continue
        # One key may read two ways with the classic CSV key: each reading, matched later.
        for stem, kind in naming.finals(key):
            found.append(ResultReady(stem, kind, key, _event_time(record)))
    return found


def _event_time(record: dict[str, Any]) -> datetime:
    try:
        return datetime.fromisoformat(str(record["eventTime"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return datetime.now(UTC)


class ResultQueue:
    """Long-polls this node's result queue; every call may raise (the caller falls back)."""

    def __init__(self, sqs: SQSClient, settings: WatcherSettings) -> None:
        self._sqs = sqs
        self._name = settings.result_queue or ""
        self._bucket = settings.output_bucket
        self._prefix = node_prefix(settings.key_prefix, settings.node_id)
        self._naming = settings.naming
        self._url: str | None = self._name if "://" in self._name else None

    async def _queue_url(self) -> str:
        if self._url is None:
            self._url = (await self._sqs.get_queue_url(QueueName=self._name))["QueueUrl"]
        return self._url

    async def receive(self, wait_s: int = WAIT_SECONDS) -> Received:
        """Wait up to `wait_s` for notifications; the results they name and their receipts."""
        url = await self._queue_url()
        response = await self._sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=BATCH, WaitTimeSeconds=wait_s
        )
        messages = response.get("Messages", [])
        found: list[ResultReady] = []
        for message in messages:
            found += results_in(message.get("Body", ""), self._bucket, self._prefix, self._naming)
        return Received(found, [m["ReceiptHandle"] for m in messages])

    async def delete(self, receipts: list[str]) -> None:
        """Delete what was read, matched or not, while its results are being fetched.

        A result a message names is fetched from the bucket (and the LIST backstop finds it
        if that fails); a message not deleted comes back after the visibility timeout, and S3
        delivers at least once anyway: a duplicate is dropped where it is matched.
        """
        if not receipts:
            return
        entries: Any = [{"Id": str(n), "ReceiptHandle": r} for n, r in enumerate(receipts)]
        reply = await self._sqs.delete_message_batch(
            QueueUrl=await self._queue_url(), Entries=entries
        )
        if reply.get("Failed"):
            log.warning("result_queue.delete_failed", messages=len(reply["Failed"]))
