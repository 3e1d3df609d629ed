"""The template's IAM grants exactly the least-privilege list of issue 5, in every trigger mode.

Policies are read from deploy/aws/template.yaml, resolved for concrete parameters, and compared
statement by statement with the expected grants written out here independently: any extra
action, wider resource or missing condition fails.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cfn_template import ACCOUNT, REGION, SAM_TEMPLATE, load_template, static_names

TEMPLATE = load_template()
RESOURCES = TEMPLATE["Resources"]

# (effect, actions, resources, condition) with the sets frozen so statements compare as values.
Grant = tuple[str, frozenset[str], frozenset[str], str]


def _statements(document: dict[str, Any]) -> list[Grant]:
    grants = []
    for st in document["Statement"]:
        assert not {"NotAction", "NotResource", "NotPrincipal"} & st.keys(), st
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        grants.append(
            (
                st["Effect"],
                frozenset(actions),
                frozenset(resources),
                json.dumps(st.get("Condition"), sort_keys=True),
            )
        )
    return sorted(grants, key=repr)


def _allow(actions: list[str], resources: list[str], condition: Any = None) -> Grant:
    return (
        "Allow",
        frozenset(actions),
        frozenset(resources),
        json.dumps(condition, sort_keys=True),
    )


MODES = [
    pytest.param({"TriggerMode": "s3"}, id="s3"),
    pytest.param({"TriggerMode": "sqs"}, id="sqs"),
    pytest.param({"TriggerMode": "invoke"}, id="invoke"),
    pytest.param({"TriggerMode": "s3", "KnownFacesKey": ""}, id="s3-faces-in-image"),
    pytest.param(
        {
            "TriggerMode": "invoke",
            "NamePrefix": "hs-lab",
            "KeyPrefix": "clips",
            "WatcherNodeId": "vm-7",
        },
        id="invoke-named-node",
    ),
]


def _names(params: dict[str, str]) -> dict[str, str]:
    r = static_names(TEMPLATE, params)
    p, k = r.parameters["NamePrefix"], r.parameters["KeyPrefix"]
    return {
        "input": f"{p}-input-{ACCOUNT}-{REGION}",
        "output": f"{p}-output-{ACCOUNT}-{REGION}",
        "table": f"{p}-students",
        "function": f"{p}-face-recognition",
        "key_prefix": k,
        "node": r.parameters["WatcherNodeId"],
        "known_faces": r.parameters["KnownFacesKey"],
        "failed_queue": f"{p}-failed-invocations",
        "events_queue": f"{p}-input-events",
    }


def _expected_function_grants(params: dict[str, str]) -> list[Grant]:
    n = _names(params)
    grants = [
        _allow(
            ["logs:CreateLogStream", "logs:PutLogEvents"],
            [f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{n['function']}:*"],
        ),
        # Any key of the input bucket may be a video (hybrid_common.video_suffixes); the
        # known-faces file is there too.
        _allow(["s3:GetObject"], [f"arn:aws:s3:::{n['input']}/*"]),
        # So that a deleted input is a 404 (`input_missing`), not a 403; unconditioned, as
        # HeadObject carries no s3:prefix.
        _allow(["s3:ListBucket"], [f"arn:aws:s3:::{n['input']}"]),
        # Delete: a failure removes any earlier answer before writing <stem>.error.json.
        # Results sit at their input's path: any key.
        _allow(["s3:PutObject", "s3:DeleteObject"], [f"arn:aws:s3:::{n['output']}/*"]),
        _allow(
            ["dynamodb:BatchGetItem"],
            [f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{n['table']}"],
        ),
        # The on-failure destination is written with the function's own role.
        _allow(["sqs:SendMessage"], [f"arn:aws:sqs:{REGION}:{ACCOUNT}:{n['failed_queue']}"]),
    ]
    if params["TriggerMode"] == "sqs":
        # What the SQS event source mapping polls with, on the function's role.
        grants.append(
            _allow(
                ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
                [f"arn:aws:sqs:{REGION}:{ACCOUNT}:{n['events_queue']}"],
            )
        )
    return sorted(grants, key=repr)


def _expected_watcher_grants(params: dict[str, str]) -> list[Grant]:
    n = _names(params)
    own = f"{n['key_prefix']}/{n['node']}/*"
    grants = [
        _allow(
            ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
            [f"arn:aws:s3:::{n['input']}/{own}"],
        ),
        # HeadObject (authorised by s3:GetObject) on its own uploads, to check a completed
        # multipart upload's size.
        _allow(["s3:GetObject"], [f"arn:aws:s3:::{n['input']}/{own}"]),
        _allow(
            ["s3:ListBucket"],
            [f"arn:aws:s3:::{n['input']}"],
            {"StringLike": {"s3:prefix": own}},
        ),
        # No s3:prefix condition key exists for this action; it lists upload keys, not data.
        _allow(["s3:ListBucketMultipartUploads"], [f"arn:aws:s3:::{n['input']}"]),
        _allow(
            ["s3:ListBucket"],
            [f"arn:aws:s3:::{n['output']}"],
            {"StringLike": {"s3:prefix": own}},
        ),
        _allow(["s3:GetObject"], [f"arn:aws:s3:::{n['output']}/{own}"]),
    ]
    if params["TriggerMode"] == "invoke":
        grants.append(
            _allow(
                ["lambda:InvokeFunction"],
                [f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{n['function']}"],
            )
        )
    return sorted(grants, key=repr)


def test_iam_resources_are_only_the_function_role_and_the_watcher_policy() -> None:
    iam = {name: r["Type"] for name, r in RESOURCES.items() if r["Type"].startswith("AWS::IAM::")}
    assert iam == {"FunctionRole": "AWS::IAM::Role", "WatcherPolicy": "AWS::IAM::ManagedPolicy"}
    role = RESOURCES["FunctionRole"]["Properties"]
    # No AWS managed policies (AWSLambdaBasicExecutionRole allows CreateLogGroup on any group).
    assert set(role) == {"Description", "AssumeRolePolicyDocument", "Policies"}
    fn = RESOURCES["FaceRecognitionFunction"]["Properties"]
    # SAM would generate a role (and attach policies) if `Role` were absent or `Policies` set.
    assert fn["Role"] == {"Fn::GetAtt": ["FunctionRole", "Arn"]}
    assert "Policies" not in fn
    assert "Globals" not in TEMPLATE


def test_function_role_is_assumable_by_lambda_only() -> None:
    r = static_names(TEMPLATE, {})
    doc = r.resolve(RESOURCES["FunctionRole"]["Properties"]["AssumeRolePolicyDocument"])
    assert doc["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}},
        }
    ]


@pytest.mark.parametrize("params", MODES)
def test_function_role_grants_exactly_the_list(params: dict[str, str]) -> None:
    r = static_names(TEMPLATE, params)
    policies = r.resolve(RESOURCES["FunctionRole"]["Properties"]["Policies"])
    assert len(policies) == 1
    assert _statements(policies[0]["PolicyDocument"]) == _expected_function_grants(params)


@pytest.mark.parametrize("params", MODES)
def test_watcher_policy_grants_exactly_the_list(params: dict[str, str]) -> None:
    r = static_names(TEMPLATE, params)
    policy = r.resolve(RESOURCES["WatcherPolicy"]["Properties"])
    assert set(policy) == {"ManagedPolicyName", "Description", "PolicyDocument"}
    assert "Users" not in policy and "Roles" not in policy  # attached by the operator
    assert _statements(policy["PolicyDocument"]) == _expected_watcher_grants(params)


@pytest.mark.parametrize("params", MODES)
def test_policy_arns_name_the_template_own_resources(params: dict[str, str]) -> None:
    """Policies spell bucket/table/function names as strings: they must match the resources."""
    r = static_names(TEMPLATE, params)
    n = _names(params)
    props = {name: r.resolve(res.get("Properties", {})) for name, res in RESOURCES.items()}
    assert props["InputBucket"]["BucketName"] == n["input"]
    assert props["OutputBucket"]["BucketName"] == n["output"]
    assert props["StudentsTable"]["TableName"] == n["table"]
    assert props["FaceRecognitionFunction"]["FunctionName"] == n["function"]
    assert props["FunctionLogGroup"]["LogGroupName"] == f"/aws/lambda/{n['function']}"
    assert props["FailedInvocationsQueue"]["QueueName"] == n["failed_queue"]
    if params["TriggerMode"] == "sqs":
        assert props["InputEventsQueue"]["QueueName"] == n["events_queue"]
    env = props["FaceRecognitionFunction"]["Environment"]["Variables"]
    if n["known_faces"]:
        assert env["HYBRID_KNOWN_FACES"] == f"s3://{n['input']}/{n['known_faces']}"
    else:
        assert "HYBRID_KNOWN_FACES" not in env


@pytest.mark.parametrize("bucket", ["InputBucket", "OutputBucket"])
def test_bucket_policies_only_deny_insecure_transport(bucket: str) -> None:
    r = static_names(TEMPLATE, {})
    (policy_id,) = [
        name
        for name, res in RESOURCES.items()
        if res["Type"] == "AWS::S3::BucketPolicy" and res["Properties"]["Bucket"] == {"Ref": bucket}
    ]
    doc = r.resolve(RESOURCES[policy_id]["Properties"]["PolicyDocument"])
    arn = r.attributes[f"{bucket}.Arn"]
    assert doc["Statement"] == [
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [arn, f"{arn}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    ]


def test_only_the_input_bucket_may_invoke_or_notify() -> None:
    r = static_names(TEMPLATE, {"TriggerMode": "s3"})
    perm = r.resolve(RESOURCES["InputBucketInvokePermission"]["Properties"])
    assert perm["Principal"] == "s3.amazonaws.com"
    assert perm["SourceArn"] == r.attributes["InputBucket.Arn"]
    assert perm["SourceAccount"] == ACCOUNT
    assert perm["Action"] == "lambda:InvokeFunction"

    r = static_names(TEMPLATE, {"TriggerMode": "sqs"})
    doc = r.resolve(RESOURCES["InputEventsQueuePolicy"]["Properties"]["PolicyDocument"])
    assert doc["Statement"] == [
        {
            "Sid": "InputBucketNotifications",
            "Effect": "Allow",
            "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": r.attributes["InputEventsQueue.Arn"],
            "Condition": {
                "ArnEquals": {"aws:SourceArn": r.attributes["InputBucket.Arn"]},
                "StringEquals": {"aws:SourceAccount": ACCOUNT},
            },
        }
    ]


def test_no_policy_in_the_template_uses_wildcard_actions() -> None:
    """Belt and braces over the exact comparisons: no 'service:*' grant anywhere but the Deny."""
    wildcard_lines = [
        line.strip()
        for line in SAM_TEMPLATE.read_text().splitlines()
        if "Action" in line and ":*" in line
    ]
    # The two bucket policies' DenyInsecureTransport statements.
    assert wildcard_lines == ['Action: "s3:*"', 'Action: "s3:*"']
