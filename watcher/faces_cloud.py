"""The known-faces file's cloud copy and the VM's working copy: pull, push, roll back.

The working copy is `<staging_root>/known_faces.json`; beside it `known_faces.sync.json`
remembers which cloud version it was last in step with (ETag, content sha256). That is how
`push` knows the working copy is based on what the cloud holds now (no one pushed meanwhile)
and `pull` knows it would throw away edits that were never pushed.

Every push first copies the object it replaces to `<key>.previous` (one generation, on any
S3: AWS, moto, SeaweedFS, MinIO, with or without bucket versioning), then PUTs the new bytes
with their SHA-256 (`x-amz-checksum-sha256`), which S3 verifies before storing anything.
`rollback` puts `.previous` back and keeps the version it replaced as the new `.previous`, so
a second rollback undoes the first.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hybrid_common.known_faces_file import KnownFacesFile, file_version
from hybrid_common.logs import get_logger
from watcher.staging import write_atomic

log = get_logger(__name__)

PREVIOUS_SUFFIX = ".previous"


class FacesCloudError(RuntimeError):
    """An operation the operator must decide about (a conflict, nothing to roll back)."""


@dataclass(frozen=True, slots=True)
class SyncState:
    """The cloud version the working copy was last in step with."""

    uri: str
    etag: str | None  # None: the cloud held no file then
    version: str  # the working copy's `file_version` at that moment

    @classmethod
    def load(cls, path: Path) -> SyncState | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None  # never synced (or a damaged record: treated as never synced)

    def save(self, path: Path) -> None:
        write_atomic(path, (json.dumps(asdict(self), indent=2) + "\n").encode())


@dataclass(frozen=True, slots=True)
class Pushed:
    etag: str
    version_id: str | None
    version: str  # `file_version`: what results made with it name as known_faces.version
    previous_kept: bool


def split_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def sync_path(working: Path) -> Path:
    return working.with_name(working.stem + ".sync.json")


class FacesCloud:
    """One known-faces object (`s3://bucket/key`) and the working copy that tracks it."""

    def __init__(self, s3: Any, uri: str, working: Path) -> None:
        self._s3 = s3
        self.uri = uri
        self.bucket, self.key = split_uri(uri)
        self.working = working
        self.sync_file = sync_path(working)

    # --- the cloud object ---

    def _get(self, key: str) -> tuple[bytes, str] | None:
        """(bytes, etag) of an object, None if it does not exist."""
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key)
        except self._s3.exceptions.NoSuchKey:
            return None
        with response["Body"] as body:
            data: bytes = body.read()
        return data, str(response["ETag"]).strip('"')

    def _head_etag(self) -> str | None:
        try:
            response = self._s3.head_object(Bucket=self.bucket, Key=self.key)
        except Exception as error:
            if _status(error) == 404:
                return None
            raise
        return str(response["ETag"]).strip('"')

    def _put(self, key: str, data: bytes) -> dict[str, Any]:
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        # Naming the algorithm too sends x-amz-sdk-checksum-algorithm: S3 ignores it, moto needs
        # it to store the checksum (moto stores it but does not verify it; AWS does).
        response: dict[str, Any] = self._s3.put_object(
            Bucket=self.bucket, Key=key, Body=data, ChecksumAlgorithm="SHA256",
            ChecksumSHA256=checksum,
            ContentType="application/json", Metadata={"version": file_version(data)},
        )  # fmt: skip
        return response

    # --- the working copy ---

    def local_changes(self) -> bool:
        """The working copy differs from what it was last synced with (or was never synced)."""
        state = SyncState.load(self.sync_file)
        try:
            data = self.working.read_bytes()
        except FileNotFoundError:
            return False
        return state is None or state.version != file_version(data)

    def _adopt(self, data: bytes, etag: str | None) -> None:
        """The working copy becomes `data`, in step with the cloud's `etag`."""
        write_atomic(self.working, data)
        SyncState(self.uri, etag, file_version(data)).save(self.sync_file)

    # --- operations ---

    def pull(self, *, force: bool = False) -> KnownFacesFile:
        """Fetch the cloud's file into the working copy (an empty set if there is none)."""
        if self.working.exists() and self.local_changes() and not force:
            raise FacesCloudError(
                f"{self.working} has changes that were never pushed: push them, or pull "
                "--force to discard them"
            )
        found = self._get(self.key)
        data, etag = found if found else (KnownFacesFile().to_bytes(), None)
        known = KnownFacesFile.from_bytes(data, origin=self.uri)  # refuse an invalid cloud file
        self._adopt(data, etag)
        log.info("faces.pulled", uri=self.uri, etag=etag, faces=len(known))
        return known

    def push(self, source: Path | None = None, *, force: bool = False) -> Pushed:
        """Validate and upload `source` (default: the working copy), keeping `.previous`.

        The working copy is only pushed if it is based on the cloud's current version; an
        explicit `source` (e.g. `hybrid-lambda faces build`'s output) replaces the set as is.
        """
        path = source or self.working
        data = path.read_bytes()
        known = KnownFacesFile.from_bytes(data, origin=str(path))  # refuses an invalid file
        current = self._head_etag()
        if source is None and not force:
            state = SyncState.load(self.sync_file)
            base = state.etag if state and state.uri == self.uri else "(never pulled)"
            if base != current:
                raise FacesCloudError(
                    f"{self.uri} changed since the working copy was pulled (now {current}, "
                    f"pulled {base}): pull and redo the change, or push --force"
                )
        kept = False
        if current is not None:
            self._s3.copy_object(
                Bucket=self.bucket, Key=self.key + PREVIOUS_SUFFIX,
                CopySource={"Bucket": self.bucket, "Key": self.key},
            )  # fmt: skip
            kept = True
        response = self._put(self.key, data)
        etag, version = str(response["ETag"]).strip('"'), file_version(data)
        self._adopt(data, etag)
        log.info("faces.pushed", uri=self.uri, etag=etag, version=version, faces=len(known),
                 previous_kept=kept)  # fmt: skip
        return Pushed(etag, response.get("VersionId"), version, kept)

    def rollback(self) -> Pushed:
        """Put `<key>.previous` back; the version it replaces becomes the new `.previous`."""
        previous = self._get(self.key + PREVIOUS_SUFFIX)
        if previous is None:
            raise FacesCloudError(
                f"no {self.key}{PREVIOUS_SUFFIX} in {self.bucket}: nothing to roll back to"
            )
        data, _ = previous
        KnownFacesFile.from_bytes(data, origin=f"{self.uri}{PREVIOUS_SUFFIX}")
        current = self._get(self.key)
        response = self._put(self.key, data)
        if current is not None:  # kept even if invalid: whoever wrote it may want it back
            self._put(self.key + PREVIOUS_SUFFIX, current[0])
        etag, version = str(response["ETag"]).strip('"'), file_version(data)
        self._adopt(data, etag)
        log.info("faces.rolled_back", uri=self.uri, etag=etag, version=version)
        return Pushed(etag, response.get("VersionId"), version, current is not None)


def _status(error: Exception) -> int:
    response = getattr(error, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
