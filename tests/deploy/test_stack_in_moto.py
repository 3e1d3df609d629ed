"""Deploy deploy/aws/template.yaml into moto's server and check what came up.

moto's CloudFormation has neither transform the template declares, so both are done here: the
LanguageExtensions one resolves the deletion policies' Fn::If, and the one SAM resource is
translated the way `sam deploy` does (AWS::Serverless::Function -> AWS::Lambda::Function +
EventInvokeConfig).
moto's CloudFormation also ignores some resource types and bucket properties; those are listed
explicitly below and applied through the service APIs from the same template, resolved with the
stack's physical ids — so every part of the template reaches moto, and a part that no path
covers makes the test fail instead of vanishing.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfn_template import ACCOUNT, NO_VALUE, REGION, Resolver, load_template

from hybrid_common.video_suffixes import TRIGGER_SUFFIXES, VIDEO_SUFFIXES, triggers

TEMPLATE = load_template()
IMAGE_URI = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/hybridsphere:test"

# Types moto's CloudFormation does not implement (it would warn and skip them).
APPLIED_BY_API = {
    "AWS::S3::BucketPolicy",
    "AWS::SQS::QueuePolicy",
    "AWS::Lambda::EventInvokeConfig",
    "AWS::CloudWatch::Alarm",
}
# AWS::DynamoDB::Table properties moto's CloudFormation ignores.
TABLE_PROPERTIES_BY_API = {"PointInTimeRecoverySpecification"}
# AWS::S3::Bucket properties moto's CloudFormation ignores (it applies BucketEncryption and Tags).
BUCKET_PROPERTIES_BY_API = {
    "PublicAccessBlockConfiguration",
    "OwnershipControls",
    "LifecycleConfiguration",
    "NotificationConfiguration",
}
LAMBDA_FUNCTION_PROPERTIES = {
    "FunctionName",
    "Description",
    "PackageType",
    "ImageConfig",
    "Architectures",
    "MemorySize",
    "Timeout",
    "EphemeralStorage",
    "ReservedConcurrentExecutions",
    "Role",
    "LoggingConfig",
    "Environment",
}


def sam_to_cloudformation(template: dict[str, Any], parameters: dict[str, str]) -> dict[str, Any]:
    """The plain CloudFormation that the two transforms make of this template."""
    out = copy.deepcopy(template)
    assert out.pop("Transform") == ["AWS::LanguageExtensions", "AWS::Serverless-2016-10-31"]
    r = Resolver(template, parameters)
    for res in out["Resources"].values():
        for policy in ("DeletionPolicy", "UpdateReplacePolicy"):
            if policy in res:
                res[policy] = r.resolve(res[policy])
                assert res[policy] in {"Retain", "Delete", "Snapshot"}, res[policy]
    sam = {k: r for k, r in out["Resources"].items() if r["Type"].startswith("AWS::Serverless::")}
    assert list(sam) == ["FaceRecognitionFunction"], "translate new SAM resources here"
    fn = out["Resources"]["FaceRecognitionFunction"]
    props = dict(fn["Properties"])
    invoke_config = props.pop("EventInvokeConfig")
    image_uri = props.pop("ImageUri")
    assert image_uri == {"Ref": "ImageUri"}  # what `make publish` sets
    # Anything left must be a plain AWS::Lambda::Function property, passed through unchanged.
    assert set(props) <= LAMBDA_FUNCTION_PROPERTIES, set(props) - LAMBDA_FUNCTION_PROPERTIES
    props["Code"] = {"ImageUri": image_uri}  # SAM's ImageUri is Lambda's Code
    out["Resources"]["FaceRecognitionFunction"] = {
        "Type": "AWS::Lambda::Function",
        "Properties": props,
    }
    out["Resources"]["FaceRecognitionFunctionEventInvokeConfig"] = {
        "Type": "AWS::Lambda::EventInvokeConfig",
        "Properties": {
            "FunctionName": {"Ref": "FaceRecognitionFunction"},
            "Qualifier": "$LATEST",
            **invoke_config,
        },
    }
    return out


def _drop_novalue_list_items(node: Any, r: Resolver) -> Any:
    """moto's CloudFormation leaves `null` where a list item's Fn::If picks AWS::NoValue (real
    CloudFormation removes the item); pre-evaluate exactly those Fn::If, nothing else."""
    if isinstance(node, dict):
        if list(node) == ["Fn::If"]:  # its argument list is not a list of items
            cond, *branches = node["Fn::If"]
            return {"Fn::If": [cond, *(_drop_novalue_list_items(b, r) for b in branches)]}
        return {k: _drop_novalue_list_items(v, r) for k, v in node.items()}
    if not isinstance(node, list):
        return node
    items = []
    for item in node:
        chosen = item
        branches = item.get("Fn::If") if isinstance(item, dict) and len(item) == 1 else None
        if branches and {"Ref": "AWS::NoValue"} in branches[1:]:
            chosen = branches[1] if r.condition(branches[0]) else branches[2]
            if chosen == {"Ref": "AWS::NoValue"}:
                continue
        items.append(_drop_novalue_list_items(chosen, r))
    return items


def split_for_moto(
    template: dict[str, Any], parameters: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what moto's CloudFormation deploys, what the test applies by API afterwards)."""
    for_moto = copy.deepcopy(template)
    for_moto["Resources"] = _drop_novalue_list_items(
        for_moto["Resources"], Resolver(template, parameters)
    )
    later: dict[str, Any] = {}
    for name, res in list(for_moto["Resources"].items()):
        if res["Type"] in APPLIED_BY_API:
            later[name] = for_moto["Resources"].pop(name)
        elif res["Type"] == "AWS::S3::Bucket":
            props = res["Properties"]
            moved = {k: props.pop(k) for k in BUCKET_PROPERTIES_BY_API if k in props}
            later[name] = {
                "Type": res["Type"],
                "Condition": res.get("Condition"),
                "Properties": moved,
            }
        elif res["Type"] == "AWS::DynamoDB::Table":
            props = res["Properties"]
            moved = {k: props.pop(k) for k in TABLE_PROPERTIES_BY_API if k in props}
            later[name] = {
                "Type": res["Type"],
                "Condition": res.get("Condition"),
                "Properties": moved,
            }
        elif res["Type"] == "AWS::SNS::Topic":
            # moto iterates the property as given: a None (the Fn::If's NoValue) would fail.
            subscription = res["Properties"].get("Subscription")
            if isinstance(subscription, dict) and "Fn::If" in subscription:
                chosen = Resolver(template, parameters).resolve(subscription)
                if chosen is NO_VALUE:
                    del res["Properties"]["Subscription"]
                else:
                    res["Properties"]["Subscription"] = chosen
        elif res["Type"] == "AWS::Lambda::EventSourceMapping":
            # Enabled, moto would run the function's container (Docker) for every queued
            # message; disabled, the mapping is still created and the queue can be read here.
            res["Properties"]["Enabled"] = False
    removed = {name for name, res in later.items() if res["Type"] in APPLIED_BY_API}
    for_moto["Resources"] = _unref(for_moto["Resources"], removed)
    return for_moto, later


