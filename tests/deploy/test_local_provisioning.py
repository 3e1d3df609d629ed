"""Local provisioning (local_stack/provision.py, what `hybrid-local cloud` and docker-compose's
`init` create in moto) describes the same cloud as the SAM template in its `sqs` trigger mode:
the same buckets and their protections, notifications to a queue only, the queue's dead-letter
rule, the table's key schema, the resource names' pattern and where the known faces live.
(The notification's suffix and prefix filters are held to the one suffix list elsewhere.)"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cfn_template import load_template, parameter_defaults, static_names

from hybrid_common.students import TABLE_KEY, TABLE_KEY_TYPE
from local_stack.provision import (
    KNOWN_FACES_KEY,
    RESULT_NOTIFY_SUFFIXES,
    Resources,
    make_clients,
    provision,
)
from watcher.settings import WatcherSettings


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def _resources(template: dict[str, Any], kind: str) -> dict[str, Any]:
    return {n: r for n, r in template["Resources"].items() if r["Type"] == kind}


def _sqs_branch(notification: dict[str, Any]) -> dict[str, Any]:
    """The bucket's notification when TriggerMode is sqs: !If [IsS3Trigger, s3, !If [IsSqs...]]."""
    condition, _s3_mode, otherwise = notification["Fn::If"]
    assert condition == "IsS3Trigger"
    sqs_condition, sqs_mode, _none = otherwise["Fn::If"]
    assert sqs_condition == "IsSqsTrigger"
    return sqs_mode  # type: ignore[no-any-return]


@pytest.fixture
def local(moto_endpoint: str, unique_name: str) -> tuple[Any, Resources]:
    clients = make_clients(moto_endpoint, "us-east-1")
    wanted = Resources(
        endpoint_url=moto_endpoint,
        region="us-east-1",
        input_bucket=f"{unique_name}-input",
        output_bucket=f"{unique_name}-output",
        table=f"{unique_name}-students",
        queue=f"{unique_name}-input-events",
    )
    return clients, provision(clients, wanted, function_timeout_s=60, known_faces=b"{}")


def test_the_same_buckets_with_the_same_protections(
    template: dict[str, Any], local: tuple[Any, Resources]
) -> None:
    clients, made = local
    buckets = _resources(template, "AWS::S3::Bucket")
    assert set(buckets) == {"InputBucket", "OutputBucket"}
    for name, bucket in ((made.input_bucket, "InputBucket"), (made.output_bucket, "OutputBucket")):
        props = buckets[bucket]["Properties"]
        (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        (local_rule,) = clients.s3.get_bucket_encryption(Bucket=name)[
            "ServerSideEncryptionConfiguration"
        ]["Rules"]
        assert (
            local_rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]
            == rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
        )
        block = clients.s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
        assert block == props["PublicAccessBlockConfiguration"]


def test_notifications_go_to_the_queue_and_only_from_the_input_bucket(
    template: dict[str, Any], local: tuple[Any, Resources]
) -> None:
    clients, made = local
    buckets = _resources(template, "AWS::S3::Bucket")
    sqs_mode = _sqs_branch(buckets["InputBucket"]["Properties"]["NotificationConfiguration"])
    assert set(sqs_mode) == {"QueueConfigurations"}
    assert {c["Queue"]["Fn::GetAtt"][0] for c in sqs_mode["QueueConfigurations"]} == {
        "InputEventsQueue"
    }
    events = {c["Event"] for c in sqs_mode["QueueConfigurations"]}

    notification = clients.s3.get_bucket_notification_configuration(Bucket=made.input_bucket)
    kinds = {k for k in notification if k.endswith("Configurations")}
    assert kinds == {"QueueConfigurations"}, "a queue, like the template's sqs mode"
    assert {c["QueueArn"] for c in notification["QueueConfigurations"]} == {made.queue_arn}
    assert {e for c in notification["QueueConfigurations"] for e in c["Events"]} == events
    # Without a result queue (the default), the output bucket notifies nothing.
    output = clients.s3.get_bucket_notification_configuration(Bucket=made.output_bucket)
    assert not {k for k in output if k.endswith("Configurations")}
    condition, _with_queue, without = buckets["OutputBucket"]["Properties"][
        "NotificationConfiguration"
    ]["Fn::If"]
    assert condition == "HasResultQueue" and without == {"Ref": "AWS::NoValue"}


