"""Result files in moto's S3: names, contents, and the CSV written last."""

from __future__ import annotations

import json
from typing import Any

import boto3
import numpy as np
import pytest
from pydantic import ValidationError

from hybrid_common.keys import ResultNaming
from hybrid_common.results import (
    ErrorDoc,
    InputDetails,
    KnownFacesDetails,
    PersonRow,
    ResultDetails,
    parse_csv,
)
from lambda_fn.directory import Student
from lambda_fn.outputs import ResultWriter, build_details, settings_used
from lambda_fn.recognition import PersonSeen, Recognition, UnknownGroup, VideoInfo
from lambda_fn.settings import FunctionSettings, RecognitionOptions

INPUT_KEY = "videos/vm-1/s-0001/my clip+1 été.mp4"
KNOWN_FACES = KnownFacesDetails("ab" * 32, "s3://in/_assets/known_faces.json")
# An unknown group's descriptor sum: two faces, so the mean is half of it.
TOTAL = np.linspace(-0.5, 0.5, 128) * 2 + 1e-9


@pytest.fixture
def s3(moto_endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3: Any, unique_name: str) -> str:
    s3.create_bucket(Bucket=unique_name)
    return unique_name


def recognition(people: list[str]) -> Recognition:
    seen = [
        PersonSeen(
            name,
            first_seen_s=i * 1.0,
            last_seen_s=i + 0.5,
            frames=2,
            distance=0.41234567,
            crop=np.zeros((8, 8, 3), np.uint8),
        )
        for i, name in enumerate(people)
    ]
    video = VideoInfo(
        duration_s=2.3,
        fps=29.97,
        width=854,
        height=480,
        rotation=0,
        codec="h264",
        container="mov,mp4,m4a,3gp,3g2,mj2",
    )
    return Recognition(
        video=video,
        frames_sampled=3,
        people=seen,
        unknown_faces=[
            UnknownGroup(
                1.0,
                4.0,
                {1.0, 2.0, 4.0},
                TOTAL,
                2,
                id="u1",
                nearest="bush",
                nearest_distance=0.631234,
            )
        ],
        timings={"decode": 0.1, "total": 0.5},
    )


def details_for(people: list[str], students: dict[str, Student]) -> ResultDetails:
    return build_details(
        recognition(people),
        students,
        input_ref=InputDetails(INPUT_KEY, '"abc"', 1234),
        timings={"download": 0.01, "recognise": 0.5, "total": 0.6},
        settings=settings_used(RecognitionOptions(), contact_sheet=True),
        function_version="0.1.0",
        request_id="req-1",
        known_faces=KNOWN_FACES,
    )


def read(s3: Any, bucket: str, key: str) -> str:
    body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body.decode()


