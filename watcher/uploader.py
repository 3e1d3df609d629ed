"""Sending one video to the input bucket: a single PUT, or a resumable multipart upload.

Every request carries an S3-verified checksum (x-amz-checksum-*). With SHA256 (the default) a
single PUT reuses the sha256 the intake already computed, so the file is not hashed again;
parts are hashed in a thread while being read. Nothing here blocks the event loop: files are
opened and parts hashed in threads. Bodies (whole files or parts) are streamed from the file by
aiohttp in 256 KiB chunks read in its executor, so memory does not grow with file size; only
files up to WHOLE_BODY_MAX (2 MiB) are read whole, which saves a thread hop per chunk.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import mimetypes
import os
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote, unquote

import structlog

from hybrid_common.logs import get_logger
from watcher.pacing import MIB, Pacer
from watcher.progress import UploadProgress
from watcher.retry import RetryBudget, describe, error_code, is_transient
from watcher.settings import WatcherSettings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = get_logger(__name__)

# A HEAD has no body, so S3 answers a missing key with a bare status: 404 with s3:ListBucket on
# the bucket, 403 without it (the watcher's IAM policy grants ListBucket only under an
# s3:prefix condition, which a HEAD does not carry). For a key under the node's own prefix,
# where it holds s3:GetObject, either means "not there"; a real denial fails the PUT that follows.
ABSENT_ON_HEAD = frozenset({"404", "NoSuchKey", "NotFound", "403"})
MAX_PARTS = 10_000  # S3's limit; larger files get larger parts.
META_ORIGINAL_NAME = "original-name"
META_SHA256 = "sha256"
META_NODE = "node"


class UploadFailed(Exception):
    """The upload did not succeed; `retryable` says whether trying later may help."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class _FileChanged(Exception):
    """The file is not the one the intake hashed (size or fingerprint): never retried."""


Fingerprint = tuple[int, int, int, int]


def file_fingerprint(path: Path) -> Fingerprint:
    """(inode, size, mtime, ctime) of `path`: any write or replacement changes it.

    ctime cannot be set by users (unlike mtime, which `touch -r` or `cp -p` can restore).
    """
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


@dataclass(frozen=True)
class UploadRequest:
    path: Path
    key: str
    sha256: str  # hex digest of the whole file, from the intake
    size: int
    metadata: dict[str, str]  # see `upload_metadata`; values must be ASCII
    # Taken before hashing; checked again once all bytes are sent, so an object whose bytes
    # may mix old and new content is never completed (multipart) or kept (single PUT).
    fingerprint: Fingerprint | None = None
    # An earlier attempt may have stored it (the journal says `uploading`): look before a PUT.
    may_be_stored: bool = False


@dataclass(frozen=True)
class UploadResult:
    key: str
    etag: str
    bytes: int
    seconds: float
    multipart: bool
    resumed_parts: int  # parts found already uploaded and verified (not sent again)
    attempts: int  # 1 + transient failures retried


def upload_metadata(original_name: str, sha256: str, node_id: str) -> dict[str, str]:
    """S3 user metadata for a submission.

    S3 metadata travels in HTTP headers and must be ASCII, so the original name is always
    percent-encoded (UTF-8); `original_name_from_metadata` reverses it.
    """
    return {
        META_ORIGINAL_NAME: quote(original_name, safe=" !#$&'()+,;=@[]^`{}~"),
        META_SHA256: sha256,
        META_NODE: node_id,
    }


def original_name_from_metadata(metadata: dict[str, str]) -> str:
    return unquote(metadata.get(META_ORIGINAL_NAME, ""))


def part_size_for(size: int, part_size_mb: int) -> int:
    """The part size: the configured one, grown in whole MiB so no file needs > 10,000 parts."""
    wanted = part_size_mb * MIB
    needed = math.ceil(math.ceil(size / MAX_PARTS) / MIB) * MIB
    return max(wanted, needed)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True)
class _PartDigest:
    checksum: str  # base64, as S3 wants it in x-amz-checksum-*
    md5: str | None  # hex, only when asked for


