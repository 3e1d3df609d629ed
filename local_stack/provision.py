"""Idempotent provisioning of the cloud resources the pipeline needs.

One module serves `hybrid-local cloud`, the tests and docker-compose's `init`
service: buckets, the students table (hash key `name`, like the course's), the SQS queue the
input bucket notifies (the local stand-in for the S3 trigger) and, optionally, the known-faces
file. Running it twice changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from hybrid_common.aws_credentials import use_local_credentials_for_loopback
from hybrid_common.keys import ResultKind
from hybrid_common.logs import get_logger
from hybrid_common.video_suffixes import TRIGGER_SUFFIXES, s3_filter_rules

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

log = get_logger(__name__)

# Where the function finds the known faces when they are provisioned into the cloud: the input
# bucket, as on AWS (the SAM template's KnownFacesKey default). Not a video suffix, so it never
# triggers; starting with '_', outside every node's prefix. Never the output bucket: the
# function writes there, at any key a video was put at (`_assets/known_faces.mp4` would have
# overwritten it with its details JSON).
KNOWN_FACES_KEY = "_assets/known_faces.json"


@dataclass(frozen=True, slots=True)
class Resources:
    """Names of everything provisioned; written to the local cloud's state file."""

    endpoint_url: str | None
    region: str
    input_bucket: str
    output_bucket: str
    table: str
    queue: str
    dead_letter_queue: str = ""
    queue_url: str = ""
    queue_arn: str = ""
    dead_letter_queue_url: str = ""
    known_faces_uri: str = ""
    # A node's result queue: the output bucket notifies it of final results under result_prefix.
    result_queue: str = ""
    result_prefix: str = ""
    result_queue_url: str = ""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


@dataclass(frozen=True, slots=True)
class Clients:
    s3: S3Client
    dynamodb: DynamoDBClient
    sqs: SQSClient


# AWS's advice for an SQS event source is at least 5 receives, so that a throttled or briefly
# failing batch is not dead-lettered; deploy/aws/template.yaml says the same (held to it by
# tests/deploy/test_local_provisioning.py).
MAX_RECEIVE_COUNT = 5


def make_clients(endpoint_url: str | None, region: str) -> Clients:
    """Plain boto3 clients for provisioning (credentials from the standard AWS chain).

    A loopback endpoint (the local cloud) needs none: dummies are used if the chain is empty.
    """
    use_local_credentials_for_loopback(endpoint_url)
    session = boto3.session.Session(region_name=region)
    config = Config(retries={"max_attempts": 5, "mode": "standard"})
    return Clients(
        s3=session.client("s3", endpoint_url=endpoint_url, config=config),
        dynamodb=session.client("dynamodb", endpoint_url=endpoint_url, config=config),
        sqs=session.client("sqs", endpoint_url=endpoint_url, config=config),
    )


def ensure_bucket(s3: S3Client, name: str, region: str) -> None:
    try:
        if region == "us-east-1":
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(
                Bucket=name,
                CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
            )
        log.info("bucket.created", bucket=name)
    except ClientError as error:
        if error.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
            raise
    s3.put_bucket_encryption(
        Bucket=name,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    s3.put_public_access_block(
        Bucket=name,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )


def ensure_table(dynamodb: DynamoDBClient, name: str) -> None:
    try:
        dynamodb.create_table(
            TableName=name,
            AttributeDefinitions=[{"AttributeName": "name", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "name", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        log.info("table.created", table=name)
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceInUseException":
            raise
    dynamodb.get_waiter("table_exists").wait(
        TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )


def ensure_queue(sqs: SQSClient, name: str, attributes: dict[str, str]) -> tuple[str, str]:
    """Create (or update) a queue; returns (url, arn)."""
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    if attributes:
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)  # type: ignore[arg-type]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return url, arn


def ensure_notification(s3: S3Client, bucket: str, queue_arn: str) -> None:
    """Input bucket → queue on ObjectCreated, as the SAM template's sqs mode sets it: one
    configuration per suffix of `hybrid_common.video_suffixes` (S3 allows a single suffix rule
    per configuration), at any key."""
    configs: list[Any] = [
        {
            # Ids are case-sensitive too: `video-mp4` and `video-MP4` are two configurations.
            "Id": f"video{suffix.replace('.', '-')}",
            "QueueArn": queue_arn,
            "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": s3_filter_rules(suffix)}},
        }
        for suffix in TRIGGER_SUFFIXES
    ]
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": configs}
    )