def _unref(node: Any, removed: set[str]) -> Any:
    """Refs to resources applied after the stack (only the input bucket's ordering tag) become
    a placeholder: in moto the order is given by the test itself."""
    if isinstance(node, dict):
        if list(node) == ["Ref"] and node["Ref"] in removed:
            return f"applied-after-stack:{node['Ref']}"
        return {k: _unref(v, removed) for k, v in node.items()}
    if isinstance(node, list):
        return [_unref(item, removed) for item in node]
    return node


def _clients(endpoint: str) -> dict[str, Any]:
    return {
        name: boto3.client(name, endpoint_url=endpoint, region_name=REGION)
        for name in (
            "cloudformation",
            "s3",
            "sqs",
            "lambda",
            "iam",
            "dynamodb",
            "cloudwatch",
            "sns",
        )
    }


def _wait_for_stack(cfn: Any, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
        if not stack["StackStatus"].endswith("IN_PROGRESS") or time.monotonic() > deadline:
            return dict(stack)
        time.sleep(0.2)


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    api: dict[str, Any] = {"ID": rule["Id"], "Status": rule["Status"]}
    api["Filter"] = {"Prefix": rule.get("Prefix", "")}
    if "ExpirationInDays" in rule:
        api["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    if "AbortIncompleteMultipartUpload" in rule:
        api["AbortIncompleteMultipartUpload"] = rule["AbortIncompleteMultipartUpload"]
    return api


def _notification(config: dict[str, Any]) -> dict[str, Any]:
    def entry(item: dict[str, Any], arn_key: str, arn: str) -> dict[str, Any]:
        rules = item["Filter"]["S3Key"]["Rules"]
        return {
            arn_key: arn,
            "Events": [item["Event"]],
            "Filter": {"Key": {"FilterRules": rules}},
        }

    api: dict[str, Any] = {}
    if "LambdaConfigurations" in config:
        api["LambdaFunctionConfigurations"] = [
            entry(i, "LambdaFunctionArn", i["Function"]) for i in config["LambdaConfigurations"]
        ]
    if "QueueConfigurations" in config:
        api["QueueConfigurations"] = [
            entry(i, "QueueArn", i["Queue"]) for i in config["QueueConfigurations"]
        ]
    return api


def apply_by_api(  # noqa: PLR0912 - one branch per resource type moto skips
    clients: dict[str, Any], later: dict[str, Any], r: Resolver
) -> None:
    """Apply what moto's CloudFormation skipped, through the same APIs CloudFormation calls."""
    s3, sqs, lam = clients["s3"], clients["sqs"], clients["lambda"]
    for name, res in later.items():
        if res.get("Condition") and not r.condition(res["Condition"]):
            continue
        props = r.resolve(res["Properties"])
        kind = res["Type"]
        if kind == "AWS::S3::Bucket":
            bucket = r.physical[name]
            s3.put_public_access_block(
                Bucket=bucket,
                PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"],
            )
            s3.put_bucket_ownership_controls(
                Bucket=bucket, OwnershipControls=props["OwnershipControls"]
            )
            if "LifecycleConfiguration" in props:
                s3.put_bucket_lifecycle_configuration(
                    Bucket=bucket,
                    LifecycleConfiguration={
                        "Rules": [
                            _lifecycle_rule(x) for x in props["LifecycleConfiguration"]["Rules"]
                        ]
                    },
                )
            if "NotificationConfiguration" in props:
                s3.put_bucket_notification_configuration(
                    Bucket=bucket,
                    NotificationConfiguration=_notification(props["NotificationConfiguration"]),
                )
        elif kind == "AWS::DynamoDB::Table":
            if "PointInTimeRecoverySpecification" in props:
                clients["dynamodb"].update_continuous_backups(
                    TableName=r.physical[name],
                    PointInTimeRecoverySpecification=props["PointInTimeRecoverySpecification"],
                )
        elif kind == "AWS::CloudWatch::Alarm":
            clients["cloudwatch"].put_metric_alarm(
                **{k: _alarm_value(k, v) for k, v in props.items()}
            )
        elif kind == "AWS::S3::BucketPolicy":
            s3.put_bucket_policy(Bucket=props["Bucket"], Policy=json.dumps(props["PolicyDocument"]))
        elif kind == "AWS::SQS::QueuePolicy":
            for url in props["Queues"]:
                sqs.set_queue_attributes(
                    QueueUrl=url, Attributes={"Policy": json.dumps(props["PolicyDocument"])}
                )
        elif kind == "AWS::Lambda::EventInvokeConfig":
            lam.put_function_event_invoke_config(
                FunctionName=props["FunctionName"],
                Qualifier=props["Qualifier"],
                MaximumRetryAttempts=int(props["MaximumRetryAttempts"]),
                MaximumEventAgeInSeconds=int(props["MaximumEventAgeInSeconds"]),
                DestinationConfig={
                    "OnFailure": {
                        "Destination": props["DestinationConfig"]["OnFailure"]["Destination"]
                    }
                },
            )
        else:  # pragma: no cover - a new type must be handled, not dropped
            raise AssertionError(f"{name}: {kind} is neither deployed by moto nor applied here")


def _alarm_value(key: str, value: Any) -> Any:
    """An alarm property as PutMetricAlarm takes it (CloudFormation passes numbers as strings)."""
    if key in {"Period", "EvaluationPeriods"}:
        return int(value)
    if key == "Threshold":
        return float(value)
    return value


def deploy(
    endpoint: str, stack: str, parameters: dict[str, str]
) -> tuple[dict[str, Any], Resolver]:
    """Create the stack in moto, then apply the rest; returns (stack outputs, resolver)."""
    parameters = {"ImageUri": IMAGE_URI, **parameters}  # what `make publish` passes
    clients = _clients(endpoint)
    cfn = clients["cloudformation"]
    for_moto, later = split_for_moto(sam_to_cloudformation(TEMPLATE, parameters), parameters)
    cfn.create_stack(
        StackName=stack,
        TemplateBody=json.dumps(for_moto),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    status = _wait_for_stack(cfn, stack)
    assert status["StackStatus"] == "CREATE_COMPLETE", status.get("StackStatusReason")
    resources = cfn.describe_stack_resources(StackName=stack)["StackResources"]
    # moto lists condition-false resources as empty entries, and gives AWS::Lambda::Permission
    # no physical id (only the input bucket's ordering tag refers to it).
    physical = {
        res["LogicalResourceId"]: res.get("PhysicalResourceId", "")
        for res in resources
        if "LogicalResourceId" in res
    }
    r = Resolver(for_moto, parameters, physical)
    for name, kind in ((n, x["Type"]) for n, x in for_moto["Resources"].items()):
        if name not in physical:
            continue
        if kind == "AWS::S3::Bucket":
            r.attributes[f"{name}.Arn"] = f"arn:aws:s3:::{physical[name]}"
        elif kind == "AWS::SQS::Queue":
            attrs = clients["sqs"].get_queue_attributes(
                QueueUrl=physical[name], AttributeNames=["QueueArn"]
            )
            r.attributes[f"{name}.Arn"] = attrs["Attributes"]["QueueArn"]
            r.attributes[f"{name}.QueueName"] = physical[name].rsplit("/", 1)[-1]
        elif kind == "AWS::Lambda::Function":
            r.attributes[f"{name}.Arn"] = clients["lambda"].get_function(
                FunctionName=physical[name]
            )["Configuration"]["FunctionArn"]
    r.physical["FaceRecognitionFunctionEventInvokeConfig"] = "n/a"
    apply_by_api(clients, later, r)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in status.get("Outputs", [])}
    return outputs, r


@pytest.fixture
def endpoint(moto_endpoint: str) -> str:
    return moto_endpoint


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["s3", "sqs", "invoke"])
def test_template_deploys_into_moto(endpoint: str, unique_name: str, mode: str) -> None:
    params = {"NamePrefix": f"{unique_name}-{mode}"[:20].rstrip("-"), "TriggerMode": mode}
    if mode == "invoke":  # the other branches of the optional parameters
        params |= {"RetainBuckets": "false", "AlarmEmail": "ops@example.org"}
    outputs, r = deploy(endpoint, f"{unique_name}-{mode}", params)
    c = _clients(endpoint)
    prefix = params["NamePrefix"]
    input_bucket, output_bucket = (
        f"{prefix}-input-{ACCOUNT}-{REGION}",
        f"{prefix}-output-{ACCOUNT}-{REGION}",
    )

    assert outputs["InputBucketName"] == input_bucket
    assert outputs["OutputBucketName"] == output_bucket
    assert outputs["TableName"] == f"{prefix}-students"
    assert outputs["FunctionName"] == f"{prefix}-face-recognition"

    for bucket in (input_bucket, output_bucket):
        enc = c["s3"].get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
        assert enc["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        block = c["s3"].get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert all(block.values()) and len(block) == 4
        policy = json.loads(c["s3"].get_bucket_policy(Bucket=bucket)["Policy"])
        assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert c["s3"].get_bucket_lifecycle_configuration(Bucket=input_bucket)["Rules"]

    table = c["dynamodb"].describe_table(TableName=outputs["TableName"])["Table"]
    assert table["KeySchema"] == [{"AttributeName": "name", "KeyType": "HASH"}]

    # The image is the stack's ImageUri parameter: the stack says what runs.
    code = c["lambda"].get_function(FunctionName=outputs["FunctionName"])["Code"]
    assert code["ImageUri"] == IMAGE_URI
    fn = c["lambda"].get_function_configuration(FunctionName=outputs["FunctionName"])
    assert fn["Environment"]["Variables"]["HYBRID_OUTPUT_BUCKET"] == output_bucket
    assert fn["Environment"]["Variables"]["HYBRID_TABLE"] == outputs["TableName"]
    assert fn["MemorySize"] == int(TEMPLATE["Parameters"]["FunctionMemoryMB"]["Default"])
    assert fn["Timeout"] == int(TEMPLATE["Parameters"]["FunctionTimeoutSeconds"]["Default"])
    role_name = fn["Role"].rsplit("/", 1)[-1]
    (inline,) = c["iam"].list_role_policies(RoleName=role_name)["PolicyNames"]
    assert c["iam"].list_attached_role_policies(RoleName=role_name)["AttachedPolicies"] == []
    deployed = c["iam"].get_role_policy(RoleName=role_name, PolicyName=inline)["PolicyDocument"]
    if isinstance(deployed, str):
        # moto's CloudFormation stores a Role's inline policy as the Python repr of the dict.
        deployed = ast.literal_eval(deployed)
    expected = r.resolve(TEMPLATE["Resources"]["FunctionRole"]["Properties"]["Policies"][0])
    assert deployed == expected["PolicyDocument"]

    invoke_config = c["lambda"].get_function_event_invoke_config(
        FunctionName=outputs["FunctionName"], Qualifier="$LATEST"
    )
    assert invoke_config["DestinationConfig"]["OnFailure"]["Destination"].endswith(
        f":{prefix}-failed-invocations"
    )
    assert invoke_config["MaximumRetryAttempts"] == 2

    # Alarms: each on its metric, each telling the stack's topic.
    topic_arn = outputs["AlarmTopicArn"]
    alarms = {a["AlarmName"]: a for a in c["cloudwatch"].describe_alarms()["MetricAlarms"]}
    ours = {n: a for n, a in alarms.items() if n.startswith(f"{prefix}-")}
    expected_alarms = {
        f"{prefix}-function-errors": ("Errors", outputs["FunctionName"]),
        f"{prefix}-function-throttles": ("Throttles", outputs["FunctionName"]),
        f"{prefix}-failed-invocations": (
            "ApproximateNumberOfMessagesVisible",
            f"{prefix}-failed-invocations",
        ),
    }
    if mode == "sqs":
        expected_alarms |= {
            f"{prefix}-input-events-dead-letters": (
                "ApproximateNumberOfMessagesVisible",
                f"{prefix}-input-events-dlq",
            ),
            f"{prefix}-input-events-oldest-message": (
                "ApproximateAgeOfOldestMessage",
                f"{prefix}-input-events",
            ),
        }
    assert {n: (a["MetricName"], a["Dimensions"][0]["Value"]) for n, a in ours.items()} == (
        expected_alarms
    )
    assert all(a["AlarmActions"] == [topic_arn] for a in ours.values())
    subscriptions = c["sns"].list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
    assert [s["Endpoint"] for s in subscriptions] == (
        ["ops@example.org"] if mode == "invoke" else []
    )
    if mode == "sqs":
        queue_url = c["sqs"].get_queue_url(QueueName=outputs["InputEventsQueueName"])["QueueUrl"]
        redrive = c["sqs"].get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["RedrivePolicy"]
        )["Attributes"]["RedrivePolicy"]
        assert json.loads(redrive)["maxReceiveCount"] >= 5
        (mapping,) = c["lambda"].list_event_source_mappings(FunctionName=outputs["FunctionName"])[
            "EventSourceMappings"
        ]
        assert mapping["ScalingConfig"] == {"MaximumConcurrency": 5}

    watcher = c["iam"].get_policy(PolicyArn=outputs["WatcherPolicyArn"])["Policy"]
    version = c["iam"].get_policy_version(
        PolicyArn=outputs["WatcherPolicyArn"], VersionId=watcher["DefaultVersionId"]
    )["PolicyVersion"]["Document"]
    document = json.loads(version) if isinstance(version, str) else version
    expected_doc = r.resolve(TEMPLATE["Resources"]["WatcherPolicy"]["Properties"]["PolicyDocument"])
    assert document == expected_doc
    assert any(st["Action"] == "lambda:InvokeFunction" for st in document["Statement"]) == (
        mode == "invoke"
    )

    notifications = c["s3"].get_bucket_notification_configuration(Bucket=input_bucket)
    configured = {
        "s3": "LambdaFunctionConfigurations",
        "sqs": "QueueConfigurations",
        "invoke": None,
    }[mode]
    kinds = {k for k in notifications if k.endswith("Configurations")}
    assert kinds == ({configured} if configured else set())
    if configured:
        # As deployed: one configuration per trigger suffix, no prefix rule (any key).
        rules = [
            {r["Name"].lower(): r["Value"] for r in c["Filter"]["Key"]["FilterRules"]}
            for c in notifications[configured]
        ]
        assert sorted(rule["suffix"] for rule in rules) == sorted(TRIGGER_SUFFIXES)
        assert all("prefix" not in rule for rule in rules)
    assert not {
        k
        for k in c["s3"].get_bucket_notification_configuration(Bucket=output_bucket)
        if k.endswith("Configurations")
    }

    backups = c["dynamodb"].describe_continuous_backups(TableName=outputs["TableName"])
    pitr = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
    assert pitr["PointInTimeRecoveryStatus"] == "ENABLED"

    # Teardown: the students table always outlives the stack; the buckets unless
    # RetainBuckets=false (set in invoke mode here).
    # (moto deletes a stack within the call; afterwards its name no longer resolves)
    c["cloudformation"].delete_stack(StackName=f"{unique_name}-{mode}")
    assert c["dynamodb"].describe_table(TableName=outputs["TableName"])["Table"]
    kept = {b["Name"] for b in c["s3"].list_buckets()["Buckets"]} & {input_bucket, output_bucket}
    assert kept == (set() if mode == "invoke" else {input_bucket, output_bucket})


def _drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every S3 record waiting in the queue (moto's s3:TestEvent messages are dropped)."""
    records = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = got.get("Messages", [])
        if not messages:
            return records
        for message in messages:
            body = json.loads(message["Body"])
            records.extend(body.get("Records", []))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


@pytest.mark.slow
def test_sqs_mode_queues_every_video_at_any_key_and_nothing_else(
    endpoint: str, unique_name: str
) -> None:
    params = {"NamePrefix": f"{unique_name}-q", "TriggerMode": "sqs"}
    outputs, _ = deploy(endpoint, f"{unique_name}-q", params)
    c = _clients(endpoint)
    queue_url = c["sqs"].get_queue_url(QueueName=outputs["InputEventsQueueName"])["QueueUrl"]
    _drain(c["sqs"], queue_url)
    inp, out = outputs["InputBucketName"], outputs["OutputBucketName"]
    for bucket in (inp, out):
        # moto evaluates the TLS-only Deny without the request's aws:SecureTransport, so it
        # refuses every put; the statement itself is checked in test_iam_policies.
        with pytest.raises(c["s3"].exceptions.ClientError, match="403"):
            c["s3"].put_object(Bucket=bucket, Key="videos/vm-1/s-0/probe.mp4", Body=b"x")
        c["s3"].delete_bucket_policy(Bucket=bucket)
    puts = [
        *((inp, f"videos/vm-1/s-1/clip{suffix}", True) for suffix in VIDEO_SUFFIXES),
        *((inp, f"clip{suffix}", True) for suffix in VIDEO_SUFFIXES),  # `aws s3 cp` to the root
        (inp, "other/IMG_0001.MOV", True),  # upper case triggers too
        (inp, "videos/vm-1/s-3/notes.txt", False),  # not a video type
        (inp, "videos/vm-1/s-4/clip.Mp4", False),  # mixed case: S3 filters are case-sensitive
        (inp, "_assets/known_faces.json", False),
        (out, "videos/vm-1/s-1/clip.csv", False),  # the function's own outputs never notify
        (out, "videos/vm-1/s-1/clip.mp4", False),
    ]
    assert all(triggers(key) == notify for bucket, key, notify in puts if bucket == inp)
    for bucket, key, _ in puts:
        c["s3"].put_object(Bucket=bucket, Key=key, Body=b"x")
    keys = sorted(rec["s3"]["object"]["key"] for rec in _drain(c["sqs"], queue_url))
    expected = sorted(key.replace("/", "%2F") for _, key, notify in puts if notify)
    assert keys == expected


# Runs the function's entry point in a fresh interpreter, as Lambda's runtime would: the
# environment is the deployed function's, the event arrives on stdin.
HANDLER_RUNNER = """
import json, sys
from lambda_fn.handler import handler

class Context:
    aws_request_id = "req-deploy-test"
    function_version = "$LATEST"
    def get_remaining_time_in_millis(self):
        return 300_000

print(json.dumps(handler(json.load(sys.stdin), Context())))
"""


def _cli(*args: str, env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_one_video_through_the_handler_on_the_deployed_stack(
    endpoint: str, unique_name: str, shared_data: Path, tmp_path: Path
) -> None:
    """S3 put -> the stack's queue -> the handler with the function's own environment -> CSV."""
    params = {
        "NamePrefix": f"{unique_name}-v",
        "TriggerMode": "sqs",
        "KnownFacesKey": "_assets/known_faces.json",
    }
    outputs, _ = deploy(endpoint, f"{unique_name}-v", params)
    c = _clients(endpoint)
    inp, out = outputs["InputBucketName"], outputs["OutputBucketName"]
    for bucket in (inp, out):
        c["s3"].delete_bucket_policy(Bucket=bucket)  # see test_sqs_mode_queues_only_videos_...

    # Seed the deployment with the same commands as the local cloud (issue 5, item 4).
    course = shared_data / "cse546"
    admin_env = {
        **os.environ,
        "HYBRID_ENDPOINT_URL": endpoint,
        "HYBRID_REGION": REGION,
        "HYBRID_TABLE": outputs["TableName"],
        "HYBRID_STAGING_ROOT": str(tmp_path / "staging"),
    }
    _cli("-m", "watcher", "students", "load", str(course / "student_data.json"), env=admin_env)
    known = tmp_path / "known_faces.json"
    _cli(
        "-m",
        "lambda_fn",
        "faces",
        "import-pickle",
        str(course / "encoding"),
        "-o",
        str(known),
        env=admin_env,
    )
    c["s3"].upload_file(str(known), inp, "_assets/known_faces.json")

    queue_url = c["sqs"].get_queue_url(QueueName=outputs["InputEventsQueueName"])["QueueUrl"]
    _drain(c["sqs"], queue_url)
    # The seed's own flow: a video put at the input bucket's root gets its CSV at the output's.
    key = "test_7.mp4"
    c["s3"].upload_file(str(course / "test_case_1" / "test_7.mp4"), inp, key)
    got = c["sqs"].receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    (message,) = got["Messages"]
    event = {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "eventSource": "aws:sqs",
                "awsRegion": REGION,
            }
        ]
    }

    fn = c["lambda"].get_function_configuration(FunctionName=outputs["FunctionName"])
    function_env = {
        **os.environ,
        **fn["Environment"]["Variables"],
        "HYBRID_ENDPOINT_URL": endpoint,  # the one difference from AWS
        "HYBRID_TMP_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-c", HANDLER_RUNNER],
        input=json.dumps(event),
        env=function_env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    response = json.loads(result.stdout.strip().splitlines()[-1])
    assert response["batchItemFailures"] == []

    students = {s["name"]: s for s in json.loads((course / "student_data.json").read_text())}
    freeman = students["morgan_freeman"]
    csv = c["s3"].get_object(Bucket=out, Key="test_7.csv")["Body"].read()
    assert csv.decode() == f"morgan_freeman,{freeman['major']},{freeman['year']}\n"
    details = json.loads(c["s3"].get_object(Bucket=out, Key="test_7.json")["Body"].read())
    assert [p["name"] for p in details["people"]] == ["morgan_freeman"]