def _digest_part(
    path: Path, offset: int, length: int, algorithm: str, with_md5: bool
) -> _PartDigest:
    """Checksum one part, read in 1 MiB chunks (runs in a thread; hashlib releases the GIL)."""
    sha = hashlib.sha256() if algorithm == "SHA256" else None
    md5 = hashlib.md5(usedforsecurity=False) if with_md5 else None
    crc = 0
    with path.open("rb") as handle:
        done = 0
        while done < length:
            chunk = os.pread(handle.fileno(), min(MIB, length - done), offset + done)
            if not chunk:
                raise _FileChanged(f"{path} shrank while being uploaded")
            done += len(chunk)
            if sha is not None:
                sha.update(chunk)
            else:
                crc = zlib.crc32(chunk, crc)
            if md5 is not None:
                md5.update(chunk)
    checksum = _b64(sha.digest()) if sha is not None else _b64(crc.to_bytes(4, "big"))
    return _PartDigest(checksum, md5.hexdigest() if md5 is not None else None)


def _open_at(path: Path, offset: int) -> BinaryIO:
    handle = path.open("rb")
    handle.seek(offset)
    return handle


# Files up to this size are read whole, in one thread hop, and sent from memory: streaming
# costs a hop per 256 KiB chunk, which made a 1 MiB PUT use 22 % more CPU (bench/upload.py).
# Memory: at most upload_concurrency x this (8 MiB at the default 4 files in flight).
WHOLE_BODY_MAX = 2 * MIB


def _read_whole(path: Path, size: int) -> bytes:
    """The file's bytes, or _FileChanged if it is no longer `size` bytes long."""
    with path.open("rb") as handle:
        data = handle.read(size + 1)
    if len(data) != size:
        raise _FileChanged(f"{path} is no longer {size} bytes")
    return data


def _crc32_of_file(path: Path) -> str:
    crc = 0
    with path.open("rb") as handle:
        while chunk := handle.read(MIB):
            crc = zlib.crc32(chunk, crc)
    return _b64(crc.to_bytes(4, "big"))


