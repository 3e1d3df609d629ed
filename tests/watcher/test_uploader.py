"""The uploader against moto's server and SeaweedFS over HTTP (`s3_backend`), with a
fault-injecting proxy in front."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import S3Backend
from tests.faults import FaultProxy, Seen
from tests.servers import MotoProcess
from watcher.clients import aws_clients
from watcher.pacing import MIB
from watcher.settings import WatcherSettings
from watcher.uploader import (
    WHOLE_BODY_MAX,
    Uploader,
    UploadFailed,
    UploadRequest,
    original_name_from_metadata,
    part_size_for,
    upload_metadata,
)

SettingsFactory = Callable[..., WatcherSettings]


@pytest.fixture
def make_settings(s3_endpoint: str, tmp_path: Path, unique_name: str) -> SettingsFactory:
    def make(endpoint: str | None = None, **overrides: Any) -> WatcherSettings:
        values: dict[str, Any] = {
            "endpoint_url": endpoint or s3_endpoint,
            "staging_root": tmp_path / "staging",
            "input_bucket": f"{unique_name}-in",
            "output_bucket": f"{unique_name}-out",
            "node_id": "node-a",
            "retry_base_delay_s": 0.01,
            "retry_max_delay_s": 0.05,
        } | overrides
        return WatcherSettings(**values)

    return make


@pytest.fixture
async def s3(make_settings: SettingsFactory) -> AsyncIterator[Any]:
    """A client straight to moto (no proxy) for set-up and checks; the input bucket exists."""
    settings = make_settings()
    async with aws_clients(settings) as clients:
        await clients.s3.create_bucket(Bucket=settings.input_bucket)
        yield clients.s3


def make_file(folder: Path, name: str, size: int, seed: int = 0) -> UploadRequest:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    block = hashlib.sha256(f"{seed}".encode()).digest() * 4096  # 128 KiB, not compressible
    data = (block * (size // len(block) + 1))[:size]
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    key = f"videos/node-a/20261127T190000Z-{seed:04d}/{name.encode('ascii', 'ignore').decode()}"
    return UploadRequest(path, key, sha, size, upload_metadata(name, sha, "node-a"))


async def read_object(s3: Any, bucket: str, key: str) -> bytes:
    response = await s3.get_object(Bucket=bucket, Key=key)
    async with response["Body"] as body:
        data: bytes = await body.read()
    return data


def part_puts(proxy: FaultProxy) -> list[Seen]:
    return [seen for seen in proxy.seen if seen.is_part_upload]


def test_metadata_is_ascii_and_round_trips() -> None:
    name = "Café 日本 clip №1 (été).mp4"
    metadata = upload_metadata(name, "ab" * 32, "node-a")
    assert all(value.isascii() for value in metadata.values())
    assert original_name_from_metadata(metadata) == name
    assert original_name_from_metadata(upload_metadata("plain name.mp4", "", "n")) == (
        "plain name.mp4"
    )


def test_part_size_grows_so_no_file_needs_more_than_10000_parts() -> None:
    assert part_size_for(100 * MIB, 8) == 8 * MIB
    big = 200 * 1024 * MIB  # 200 GiB
    size = part_size_for(big, 8)
    assert size % MIB == 0
    assert -(-big // size) <= 10_000


async def test_small_file_is_one_put_with_metadata_sse_and_checksum(
    make_settings: SettingsFactory, s3: Any, tmp_path: Path
) -> None:
    request = make_file(tmp_path, "Café clip.mp4", 3 * MIB + 17)
    async with FaultProxy(make_settings().endpoint_url or "") as proxy:
        settings = make_settings(endpoint=proxy.url)
        async with aws_clients(settings) as clients:
            result = await Uploader(clients.s3, settings).upload(request)

    puts = [seen for seen in proxy.seen if seen.method == "PUT"]
    assert len(puts) == 1 and not puts[0].query
    # The checksum S3 verifies is the intake's sha256; the payload is not hashed again.
    expected = base64.b64encode(bytes.fromhex(request.sha256)).decode()
    assert puts[0].headers["x-amz-checksum-sha256"] == expected
    assert puts[0].headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    assert result.multipart is False and result.bytes == request.size and result.attempts == 1

    head = await s3.head_object(
        Bucket=settings.input_bucket, Key=request.key, ChecksumMode="ENABLED"
    )
    assert head["ChecksumSHA256"] == expected
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentType"] == "video/mp4"
    assert original_name_from_metadata(head["Metadata"]) == "Café clip.mp4"
    assert head["Metadata"]["sha256"] == request.sha256
    assert head["Metadata"]["node"] == "node-a"
    assert head["ETag"] == result.etag
    data = await read_object(s3, settings.input_bucket, request.key)
    assert hashlib.sha256(data).hexdigest() == request.sha256


async def test_kms_encryption_names_the_key(
    make_settings: SettingsFactory, s3: Any, s3_backend: S3Backend, tmp_path: Path
) -> None:
    settings = make_settings(sse="aws:kms", sse_kms_key_id=s3_backend.kms_key_id)
    request = make_file(tmp_path, "k.mp4", 1000)
    async with aws_clients(settings) as clients:
        await Uploader(clients.s3, settings).upload(request)
    head = await s3.head_object(Bucket=settings.input_bucket, Key=request.key)
    assert head["ServerSideEncryption"] == "aws:kms"
    # moto echoes the id sent; SeaweedFS, like AWS, names the key itself, never an alias.
    if s3_backend.name == "moto":
        assert head["SSEKMSKeyId"].endswith(s3_backend.kms_key_id)
    else:
        assert head["SSEKMSKeyId"] and not head["SSEKMSKeyId"].startswith("alias/")
    assert await read_object(s3, settings.input_bucket, request.key) == request.path.read_bytes()


async def test_file_above_threshold_goes_multipart(
    make_settings: SettingsFactory, s3: Any, tmp_path: Path
) -> None:
    request = make_file(tmp_path, "big.mp4", 12 * MIB + 5, seed=1)
    async with FaultProxy(make_settings().endpoint_url or "") as proxy:
        settings = make_settings(endpoint=proxy.url, multipart_threshold_mb=5, part_size_mb=5)
        async with aws_clients(settings) as clients:
            result = await Uploader(clients.s3, settings).upload(request)

    parts = part_puts(proxy)
    assert sorted(int(p.query["partNumber"]) for p in parts) == [1, 2, 3]
    assert [p.body_bytes for p in sorted(parts, key=lambda p: p.query["partNumber"])] == [
        5 * MIB,
        5 * MIB,
        2 * MIB + 5,
    ]
    assert all("x-amz-checksum-sha256" in p.headers for p in parts)
    assert result.multipart is True and result.resumed_parts == 0

    # Uploading it again (a crash before the journal recorded success) sends nothing.
    async with FaultProxy(make_settings().endpoint_url or "") as proxy:
        settings = make_settings(endpoint=proxy.url, multipart_threshold_mb=5, part_size_mb=5)
        async with aws_clients(settings) as clients:
            again = await Uploader(clients.s3, settings).upload(request)
    assert again.etag == result.etag
    assert [seen.method for seen in proxy.seen] == ["GET", "HEAD"]  # list uploads, head object
    data = await read_object(s3, settings.input_bucket, request.key)
    assert hashlib.sha256(data).hexdigest() == request.sha256
    head = await s3.head_object(Bucket=settings.input_bucket, Key=request.key)
    assert head["ServerSideEncryption"] == "AES256"
    assert original_name_from_metadata(head["Metadata"]) == "big.mp4"


async def test_a_403_to_the_head_of_a_key_not_yet_stored_means_absent(
    make_settings: SettingsFactory, s3: Any, tmp_path: Path
) -> None:
    """On AWS a HEAD of a missing key answers 403, not 404, without an unconditional
    s3:ListBucket, and the watcher's policy grants ListBucket only with an s3:prefix
    condition. Regression: the multipart path's "already stored?" HEAD took that 403 for
    AccessDenied and failed every multipart upload at once."""
    request = make_file(tmp_path, "big.mp4", 12 * MIB, seed=3)
    async with FaultProxy(make_settings().endpoint_url or "") as proxy:

        def completed() -> bool:
            return any(s.method == "POST" and "uploadId" in s.query for s in proxy.seen)

        # As AWS answers this policy: 403 while the key is absent, the object once it exists.
        forbidden = proxy.fail(
            1000, lambda seen: seen.method == "HEAD" and not completed(), status=403, code="403"
        )
        settings = make_settings(endpoint=proxy.url, multipart_threshold_mb=5, part_size_mb=5)
        async with aws_clients(settings) as clients:
            uploader = Uploader(clients.s3, settings)
            assert not await uploader.stored(request.key)
            result = await uploader.upload(request)
            assert await uploader.stored(request.key)
    assert forbidden.remaining == 1000 - 2  # stored(), then upload's "already stored?"
    assert result.multipart
    data = await read_object(s3, settings.input_bucket, request.key)
    assert hashlib.sha256(data).hexdigest() == request.sha256


async def test_a_put_is_not_sent_again_once_s3_holds_the_same_bytes(
    make_settings: SettingsFactory, s3: Any, tmp_path: Path
) -> None:
    """On AWS each PUT is an ObjectCreated event, one more run of the function. A PUT that an
    earlier run may have sent (`may_be_stored`: killed before the journal said `uploaded`) is
    replaced by a HEAD when the key holds the same size and sha256; other bytes are sent."""
    request = make_file(tmp_path, "clip.mp4", MIB, seed=5)
    other = make_file(tmp_path / "other", "clip.mp4", MIB, seed=6)
    async with FaultProxy(make_settings().endpoint_url or "") as proxy:

        def object_puts() -> list[Seen]:
            return [seen for seen in proxy.seen if seen.is_object_put]

        # As AWS answers the watcher's policy: 403 to a HEAD while the key is absent.
        forbidden = proxy.fail(1, lambda seen: seen.method == "HEAD", status=403, code="403")
        settings = make_settings(endpoint=proxy.url)
        async with aws_clients(settings) as clients:
            uploader = Uploader(clients.s3, settings)
            first = await uploader.upload(dataclasses.replace(request, may_be_stored=True))
            assert forbidden.remaining == 0 and len(object_puts()) == 1

            again = await uploader.upload(dataclasses.replace(request, may_be_stored=True))
            assert again.etag == first.etag and len(object_puts()) == 1

            # Same key, other bytes (not what an earlier attempt sent): sent.
            await uploader.upload(dataclasses.replace(other, key=request.key, may_be_stored=True))
            assert len(object_puts()) == 2
    stored = await read_object(s3, settings.input_bucket, request.key)
    assert hashlib.sha256(stored).hexdigest() == other.sha256


async def test_interrupted_multipart_is_resumed_sending_only_missing_or_wrong_parts(
    make_settings: SettingsFactory, s3: Any, tmp_path: Path
) -> None:
    request = make_file(tmp_path, "resume.mp4", 17 * MIB, seed=2)
    bucket = make_settings().input_bucket
    data = request.path.read_bytes()
    # A previous run created the upload and sent part 1 intact and part 2 with other bytes
    # (e.g. the file was replaced): part 2 must not be trusted.
    created = await s3.create_multipart_upload(
        Bucket=bucket, Key=request.key, ChecksumAlgorithm="SHA256"
    )
    upload_id = created["UploadId"]
    for number, body in ((1, data[: 5 * MIB]), (2, b"x" * (5 * MIB))):
        await s3.upload_part(
            Bucket=bucket,
            Key=request.key,
            UploadId=upload_id,
            PartNumber=number,
            Body=body,
            ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode(),
        )

    [listed] = (await s3.list_multipart_uploads(Bucket=bucket, Prefix=request.key))["Uploads"]
    # AWS and moto say which checksum an upload was created with; SeaweedFS does not, and an
    # upload of unknown checksum is not resumed (completing it with SHA-256 parts might be
    # refused): it is aborted and the file sent again, slower but never wrong.
    resumable = listed.get("ChecksumAlgorithm") == "SHA256"

    async with FaultProxy(make_settings().endpoint_url or "") as proxy:
        settings = make_settings(endpoint=proxy.url, multipart_threshold_mb=5, part_size_mb=5)
        async with aws_clients(settings) as clients:
            result = await Uploader(clients.s3, settings).upload(request)

    creates = [s for s in proxy.seen if s.method == "POST" and "uploads" in s.query]
    if resumable:
        assert sorted(int(p.query["partNumber"]) for p in part_puts(proxy)) == [2, 3, 4]
        assert all(p.query["uploadId"] == upload_id for p in part_puts(proxy))
        assert not creates
        assert result.resumed_parts == 1
    else:
        assert sorted(int(p.query["partNumber"]) for p in part_puts(proxy)) == [1, 2, 3, 4]
        assert not [p for p in part_puts(proxy) if p.query["uploadId"] == upload_id]
        assert len(creates) == 1 and result.resumed_parts == 0
    stored = await read_object(s3, bucket, request.key)
    assert stored == data
    left = await s3.list_multipart_uploads(Bucket=bucket, Prefix=request.key)
    assert not left.get("Uploads")


async def test_orphaned_uploads_are_aborted_but_kept_and_other_nodes_are_not(
    make_settings: SettingsFactory, s3: Any
) -> None:
    settings = make_settings(orphan_upload_age_s=0)
    bucket = settings.input_bucket
    keys = {
        "mine-orphan": "videos/node-a/s1/a.mp4",
        "mine-kept": "videos/node-a/s2/b.mp4",
        "other-node": "videos/node-b/s3/c.mp4",
    }
    for key in keys.values():
        await s3.create_multipart_upload(Bucket=bucket, Key=key)

    # (The age threshold is not exercised: moto reports every upload as initiated in 2010.)
    async with aws_clients(settings) as clients:
        uploader = Uploader(clients.s3, settings)
        aborted = await uploader.abort_orphans("videos/node-a/", {keys["mine-kept"]})
    assert aborted == 1
    left = await s3.list_multipart_uploads(Bucket=bucket)
    assert sorted(u["Key"] for u in left["Uploads"]) == sorted(
        [keys["mine-kept"], keys["other-node"]]
    )


async def test_throttling_and_resets_are_retried(
    make_settings: SettingsFactory, s3: Any, tmp_path: Path
) -> None:
    small = make_file(tmp_path, "small.mp4", MIB, seed=3)
    big = make_file(tmp_path, "big.mp4", 11 * MIB, seed=4)
    async with FaultProxy(make_settings().endpoint_url or "") as proxy:
        proxy.fail(2, lambda s: s.is_object_put and s.path.endswith("small.mp4"))  # 503 SlowDown
        proxy.fail(2, lambda s: s.is_part_upload and s.query["partNumber"] == "2", drop=True)
        completion: Any = lambda s: s.method == "POST" and "uploadId" in s.query  # noqa: E731
        proxy.fail(1, completion, status=500, code="InternalError")
        settings = make_settings(endpoint=proxy.url, multipart_threshold_mb=5, part_size_mb=5)
        async with aws_clients(settings) as clients:
            uploader = Uploader(clients.s3, settings)
            small_result = await uploader.upload(small)
            big_result = await uploader.upload(big)

    assert proxy.injected == 5
    assert small_result.attempts == 3
    # aiohttp itself resends an idempotent PUT once when a reused connection drops, so a
    # reset may or may not reach our retry loop; the completion's 500 always does.
    assert 2 <= big_result.attempts <= 4
    for request in (small, big):
        stored = await read_object(s3, settings.input_bucket, request.key)
        assert hashlib.sha256(stored).hexdigest() == request.sha256


async def test_gives_up_after_the_retry_budget(
    make_settings: SettingsFactory, s3: Any, tmp_path: Path
) -> None:
    request = make_file(tmp_path, "never.mp4", 1000, seed=5)
    async with FaultProxy(make_settings().endpoint_url or "") as proxy:
        proxy.fail(100, lambda s: s.is_object_put)
        settings = make_settings(endpoint=proxy.url, retry_attempts=4)
        async with aws_clients(settings) as clients:
            with pytest.raises(UploadFailed) as failed:
                await Uploader(clients.s3, settings).upload(request)
    assert failed.value.retryable is True
    assert "SlowDown" in failed.value.reason
    assert len([s for s in proxy.seen if s.is_object_put]) == 4


async def test_gives_up_when_the_time_budget_is_spent(
    make_settings: SettingsFactory, s3: Any, tmp_path: Path
) -> None:
    request = make_file(tmp_path, "slow.mp4", 1000, seed=6)
    async with FaultProxy(make_settings().endpoint_url or "") as proxy:
        proxy.fail(100, lambda s: s.is_object_put)
        settings = make_settings(
            endpoint=proxy.url,
            retry_attempts=1000,
            retry_max_seconds=0.5,
            retry_base_delay_s=0.05,
            retry_max_delay_s=0.1,
        )
        async with aws_clients(settings) as clients:
            with pytest.raises(UploadFailed):
                await Uploader(clients.s3, settings).upload(request)
    assert 2 <= len(proxy.seen) < 30


async def test_access_denied_fails_at_once(
    make_settings: SettingsFactory, s3: Any, tmp_path: Path
) -> None:
    request = make_file(tmp_path, "denied.mp4", 1000, seed=7)
    async with FaultProxy(make_settings().endpoint_url or "") as proxy:
        proxy.fail(5, lambda s: s.is_object_put, status=403, code="AccessDenied")
        settings = make_settings(endpoint=proxy.url)
        async with aws_clients(settings) as clients:
            with pytest.raises(UploadFailed) as failed:
                await Uploader(clients.s3, settings).upload(request)
    assert failed.value.retryable is False
    assert failed.value.reason.startswith("AccessDenied")
    assert len(proxy.seen) == 1


async def test_missing_bucket_and_vanished_file_fail_at_once(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(input_bucket="hybrid-no-such-bucket")
    request = make_file(tmp_path, "nobucket.mp4", 1000, seed=8)
    async with aws_clients(settings) as clients:
        uploader = Uploader(clients.s3, settings)
        with pytest.raises(UploadFailed) as failed:
            await uploader.upload(request)
        assert failed.value.retryable is False and "NoSuchBucket" in failed.value.reason

        os.unlink(request.path)  # noqa: PTH108 - the point is a file deleted behind our back
        with pytest.raises(UploadFailed) as vanished:
            await uploader.upload(request)
        assert vanished.value.retryable is False
        assert "FileNotFoundError" in vanished.value.reason


# Both single-PUT bodies: read whole (up to WHOLE_BODY_MAX) and streamed from the file.
@pytest.mark.parametrize("size", [1000, WHOLE_BODY_MAX + 1])
async def test_a_file_whose_size_changed_is_refused(
    make_settings: SettingsFactory, s3: Any, tmp_path: Path, size: int
) -> None:
    request = make_file(tmp_path, "grown.mp4", size, seed=9)
    with request.path.open("ab") as handle:
        handle.write(b"more")
    settings = make_settings()
    async with aws_clients(settings) as clients:
        with pytest.raises(UploadFailed) as failed:
            await Uploader(clients.s3, settings).upload(request)
    assert failed.value.retryable is False and "no longer" in failed.value.reason


async def test_crc32_checksums_for_put_and_parts(
    make_settings: SettingsFactory, s3: Any, tmp_path: Path
) -> None:
    small = make_file(tmp_path, "c-small.mp4", 2 * MIB, seed=10)
    big = make_file(tmp_path, "c-big.mp4", 6 * MIB, seed=11)
    async with FaultProxy(make_settings().endpoint_url or "") as proxy:
        settings = make_settings(
            endpoint=proxy.url, checksum="CRC32", multipart_threshold_mb=5, part_size_mb=5
        )
        async with aws_clients(settings) as clients:
            uploader = Uploader(clients.s3, settings)
            await uploader.upload(small)
            await uploader.upload(big)

    crc = base64.b64encode(zlib.crc32(small.path.read_bytes()).to_bytes(4, "big")).decode()
    head = await s3.head_object(Bucket=settings.input_bucket, Key=small.key, ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == crc
    parts = part_puts(proxy)
    assert len(parts) == 2 and all("x-amz-checksum-crc32" in p.headers for p in parts)
    stored = await read_object(s3, settings.input_bucket, big.key)
    assert hashlib.sha256(stored).hexdigest() == big.sha256


@pytest.fixture
def moto_process(s3_backend: S3Backend) -> Iterator[str]:
    """The S3 server in a process of its own, so this process's memory is the uploader's
    alone: moto's is started apart from the session's in-process one; SeaweedFS always is."""
    if s3_backend.name != "moto":
        yield s3_backend.endpoint
        return
    server = MotoProcess()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.mark.slow
async def test_uploads_stream_files_instead_of_reading_them_whole(
    make_settings: SettingsFactory, moto_process: str, tmp_path: Path
) -> None:
    single = make_file(tmp_path, "stream.mp4", 48 * MIB, seed=12)
    multi = make_file(tmp_path, "parts.mp4", 48 * MIB, seed=13)
    settings = make_settings(
        endpoint=moto_process, multipart_threshold_mb=50, part_size_mb=5, part_concurrency=2
    )
    async with aws_clients(settings) as clients:
        await clients.s3.create_bucket(Bucket=settings.input_bucket)
        uploader = Uploader(clients.s3, settings)
        tracemalloc.start()
        try:
            await uploader.upload(single)
            single_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            multi_settings = settings.model_copy(update={"multipart_threshold_mb": 5})
            await Uploader(clients.s3, multi_settings).upload(multi)
            multi_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    # A whole-file read would peak above 48 MiB, a part held in memory at 5 MiB a part in
    # flight; streaming from the file stays at aiohttp's 256 KiB chunks and 1 MiB hash reads.
    assert single_peak < 4 * MIB
    assert multi_peak < 8 * MIB
