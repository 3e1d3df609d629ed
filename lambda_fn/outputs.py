"""Writing one video's results to the output bucket, in an order readers can rely on.

Success: `<stem>.json` (details), `<stem>.faces.jpg` (optional contact sheet), then
`<stem>.csv` LAST — the CSV's existence means the result is complete. Failure:
`<stem>.error.json` and no CSV. A stale answer of the other kind (from an earlier upload to
the same key) is removed first, so a reader never sees a CSV and an error for one input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hybrid_common.keys import ResultKind, ResultNaming
from hybrid_common.logs import get_logger
from hybrid_common.results import (
    ErrorDoc,
    InputDetails,
    KnownFacesDetails,
    NearestDetails,
    PersonDetails,
    ResultDetails,
    UnknownFaceDetails,
    VideoDetails,
    render_csv,
)
from lambda_fn.directory import Student
from lambda_fn.unknown_faces import DESCRIPTOR_DECIMALS, UnknownGroup

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

    from lambda_fn.recognition import Recognition

log = get_logger(__name__)

JSON = "application/json; charset=utf-8"
CSV = "text/csv; charset=utf-8"
JPEG = "image/jpeg"


def build_details(
    recognition: Recognition,
    students: Mapping[str, Student],
    *,
    input_ref: InputDetails,
    timings: Mapping[str, float],
    settings: Mapping[str, Any],
    function_version: str,
    request_id: str,
    known_faces: KnownFacesDetails | None = None,
) -> ResultDetails:
    """The details document: recognition plus each person's row from the students table,
    the unknown groups, and which known-faces version decided who is known."""
    people = []
    for seen in recognition.people:
        student = students.get(seen.name) or Student(seen.name, found=False)
        people.append(
            PersonDetails(
                name=seen.name,
                major=student.major,
                year=student.year,
                first_seen_s=round(seen.first_seen_s, 3),
                last_seen_s=round(seen.last_seen_s, 3),
                frames=seen.frames,
                distance=round(float(seen.distance), 4),
            )
        )
    video = recognition.video
    return ResultDetails(
        input=input_ref,
        video=VideoDetails(
            duration_s=round(float(video.duration_s), 3),
            fps=round(float(video.fps), 3),
            width=video.width,
            height=video.height,
            rotation=video.rotation,
            codec=video.codec,
            container=video.container,
        ),
        frames_sampled=recognition.frames_sampled,
        people=people,
        unknown_faces=[unknown_face_details(group) for group in recognition.unknown_faces],
        timings={name: round(seconds, 4) for name, seconds in timings.items()},
        settings=dict(settings),
        known_faces=known_faces or KnownFacesDetails(),
        function_version=function_version,
        request_id=request_id,
    )


def unknown_face_details(group: UnknownGroup) -> UnknownFaceDetails:
    """An unknown group as `<stem>.json` holds it (descriptor rounded: 6 decimals are ~1e-6
    of a distance, far below what tells two people apart, and keep the file small)."""
    nearest = (
        NearestDetails(group.nearest, round(group.nearest_distance, 4))
        if group.nearest is not None
        else None
    )
    return UnknownFaceDetails(
        id=group.id,
        first_seen_s=round(group.first_seen_s, 3),
        last_seen_s=round(group.last_seen_s, 3),
        samples=group.samples,
        descriptor=[round(float(x), DESCRIPTOR_DECIMALS) for x in group.descriptor],
        nearest=nearest,
    )


class ResultWriter:
    """Puts result files for input keys into one output bucket."""

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        *,
        naming: ResultNaming | None = None,
        csv_header: bool = False,
    ) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._naming = naming or ResultNaming()  # HYBRID_CSV_KEY
        self._csv_header = csv_header  # HYBRID_CSV_HEADER

    def write_success(self, details: ResultDetails, faces_jpeg: bytes | None = None) -> str:
        """Details, contact sheet, then the CSV; returns the CSV's key."""
        key, naming = details.input.key, self._naming
        self._delete(naming.key(key, ResultKind.ERROR))
        self._put(naming.key(key, ResultKind.DETAILS), details.to_json().encode(), JSON)
        if faces_jpeg is not None:
            self._put(naming.key(key, ResultKind.FACES), faces_jpeg, JPEG)
        csv_key = naming.key(key, ResultKind.CSV)
        self._put(csv_key, render_csv(details.rows(), header=self._csv_header).encode(), CSV)
        log.info("result.written", csv_key=csv_key, people=[p.name for p in details.people])
        return csv_key

    def write_failure(self, error: ErrorDoc) -> str:
        """Remove any previous answer for the input, then write `<stem>.error.json`."""
        # The CSV goes first: until the error file lands, the input simply has no answer.
        for kind in (ResultKind.CSV, ResultKind.DETAILS, ResultKind.FACES):
            self._delete(self._naming.key(error.input_key, kind))
        error_key = self._naming.key(error.input_key, ResultKind.ERROR)
        self._put(error_key, error.to_json().encode(), JSON)
        log.warning("result.failed", error_key=error_key, code=error.code, message=error.message)
        return error_key

    def _put(self, key: str, body: bytes, content_type: str) -> None:
        self._s3.put_object(Bucket=self._bucket, Key=key, Body=body, ContentType=content_type)

    def _delete(self, key: str) -> None:
        # DeleteObject succeeds when there is nothing to delete: no HEAD needed first.
        self._s3.delete_object(Bucket=self._bucket, Key=key)


def settings_used(options: Any, **extra: Any) -> dict[str, Any]:
    """The recognition options (a pydantic model or dataclass) plus function-level settings."""
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        values = dataclasses.asdict(options)
    else:
        values = dict(options.model_dump(mode="json"))
    return {**values, **extra}
