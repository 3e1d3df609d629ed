"""Reading the students file: a bad file is refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_common.students import StudentsFileError, read_students


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


def test_refuses_non_json(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(b"\xff\xfe not json")
    with pytest.raises(StudentsFileError, match="cannot read JSON"):
        read_students(path)
