"""The function's known faces: the shared known-faces file (`hybrid_common.known_faces_file`,
which parses and validates it) as numpy arrays, and the rolling out of a new version.

`LiveKnownFaces` is how a warm container rolls out a new file without a redeploy: it checks
the file at most every `check_s` seconds (a conditional GET on S3: 304 while unchanged) and
swaps to the new version only once it is valid.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from botocore.exceptions import BotoCoreError, ClientError

from hybrid_common.known_faces_file import (
    ENCODING_SIZE,
    Face,
    KnownFacesFile,
    KnownFacesFileError,
    file_version,
)
from hybrid_common.logs import get_logger

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

log = get_logger(__name__)


# The error.json code for a video the function could not compare with anyone: the known-faces
# file is missing, denied or invalid. Lasting until someone fixes the file, so not retried.
KNOWN_FACES_UNAVAILABLE = "known_faces_unavailable"


# S3's answers meaning the file is not there for us: no retry brings it (403 included: without
# s3:ListBucket, S3 answers a missing key with AccessDenied). Other errors may pass: retried.
KNOWN_FACES_ABSENT = frozenset({"NoSuchKey", "NoSuchBucket", "404", "AccessDenied", "403"})


class KnownFacesError(KnownFacesFileError):
    """The known-faces file is missing, unreadable or invalid (the function's own, so that the
    handler tells it from any other ValueError; the shared parser's errors arrive as this)."""


@contextmanager
def _as_function_error() -> Iterator[None]:
    """The shared parser's errors re-raised as KnownFacesError, their message unchanged."""
    try:
        yield
    except KnownFacesFileError as error:
        raise KnownFacesError(*error.args) from error


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
    def from_file(cls, file: KnownFacesFile) -> KnownFaces:
        """A parsed, validated file as numpy arrays."""
        return cls(
            names=[face.name for face in file.faces],
            encodings=np.array([face.encoding for face in file.faces], dtype=np.float64),
            sources=[face.source for face in file.faces],
        )

    def to_file(self) -> KnownFacesFile:
        """The plain form the shared module writes (float64 to float: exact)."""
        return KnownFacesFile(
            tuple(
                Face(name, tuple(encoding.tolist()), source)
                for name, source, encoding in zip(
                    self.names, self.sources, self.encodings, strict=True
                )
            )
        )

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
            # Checked as a file's JSON list would be: an array's elements as Python numbers.
            {"name": name, "encoding": _plain(encoding), "source": source}
            for name, encoding, source in zip(names, encodings, sources, strict=True)
        ]
        with _as_function_error():
            file = KnownFacesFile.from_entries(entries, origin=origin)
        return cls.from_file(file)

    @classmethod
    def load(cls, path: Path) -> KnownFaces:
        """Read and validate a known-faces file."""
        with _as_function_error():
            file = KnownFacesFile.load(path)
        return cls.from_file(file)

    @classmethod
    def from_bytes(cls, data: bytes, *, origin: str = "known faces") -> KnownFaces:
        """Parse and validate the file format from bytes (e.g. an S3 object's body)."""
        with _as_function_error():
            file = KnownFacesFile.from_bytes(data, origin=origin)
        return cls.from_file(file)

    def to_bytes(self) -> bytes:
        """The file's canonical bytes (one face per line, so diffs stay readable)."""
        return self.to_file().to_bytes()

    def save(self, path: Path) -> None:
        """Write atomically (temporary file then rename), so readers never see half a file."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(path)


def _plain(encoding: Any) -> Any:
    """A numpy array as a list of Python numbers; anything else as it is (then refused or not)."""
    return encoding.tolist() if isinstance(encoding, np.ndarray) else encoding


@dataclass(frozen=True, eq=False)
class KnownFacesVersion:
    """A validated known-faces set, its version (`file_version`) and where it was read."""

    faces: KnownFaces
    version: str
    source: str


class LiveKnownFaces:
    """The known faces of a warm container: a path in the image or `s3://bucket/key`, re-read
    when it changes, at most every `check_s` seconds.

    A new version replaces the current one only if it is valid; an invalid one is logged
    (`known_faces.invalid`) and the current set stays, as it does when the check itself fails
    (S3 unreachable: `known_faces.check_failed`). The first load has no fallback: it raises
    KnownFacesError when the file is absent, denied or invalid (the handler then answers each
    video with `known_faces_unavailable` and tries again at the next invocation), or the S3
    error when a retry may cure it (throttling, 5xx, no connection).
    """

    def __init__(
        self,
        location: str,
        s3: S3Client | None,
        check_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.location = location
        self.check_s = check_s
        self._s3 = s3
        self._clock = clock
        self._tag: str | None = None  # what the last check saw (ETag, or stat of the path)
        fetched = self._fetch()
        if fetched is None:  # pragma: no cover - no tag yet, so a fetch always returns data
            raise KnownFacesError(f"{location}: could not be read")
        self._tag, data = fetched
        self.current = KnownFacesVersion(
            KnownFaces.from_bytes(data, origin=location), file_version(data), location
        )
        self._checked = clock()

    def refresh(self) -> tuple[KnownFacesVersion, bool]:
        """The set to use now, and whether it just changed; checks only when `check_s` is up."""
        now = self._clock()
        if now - self._checked < self.check_s:
            return self.current, False
        self._checked = now
        try:
            fetched = self._fetch()
        except (ClientError, BotoCoreError, KnownFacesError) as error:
            log.warning("known_faces.check_failed", source=self.location, error=repr(error))
            return self.current, False
        if fetched is None:
            return self.current, False
        # Remembered even when invalid: the broken file is not fetched again until it changes.
        self._tag, data = fetched
        version = file_version(data)
        if version == self.current.version:
            return self.current, False
        try:
            faces = KnownFaces.from_bytes(data, origin=self.location)
        except KnownFacesError as error:
            log.error(
                "known_faces.invalid",
                source=self.location,
                version=version,
                kept=self.current.version,
                reason=str(error),
            )
            return self.current, False
        log.info(
            "known_faces.reloaded",
            source=self.location,
            version=version,
            previous=self.current.version,
            faces=len(faces),
            people=len(faces.people),
        )
        self.current = KnownFacesVersion(faces, version, self.location)
        return self.current, True

    def _fetch(self) -> tuple[str, bytes] | None:
        """(tag, bytes) of the file, or None if it is unchanged since the last tag seen."""
        if self.location.startswith("s3://"):
            return self._fetch_s3()
        path = Path(self.location)
        try:
            stat = path.stat()
            tag = f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}"
            # A file replaced by rename (as `KnownFaces.save` does) gets a new inode.
            return None if tag == self._tag else (tag, path.read_bytes())
        except OSError as error:
            raise KnownFacesError(f"{path}: cannot read known-faces file: {error}") from error

    def _fetch_s3(self) -> tuple[str, bytes] | None:
        if self._s3 is None:
            raise KnownFacesError(f"{self.location}: an S3 location needs an S3 client")
        bucket, _, key = self.location.removeprefix("s3://").partition("/")
        kwargs: dict[str, Any] = {"IfNoneMatch": self._tag} if self._tag else {}
        try:
            response = self._s3.get_object(Bucket=bucket, Key=key, **kwargs)
        except ClientError as error:
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = str(error.response.get("Error", {}).get("Code", ""))
            if status == 304 or code == "304":
                return None  # unchanged: one small request, no body
            if code in KNOWN_FACES_ABSENT:
                raise KnownFacesError(
                    f"{self.location}: {code}: no known-faces file there (build one with "
                    f"`hybrid-lambda faces build PHOTO_DIR -o FILE` and upload it there)"
                ) from error
            raise  # throttling, 5xx: a retry may cure it
        with response["Body"] as body:
            data = body.read()
        return str(response.get("ETag", "")), data


def read_version(path: Path) -> KnownFacesVersion:
    """A known-faces file from a path, with its version (`hybrid-lambda process`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise KnownFacesError(f"{path}: cannot read known-faces file: {error}") from error
    return KnownFacesVersion(
        KnownFaces.from_bytes(data, origin=str(path)), file_version(data), str(path)
    )
