"""deploy/aws/template.yaml: cfn-lint clean, and shaped as issue 5 asks (offline, no AWS)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfn_template import ACCOUNT, REPO, SAM_TEMPLATE, load_template, static_names
from hypothesis import given, settings
from hypothesis import strategies as st

from lambda_fn.settings import FunctionSettings, RecognitionOptions
from watcher.settings import WatcherSettings

TEMPLATE = load_template()
RESOURCES = TEMPLATE["Resources"]


def _cfn_lint() -> str:
    """cfn-lint from PATH or this venv (moto[server] depends on it); skip if neither has it."""
    found = shutil.which("cfn-lint") or shutil.which(
        "cfn-lint", path=str(Path(sys.executable).parent)
    )
    if not found:
        pytest.skip("cfn-lint is not installed (pip install cfn-lint); template not linted")
    return found


@pytest.mark.slow
def test_cfn_lint_passes_on_the_sam_template() -> None:
    result = subprocess.run(
        [_cfn_lint(), "--format", "parseable", str(SAM_TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_cfn_lint_catches_a_broken_reference(tmp_path: Path) -> None:
    """The lint check above can fail: a dangling !Ref in a copy of the template is reported."""
    broken = tmp_path / "template.yaml"
    broken.write_text(
        SAM_TEMPLATE.read_text().replace("!Ref InputEventsQueuePolicy]", "!Ref NoSuchResource]")
    )
    result = subprocess.run(
        [_cfn_lint(), "--format", "parseable", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "NoSuchResource" in result.stdout


# The SAM CLI runs from a tool environment of its own (`uv tool run`), never from uv.lock: it pins
# its own ranges of boto3, cfn-lint and more, which must not constrain ours. .ci/run installs it.
SAM_CLI = "aws-sam-cli==1.170.0"


def _sam() -> list[str]:
    """The command that runs `sam`; skip, saying why, only if it cannot be installed here."""
    uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    if not Path(uv).exists():
        pytest.skip("uv is not installed: cannot run the SAM CLI (scripts/ensure-uv.sh)")
    command = [uv, "tool", "run", "--from", SAM_CLI, "sam"]
    probe = subprocess.run(
        [*command, "--version"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=_sam_env(),
    )
    if probe.returncode != 0 or "SAM CLI" not in probe.stdout:
        pytest.skip(f"{SAM_CLI} cannot be installed here: {probe.stderr.strip()[-300:]}")
    return command


def _sam_env() -> dict[str, str]:
    return {**os.environ, "SAM_CLI_TELEMETRY": "0"}


def _sam_validate(template: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_sam(), "validate", "--lint", "--template", str(template), "--region", "us-east-1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=_sam_env(),
    )


@pytest.mark.slow
def test_sam_validate_lint_passes_on_the_sam_template() -> None:
    result = _sam_validate(SAM_TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout


@pytest.mark.slow
def test_sam_validate_catches_a_broken_alarm(tmp_path: Path) -> None:
    """The check above can fail: an alarm naming a topic that does not exist is reported."""
    broken = tmp_path / "template.yaml"
    text = SAM_TEMPLATE.read_text()
    assert "AlarmActions: [!Ref AlarmTopic]" in text
    broken.write_text(
        text.replace("AlarmActions: [!Ref AlarmTopic]", "AlarmActions: [!Ref NoTopic]")
    )
    result = _sam_validate(broken)
    assert result.returncode != 0
    assert "NoTopic" in result.stdout + result.stderr


def _resolved(params: dict[str, str]) -> dict[str, dict[str, Any]]:
    r = static_names(TEMPLATE, params)
    return {
        name: r.resolve(res.get("Properties", {}))
        for name, res in RESOURCES.items()
        if r.resource_exists(name)
    }


def test_function_is_an_image_built_by_sam_from_lambda_fn_dockerfile() -> None:
    fn = RESOURCES["FaceRecognitionFunction"]
    # LanguageExtensions must come first: it resolves the deletion policies SAM passes through.
    assert TEMPLATE["Transform"] == ["AWS::LanguageExtensions", "AWS::Serverless-2016-10-31"]
    assert fn["Type"] == "AWS::Serverless::Function"
    props, meta = fn["Properties"], fn["Metadata"]
    assert props["PackageType"] == "Image"
    # `sam build` resolves DockerContext relative to the template's folder.
    assert (SAM_TEMPLATE.parent / meta["DockerContext"]).resolve() == REPO
    assert meta["Dockerfile"] == "lambda_fn/Dockerfile"
    assert props["ImageConfig"]["Command"] == ["lambda_fn.handler.handler"]
    for absent in ("CodeUri", "Handler", "Runtime", "InlineCode"):
        assert absent not in props


def test_the_dockerfile_and_handler_named_by_the_template_exist() -> None:
    # No skip: a template naming a missing Dockerfile or handler is exactly what this catches.
    fn = RESOURCES["FaceRecognitionFunction"]
    dockerfile = (
        SAM_TEMPLATE.parent / fn["Metadata"]["DockerContext"] / fn["Metadata"]["Dockerfile"]
    )
    assert dockerfile.is_file(), f"{dockerfile} named by the template does not exist"
    (command,) = fn["Properties"]["ImageConfig"]["Command"]
    module, _, function = command.rpartition(".")
    handler = REPO / (module.replace(".", "/") + ".py")
    assert handler.is_file(), f"{handler} named by the template does not exist"
    assert f"def {function}(" in handler.read_text()


def test_function_sizing_comes_from_parameters() -> None:
    props = RESOURCES["FaceRecognitionFunction"]["Properties"]
    assert props["MemorySize"] == {"Ref": "FunctionMemoryMB"}
    assert props["Timeout"] == {"Ref": "FunctionTimeoutSeconds"}
    assert props["EphemeralStorage"] == {"Size": {"Ref": "EphemeralStorageMB"}}
    for params, expected in [({}, None), ({"ReservedConcurrency": "5"}, "5")]:
        fn = _resolved(params)["FaceRecognitionFunction"]
        assert fn.get("ReservedConcurrentExecutions") == expected


def test_failed_async_invocations_go_to_a_queue() -> None:
    fn = _resolved({})["FaceRecognitionFunction"]
    on_failure = fn["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert on_failure["Type"] == "SQS"
    assert on_failure["Destination"].endswith(":hybridsphere-failed-invocations")
    # An explicit retry count and event age, not Lambda's silent defaults.
    assert fn["EventInvokeConfig"]["MaximumRetryAttempts"] == 2
    assert fn["EventInvokeConfig"]["MaximumEventAgeInSeconds"] == 21600


@pytest.mark.parametrize("mode", ["s3", "sqs", "invoke"])
def test_every_failure_path_has_an_alarm_on_the_topic(mode: str) -> None:
    resolved = _resolved({"TriggerMode": mode})
    alarms = {
        name: props
        for name, props in resolved.items()
        if RESOURCES[name]["Type"] == "AWS::CloudWatch::Alarm"
    }
    watched = {
        (a["Namespace"], a["MetricName"], a["Dimensions"][0]["Value"]) for a in alarms.values()
    }
    expected = {
        ("AWS/Lambda", "Errors", "hybridsphere-face-recognition"),
        ("AWS/Lambda", "Throttles", "hybridsphere-face-recognition"),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "hybridsphere-failed-invocations"),
    }
    if mode == "sqs":
        expected |= {
            ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "hybridsphere-input-events-dlq"),
            ("AWS/SQS", "ApproximateAgeOfOldestMessage", "hybridsphere-input-events"),
        }
    assert watched == expected
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == [f"arn:aws:sns:us-east-1:{ACCOUNT}:hybridsphere-alarms"]
        assert alarm["TreatMissingData"] == "notBreaching"  # no traffic is not a failure


def test_alarm_email_subscribes_only_when_given() -> None:
    assert "Subscription" not in _resolved({})["AlarmTopic"]
    topic = _resolved({"AlarmEmail": "ops@example.org"})["AlarmTopic"]
    assert topic["Subscription"] == [{"Protocol": "email", "Endpoint": "ops@example.org"}]


def _deletion_policy(name: str, params: dict[str, str]) -> str:
    policy = static_names(TEMPLATE, params).resolve(RESOURCES[name]["DeletionPolicy"])
    assert isinstance(policy, str)
    return policy


def test_students_table_is_kept_and_restorable() -> None:
    table = RESOURCES["StudentsTable"]
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
    pitr = table["Properties"]["PointInTimeRecoverySpecification"]
    assert pitr == {"PointInTimeRecoveryEnabled": True}


@pytest.mark.parametrize("bucket", ["InputBucket", "OutputBucket"])
def test_buckets_are_kept_unless_the_parameter_says_otherwise(bucket: str) -> None:
    assert _deletion_policy(bucket, {}) == "Retain"
    assert _deletion_policy(bucket, {"RetainBuckets": "false"}) == "Delete"
    assert RESOURCES[bucket]["UpdateReplacePolicy"] == "Retain"


def test_function_environment_names_real_settings() -> None:
    """Every variable the template sets is a field the function reads (HYBRID_ + field name)."""
    env = _resolved({"KnownFacesKey": "config/known_faces.json"})["FaceRecognitionFunction"][
        "Environment"
    ]["Variables"]
    fields = set(FunctionSettings.model_fields) | set(RecognitionOptions.model_fields)
    assert all(name.startswith("HYBRID_") for name in env)
    assert {name.removeprefix("HYBRID_").lower() for name in env} <= fields
    names = static_names(TEMPLATE, {})
    assert env["HYBRID_OUTPUT_BUCKET"] == names.physical["OutputBucket"]
    assert env["HYBRID_OUTPUT_BUCKET"] != names.physical["InputBucket"]
    assert env["HYBRID_TABLE"] == names.physical["StudentsTable"]
    # Lambda sets AWS_REGION, but the settings read HYBRID_REGION (default us-east-1).
    assert env["HYBRID_REGION"] == "us-east-1"
    assert (
        RecognitionOptions.model_fields["mode"].default
        == TEMPLATE["Parameters"]["RecognitionMode"]["Default"]
    )


def test_template_defaults_match_the_watcher_defaults() -> None:
    defaults = static_names(TEMPLATE, {})
    fields = WatcherSettings.model_fields
    assert defaults.parameters["KeyPrefix"] == fields["key_prefix"].default
    assert defaults.physical["FaceRecognitionFunction"] == fields["function_name"].default
    assert defaults.physical["StudentsTable"] == fields["table"].default
    sqs = _resolved({"TriggerMode": "sqs"})
    assert sqs["InputEventsQueue"]["QueueName"] == fields["queue"].default


@pytest.mark.parametrize("bucket", ["InputBucket", "OutputBucket"])
def test_buckets_are_encrypted_private_and_tls_only(bucket: str) -> None:
    props = _resolved({})[bucket]
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    policies = [
        res
        for res in RESOURCES.values()
        if res["Type"] == "AWS::S3::BucketPolicy" and res["Properties"]["Bucket"] == {"Ref": bucket}
    ]
    assert len(policies) == 1  # statement checked in test_iam_policies


def _notifications(params: dict[str, str]) -> dict[str, Any]:
    return _resolved(params)["InputBucket"].get("NotificationConfiguration", {})


# The triggers themselves: tests/deploy/test_video_triggers.py.


def test_invoke_mode_has_no_bucket_notification() -> None:
    assert _notifications({"TriggerMode": "invoke"}) == {}


@pytest.mark.parametrize("mode", ["s3", "sqs", "invoke"])
def test_the_function_can_never_trigger_itself(mode: str) -> None:
    """Only the input bucket notifies, and the function may write only the output bucket."""
    resolved = _resolved({"TriggerMode": mode})
    notifying = [name for name, props in resolved.items() if "NotificationConfiguration" in props]
    assert notifying == (["InputBucket"] if mode != "invoke" else [])
    assert resolved["InputBucket"]["BucketName"] != resolved["OutputBucket"]["BucketName"]
    statements = resolved["FunctionRole"]["Policies"][0]["PolicyDocument"]["Statement"]
    written = [
        st["Resource"]
        for st in statements
        if "s3:PutObject" in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])
    ]
    assert written == [f"arn:aws:s3:::{resolved['OutputBucket']['BucketName']}/*"]


@pytest.mark.parametrize("mode", ["s3", "sqs", "invoke"])
def test_resources_present_per_trigger_mode(mode: str) -> None:
    present = set(_resolved({"TriggerMode": mode}))
    always = {
        "InputBucket",
        "InputBucketPolicy",
        "OutputBucket",
        "OutputBucketPolicy",
        "StudentsTable",
        "FunctionLogGroup",
        "FailedInvocationsQueue",
        "FunctionRole",
        "FaceRecognitionFunction",
        "WatcherPolicy",
        "AlarmTopic",
        "FunctionErrorsAlarm",
        "FunctionThrottlesAlarm",
        "FailedInvocationsAlarm",
    }
    extra = {
        "s3": {"InputBucketInvokePermission"},
        "sqs": {
            "InputEventsQueue",
            "InputEventsDeadLetterQueue",
            "InputEventsQueuePolicy",
            "InputEventsMapping",
            "InputEventsDeadLetterAlarm",
            "InputEventsAgeAlarm",
        },
        "invoke": set(),
    }[mode]
    assert present == always | extra


def test_sqs_option_consumes_with_batch_item_failures_and_a_dead_letter_queue() -> None:
    resolved = _resolved({"TriggerMode": "sqs"})
    mapping = resolved["InputEventsMapping"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert (
        mapping["EventSourceArn"] == static_names(TEMPLATE, {}).attributes["InputEventsQueue.Arn"]
    )
    queue = resolved["InputEventsQueue"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"].endswith(":hybridsphere-input-events-dlq")
    assert queue["RedrivePolicy"]["maxReceiveCount"] >= 5  # AWS's advice for Lambda consumers
    scaling = _resolved({"TriggerMode": "sqs", "MaximumConcurrency": "7"})["InputEventsMapping"]
    assert scaling["ScalingConfig"] == {"MaximumConcurrency": "7"}
    # Lambda refuses a mapping whose queue hides messages for less than the function timeout.
    # AWS recommends six times the timeout; compare the defaults.
    params = TEMPLATE["Parameters"]
    visibility = params["QueueVisibilityTimeoutSeconds"]["Default"]
    assert visibility >= 6 * params["FunctionTimeoutSeconds"]["Default"]


def test_students_table_is_keyed_by_name() -> None:
    table = _resolved({})["StudentsTable"]
    assert table["KeySchema"] == [{"AttributeName": "name", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "name", "AttributeType": "S"}]
    assert table["BillingMode"] == "PAY_PER_REQUEST"


def test_outputs_give_what_the_watcher_config_needs() -> None:
    outputs = TEMPLATE["Outputs"]
    assert outputs["InputBucketName"]["Value"] == {"Ref": "InputBucket"}
    assert outputs["OutputBucketName"]["Value"] == {"Ref": "OutputBucket"}
    assert outputs["TableName"]["Value"] == {"Ref": "StudentsTable"}
    assert outputs["FunctionName"]["Value"] == {"Ref": "FaceRecognitionFunction"}
    assert outputs["WatcherPolicyArn"]["Value"] == {"Ref": "WatcherPolicy"}


@pytest.mark.parametrize("mode", ["s3", "sqs", "invoke"])
def test_bucket_tags_are_valid_s3_tags(mode: str) -> None:
    """S3 tag values allow letters, digits, spaces and _ . : / = + - @ only (no '|')."""
    r = static_names(TEMPLATE, {"TriggerMode": mode})
    r.physical["InputBucketInvokePermission"] = "arn:aws:lambda:…:function:f|stack-Invoke-1"
    for bucket in ("InputBucket", "OutputBucket"):
        for tag in r.resolve(RESOURCES[bucket]["Properties"]["Tags"]):
            assert re.fullmatch(r"[\w .:/=+\-@]{0,256}", tag["Value"]), tag


KNOWN_FACES_PATTERN = re.compile(TEMPLATE["Parameters"]["KnownFacesKey"]["AllowedPattern"])
KEY_PREFIX_PATTERN = re.compile(TEMPLATE["Parameters"]["KeyPrefix"]["AllowedPattern"])
NODE_PATTERN = re.compile(TEMPLATE["Parameters"]["WatcherNodeId"]["AllowedPattern"])


@pytest.mark.parametrize(
    "key",
    [
        "videos/vm-1/known_faces.json",  # under a node's prefix: its PutObject grant reaches it
        "videos/known_faces.json",
        "clips/x/known_faces.json",
        "config/known_faces.json",  # could be a KeyPrefix (`config`) of another deployment
        "_assets/known_faces.npz",  # the loader reads JSON only
        "_assets/known_faces.JSON",
        "_assets/known_faces.json.mp4",  # would trigger the function
        "_assets/*.json",  # an IAM wildcard in the ARN built from the key
        "_assets/${aws:username}.json",  # an IAM policy variable
        "_assets/../videos/vm-1/known_faces.json",
        "_assets//known_faces.json",
        "/_assets/known_faces.json",
        "_assets/.hidden.json",
        "_assets/known faces.json",
        "_assets/known_faces.json\n",
    ],
)
def test_known_faces_key_refuses_keys_a_watcher_could_overwrite_or_the_function_cannot_load(
    key: str,
) -> None:
    assert not KNOWN_FACES_PATTERN.fullmatch(key)


@pytest.mark.parametrize("key", ["", "_assets/known_faces.json", "_hs/v2/faces-2026.json"])
def test_known_faces_key_accepts_the_default_and_plain_keys(key: str) -> None:
    assert KNOWN_FACES_PATTERN.fullmatch(key)
    assert TEMPLATE["Parameters"]["KnownFacesKey"]["Default"] == "_assets/known_faces.json"


@settings(max_examples=300, deadline=None)
@given(
    key=st.from_regex(KNOWN_FACES_PATTERN, fullmatch=True),
    prefix=st.from_regex(KEY_PREFIX_PATTERN, fullmatch=True),
    node=st.from_regex(NODE_PATTERN, fullmatch=True),
)
def test_no_accepted_known_faces_key_is_under_any_watchers_prefix(
    key: str, prefix: str, node: str
) -> None:
    """The watcher policy's PutObject resource is `<KeyPrefix>/<WatcherNodeId>/*` (IAM's `*`
    spans '/'): no key the parameter admits may match it, whatever the other parameters."""
    grant = re.escape(f"{prefix}/{node}/").replace(r"\*", ".*") + ".*"
    assert not re.fullmatch(grant, key, re.DOTALL)
    assert not key.endswith((".mp4", ".MP4")) and (key == "" or key.endswith(".json"))


@pytest.mark.slow
def test_cfn_lint_refuses_a_known_faces_default_under_a_node_prefix(tmp_path: Path) -> None:
    """The pattern is enforced: cfn-lint (E2015) rejects a default it does not admit."""
    copy = tmp_path / "template.yaml"
    copy.write_text(
        SAM_TEMPLATE.read_text().replace(
            "Default: _assets/known_faces.json", "Default: videos/vm-1/known_faces.json"
        )
    )
    result = subprocess.run(
        [_cfn_lint(), "--format", "parseable", str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "E2015" in result.stdout