class Uploader:
    """Uploads files to the input bucket under the limits of one shared `Pacer`."""

    def __init__(
        self, s3: S3Client, settings: WatcherSettings, progress: UploadProgress | None = None
    ) -> None:
        self._s3 = s3
        self.progress = progress or UploadProgress()
        self._settings = settings
        self._bucket = settings.input_bucket
        self._algorithm = settings.checksum
        self._checksum_param = f"Checksum{settings.checksum}"
        self.pacer = Pacer(settings)

    # -- public API ---------------------------------------------------------------------

    async def upload(self, request: UploadRequest) -> UploadResult:
        """Upload one file, retrying transient errors; raise UploadFailed after the budget."""
        settings = self._settings
        async with self.pacer.files:
            started = time.monotonic()
            budget = self._budget()
            multipart = request.size > settings.multipart_threshold_mb * MIB
            name = original_name_from_metadata(request.metadata) or request.path.name
            self.progress.start(request.key, name, request.size)
            with structlog.contextvars.bound_contextvars(key=request.key):
                try:
                    if multipart:
                        etag, resumed = await self._multipart(request, budget)
                    else:
                        etag, resumed = await self._single_put(request, budget), 0
                except UploadFailed:
                    raise
                except (_FileChanged, FileNotFoundError, IsADirectoryError, PermissionError) as e:
                    raise UploadFailed(describe(e), retryable=False) from e
                except Exception as e:
                    raise UploadFailed(describe(e), retryable=is_transient(e)) from e
                finally:
                    self.progress.finish(request.key)
                seconds = time.monotonic() - started
                log.info(
                    "upload.completed",
                    bytes=request.size,
                    seconds=round(seconds, 3),
                    multipart=multipart,
                    resumed_parts=resumed,
                    retries=budget.retries,
                )
        return UploadResult(
            key=request.key,
            etag=etag,
            bytes=request.size,
            seconds=seconds,
            multipart=multipart,
            resumed_parts=resumed,
            attempts=1 + budget.retries,
        )

    async def abort_orphans(self, node_prefix: str, keep: set[str]) -> int:
        """Abort this node's unfinished multipart uploads that no submission will resume.

        Only uploads older than `orphan_upload_age_s` are touched, so one that another task
        of this process has just created is not pulled from under it.
        """
        cutoff = datetime.now(UTC) - timedelta(seconds=self._settings.orphan_upload_age_s)
        aborted = 0
        paginator = self._s3.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self._bucket, Prefix=node_prefix):
            for upload in page.get("Uploads", []):
                key, upload_id = upload["Key"], upload["UploadId"]
                if key in keep or upload["Initiated"] > cutoff:
                    continue
                await self._abort(key, upload_id)
                log.info("upload.orphan_aborted", key=key, upload_id=upload_id)
                aborted += 1
        return aborted

    # -- single PUT -----------------------------------------------------------------------

    def _common_args(self, request: UploadRequest) -> dict[str, Any]:
        """Metadata, content type and encryption: set once per object (PUT or Create)."""
        content_type = mimetypes.guess_type(request.path.name)[0] or "application/octet-stream"
        args: dict[str, Any] = {
            "Bucket": self._bucket,
            "Key": request.key,
            "Metadata": request.metadata,
            "ContentType": content_type,
            "ServerSideEncryption": self._settings.sse,
        }
        if self._settings.sse_kms_key_id:
            args["SSEKMSKeyId"] = self._settings.sse_kms_key_id
        return args

    async def _single_put(self, request: UploadRequest, budget: RetryBudget) -> str:
        if self._algorithm == "SHA256":
            checksum = _b64(bytes.fromhex(request.sha256))
        else:
            checksum = await asyncio.to_thread(_crc32_of_file, request.path)
        args = self._common_args(request) | {
            "ContentLength": request.size,
            # The value is ours (botocore then computes nothing); naming the algorithm too
            # sends x-amz-sdk-checksum-algorithm, which S3 ignores and moto needs to store it.
            "ChecksumAlgorithm": self._algorithm,
            self._checksum_param: checksum,
        }

        # Every PUT is an ObjectCreated event on AWS, i.e. one more run of the function: when
        # an earlier run may have sent it, ask first whether S3 already holds these bytes.
        if request.may_be_stored and (etag := await self._already_stored(request, budget)):
            log.info("upload.already_present", etag=etag)
            return etag

        async def put() -> str:
            await self.pacer.request(request.size)
            if request.size <= WHOLE_BODY_MAX:
                body = await asyncio.to_thread(_read_whole, request.path, request.size)
                response = await self._s3.put_object(Body=body, **args)
                return str(response["ETag"])
            handle = await asyncio.to_thread(request.path.open, "rb")
            try:
                if os.fstat(handle.fileno()).st_size != request.size:
                    raise _FileChanged(f"{request.path} is no longer {request.size} bytes")
                response = await self._s3.put_object(Body=handle, **args)
            finally:
                handle.close()
            return str(response["ETag"])

        etag = await budget.call("upload", put, key=request.key)
        self.progress.advance(request.key, request.size)
        try:
            await self._check_unchanged(request)
        except _FileChanged:
            # S3 refuses a body that does not match our sha256; moto does not. Either way
            # the object must not stay for the function to answer. If the delete fails, the
            # submission still fails: its result, if one comes, is never collected.
            try:
                await self._s3.delete_object(Bucket=self._bucket, Key=request.key)
            except Exception as error:
                log.warning("upload.delete_failed", error=describe(error))
            raise
        return etag

    async def _check_unchanged(self, request: UploadRequest) -> None:
        """Raise _FileChanged if the file is no longer the one that was hashed."""
        if request.fingerprint is None:
            return
        try:
            now = await asyncio.to_thread(file_fingerprint, request.path)
        except FileNotFoundError:
            now = None
        if now != request.fingerprint:
            log.warning("upload.file_changed", path=str(request.path))
            raise _FileChanged(
                f"{request.path.name} changed while being uploaded; not used (drop it again)"
            )

    # -- multipart ------------------------------------------------------------------------

    async def _multipart(self, request: UploadRequest, budget: RetryBudget) -> tuple[str, int]:
        part_size = part_size_for(request.size, self._settings.part_size_mb)
        upload_id, existing = await self._find_resumable(request, budget)
        if upload_id is None and (etag := await self._already_stored(request, budget)):
            # Completed before a crash let the journal record it: do not send it all again.
            log.info("upload.already_present", etag=etag)
            return etag, 0
        if upload_id is None:
            upload_id = await self._create(request, budget)
        else:
            log.info("upload.resuming", upload_id=upload_id, parts_found=len(existing))
        try:
            parts, resumed = await self._send_parts(request, budget, upload_id, part_size, existing)
        except Exception as error:
            if error_code(error) != "NoSuchUpload":
                raise
            # Aborted under us (an operator, or another host's orphan sweep): start over once.
            log.warning("upload.restarted", upload_id=upload_id, error=describe(error))
            upload_id = await self._create(request, budget)
            name = original_name_from_metadata(request.metadata) or request.path.name
            self.progress.start(request.key, name, request.size)  # from zero again
            parts, resumed = await self._send_parts(request, budget, upload_id, part_size, {})
        try:
            await self._check_unchanged(request)
        except _FileChanged:
            await self._abort(request.key, upload_id)  # its parts may mix old and new bytes
            raise
        etag = await self._complete(request, budget, upload_id, parts)
        return etag, resumed

    def _budget(self) -> RetryBudget:
        s = self._settings
        return RetryBudget.start(
            s.retry_attempts, s.retry_max_seconds, s.retry_base_delay_s, s.retry_max_delay_s
        )

    async def stored(self, key: str) -> bool:
        """Whether the input bucket still holds `key`; raises if S3 cannot say soon."""
        # A short budget: the caller asks again later, and must not stall through an outage.
        s = self._settings
        budget = RetryBudget.start(2, 10.0, s.retry_base_delay_s, s.retry_max_delay_s)

        async def head() -> bool:
            await self.pacer.request()
            try:
                await self._s3.head_object(Bucket=self._bucket, Key=key)
            except Exception as error:
                if error_code(error) in ABSENT_ON_HEAD:
                    return False
                raise
            return True

        return await budget.call("upload", head, key=key)

    async def _already_stored(self, request: UploadRequest, budget: RetryBudget) -> str | None:
        """The ETag of this very file if the key already holds it (same size and sha256)."""

        async def head() -> str | None:
            return await self._stored_etag(request)

        return await budget.call("upload", head, key=request.key)

    async def _stored_etag(self, request: UploadRequest) -> str | None:
        """One HEAD: the ETag if the key holds this file (size and the sha256 it was sent with;
        S3 checked the bytes against that sha256's x-amz-checksum when it stored them)."""
        await self.pacer.request()
        try:
            response = await self._s3.head_object(Bucket=self._bucket, Key=request.key)
        except Exception as error:
            if error_code(error) in ABSENT_ON_HEAD:
                return None
            raise
        same = (
            response["ContentLength"] == request.size
            and response.get("Metadata", {}).get(META_SHA256) == request.sha256
        )
        return str(response["ETag"]) if same else None

    async def _find_resumable(
        self, request: UploadRequest, budget: RetryBudget
    ) -> tuple[str | None, dict[int, dict[str, Any]]]:
        """An unfinished upload of this key with our checksum algorithm, and its parts."""

        async def list_uploads() -> list[dict[str, Any]]:
            await self.pacer.request()
            response = await self._s3.list_multipart_uploads(
                Bucket=self._bucket, Prefix=request.key
            )
            return [dict(u) for u in response.get("Uploads", []) if u["Key"] == request.key]

        uploads = await budget.call("upload", list_uploads, key=request.key)
        uploads.sort(key=lambda u: u["Initiated"], reverse=True)
        usable = [u for u in uploads if u.get("ChecksumAlgorithm") == self._algorithm]
        chosen = usable[0] if usable else None
        for upload in uploads:
            if upload is not chosen:
                await self._abort(request.key, upload["UploadId"])
        if chosen is None:
            return None, {}
        upload_id = str(chosen["UploadId"])

        async def list_parts() -> dict[int, dict[str, Any]]:
            found: dict[int, dict[str, Any]] = {}
            paginator = self._s3.get_paginator("list_parts")
            async for page in paginator.paginate(
                Bucket=self._bucket, Key=request.key, UploadId=upload_id
            ):
                for part in page.get("Parts", []):
                    found[int(part["PartNumber"])] = dict(part)
            return found

        return upload_id, await budget.call("upload", list_parts, key=request.key)

    async def _create(self, request: UploadRequest, budget: RetryBudget) -> str:
        args = self._common_args(request) | {"ChecksumAlgorithm": self._algorithm}

        async def create() -> str:
            await self.pacer.request()
            response = await self._s3.create_multipart_upload(**args)
            return str(response["UploadId"])

        return await budget.call("upload", create, key=request.key)

    async def _send_parts(
        self,
        request: UploadRequest,
        budget: RetryBudget,
        upload_id: str,
        part_size: int,
        existing: dict[int, dict[str, Any]],
    ) -> tuple[list[dict[str, Any]], int]:
        count = math.ceil(request.size / part_size)
        done: dict[int, dict[str, Any]] = {}
        resumed = 0

        async def one(number: int) -> None:
            nonlocal resumed
            offset = (number - 1) * part_size
            length = min(part_size, request.size - offset)
            old = existing.get(number)
            async with self.pacer.parts:
                # MD5 only when a found part can be checked by nothing else (see below).
                with_md5 = old is not None and self._checksum_param not in old
                digest = await asyncio.to_thread(
                    _digest_part, request.path, offset, length, self._algorithm, with_md5
                )
                if old is not None and self._part_matches(old, length, digest):
                    done[number] = {"ETag": old["ETag"], self._checksum_param: digest.checksum}
                    resumed += 1
                    self.progress.advance(request.key, length, resumed=True)
                    return

                part_args: dict[str, Any] = {
                    "Bucket": self._bucket,
                    "Key": request.key,
                    "UploadId": upload_id,
                    "PartNumber": number,
                    "ContentLength": length,
                    "ChecksumAlgorithm": self._algorithm,
                    self._checksum_param: digest.checksum,
                }

                async def send() -> str:
                    await self.pacer.request(length)
                    # Streamed from the file (aiohttp stops at Content-Length), so a part
                    # costs no memory; a fresh handle per attempt starts at the right offset.
                    handle = await asyncio.to_thread(_open_at, request.path, offset)
                    try:
                        response = await self._s3.upload_part(Body=handle, **part_args)
                    finally:
                        handle.close()
                    return str(response["ETag"])

                etag = await budget.call("upload", send, key=request.key, part=number)
                done[number] = {"ETag": etag, self._checksum_param: digest.checksum}
                self.progress.advance(request.key, length)  # per part: cheap, and often enough

        try:
            async with asyncio.TaskGroup() as group:
                for number in range(1, count + 1):
                    group.create_task(one(number))
        except ExceptionGroup as failed:
            # The first failure cancelled the other parts; it is the one worth reporting.
            raise failed.exceptions[0] from None
        parts = [{"PartNumber": n, **done[n]} for n in range(1, count + 1)]
        return parts, resumed

    def _part_matches(self, listed: dict[str, Any], length: int, digest: _PartDigest) -> bool:
        """Is a part found by ListParts the same bytes as ours?

        S3 lists each part's checksum; moto does not, and then the ETag of a part, which is
        its MD5 unless the object is KMS-encrypted, is the evidence. Unverifiable: resend.
        """
        if listed.get("Size") != length:
            return False
        if self._checksum_param in listed:
            return bool(listed[self._checksum_param] == digest.checksum)
        if self._settings.sse == "aws:kms" or digest.md5 is None:
            return False
        return bool(str(listed.get("ETag", "")).strip('"') == digest.md5)

    async def _complete(
        self,
        request: UploadRequest,
        budget: RetryBudget,
        upload_id: str,
        parts: list[dict[str, Any]],
    ) -> str:
        async def complete() -> str:
            await self.pacer.request()
            try:
                response = await self._s3.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=request.key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                )
            except Exception as error:
                # A completion whose answer was lost: the retry finds the upload gone, but
                # the object may be there, complete. Then it is a success.
                if error_code(error) != "NoSuchUpload":
                    raise
                return await self._etag_if_complete(request, error)
            return str(response["ETag"])

        etag = await budget.call("upload", complete, key=request.key)
        await self._verify_size(request, budget)
        return etag

    async def _etag_if_complete(self, request: UploadRequest, error: Exception) -> str:
        try:
            head = await self._s3.head_object(Bucket=self._bucket, Key=request.key)
        except Exception:
            raise error from None
        if head["ContentLength"] != request.size:
            raise error
        return str(head["ETag"])

    async def _verify_size(self, request: UploadRequest, budget: RetryBudget) -> None:
        async def head() -> int:
            await self.pacer.request()
            response = await self._s3.head_object(Bucket=self._bucket, Key=request.key)
            return int(response["ContentLength"])

        stored = await budget.call("upload", head, key=request.key)
        if stored != request.size:
            raise UploadFailed(
                f"stored object is {stored} bytes, expected {request.size}", retryable=True
            )

    async def _abort(self, key: str, upload_id: str) -> None:
        try:
            await self._s3.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id)
        except Exception as error:
            if error_code(error) != "NoSuchUpload":  # already gone: that is what we wanted
                raise
