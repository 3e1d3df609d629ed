"""The result file formats both sides read and write: the CSV answer and the error document.

The CSV has no header and one `name,major,year` row per recognised person in order of first
appearance; its first row is the course's classic answer. An empty CSV means nobody known was
seen. The function writes it last, so its existence means the result is complete.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class PersonRow:
    """One CSV row."""

    name: str
    major: str
    year: str


def _clean(field: str) -> str:
    # A control character (a stray '\r' from a table item, say) would split a row for
    # readers that treat it as a line end; names and majors never legitimately hold one.
    return _CONTROL.sub(" ", field)


def render_csv(rows: list[PersonRow]) -> str:
    """CSV text with '\\n' line ends (RFC 4180 quoting where a field needs it)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        writer.writerow([_clean(row.name), _clean(row.major), _clean(row.year)])
    return out.getvalue()


def parse_csv(text: str) -> list[PersonRow]:
    """Read a result CSV; blank lines are ignored, short rows are padded with ''."""
    rows = []
    for fields in csv.reader(io.StringIO(text)):
        if not fields or not any(f.strip() for f in fields):
            continue
        name, major, year = ([*fields, "", ""])[:3]
        rows.append(PersonRow(name, major, year))
    return rows


@dataclass(frozen=True, slots=True)
class ErrorDoc:
    """`<stem>.error.json`: why a video produced no result."""

    code: str
    message: str
    request_id: str
    input_key: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2)

    @classmethod
    def from_json(cls, text: str) -> ErrorDoc:
        data: dict[str, Any] = json.loads(text)
        return cls(
            code=str(data.get("code", "unknown")),
            message=str(data.get("message", "")),
            request_id=str(data.get("request_id", "")),
            input_key=str(data.get("input_key", "")),
        )
