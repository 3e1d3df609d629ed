"""The known-faces store: names and 128-d face encodings in a versioned JSON file (no pickle).

JSON because it is safe to load from anywhere (an S3 object, a pull request), diffable, and
Python's float repr round-trips float64 exactly. Every load is validated; a bad file fails
with a message naming the file, the entry and the problem.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "hybridsphere.known-faces"
VERSION = 1
ENCODING_SIZE = 128
# dlib's ResNet descriptor, 5-point landmarks, as used by face_recognition's face_encodings.
MODEL = "dlib_face_recognition_resnet_model_v1"


# The error.json code for a video the function could not compare with anyone: the known-faces
# file is missing, denied or invalid. Lasting until someone fixes the file, so not retried.
KNOWN_FACES_UNAVAILABLE = "known_faces_unavailable"


class KnownFacesError(ValueError):
    """The known-faces file is missing, unreadable or invalid."""


@dataclass(frozen=True, eq=False)  # eq would compare numpy arrays: ambiguous
class KnownFaces:
    """Immutable set of known face encodings; several encodings may share one name."""

    names: list[str]
    encodings: np.ndarray  # (N, 128) float64, read-only
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        encodings = np.array(self.encodings, dtype=np.float64, copy=True).reshape(-1, ENCODING_SIZE)
        encodings.flags.writeable = False
        object.__setattr__(self, "encodings", encodings)
        object.__setattr__(self, "names", list(self.names))
        sources = list(self.sources) or [""] * len(self.names)
        object.__setattr__(self, "sources", sources)
        if not (len(self.names) == len(encodings) == len(sources)):
            raise KnownFacesError(
                f"{len(self.names)} names, {len(encodings)} encodings and {len(sources)} "
                "sources: they must be the same length"
            )

    def __len__(self) -> int:
        return len(self.names)

    @property
    def people(self) -> list[str]:
        """Distinct names, in file order."""
        return list(dict.fromkeys(self.names))

    @classmethod
    def from_lists(
        cls,
        names: Sequence[str],
        encodings: Sequence[Any],
        sources: Sequence[str] | None = None,
        *,
        origin: str = "known faces",
    ) -> KnownFaces:
        """Validate plain lists (e.g. from the course pickle) into a store."""
        sources = list(sources) if sources is not None else [""] * len(names)
        if not (len(names) == len(encodings) == len(sources)):
            raise KnownFacesError(
                f"{origin}: {len(names)} names, {len(encodings)} encodings, {len(sources)} sources"
            )
        entries = [
            {"name": name, "encoding": encoding, "source": source}
            for name, encoding, source in zip(names, encodings, sources, strict=True)
        ]
        return cls._from_entries(entries, origin)

    @classmethod
    def load(cls, path: Path) -> KnownFaces:
        """Read and validate a known-faces file."""
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise KnownFacesError(f"{path}: cannot read known-faces file: {error}") from error
        return cls.from_bytes(data, origin=str(path))

    @classmethod
    def from_bytes(cls, data: bytes, *, origin: str = "known faces") -> KnownFaces:
        """Parse and validate the file format from bytes (e.g. an S3 object's body)."""
        if data[:1] == b"\x80":  # pickle protocol 2+ starts with the PROTO opcode
            raise KnownFacesError(
                f"{origin}: this is a pickle, not a known-faces file; convert it with "
                "`hybrid-lambda faces import-pickle`"
            )
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise KnownFacesError(f"{origin}: not a JSON known-faces file: {error}") from error
        if not isinstance(document, dict):
            raise KnownFacesError(f"{origin}: expected a JSON object at the top level")
        if document.get("format") != FORMAT:
            raise KnownFacesError(f"{origin}: 'format' must be {FORMAT!r}")
        version = document.get("version")
        if version != VERSION:
            raise KnownFacesError(
                f"{origin}: unsupported version {version!r} (this program reads {VERSION})"
            )
        entries = document.get("faces")
        if not isinstance(entries, list):
            raise KnownFacesError(f"{origin}: 'faces' must be a list")
        return cls._from_entries(entries, origin)

    @classmethod
    def _from_entries(cls, entries: list[Any], origin: str) -> KnownFaces:
        names: list[str] = []
        sources: list[str] = []
        rows: list[np.ndarray] = []
        for index, entry in enumerate(entries):
            where = f"{origin}: faces[{index}]"
            if not isinstance(entry, dict):
                raise KnownFacesError(f"{where}: expected an object")
            name = entry.get("name")
            if not isinstance(name, str) or not name.strip():
                raise KnownFacesError(f"{where}: 'name' must be a non-empty string")
            source = entry.get("source", "")
            if not isinstance(source, str):
                raise KnownFacesError(f"{where}: 'source' must be a string")
            rows.append(_check_encoding(entry.get("encoding"), f"{where} ({name})"))
            names.append(name)
            sources.append(source)
        encodings = np.stack(rows) if rows else np.zeros((0, ENCODING_SIZE))
        return cls(names=names, encodings=encodings, sources=sources)

    def to_bytes(self) -> bytes:
        """The file format: one face per line, so diffs stay readable."""
        faces = [
            json.dumps({"name": name, "source": source, "encoding": [float(x) for x in encoding]})
            for name, source, encoding in zip(self.names, self.sources, self.encodings, strict=True)
        ]
        header = f'{{"format": "{FORMAT}", "version": {VERSION}, "model": "{MODEL}",\n'
        body = ' "faces": [\n  ' + ",\n  ".join(faces) + "\n ]}\n" if faces else ' "faces": []}\n'
        return (header + body).encode("utf-8")

    def save(self, path: Path) -> None:
        """Write atomically (temporary file then rename), so readers never see half a file."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(path)


def _check_encoding(value: Any, where: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list) or len(value) != ENCODING_SIZE:
        size = len(value) if isinstance(value, list) else type(value).__name__
        raise KnownFacesError(f"{where}: 'encoding' must be {ENCODING_SIZE} numbers, got {size}")
    for x in value:
        if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
            raise KnownFacesError(f"{where}: 'encoding' holds a non-finite or non-number {x!r}")
    return np.asarray(value, dtype=np.float64)
