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
from dataclasses import fields as dataclass_fields
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


# `<stem>.json`: the details of a completed result, written by the function before the CSV.
DETAILS_FORMAT = "hybridsphere.result"
DETAILS_VERSION = 1


@dataclass(frozen=True, slots=True)
class PersonDetails:
    """One recognised person: the CSV row plus when and how surely they were seen."""

    name: str
    major: str
    year: str
    first_seen_s: float
    last_seen_s: float
    frames: int
    distance: float

    def row(self) -> PersonRow:
        return PersonRow(self.name, self.major, self.year)


@dataclass(frozen=True, slots=True)
class InputDetails:
    """The input object the result answers (the ETag tells which upload of a key it was)."""

    key: str
    etag: str = ""
    size: int = 0


@dataclass(frozen=True, slots=True)
class VideoDetails:
    """What the container said; width/height as displayed (rotation applied)."""

    duration_s: float = 0.0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    rotation: int = 0
    codec: str = ""
    container: str = ""


@dataclass(frozen=True, slots=True)
class ResultDetails:
    """`<stem>.json`. Readers ignore fields they do not know, so fields may be added freely."""

    input: InputDetails
    video: VideoDetails
    frames_sampled: int
    people: list[PersonDetails]
    unknown_faces: int
    timings: dict[str, float]
    settings: dict[str, Any]
    function_version: str = ""
    request_id: str = ""
    status: str = "ok"

    def rows(self) -> list[PersonRow]:
        """The CSV rows this result stands for, in order of first appearance."""
        return [person.row() for person in self.people]

    def to_json(self) -> str:
        document = {"format": DETAILS_FORMAT, "version": DETAILS_VERSION, **asdict(self)}
        return json.dumps(document, ensure_ascii=False, indent=2)

    @classmethod
    def from_json(cls, text: str) -> ResultDetails:
        """Parse a details document; raises ValueError if it is not one."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != DETAILS_FORMAT:
            raise ValueError(f"not a {DETAILS_FORMAT} document")
        return cls(
            input=InputDetails(**_known_fields(InputDetails, data.get("input"))),
            video=VideoDetails(**_known_fields(VideoDetails, data.get("video"))),
            frames_sampled=int(data.get("frames_sampled", 0)),
            people=[
                PersonDetails(**_known_fields(PersonDetails, person))
                for person in data.get("people", [])
            ],
            unknown_faces=int(data.get("unknown_faces", 0)),
            timings=dict(data.get("timings", {})),
            settings=dict(data.get("settings", {})),
            function_version=str(data.get("function_version", "")),
            request_id=str(data.get("request_id", "")),
            status=str(data.get("status", "ok")),
        )


def _known_fields(kind: type, value: Any) -> dict[str, Any]:
    """The entries of `value` that are fields of the dataclass `kind` (newer writers add more)."""
    if not isinstance(value, dict):
        raise ValueError(f"{kind.__name__}: expected an object, got {type(value).__name__}")
    names = {f.name for f in dataclass_fields(kind)}
    return {k: v for k, v in value.items() if k in names}
