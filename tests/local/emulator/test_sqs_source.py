"""Lambda's partial batch response rules and the SQS records handed to the function."""

from __future__ import annotations

import json

from local_stack.emulator.environment_pool import Invocation, Status
from local_stack.emulator.invoke_api import function_name_of
from local_stack.emulator.sqs_source import failed_message_ids, lambda_sqs_record

IDS = ["m1", "m2", "m3"]


def _ok(result: object) -> Invocation:
    return Invocation("r", Status.OK, json.dumps(result), 1.0, cold=False)


def test_a_failed_invocation_fails_the_whole_batch() -> None:
    for status in (Status.ERROR, Status.CRASH, Status.TIMEOUT):
        assert failed_message_ids(Invocation("r", status, "{}", 1.0, cold=False), IDS) == set(IDS)


def test_batch_item_failures_fail_only_the_listed_messages() -> None:
    assert failed_message_ids(_ok({"batchItemFailures": [{"itemIdentifier": "m2"}]}), IDS) == {"m2"}
    assert failed_message_ids(_ok({"batchItemFailures": []}), IDS) == set()
    assert failed_message_ids(_ok(None), IDS) == set()
    assert failed_message_ids(_ok({"anything": 1}), IDS) == set()


def test_an_invalid_partial_response_fails_the_whole_batch_as_lambda_does() -> None:
    for bad in (
        {"batchItemFailures": [{"itemIdentifier": "unknown"}]},
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{}]},
        {"batchItemFailures": "m1"},
    ):
        assert failed_message_ids(_ok(bad), IDS) == set(IDS), bad


def test_sqs_records_have_lambdas_shape() -> None:
    message = {
        "MessageId": "m1",
        "ReceiptHandle": "h",
        "Body": "{}",
        "MD5OfBody": "x",
        "Attributes": {"ApproximateReceiveCount": "2"},
        "MessageAttributes": {"a": {"StringValue": "v", "DataType": "String"}},
    }
    record = lambda_sqs_record(message, "arn:aws:sqs:us-east-1:1:q", "us-east-1")  # type: ignore[arg-type]
    assert record["messageId"] == "m1" and record["receiptHandle"] == "h"
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"].endswith(":q")
    assert record["attributes"]["ApproximateReceiveCount"] == "2"
    assert record["messageAttributes"]["a"]["stringValue"] == "v"


def test_function_names_arns_and_qualifiers_resolve_to_the_name() -> None:
    assert function_name_of("fn") == "fn"
    assert function_name_of("fn:$LATEST") == "fn"
    assert function_name_of("arn:aws:lambda:us-east-1:123:function:fn:prod") == "fn"
    assert function_name_of("123:function:fn") == "fn"
