"""The students file and table: one format, read the same way by every command that takes it.

The file is the course's `student_data.json`: a JSON list of `{"id": 1, "name": ..., "major":
..., "year": ...}` objects. The table is keyed by `name` (a string); items carry `major` and
`year` as strings and `id` as a number when the file has one. Used by `hybrid-watcher students
load` (real AWS), `hybrid-local cloud`/`provision` (moto), `hybrid-lambda process --students`
and the function's directory lookups (`lambda_fn.directory` reads the items written here).

A file is validated whole before anything is written, so a bad file changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybrid_common.json_errors import NOT_JSON
from hybrid_common.logs import get_logger

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

log = get_logger(__name__)

# The table's key schema: hash key `name`, a string (deploy/aws/template.yaml says the same;
# tests/deploy compares them).
TABLE_KEY = "name"
TABLE_KEY_TYPE = "S"
# BatchWriteItem takes at most 25 requests.
_BATCH = 25


class StudentsFileError(ValueError):
    """The students file cannot be used; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Student:
    name: str
    major: str
    year: str
    id: int | None = None


def _text(item: Mapping[str, Any], key: str, where: str, *, number_ok: bool = False) -> str:
    """A non-empty string field; with `number_ok`, a whole number (a year as 2) is its digits."""
    value = item.get(key)
    if number_ok and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise StudentsFileError(f"{where} needs a non-empty string {key!r}")
    return value


def parse_students(data: Any, source: str = "students file") -> list[Student]:
    """Students from already-decoded JSON; raises StudentsFileError naming `source`."""
    if not isinstance(data, list):
        raise StudentsFileError(f"{source}: expected a JSON list of student objects")
    students: list[Student] = []
    seen: set[str] = set()
    for index, item in enumerate(data):
        where = f"{source}: item {index}"
        if not isinstance(item, dict):
            raise StudentsFileError(f"{where} is not an object")
        name = _text(item, "name", where)
        if name in seen:
            # Two rows for one key: which major is right cannot be guessed.
            raise StudentsFileError(f"{where}: duplicate name {name!r}")
        seen.add(name)
        raw_id = item.get("id")
        students.append(
            Student(
                name=name,
                major=_text(item, "major", where),
                year=_text(item, "year", where, number_ok=True),
                id=raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else None,
            )
        )
    return students


def read_students(path: Path) -> list[Student]:
    """Parse a students file (UTF-8, a byte-order mark tolerated: Windows editors add one)."""
    try:
        data: Any = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except OSError as error:
        raise StudentsFileError(f"{path}: cannot read JSON: {error}") from error
    except NOT_JSON as error:
        raise StudentsFileError(f"{path}: cannot read JSON: {error}") from error
    return parse_students(data, str(path))


def by_name(students: list[Student]) -> dict[str, Student]:
    return {student.name: student for student in students}


def to_item(student: Student) -> dict[str, Any]:
    """The table item (DynamoDB's typed JSON) for one student."""
    item: dict[str, Any] = {
        TABLE_KEY: {TABLE_KEY_TYPE: student.name},
        "major": {"S": student.major},
        "year": {"S": student.year},
    }
    if student.id is not None:
        item["id"] = {"N": str(student.id)}
    return item


def load_students(dynamodb: DynamoDBClient, table: str, students: list[Student]) -> int:
    """Write every student (an existing item of the same name is replaced); returns the count."""
    pending: list[Any] = [{"PutRequest": {"Item": to_item(s)}} for s in students]
    written = 0
    while pending:
        batch, pending = pending[:_BATCH], pending[_BATCH:]
        request = {table: batch}
        for _attempt in range(8):
            response = dynamodb.batch_write_item(RequestItems=request)
            unprocessed = response.get("UnprocessedItems", {})
            if not unprocessed:
                break
            request = unprocessed
        else:
            raise RuntimeError(f"DynamoDB kept items unprocessed for table {table}")
        written += len(batch)
    log.info("students.loaded", table=table, count=written)
    return written
