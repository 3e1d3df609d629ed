"""The SQS event source mapping, as Lambda runs it: long-poll, invoke, delete what succeeded.

Messages are received with the function's timeout as their visibility timeout; a batch goes to
one invocation as an SQS event; the messages the handler did not list in `batchItemFailures`
are deleted, the rest (all of them when the invocation fails) become visible again after the
timeout, and the queue's redrive policy moves a message to the dead-letter queue after
`maxReceiveCount` receives. Duplicate events for an object version are dropped (see dedupe).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from hybrid_common.logs import get_logger
from local_stack.emulator.dedupe import DedupeRegistry, versions_in_body
from local_stack.emulator.environment_pool import Invocation, WorkerPool

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import (
        ChangeMessageVisibilityBatchRequestEntryTypeDef,
        DeleteMessageBatchRequestEntryTypeDef,
        MessageTypeDef,
    )

log = get_logger(__name__)

InvocationLogger = Callable[[Invocation, str, list[str]], None]


def failed_message_ids(outcome: Invocation, message_ids: list[str]) -> set[str]:
    """Which messages of a batch failed, by Lambda's partial-batch-response rules."""
    if not outcome.ok:
        return set(message_ids)
    try:
        result = json.loads(outcome.payload)
    except ValueError:
        return set(message_ids)
    if not isinstance(result, dict) or result.get("batchItemFailures") is None:
        return set()  # no partial response: the whole batch succeeded
    failures = result["batchItemFailures"]
    if not isinstance(failures, list):
        return set(message_ids)
    failed = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if identifier not in message_ids:
            # Lambda treats an empty, null or unknown identifier as the whole batch failing.
            return set(message_ids)
        failed.add(identifier)
    return failed


def lambda_sqs_record(message: MessageTypeDef, queue_arn: str, region: str) -> dict[str, Any]:
    """One record of the SQS event Lambda passes to the function."""
    attributes: dict[str, dict[str, Any]] = {
        name: {
            "stringValue": value.get("StringValue"),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": value.get("DataType", "String"),
        }
        for name, value in message.get("MessageAttributes", {}).items()
    }
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": attributes,
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


