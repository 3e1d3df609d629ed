"""The one result document, checked: `<stem>.json` as the function writes it to the bucket and as
`hybrid-lambda process --json` prints it per video, and `<stem>.error.json` likewise.

The dataclasses in `hybrid_common.results` are the description; this module holds writers to it
(pydantic checks the types, and the key sets must match exactly: a writer that adds, drops or
renames a field fails here, while readers stay lenient and ignore fields they do not know).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import cache
from typing import Any

from pydantic import TypeAdapter

from hybrid_common.results import (
    DESCRIPTOR_SIZE,
    DETAILS_FORMAT,
    DETAILS_VERSION,
    ErrorDoc,
    InputDetails,
    KnownFacesDetails,
    NearestDetails,
    PersonDetails,
    ResultDetails,
    UnknownFaceDetails,
    VideoDetails,
)

# The envelope `ResultDetails.to_json` adds around the dataclass's own fields.
_ENVELOPE = {"format": DETAILS_FORMAT, "version": DETAILS_VERSION}
# Nested objects, each checked against its own dataclass.
_NESTED: dict[str, type] = {
    "input": InputDetails,
    "video": VideoDetails,
    "known_faces": KnownFacesDetails,
}


class ResultDocumentError(ValueError):
    """A result document that does not follow the schema; the message names the field."""


@cache
def _adapter(kind: type) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


def _same_keys(kind: type, value: Any, where: str, extra: frozenset[str] = frozenset()) -> None:
    if not isinstance(value, Mapping):
        raise ResultDocumentError(f"{where}: expected an object")
    fields = {f.name for f in dataclasses.fields(kind)} | extra
    if unknown := set(value) - fields:
        raise ResultDocumentError(f"{where}: unknown fields {sorted(unknown)}")
    if missing := fields - set(value):
        raise ResultDocumentError(f"{where}: missing fields {sorted(missing)}")


def check_details(document: Mapping[str, Any]) -> ResultDetails:
    """Validate a `<stem>.json` document exactly; returns it typed."""
    _same_keys(ResultDetails, document, "result", frozenset(_ENVELOPE))
    for name, expected in _ENVELOPE.items():
        if document[name] != expected:
            raise ResultDocumentError(f"result: {name} is {document[name]!r}, not {expected!r}")
    for name, kind in _NESTED.items():
        _same_keys(kind, document[name], f"result.{name}")
    for index, person in enumerate(document["people"]):
        _same_keys(PersonDetails, person, f"result.people[{index}]")
    if not isinstance(document["unknown_faces"], list):
        raise ResultDocumentError("result.unknown_faces: expected a list")
    for index, face in enumerate(document["unknown_faces"]):
        where = f"result.unknown_faces[{index}]"
        _same_keys(UnknownFaceDetails, face, where)
        if face["nearest"] is not None:
            _same_keys(NearestDetails, face["nearest"], f"{where}.nearest")
        if not isinstance(face["descriptor"], list) or len(face["descriptor"]) != DESCRIPTOR_SIZE:
            raise ResultDocumentError(f"{where}.descriptor: expected {DESCRIPTOR_SIZE} numbers")
    fields = {k: v for k, v in document.items() if k not in _ENVELOPE}
    try:
        details: ResultDetails = _adapter(ResultDetails).validate_python(fields)
    except ValueError as error:
        raise ResultDocumentError(f"result: {error}") from error
    return details


def check_error(document: Mapping[str, Any]) -> ErrorDoc:
    """Validate a `<stem>.error.json` document exactly; returns it typed."""
    _same_keys(ErrorDoc, document, "error")
    try:
        error_doc: ErrorDoc = _adapter(ErrorDoc).validate_python(dict(document))
    except ValueError as error:
        raise ResultDocumentError(f"error: {error}") from error
    return error_doc


def details_json_schema() -> dict[str, Any]:
    """The JSON Schema of `<stem>.json`'s fields, for readers in other languages."""
    schema: dict[str, Any] = _adapter(ResultDetails).json_schema()
    return schema
