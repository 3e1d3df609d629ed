"""Students from a JSON file (like the course's student_data.json): DynamoDB's local stand-in."""

from __future__ import annotations

import json
from pathlib import Path


class StudentsFileError(ValueError):
    """The students file is unreadable or not a list of {name, major, year} records."""


def load_students(path: Path) -> dict[str, tuple[str, str]]:
    """{name: (major, year)} from a JSON list of records with name, major and year."""
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StudentsFileError(f"{path}: cannot read students JSON: {error}") from error
    if not isinstance(records, list):
        raise StudentsFileError(f"{path}: expected a JSON list of student records")
    students: dict[str, tuple[str, str]] = {}
    for index, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("name"), str):
            raise StudentsFileError(f"{path}: record {index} has no string 'name'")
        students[record["name"]] = (str(record.get("major", "")), str(record.get("year", "")))
    return students