class SqsEventSource:
    """Polls one queue and feeds the worker pool; runs in its own thread."""

    def __init__(
        self,
        sqs: SQSClient,
        queue_url: str,
        queue_arn: str,
        *,
        region: str,
        pool: WorkerPool,
        executor: Executor,
        dedupe: DedupeRegistry,
        on_invocation: InvocationLogger,
        batch_size: int,
        poll_wait_s: int,
        function_timeout_s: int,
        max_receive_count: int | None,
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._queue_arn = queue_arn
        self._region = region
        self._pool = pool
        self._executor = executor
        self._dedupe = dedupe
        self._on_invocation = on_invocation
        self._batch_size = batch_size
        self._poll_wait_s = poll_wait_s
        self._timeout_s = function_timeout_s
        self._max_receive = max_receive_count
        # Message id → latest receipt handle of messages being processed: a redelivery while
        # the first attempt still runs must not start a second one, and the delete must use
        # the newest handle.
        self._in_flight: dict[str, str] = {}
        self._lock = threading.Lock()

    def run(self, stop: threading.Event) -> None:
        """Poll until `stop` is set; messages received after that are handed back."""
        backoff = 1.0
        while not stop.is_set():
            if not self._pool.wait_for_capacity(0.5):
                continue
            try:
                messages = self._receive()
                backoff = 1.0
            except (BotoCoreError, ClientError) as error:
                log.warning("queue.receive_failed", error=str(error), retry_in_s=backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            if stop.is_set():
                self._hand_back(messages)
                return
            batch = self._admit(messages)
            if not batch:
                continue
            while not self._pool.reserve(0.5):
                if stop.is_set():
                    self._forget(batch)
                    self._hand_back(batch)
                    return
            self._executor.submit(self._invoke_batch, batch)

    def _receive(self) -> list[MessageTypeDef]:
        response = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=self._batch_size,
            WaitTimeSeconds=self._poll_wait_s,
            VisibilityTimeout=self._timeout_s,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    def _admit(self, messages: list[MessageTypeDef]) -> list[MessageTypeDef]:
        """Drop redeliveries of running messages and duplicate object events."""
        admitted = []
        for message in messages:
            message_id = message["MessageId"]
            with self._lock:
                if message_id in self._in_flight:
                    self._in_flight[message_id] = message["ReceiptHandle"]
                    log.warning("message.redelivered_while_running", message_id=message_id)
                    continue
            versions = versions_in_body(message["Body"])
            if not self._dedupe.claim(message_id, versions):
                log.info("event.duplicate", message_id=message_id, keys=[v[1] for v in versions])
                self._delete([message])
                continue
            with self._lock:
                self._in_flight[message_id] = message["ReceiptHandle"]
            admitted.append(message)
        return admitted

    def _invoke_batch(self, batch: list[MessageTypeDef]) -> None:
        """Runs in an executor thread holding one pool reservation."""
        try:
            event = {
                "Records": [lambda_sqs_record(m, self._queue_arn, self._region) for m in batch]
            }
            keys = [v[1] for m in batch for v in versions_in_body(m["Body"])]
            outcome = self._pool.invoke(
                str(uuid.uuid4()),
                json.dumps(event),
                self._timeout_s,
                on_cold_start=lambda: self._restart_visibility(batch),
            )
            self._on_invocation(outcome, "sqs", keys)
            failed = failed_message_ids(outcome, [m["MessageId"] for m in batch])
            self._delete([m for m in batch if m["MessageId"] not in failed])
            for message in batch:
                if message["MessageId"] in failed:
                    self._report_retry(message, outcome)
        except Exception:  # a thread's error must not vanish; the messages will be retried
            log.exception("invocation.dispatch_failed", messages=len(batch))
        finally:
            self._forget(batch)
            self._pool.release()

    def _report_retry(self, message: MessageTypeDef, outcome: Invocation) -> None:
        attempt = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        fields = {
            "message_id": message["MessageId"],
            "attempt": attempt,
            "request_id": outcome.request_id,
            "error_type": outcome.error_type,
        }
        if self._max_receive is not None and attempt >= self._max_receive:
            log.warning("message.exhausted", **fields, next="dead-letter queue")
        else:
            log.info("message.retry_scheduled", **fields, visible_in_s=self._timeout_s)

    def _delete(self, messages: list[MessageTypeDef]) -> None:
        if not messages:
            return
        with self._lock:
            entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
                {
                    "Id": str(i),
                    "ReceiptHandle": self._in_flight.get(m["MessageId"], m["ReceiptHandle"]),
                }
                for i, m in enumerate(messages)
            ]
        try:
            response = self._sqs.delete_message_batch(QueueUrl=self._queue_url, Entries=entries)
        except (BotoCoreError, ClientError) as error:
            log.warning("message.delete_failed", error=str(error), messages=len(messages))
            return
        for failure in response.get("Failed", []):
            log.warning("message.delete_failed", error=failure.get("Message"), id=failure["Id"])

    def _restart_visibility(self, batch: list[MessageTypeDef]) -> None:
        """After a cold start, give the messages the whole function timeout again.

        Their visibility clock started at receive; a slow init phase (importing dlib and the
        models takes seconds) would otherwise let them reappear while the handler still runs,
        and that early receive would count against maxReceiveCount.
        """
        with self._lock:
            entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
                {
                    "Id": str(i),
                    "ReceiptHandle": self._in_flight.get(m["MessageId"], m["ReceiptHandle"]),
                    "VisibilityTimeout": self._timeout_s,
                }
                for i, m in enumerate(batch)
            ]
        try:
            self._sqs.change_message_visibility_batch(QueueUrl=self._queue_url, Entries=entries)
        except (BotoCoreError, ClientError) as error:
            log.warning("message.visibility_failed", error=str(error), messages=len(batch))

    def _hand_back(self, messages: list[MessageTypeDef]) -> None:
        """Make messages received during shutdown visible again at once."""
        if not messages:
            return
        entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(messages)
        ]
        try:
            self._sqs.change_message_visibility_batch(QueueUrl=self._queue_url, Entries=entries)
        except (BotoCoreError, ClientError) as error:
            log.warning("message.hand_back_failed", error=str(error), messages=len(messages))

    def _forget(self, batch: list[MessageTypeDef]) -> None:
        with self._lock:
            for message in batch:
                self._in_flight.pop(message["MessageId"], None)
