"""The students directory against moto's DynamoDB, and against a throttling endpoint."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from structlog.testing import capture_logs

from lambda_fn.directory import DirectoryUnavailable, Student, StudentDirectory


def make_table(endpoint: str, name: str, students: list[dict[str, Any]]) -> Any:
    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    client.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "name", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "name", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for s in students:
        client.put_item(
            TableName=name,
            Item={
                "id": {"N": str(s["id"])},
                "name": {"S": s["name"]},
                "major": {"S": s["major"]},
                "year": {"S": s["year"]},
            },
        )
    return client


@pytest.fixture
def course_students(shared_data: Path) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(
        (shared_data / "cse546" / "student_data.json").read_text()
    )
    return data


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_request_for_all_names_and_missing_names_reported(
    moto_endpoint: str, unique_name: str, course_students: list[dict[str, Any]]
) -> None:
    client = make_table(moto_endpoint, unique_name, course_students)
    directory = StudentDirectory(client, unique_name)
    names = ["president_trump", "mr_bean", "bush", "president_trump"]
    with capture_logs() as logs:
        found = directory.lookup(names)
    assert directory.requests == 1
    assert list(found) == ["president_trump", "mr_bean", "bush"]
    assert found["president_trump"] == Student("president_trump", "physics", "junior")
    # The table holds `freshmen` (the course mapping says `freshman`): report what it holds.
    assert found["mr_bean"] == Student("mr_bean", "lawyer", "freshmen")
    assert found["bush"] == Student("bush", "", "", found=False)
    assert [e for e in logs if e["event"] == "student.missing"] == [
        {"event": "student.missing", "name": "bush", "table": unique_name, "log_level": "warning"}
    ]


def test_answers_are_cached_until_the_ttl_expires(
    moto_endpoint: str, unique_name: str, course_students: list[dict[str, Any]]
) -> None:
    client = make_table(moto_endpoint, unique_name, course_students)
    clock = Clock()
    directory = StudentDirectory(client, unique_name, ttl_s=60, clock=clock)
    assert directory.lookup(["floki"])["floki"].major == "history"
    client.update_item(
        TableName=unique_name,
        Key={"name": {"S": "floki"}},
        UpdateExpression="SET major = :m",
        ExpressionAttributeValues={":m": {"S": "physics"}},
    )
    clock.now += 59
    assert directory.lookup(["floki"])["floki"].major == "history"
    assert directory.requests == 1
    clock.now += 2
    assert directory.lookup(["floki"])["floki"].major == "physics"
    assert directory.requests == 2


def test_more_names_than_one_request_holds_are_split(moto_endpoint: str, unique_name: str) -> None:
    students = [{"id": i, "name": f"p{i:03d}", "major": "m", "year": "y"} for i in range(150)]
    client = make_table(moto_endpoint, unique_name, students)
    directory = StudentDirectory(client, unique_name, ttl_s=0)
    found = directory.lookup(s["name"] for s in students)
    assert directory.requests == 2
    assert all(student.found for student in found.values())
    assert len(found) == 150


def test_missing_table_is_an_error_not_an_empty_answer(moto_endpoint: str) -> None:
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")
    directory = StudentDirectory(client, "no-such-table")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        directory.lookup(["floki"])


class ThrottlingDynamo(BaseHTTPRequestHandler):
    """Answers BatchGetItem like a throttled table: one key per response, the rest unprocessed."""

    calls: list[dict[str, Any]]
    always_throttle = False

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append(request)
        ((table, spec),) = request["RequestItems"].items()
        keys = spec["Keys"]
        served = [] if self.always_throttle else keys[:1]
        rest = keys if self.always_throttle else keys[1:]
        body: dict[str, Any] = {
            "Responses": {table: [{**k, "major": {"S": "m"}, "year": {"S": "y"}} for k in served]},
            "UnprocessedKeys": {table: {**spec, "Keys": rest}} if rest else {},
        }
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def throttling_endpoint() -> Iterator[type[ThrottlingDynamo]]:
    handler = type("Handler", (ThrottlingDynamo,), {"calls": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


def test_unprocessed_keys_are_retried_until_served(
    throttling_endpoint: type[ThrottlingDynamo],
) -> None:
    client = boto3.client(
        "dynamodb",
        endpoint_url=throttling_endpoint.url,
        region_name="us-east-1",  # type: ignore[attr-defined]
    )
    naps: list[float] = []
    directory = StudentDirectory(client, "students", sleep=naps.append)
    found = directory.lookup(["a", "b", "c"])
    assert [s.found for s in found.values()] == [True, True, True]
    assert [len(c["RequestItems"]["students"]["Keys"]) for c in throttling_endpoint.calls] == [
        3,
        2,
        1,
    ]
    assert naps == [0.05, 0.1]


def test_keys_that_stay_unprocessed_raise(throttling_endpoint: type[ThrottlingDynamo]) -> None:
    throttling_endpoint.always_throttle = True
    client = boto3.client(
        "dynamodb",
        endpoint_url=throttling_endpoint.url,
        region_name="us-east-1",  # type: ignore[attr-defined]
    )
    directory = StudentDirectory(client, "students", sleep=lambda _: None)
    with pytest.raises(DirectoryUnavailable):
        directory.lookup(["a"])
