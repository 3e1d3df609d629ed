"""The one students format: the file (refused whole when bad) and the table items."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from hybrid_common.students import (
    TABLE_KEY,
    TABLE_KEY_TYPE,
    Student,
    StudentsFileError,
    load_students,
    read_students,
    to_item,
)
from lambda_fn.directory import StudentDirectory
from tests.lambda_fn.test_cli import hybrid_lambda


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "students.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_reads_course_format(tmp_path: Path) -> None:
    path = write(tmp_path, [{"id": 1, "name": "a", "major": "m", "year": "y"}])
    [student] = read_students(path)
    assert (student.name, student.major, student.year, student.id) == ("a", "m", "y", 1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "a"}, "JSON list"),
        ([{"name": "a", "major": "m"}], "'year'"),
        ([{"name": "", "major": "m", "year": "y"}], "'name'"),
        ([{"name": "a", "major": "m", "year": "y"}] * 2, "duplicate"),
        (["a"], "not an object"),
    ],
)
def test_refuses_bad_files_with_a_reason(tmp_path: Path, data: object, message: str) -> None:
    with pytest.raises(StudentsFileError, match=message):
        read_students(write(tmp_path, data))


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe not json",
        b"[" * 100_000 + b"]" * 100_000,  # deeper than the parser's stack: RecursionError
        b'[{"id": ' + b"9" * 5000 + b"}]",  # past Python's 4,300-digit integer limit: ValueError
    ],
    ids=["bytes", "deep", "huge-int"],
)
def test_refuses_non_json(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(data)
    with pytest.raises(StudentsFileError, match="cannot read JSON"):
        read_students(path)


def test_odd_inputs_every_reader_accepts(tmp_path: Path) -> None:
    """What either of the two former parsers took and the one parser keeps: a byte-order mark
    (Windows editors), unknown extra fields, a year written as a number, non-ASCII names."""
    path = tmp_path / "s.json"
    records = [
        {"id": 7, "name": "zoë", "major": "art", "year": 2, "email": "z@example.com"},
        {"name": "bo", "major": "law", "year": "senior"},
    ]
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(records, ensure_ascii=False).encode())
    assert read_students(path) == [
        Student("zoë", "art", "2", 7),
        Student("bo", "law", "senior", None),
    ]


@pytest.mark.parametrize(
    "record",
    [
        {"name": "a", "major": "m", "year": True},  # a boolean is not a year
        {"name": "a", "major": None, "year": "y"},
        {"name": 3, "major": "m", "year": "y"},
        {"name": "  ", "major": "m", "year": "y"},
    ],
)
def test_odd_inputs_every_reader_refuses(tmp_path: Path, record: dict[str, object]) -> None:
    with pytest.raises(StudentsFileError, match="item 0 needs a non-empty string"):
        read_students(write(tmp_path, [record]))


def test_the_table_item_is_keyed_by_name() -> None:
    item = to_item(Student("a", "m", "y", 1))
    assert item[TABLE_KEY] == {TABLE_KEY_TYPE: "a"}
    assert item == {"name": {"S": "a"}, "major": {"S": "m"}, "year": {"S": "y"}, "id": {"N": "1"}}


def test_loaded_students_are_what_the_function_reads(moto_endpoint: str, unique_name: str) -> None:
    """The writer (`students load`, provisioning) and the reader (the function's directory)."""
    dynamodb = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")
    dynamodb.create_table(
        TableName=unique_name,
        KeySchema=[{"AttributeName": TABLE_KEY, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": TABLE_KEY, "AttributeType": TABLE_KEY_TYPE}],
        BillingMode="PAY_PER_REQUEST",
    )
    students = [Student(f"s{i}", "m", "y", i) for i in range(30)]  # more than one batch
    assert load_students(dynamodb, unique_name, students) == 30
    found = StudentDirectory(dynamodb, unique_name).lookup(["s0", "s29", "nobody"])
    assert (found["s29"].major, found["s29"].found, found["nobody"].found) == ("m", True, False)


def test_process_refuses_a_bad_students_file_in_one_line(tmp_path: Path) -> None:
    """`hybrid-lambda process --students` reads with the same parser (it once took anything)."""
    bad = write(tmp_path, [{"name": "a", "major": "m"}])
    done = hybrid_lambda("process", tmp_path / "x.mp4", "--faces", bad, "--students", bad)
    assert done.returncode == 2
    assert "needs a non-empty string 'year'" in done.stderr
