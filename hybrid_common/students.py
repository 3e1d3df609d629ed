"""`hybrid-watcher students load FILE.json`: the students table, from the course's JSON format.

Works against the local cloud and real AWS alike (the endpoint comes from settings). Items
are validated before anything is written, so a bad file changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybrid_common.logs import get_logger

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

log = get_logger(__name__)


class StudentsFileError(ValueError):
    """The students file cannot be loaded; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Student:
    name: str
    major: str
    year: str
    id: int | None = None


def read_students(path: Path) -> list[Student]:
    """Parse `[{"id": 1, "name": ..., "major": ..., "year": ...}, ...]`."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StudentsFileError(f"{path}: cannot read JSON: {error}") from error
    if not isinstance(data, list):
        raise StudentsFileError(f"{path}: expected a JSON list of student objects")
    students, seen = [], set()
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise StudentsFileError(f"{path}: item {index} is not an object")
        for key in ("name", "major", "year"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                raise StudentsFileError(f"{path}: item {index} needs a non-empty string {key!r}")
        if item["name"] in seen:
            raise StudentsFileError(f"{path}: item {index}: duplicate name {item['name']!r}")
        seen.add(item["name"])
        raw_id = item.get("id")
        students.append(
            Student(
                name=item["name"],
                major=item["major"],
                year=item["year"],
                id=raw_id if isinstance(raw_id, int) else None,
            )
        )
    return students


def load_students(dynamodb: DynamoDBClient, table: str, students: list[Student]) -> int:
    """Write every student (an existing item of the same name is replaced); returns the count."""
    pending: list[Any] = []
    for student in students:
        item: dict[str, Any] = {
            "name": {"S": student.name},
            "major": {"S": student.major},
            "year": {"S": student.year},
        }
        if student.id is not None:
            item["id"] = {"N": str(student.id)}
        pending.append({"PutRequest": {"Item": item}})
    written = 0
    while pending:
        batch, pending = pending[:25], pending[25:]  # BatchWriteItem takes at most 25
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
