"""Trigger mode `invoke`: after an upload, invoke the function with an S3-shaped event.

For deployments where the input bucket cannot notify the function, the watcher sends the
same event S3 would, so the function has one entry point and one results path either way.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

from hybrid_common.logs import get_logger
from watcher.retry import RetryBudget, describe, is_transient
from watcher.settings import WatcherSettings

if TYPE_CHECKING:
    from types_aiobotocore_lambda import LambdaClient

log = get_logger(__name__)


class TriggerFailed(Exception):
    """The function could not be invoked; `retryable` says whether trying later may help."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def s3_put_event(region: str, bucket: str, key: str, etag: str, size: int) -> dict[str, Any]:
    """The `ObjectCreated:Put` notification S3 would send for this object."""
    now = datetime.now(UTC)
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": region,
                "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "hybrid-watcher"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {"x-amz-request-id": uuid.uuid4().hex[:16].upper()},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "hybrid-watcher-invoke",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "hybrid-watcher"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": {
                        # S3 URL-encodes keys in events, '+' for spaces, '/' kept; the
                        # function decodes with unquote_plus (moto also encodes '/': same result).
                        "key": quote_plus(key, safe="/"),
                        "size": size,
                        "eTag": etag.strip('"'),
                        "sequencer": f"{int(now.timestamp() * 1e6):016X}",
                    },
                },
            }
        ]
    }


async def invoke_function(  # noqa: PLR0917 - the agreed API with the service takes these positionally
    lambda_client: LambdaClient,
    settings: WatcherSettings,
    bucket: str,
    key: str,
    etag: str,
    size: int,
) -> None:
    """Invoke the function asynchronously (InvocationType='Event') for one uploaded object."""
    payload = json.dumps(s3_put_event(settings.region, bucket, key, etag, size)).encode()
    budget = RetryBudget.start(
        settings.retry_attempts,
        settings.retry_max_seconds,
        settings.retry_base_delay_s,
        settings.retry_max_delay_s,
    )

    async def invoke() -> int:
        response = await lambda_client.invoke(
            FunctionName=settings.function_name, InvocationType="Event", Payload=payload
        )
        # An Event invocation has no result to read, but close the stream all the same.
        if "Payload" in response:
            async with response["Payload"] as body:
                await body.read()
        return int(response["StatusCode"])

    try:
        status = await budget.call("trigger", invoke, key=key)
    except Exception as error:
        raise TriggerFailed(describe(error), retryable=is_transient(error)) from error
    if status != 202:
        raise TriggerFailed(f"invoke answered {status}, expected 202", retryable=True)
    log.info("trigger.invoked", key=key, function=settings.function_name)