def keys(s3: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_success_writes_details_sheet_and_csv_named_after_the_input(s3: Any, bucket: str) -> None:
    students = {
        "president_trump": Student("president_trump", "physics", "junior"),
        "bush": Student("bush", found=False),
    }
    details = details_for(["president_trump", "bush"], students)
    csv_key = ResultWriter(s3, bucket).write_success(details, faces_jpeg=b"\xff\xd8jpeg")
    stem = "videos/vm-1/s-0001/my clip+1 été"
    assert csv_key == f"{stem}.csv"
    assert keys(s3, bucket) == [f"{stem}.csv", f"{stem}.faces.jpg", f"{stem}.json"]
    assert read(s3, bucket, csv_key) == "president_trump,physics,junior\nbush,,\n"
    document = json.loads(read(s3, bucket, f"{stem}.json"))
    assert document["status"] == "ok"
    assert document["input"] == {"key": INPUT_KEY, "etag": '"abc"', "size": 1234}
    assert document["video"]["codec"] == "h264"
    assert document["people"][0] == {
        "name": "president_trump",
        "major": "physics",
        "year": "junior",
        "first_seen_s": 0.0,
        "last_seen_s": 0.5,
        "frames": 2,
        "distance": 0.4123,
    }
    assert document["settings"]["tolerance"] == 0.6
    assert document["settings"]["contact_sheet"] is True
    assert document["function_version"] == "0.1.0"
    assert document["known_faces"] == {"version": "ab" * 32, "source": KNOWN_FACES.source}
    (unknown,) = document["unknown_faces"]
    assert {k: v for k, v in unknown.items() if k != "descriptor"} == {
        "id": "u1",
        "first_seen_s": 1.0,
        "last_seen_s": 4.0,
        "samples": 3,
        "nearest": {"name": "bush", "distance": 0.6312},
    }
    # The group's mean descriptor, 128 numbers rounded to 6 decimals.
    assert unknown["descriptor"] == [round(x, 6) for x in (TOTAL / 2).tolist()]
    assert details.unknown_face("u1").descriptor == unknown["descriptor"]
    with pytest.raises(KeyError, match="there are: u1"):
        details.unknown_face("u2")
    assert ResultDetails.from_json(json.dumps(document)) == details
    head = s3.head_object(Bucket=bucket, Key=f"{stem}.faces.jpg")
    assert head["ContentType"] == "image/jpeg"


def test_nobody_known_gives_an_empty_csv_and_no_sheet(s3: Any, bucket: str) -> None:
    ResultWriter(s3, bucket).write_success(details_for([], {}), faces_jpeg=None)
    stem = "videos/vm-1/s-0001/my clip+1 été"
    assert keys(s3, bucket) == [f"{stem}.csv", f"{stem}.json"]
    assert read(s3, bucket, f"{stem}.csv") == ""
    assert parse_csv(read(s3, bucket, f"{stem}.csv")) == []


def test_csv_is_written_after_the_other_files(
    s3: Any, bucket: str, moto_endpoint: str, unique_name: str
) -> None:
    # moto delivers S3 notifications to SQS as each object lands: their order is the write order.
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    url = sqs.create_queue(QueueName=unique_name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    details = details_for(["floki"], {"floki": Student("floki", "history", "junior")})
    ResultWriter(s3, bucket).write_success(details, faces_jpeg=b"jpeg")
    order: list[str] = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        for message in messages:
            body = json.loads(message["Body"])
            order += [r["s3"]["object"]["key"].rsplit(".", 1)[-1] for r in body.get("Records", [])]
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert order == ["json", "jpg", "csv"]


def test_failure_replaces_an_earlier_answer_with_an_error(s3: Any, bucket: str) -> None:
    writer = ResultWriter(s3, bucket)
    writer.write_success(details_for(["floki"], {}), faces_jpeg=b"jpeg")
    error_key = writer.write_failure(ErrorDoc("not_a_video", "no video stream", "req-2", INPUT_KEY))
    assert keys(s3, bucket) == [error_key]
    assert error_key == "videos/vm-1/s-0001/my clip+1 été.error.json"
    doc = ErrorDoc.from_json(read(s3, bucket, error_key))
    assert doc == ErrorDoc("not_a_video", "no video stream", "req-2", INPUT_KEY)


def test_success_removes_an_earlier_error(s3: Any, bucket: str) -> None:
    writer = ResultWriter(s3, bucket)
    writer.write_failure(ErrorDoc("decode_failed", "bad", "req-1", INPUT_KEY))
    writer.write_success(details_for(["floki"], {"floki": Student("floki", "history", "junior")}))
    stem = "videos/vm-1/s-0001/my clip+1 été"
    assert keys(s3, bucket) == [f"{stem}.csv", f"{stem}.json"]
    assert parse_csv(read(s3, bucket, f"{stem}.csv")) == [PersonRow("floki", "history", "junior")]


def test_details_reader_ignores_fields_it_does_not_know() -> None:
    details = details_for(["floki"], {})
    document = json.loads(details.to_json())
    document["new_top_level"] = 1
    document["people"][0]["new_field"] = "x"
    assert ResultDetails.from_json(json.dumps(document)) == details
    with pytest.raises(ValueError, match=r"not a hybridsphere\.result"):
        ResultDetails.from_json('{"format": "other"}')


def test_classic_csv_key_and_header_when_configured(s3: Any, bucket: str) -> None:
    # Graders written for the classic handler read the answer to `test_0.mp4` at `test_0`.
    input_key = "test_0.mp4"
    details = build_details(
        recognition(["=cmd|' /C calc'!A0"]),
        {"=cmd|' /C calc'!A0": Student("=cmd|' /C calc'!A0", "@SUM(1)", "-1")},
        input_ref=InputDetails(input_key, '"e"', 1),
        timings={},
        settings={},
        function_version="0.1.0",
        request_id="req-1",
    )
    writer = ResultWriter(s3, bucket, naming=ResultNaming("{stem}"), csv_header=True)
    assert writer.write_success(details) == "test_0"
    assert keys(s3, bucket) == ["test_0", "test_0.json"]
    text = read(s3, bucket, "test_0")
    assert text == "name,major,year\n'=cmd|' /C calc'!A0,'@SUM(1),'-1\n"
    # A failure afterwards removes the classic-named CSV too.
    writer.write_failure(ErrorDoc("decode_failed", "bad", "req-2", input_key))
    assert keys(s3, bucket) == ["test_0.error.json"]


def test_csv_settings_are_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRID_CSV_KEY", "{stem}")
    monkeypatch.setenv("HYBRID_CSV_HEADER", "true")
    settings = FunctionSettings()
    assert settings.csv_key == "{stem}" and settings.csv_header is True
    assert FunctionSettings(_env_file=None).naming == ResultNaming("{stem}")
    monkeypatch.setenv("HYBRID_CSV_KEY", "{stem}.json")
    with pytest.raises(ValidationError, match="companion"):
        FunctionSettings()
    monkeypatch.delenv("HYBRID_CSV_KEY")
    monkeypatch.delenv("HYBRID_CSV_HEADER")
    assert FunctionSettings().csv_key == "{stem}.csv"
    assert FunctionSettings().csv_header is False


def test_details_of_a_real_result_are_a_few_kilobytes() -> None:
    # What the watcher's details_max_bytes (256 KiB) must leave room for: measured here.
    people = [f"student_{n:03d}" for n in range(10)]
    size = len(details_for(people, {}).to_json().encode())
    assert 1_000 < size < 8_000
