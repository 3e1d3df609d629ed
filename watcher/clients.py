"""The daemon's AWS clients: one aiobotocore client per service, opened once at start-up.

botocore's own retries are off (one attempt per call): the uploader, poller and trigger retry
with one policy (`watcher.retry`) so each retry is logged once and counts against one budget,
instead of botocore's attempts multiplying ours.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from watcher.settings import WatcherSettings

if TYPE_CHECKING:
    from types_aiobotocore_lambda import LambdaClient
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sqs import SQSClient


@dataclass(frozen=True)
class Clients:
    """The open clients; valid only inside `aws_clients`."""

    s3: S3Client
    lambda_: LambdaClient
    sqs: SQSClient | None  # only with a result queue configured


def client_config(settings: WatcherSettings) -> AioConfig:
    """The botocore configuration shared by every client of this process."""
    # Every file and every part in flight holds a connection; a few spare for polling,
    # listing and invokes so results are not starved by a large upload.
    pool = settings.upload_concurrency + settings.part_concurrency + 4
    s3_options: dict[str, object] = {
        # Explicit False sends UNSIGNED-PAYLOAD even over plain HTTP: integrity comes from
        # the x-amz-checksum-* header S3 verifies, so SigV4 hashing every byte again on the
        # event loop (~2.6 ms/MiB) buys nothing.
        "payload_signing_enabled": settings.payload_signing,
    }
    if settings.endpoint_url:
        # moto, MinIO and LocalStack on an IP or a bare host name only answer path-style.
        s3_options["addressing_style"] = "path"
    return AioConfig(
        region_name=settings.region,
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        max_pool_connections=pool,
        s3=s3_options,
        # We send our own checksum header on uploads; botocore's default (CRC32 of every
        # body, computed on the event loop) would be redundant work.
        request_checksum_calculation="when_required",
        tcp_keepalive=True,
        # Every request's parameters are built by this code from validated settings; botocore
        # checking them against the service model again cost ~7 % of a 1 MiB upload's CPU
        # (5.8 -> 5.4 ms a file, 9 alternating runs). S3 still refuses anything malformed.
        parameter_validation=False,
    )


@asynccontextmanager
async def aws_clients(
    settings: WatcherSettings, on_request: Callable[[str, str], None] | None = None
) -> AsyncIterator[Clients]:
    """Open the S3 and Lambda clients (and SQS's for a result queue); close them on exit.

    `on_request(service, operation)` is told of every API call made, before it is sent.
    """
    session = get_session()
    if on_request is not None:
        count = on_request

        def before_call(event_name: str, **_: object) -> None:
            # "before-call.<service>.<Operation>"
            _event, service, operation = event_name.split(".", 2)
            count(service, operation)

        session.register("before-call", before_call)
    config = client_config(settings)
    async with AsyncExitStack() as stack:
        s3 = await stack.enter_async_context(
            session.create_client("s3", endpoint_url=settings.endpoint_url, config=config)
        )
        # Locally S3 is moto's and Lambda is serve-local's: two endpoints.
        lambda_endpoint = settings.lambda_endpoint_url or settings.endpoint_url
        lambda_ = await stack.enter_async_context(
            session.create_client("lambda", endpoint_url=lambda_endpoint, config=config)
        )
        sqs = None
        if settings.result_queue:
            sqs = await stack.enter_async_context(
                session.create_client("sqs", endpoint_url=settings.endpoint_url, config=config)
            )
        yield Clients(s3=s3, lambda_=lambda_, sqs=sqs)
