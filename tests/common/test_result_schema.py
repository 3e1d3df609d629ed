"""One result document: the function's `<stem>.json` and `hybrid-lambda process --json` both
follow `hybrid_common.results`' dataclasses exactly (hybrid_common/result_schema.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from hybrid_common.result_schema import (
    ResultDocumentError,
    check_details,
    check_error,
    details_json_schema,
)
from hybrid_common.results import ErrorDoc
from lambda_fn.cli import details_document
from lambda_fn.directory import Student
from lambda_fn.known_faces import KnownFaces
from lambda_fn.outputs import ResultWriter
from lambda_fn.settings import RecognitionOptions
from tests.lambda_fn.test_cli import hybrid_lambda
from tests.lambda_fn.test_outputs import INPUT_KEY, details_for, recognition

STEM = INPUT_KEY.rsplit(".", 1)[0]


@pytest.fixture
def bucket(moto_endpoint: str, unique_name: str) -> tuple[Any, str]:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=unique_name)
    return s3, unique_name


def _read_json(s3: Any, bucket: str, key: str) -> Any:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_the_function_writes_the_schema(bucket: tuple[Any, str]) -> None:
    s3, name = bucket
    students = {"a": Student("a", "physics", "junior")}
    ResultWriter(s3, name).write_success(details_for(["a", "b"], students))
    details = check_details(_read_json(s3, name, f"{STEM}.json"))
    assert [p.name for p in details.people] == ["a", "b"]
    ResultWriter(s3, name).write_failure(ErrorDoc("not_a_video", "no", "r-1", INPUT_KEY))
    assert check_error(_read_json(s3, name, f"{STEM}.error.json")).code == "not_a_video"


def test_process_json_builds_the_same_document(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\0" * 10)
    students = {"a": Student("a", "physics", "junior")}
    document = details_document(video, recognition(["a"]), students, RecognitionOptions())
    details = check_details(document)
    assert details.input.key == str(video) and details.input.size == 10
    assert (details.people[0].major, details.video.codec) == ("physics", "h264")


def test_process_json_reports_failures_as_error_documents(tmp_path: Path) -> None:
    faces = tmp_path / "faces.json"
    KnownFaces.from_lists([], [], [], origin="test").save(faces)
    bogus = tmp_path / "bogus.mp4"
    bogus.write_text("not a video")
    done = hybrid_lambda("process", bogus, "--faces", faces, "--json")
    assert done.returncode == 1, done.stderr
    (video,) = json.loads(done.stdout)["videos"]
    error = check_error(video)
    assert (error.input_key, error.code) == (str(bogus), "not_a_video")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # The old `process --json` shape: `info` where the function writes `video`.
        (lambda d: d.update(info=d.pop("video")), "unknown fields"),
        (lambda d: d.pop("request_id"), "missing fields"),
        (lambda d: d["people"][0].update(seconds=1), r"people\[0\]: unknown"),
        (lambda d: d.update(format="other"), "format"),
        (lambda d: d["unknown_faces"][0].update(name="x"), r"unknown_faces\[0\]: unknown"),
        (lambda d: d["unknown_faces"][0]["descriptor"].pop(), r"unknown_faces\[0\].descriptor"),
        (lambda d: d["unknown_faces"][0]["nearest"].pop("distance"), r"\[0\].nearest: missing"),
        (lambda d: d.update(unknown_faces=3), "unknown_faces: expected a list"),
        (lambda d: d["known_faces"].pop("version"), r"known_faces: missing"),
        (lambda d: d.update(frames_sampled="many"), "frames_sampled"),
    ],
)
def test_a_document_off_the_schema_is_refused(change: Any, message: str) -> None:
    document = json.loads(details_for(["a"], {}).to_json())
    check_details(document)
    change(document)
    with pytest.raises(ResultDocumentError, match=message):
        check_details(document)


def test_the_json_schema_names_every_field() -> None:
    assert set(details_json_schema()["properties"]) == {
        "input", "video", "frames_sampled", "people", "unknown_faces", "timings", "settings",
        "known_faces", "function_version", "request_id", "status",
    }  # fmt: skip