# The files that mean "finished" (watcher.results.FINAL_KINDS): the only ones notified.
RESULT_NOTIFY_SUFFIXES = (ResultKind.CSV.value, ResultKind.ERROR.value)


def result_queue_name(base: str, node_id: str) -> str:
    """A node's result queue name: SQS allows 80 characters of [A-Za-z0-9_-]."""
    node = "".join(c if c.isalnum() or c in "-_" else "-" for c in node_id)
    return f"{base}-results-{node}"[:80]


def ensure_result_notification(s3: S3Client, bucket: str, prefix: str, queue_arn: str) -> None:
    """Output bucket → the node's queue on final results under `prefix`; other nodes'
    configurations (other prefixes) are kept. `.error.json` ends in `.json` as the details
    file does, so the suffix rule is the whole `.error.json`."""
    current: Any = s3.get_bucket_notification_configuration(Bucket=bucket)
    mine = [
        {
            "Id": f"results-{prefix.strip('/').replace('/', '-')}{suffix.replace('.', '-')}",
            "QueueArn": queue_arn,
            "Events": ["s3:ObjectCreated:*"],
            "Filter": {
                "Key": {
                    "FilterRules": [
                        {"Name": "prefix", "Value": prefix},
                        {"Name": "suffix", "Value": suffix},
                    ]
                }
            },
        }
        for suffix in RESULT_NOTIFY_SUFFIXES
    ]
    ids = {config["Id"] for config in mine}
    others = [c for c in current.get("QueueConfigurations", []) if c.get("Id") not in ids]
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": others + mine}
    )


def provision(
    clients: Clients,
    resources: Resources,
    *,
    function_timeout_s: int = 900,
    known_faces: bytes | None = None,
) -> Resources:
    """Create whatever is missing; returns the resources with URLs and ARNs filled in."""
    ensure_bucket(clients.s3, resources.input_bucket, resources.region)
    ensure_bucket(clients.s3, resources.output_bucket, resources.region)
    ensure_table(clients.dynamodb, resources.table)
    dlq_name = resources.dead_letter_queue or f"{resources.queue}-dlq"
    dlq_url, dlq_arn = ensure_queue(clients.sqs, dlq_name, {"MessageRetentionPeriod": "1209600"})
    # Lambda's rule: the queue's visibility timeout is the function's timeout. A message moves to
    # the dead-letter queue after MAX_RECEIVE_COUNT receives, as in the SAM template.
    queue_url, queue_arn = ensure_queue(
        clients.sqs,
        resources.queue,
        {
            "VisibilityTimeout": str(function_timeout_s),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
            ),
        },
    )
    ensure_notification(clients.s3, resources.input_bucket, queue_arn)
    result_queue_url = ""
    if resources.result_queue:
        # Read within seconds of arriving; kept a day in case the watcher is down (the LIST
        # backstop finds those results anyway).
        result_queue_url, result_queue_arn = ensure_queue(
            clients.sqs, resources.result_queue, {"MessageRetentionPeriod": "86400"}
        )
        ensure_result_notification(
            clients.s3, resources.output_bucket, resources.result_prefix, result_queue_arn
        )
    known_faces_uri = resources.known_faces_uri
    if known_faces is not None:
        clients.s3.put_object(
            Bucket=resources.input_bucket,
            Key=KNOWN_FACES_KEY,
            Body=known_faces,
            ContentType="application/json",
        )
        known_faces_uri = f"s3://{resources.input_bucket}/{KNOWN_FACES_KEY}"
    log.info(
        "cloud.provisioned",
        input_bucket=resources.input_bucket,
        output_bucket=resources.output_bucket,
        table=resources.table,
        queue=resources.queue,
    )
    return Resources(
        endpoint_url=resources.endpoint_url,
        region=resources.region,
        input_bucket=resources.input_bucket,
        output_bucket=resources.output_bucket,
        table=resources.table,
        queue=resources.queue,
        dead_letter_queue=dlq_name,
        queue_url=queue_url,
        queue_arn=queue_arn,
        dead_letter_queue_url=dlq_url,
        known_faces_uri=known_faces_uri,
        result_queue=resources.result_queue,
        result_prefix=resources.result_prefix,
        result_queue_url=result_queue_url,
    )
