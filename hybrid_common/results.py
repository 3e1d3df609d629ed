"""The result file formats both sides read and write: the CSV answer and the error document.

The CSV has one `name,major,year` row per recognised person in order of first appearance; its
first row is the course's classic answer. It has no header unless the function is told to
write one (`HYBRID_CSV_HEADER`). An empty CSV means nobody known was seen. The function writes
it last, so its existence means the result is complete.

Names and majors come from files operators load: a field a spreadsheet would run as a formula
(leading `=`, `+`, `-`, `@`, tab or CR) is written with a leading `'`, as OWASP recommends for
CSV injection. That includes a legitimate leading `-` (a major of "-"): it reads `'-`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from typing import Any, TextIO

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What makes Excel, LibreOffice and Google Sheets read a cell as a formula (OWASP, "CSV Injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CSV_HEADER = ("name", "major", "year")


@dataclass(frozen=True, slots=True)
class PersonRow:
    """One CSV row."""

    name: str
    major: str
    year: str


def _clean(field: str) -> str:
    # A control character (a stray '\r' from a table item, say) would split a row for
    # readers that treat it as a line end; names and majors never legitimately hold one.
    field = _CONTROL.sub(" ", field)
    # Spreadsheets skip leading blanks before deciding a cell is a formula: look past them.
    if field[:1] in _FORMULA_START or field.lstrip()[:1] in _FORMULA_START:
        return "'" + field
    return field


def csv_fields(row: PersonRow) -> list[str]:
    """The three cells of a row as written: control characters blanked, formulas neutralised."""
    return [_clean(row.name), _clean(row.major), _clean(row.year)]


def render_csv(rows: Iterable[PersonRow], *, header: bool = False) -> str:
    """CSV text with '\\n' line ends (RFC 4180 quoting where a field needs it).

    Rendering what `parse_csv` read gives the same text again (a neutralised field starts
    with `'`, which is not a formula start).
    """
    out = io.StringIO()
    write_csv(out, rows, header=header)
    return out.getvalue()


def write_csv(out: TextIO, rows: Iterable[PersonRow], *, header: bool = False) -> int:
    """Write rows as `render_csv` does, to a text stream opened with newline=''; returns the
    number of rows (a reader of a large CSV need not hold it whole)."""
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(CSV_HEADER)
    count = 0
    for row in rows:
        writer.writerow(csv_fields(row))
        count += 1
    return count


def iter_csv(lines: Iterable[str], *, header: bool = False) -> Iterator[PersonRow]:
    """Rows of a result CSV read from `lines`, one at a time (a hostile CSV can be large).

    Blank lines are ignored, short rows are padded with ''. With `header`, a first row that
    is exactly `name,major,year` is skipped (one that is not is kept: it is an answer).
    Raises csv.Error for text no CSV reader accepts (e.g. a field over the csv module's limit).
    """
    first = True
    for fields in csv.reader(lines):
        if not fields or not any(f.strip() for f in fields):
            continue
        if first and header and tuple(fields) == CSV_HEADER:
            first = False
            continue
        first = False
        name, major, year = ([*fields, "", ""])[:3]
        yield PersonRow(name, major, year)


def parse_csv(text: str, *, header: bool = False) -> list[PersonRow]:
    """Read a whole result CSV (see `iter_csv`)."""
    return list(iter_csv(io.StringIO(text), header=header))


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
class NearestDetails:
    """The known person nearest to an unknown face, so an operator sees "looks like X at 0.63"."""

    name: str
    distance: float


# The size of a face descriptor (dlib's ResNet), in `UnknownFaceDetails.descriptor`.
DESCRIPTOR_SIZE = 128


@dataclass(frozen=True, slots=True)
class UnknownFaceDetails:
    """One unknown person of a video: faces that matched nobody, grouped by descriptor distance.

    `id` (u1, u2, ... in order of first appearance) names the group within this result and
    labels its crop in the contact sheet; `descriptor` (the mean of the group's 128-d face
    descriptors, 6 decimals) is what `hybrid-watcher faces enrol NAME RESULT --face ID` adds
    to the known faces. `samples` counts the sampled frames it was seen in.
    """

    id: str
    first_seen_s: float
    last_seen_s: float
    samples: int
    descriptor: list[float]
    nearest: NearestDetails | None = None


@dataclass(frozen=True, slots=True)
class KnownFacesDetails:
    """The known-faces file a result was computed with.

    `version` is the SHA-256 (hex) of the file's bytes as read, wherever it came from: the
    same file gives the same version on AWS, on the local stack and on a laptop, and a
    pusher can compute it before uploading (an S3 ETag depends on how the object was
    uploaded). `source` is where it was read: `s3://bucket/key` or a path.
    """

    version: str = ""
    source: str = ""


@dataclass(frozen=True, slots=True)
class ResultDetails:
    """`<stem>.json`. Readers ignore fields they do not know, so fields may be added freely."""

    input: InputDetails
    video: VideoDetails
    frames_sampled: int
    people: list[PersonDetails]
    unknown_faces: list[UnknownFaceDetails]
    timings: dict[str, float]
    settings: dict[str, Any]
    known_faces: KnownFacesDetails = field(default_factory=KnownFacesDetails)
    function_version: str = ""
    request_id: str = ""
    status: str = "ok"

    def unknown_face(self, face_id: str) -> UnknownFaceDetails:
        """The unknown group `face_id` (u1, u2, ...); KeyError names the ids there are."""
        for face in self.unknown_faces:
            if face.id == face_id:
                return face
        ids = ", ".join(face.id for face in self.unknown_faces) or "none"
        raise KeyError(f"no unknown face {face_id!r} in this result (there are: {ids})")

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
            unknown_faces=[_unknown_face(face) for face in _groups(data.get("unknown_faces"))],
            timings=dict(data.get("timings", {})),
            settings=dict(data.get("settings", {})),
            known_faces=KnownFacesDetails(
                **_known_fields(KnownFacesDetails, data.get("known_faces") or {})
            ),
            function_version=str(data.get("function_version", "")),
            request_id=str(data.get("request_id", "")),
            status=str(data.get("status", "ok")),
        )


def _groups(value: Any) -> list[Any]:
    # Results written before groups existed hold a count here: they list no groups.
    return value if isinstance(value, list) else []


def _unknown_face(value: Any) -> UnknownFaceDetails:
    fields = _known_fields(UnknownFaceDetails, value)
    nearest = fields.get("nearest")
    fields["nearest"] = (
        NearestDetails(**_known_fields(NearestDetails, nearest)) if nearest is not None else None
    )
    descriptor = fields.get("descriptor")
    if not isinstance(descriptor, list) or len(descriptor) != DESCRIPTOR_SIZE:
        raise ValueError(f"unknown face {fields.get('id')!r}: descriptor is not 128 numbers")
    fields["descriptor"] = [float(x) for x in descriptor]
    return UnknownFaceDetails(**fields)


def _known_fields(kind: type, value: Any) -> dict[str, Any]:
    """The entries of `value` that are fields of the dataclass `kind` (newer writers add more)."""
    if not isinstance(value, dict):
        raise ValueError(f"{kind.__name__}: expected an object, got {type(value).__name__}")
    names = {f.name for f in dataclass_fields(kind)}
    return {k: v for k, v in value.items() if k in names}