def test_result_notifications_as_the_template_sets_them(
    template: dict[str, Any], moto_endpoint: str, unique_name: str
) -> None:
    """The node's prefix and the two final suffixes, to the node's queue, on both sides."""
    clients = make_clients(moto_endpoint, "us-east-1")
    node = "vm-7"
    made = provision(
        clients,
        Resources(
            endpoint_url=moto_endpoint, region="us-east-1", input_bucket=f"{unique_name}-input",
            output_bucket=f"{unique_name}-output", table=f"{unique_name}-students",
            queue=f"{unique_name}-input-events", result_queue=f"{unique_name}-results-{node}",
            result_prefix=f"videos/{node}/",
        ),
        function_timeout_s=60,
    )  # fmt: skip
    r = static_names(template, {"WatcherNodeId": node, "ResultNotifications": "true"})
    props = r.resolve(template["Resources"]["OutputBucket"]["Properties"])
    expected = {
        (c["Event"], tuple((rule["Name"], rule["Value"]) for rule in c["Filter"]["S3Key"]["Rules"]))
        for c in props["NotificationConfiguration"]["QueueConfigurations"]
    }
    assert {c["Queue"] for c in props["NotificationConfiguration"]["QueueConfigurations"]} == {
        r.attributes["ResultEventsQueue.Arn"]
    }
    local = clients.s3.get_bucket_notification_configuration(Bucket=made.output_bucket)
    arn = clients.sqs.get_queue_attributes(
        QueueUrl=made.result_queue_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    assert {c["QueueArn"] for c in local["QueueConfigurations"]} == {arn}
    got = {
        (
            event,
            tuple(
                (rule["Name"].lower(), rule["Value"]) for rule in c["Filter"]["Key"]["FilterRules"]
            ),
        )
        for c in local["QueueConfigurations"]
        for event in c["Events"]
    }
    assert got == expected
    assert {suffix for _, ((_p, _), (_s, suffix)) in expected} == set(RESULT_NOTIFY_SUFFIXES)


def test_the_queue_and_its_dead_letter_rule(
    template: dict[str, Any], local: tuple[Any, Resources]
) -> None:
    clients, made = local
    queues = _resources(template, "AWS::SQS::Queue")
    queue = queues["InputEventsQueue"]["Properties"]
    dlq = queues["InputEventsDeadLetterQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0] == (
        "InputEventsDeadLetterQueue"
    )
    attributes = clients.sqs.get_queue_attributes(QueueUrl=made.queue_url, AttributeNames=["All"])[
        "Attributes"
    ]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == queue["RedrivePolicy"]["maxReceiveCount"]
    dlq_arn = clients.sqs.get_queue_attributes(
        QueueUrl=made.dead_letter_queue_url, AttributeNames=["QueueArn", "MessageRetentionPeriod"]
    )["Attributes"]
    assert redrive["deadLetterTargetArn"] == dlq_arn["QueueArn"]
    assert int(dlq_arn["MessageRetentionPeriod"]) == dlq["MessageRetentionPeriod"]


def test_the_table_key_schema(template: dict[str, Any], local: tuple[Any, Resources]) -> None:
    clients, made = local
    props = template["Resources"]["StudentsTable"]["Properties"]
    table = clients.dynamodb.describe_table(TableName=made.table)["Table"]
    assert table["KeySchema"] == props["KeySchema"]
    assert table["AttributeDefinitions"] == props["AttributeDefinitions"]
    assert props["KeySchema"] == [{"AttributeName": TABLE_KEY, "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [
        {"AttributeName": TABLE_KEY, "AttributeType": TABLE_KEY_TYPE}
    ]


def _sub(value: Any, parameters: dict[str, str]) -> str:
    """`!Sub "${NamePrefix}-students"` with the template's defaults (no pseudo parameters)."""
    text = value["Fn::Sub"]
    for name, default in parameters.items():
        text = text.replace("${" + name + "}", default)
    assert "${" not in text, text
    return str(text)


def test_names_follow_the_template(template: dict[str, Any], local: tuple[Any, Resources]) -> None:
    """The default names locally are the template's with its default NamePrefix, the dead-letter
    queue is the queue's name + `-dlq` in both, and the known faces sit where the function's
    role may read them (the input bucket, outside the key prefix)."""
    _clients, made = local
    defaults = parameter_defaults(template)
    resources = template["Resources"]
    settings = {name: field.default for name, field in WatcherSettings.model_fields.items()}
    table = _sub(resources["StudentsTable"]["Properties"]["TableName"], defaults)
    assert settings["table"] == table
    queue = _sub(resources["InputEventsQueue"]["Properties"]["QueueName"], defaults)
    dlq = _sub(resources["InputEventsDeadLetterQueue"]["Properties"]["QueueName"], defaults)
    assert settings["queue"] == queue and dlq == f"{queue}-dlq"
    assert made.dead_letter_queue == f"{made.queue}-dlq"
    assert defaults["KnownFacesKey"] == KNOWN_FACES_KEY
    assert not KNOWN_FACES_KEY.startswith(defaults["KeyPrefix"] + "/")
    assert made.known_faces_uri == f"s3://{made.input_bucket}/{KNOWN_FACES_KEY}"
