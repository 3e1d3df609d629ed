"""The known-faces file format, dependency-free: read, validate, edit and write it anywhere.

The only parser of the file: the function reads through it and converts the result to numpy
(`lambda_fn/known_faces.py`); the VM edits it with no dlib or numpy (`hybrid-watcher faces`).
JSON because it is safe to load from anywhere (an S3 object, a pull request), diffable, and
Python's float repr round-trips float64 exactly. One face per line, so a diff of two versions
reads as "who was added or removed".
"""

from __future__ import annotations

import hashlib
import json
import math
import reprlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybrid_common.json_errors import NOT_JSON

FORMAT = "hybridsphere.known-faces"
VERSION = 1
ENCODING_SIZE = 128
# dlib's ResNet descriptor, 5-point landmarks, as used by face_recognition's face_encodings.
MODEL = "dlib_face_recognition_resnet_model_v1"
# A name is written into CSVs and looked up in the students table: one printable line.
MAX_NAME_LENGTH = 200


class KnownFacesFileError(ValueError):
    """The known-faces file is missing, unreadable or invalid; the message says where."""


@dataclass(frozen=True, slots=True)
class Face:
    """One known descriptor: whose it is, and where it came from (a photo, a result's group)."""

    name: str
    encoding: tuple[float, ...]
    source: str = ""


@dataclass(frozen=True, slots=True)
class KnownFacesFile:
    """A whole known-faces file; several faces may share one name."""

    faces: tuple[Face, ...] = ()

    def __len__(self) -> int:
        return len(self.faces)

    @property
    def people(self) -> list[str]:
        """Distinct names, in file order."""
        return list(dict.fromkeys(face.name for face in self.faces))

    def of(self, name: str) -> list[Face]:
        return [face for face in self.faces if face.name == name]

    def adding(self, face: Face) -> KnownFacesFile:
        """This set with `face` appended (validated like a face read from a file)."""
        where = f"new face ({face.name!r})"
        check_name(face.name, where)  # stricter than reading: no new name that breaks a CSV line
        checked = _check_face(
            {"name": face.name, "encoding": list(face.encoding), "source": face.source}, where
        )
        return KnownFacesFile((*self.faces, checked))

    def without(self, name: str) -> KnownFacesFile:
        return KnownFacesFile(tuple(face for face in self.faces if face.name != name))

    # --- bytes ---

    @classmethod
    def from_bytes(cls, data: bytes, *, origin: str = "known faces") -> KnownFacesFile:
        """Parse and validate; every error names `origin`, the entry and the problem."""
        if data[:1] == b"\x80":  # pickle protocol 2+ starts with the PROTO opcode
            raise KnownFacesFileError(
                f"{origin}: this is a pickle, not a known-faces file; convert it with "
                "`hybrid-lambda faces import-pickle`"
            )
        try:
            document = json.loads(data.decode("utf-8"))
        except NOT_JSON as error:
            raise KnownFacesFileError(f"{origin}: not a JSON known-faces file: {error}") from error
        if not isinstance(document, dict):
            raise KnownFacesFileError(f"{origin}: expected a JSON object at the top level")
        if document.get("format") != FORMAT:
            raise KnownFacesFileError(f"{origin}: 'format' must be {FORMAT!r}")
        version = document.get("version")
        if version != VERSION:
            raise KnownFacesFileError(
                f"{origin}: unsupported version {version!r} (this program reads {VERSION})"
            )
        entries = document.get("faces")
        if not isinstance(entries, list):
            raise KnownFacesFileError(f"{origin}: 'faces' must be a list")
        return cls.from_entries(entries, origin=origin)

    @classmethod
    def from_entries(cls, entries: Iterable[Any], *, origin: str = "known faces") -> KnownFacesFile:
        """Validate a file's `faces` list, or faces built in memory (the course pickle, photos)."""
        return cls(tuple(_check_face(e, f"{origin}: faces[{i}]") for i, e in enumerate(entries)))

    @classmethod
    def load(cls, path: Path) -> KnownFacesFile:
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise KnownFacesFileError(f"{path}: cannot read known-faces file: {error}") from error
        return cls.from_bytes(data, origin=str(path))

    def to_bytes(self) -> bytes:
        """The file's canonical bytes (the same as the function's writer produces)."""
        faces = [
            json.dumps({"name": f.name, "source": f.source, "encoding": list(f.encoding)})
            for f in self.faces
        ]
        header = f'{{"format": "{FORMAT}", "version": {VERSION}, "model": "{MODEL}",\n'
        body = ' "faces": [\n  ' + ",\n  ".join(faces) + "\n ]}\n" if faces else ' "faces": []}\n'
        return (header + body).encode("utf-8")

    @property
    def version(self) -> str:
        """The version the function reports for this set written canonically (`file_version`)."""
        return file_version(self.to_bytes())

    @property
    def content_version(self) -> str:
        """A short digest of the canonical bytes (the function's `KnownFacesVersion` metric)."""
        return hashlib.sha256(self.to_bytes()).hexdigest()[:12]


def file_version(data: bytes) -> str:
    """A known-faces file's version: the SHA-256 (hex) of its bytes, as every result's
    `known_faces.version` names it (the same on S3, on a path and on the VM that pushes it)."""
    return hashlib.sha256(data).hexdigest()


def check_name(name: Any, where: str = "name") -> str:
    """A new person's name: a non-empty printable line of at most MAX_NAME_LENGTH characters.

    Files are read with the function's rule (any non-empty string), so both read the same sets.
    """
    if not isinstance(name, str) or not name.strip():
        raise KnownFacesFileError(f"{where}: 'name' must be a non-empty string")
    if name != name.strip() or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise KnownFacesFileError(
            f"{where}: 'name' must be printable, unpadded and at most {MAX_NAME_LENGTH} characters"
        )
    return name


def check_encoding(value: Any, where: str) -> tuple[float, ...]:
    """128 finite numbers (booleans are not numbers here), as floats."""
    if not isinstance(value, list | tuple) or len(value) != ENCODING_SIZE:
        size = len(value) if isinstance(value, list | tuple) else type(value).__name__
        raise KnownFacesFileError(
            f"{where}: 'encoding' must be {ENCODING_SIZE} numbers, got {size}"
        )
    numbers = []
    for x in value:
        number = _finite_number(x)
        if number is None:
            # reprlib: a hostile value (a 400-digit integer, a long string) is shown shortened.
            raise KnownFacesFileError(
                f"{where}: 'encoding' holds a non-finite or non-number {reprlib.repr(x)}"
            )
        numbers.append(number)
    return tuple(numbers)


def _finite_number(x: Any) -> float | None:
    """`x` as a float if it is a finite number (booleans are not numbers here), else None."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    try:
        number = float(x)
    except OverflowError:  # an integer too large for a float
        return None
    return number if math.isfinite(number) else None


def _check_face(entry: Any, where: str) -> Face:
    if not isinstance(entry, dict):
        raise KnownFacesFileError(f"{where}: expected an object")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise KnownFacesFileError(f"{where}: 'name' must be a non-empty string")
    source = entry.get("source", "")
    if not isinstance(source, str):
        raise KnownFacesFileError(f"{where}: 'source' must be a string")
    encoding = check_encoding(entry.get("encoding"), f"{where} ({name})")
    return Face(name, encoding, source)


def distance(a: Iterable[float], b: Iterable[float]) -> float:
    """Euclidean distance between two descriptors (face_recognition's face_distance)."""
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))
