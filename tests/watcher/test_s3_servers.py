"""The watcher against a real S3 server (SeaweedFS) as well as moto's mock.

test_uploader.py and test_results.py run every S3-facing test on both (`s3_backend`); here are
the checks of the second server itself (it verifies signatures, unlike moto) and one
representative run of the whole daemon on each, from drop to results.
"""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.conftest import S3Backend
from tests.servers import SeaweedProcess
from tests.watcher_daemon import Daemon, StandInFunction, drop, make_cloud, video_bytes
from watcher.clients import aws_clients
from watcher.settings import WatcherSettings
from watcher.uploader import (
    Uploader,
    UploadFailed,
    UploadRequest,
    original_name_from_metadata,
    upload_metadata,
)

MIB = 1024 * 1024


def test_seaweedfs_checks_every_signature(seaweedfs_server: SeaweedProcess) -> None:
    """What makes it worth a second server: a wrong secret is refused (moto takes anything)."""

    def client(secret: str) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=seaweedfs_server.url,
            region_name="us-east-1",
            aws_access_key_id=seaweedfs_server.access_key,
            aws_secret_access_key=secret,
        )

    good, bad = client(seaweedfs_server.secret_key), client("not-the-secret")
    good.create_bucket(Bucket="signature-check")
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        bad.list_objects_v2(Bucket="signature-check")


async def test_a_body_that_is_not_the_hashed_file_is_refused_and_not_stored(
    seaweedfs_server: SeaweedProcess,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    unique_name: str,
) -> None:
    """A single PUT sends the intake's sha256 as its checksum and does not hash the body again:
    the server's check is what catches bytes that are not the ones hashed. moto stores any body,
    so only a real server shows the watcher's side: a clear, final failure and no object."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs_server.secret_key)
    path = tmp_path / "changed.mp4"
    path.write_bytes(b"a" * 1000)
    hashed = hashlib.sha256(b"b" * 1000).hexdigest()  # what the intake saw: same size
    key = "videos/node-a/20261130T120000Z-0001/changed.mp4"
    request = UploadRequest(path, key, hashed, 1000, upload_metadata(path.name, hashed, "node-a"))
    settings = WatcherSettings(
        endpoint_url=seaweedfs_server.url,
        staging_root=tmp_path / "staging",
        input_bucket=f"{unique_name}-in",
        output_bucket=f"{unique_name}-out",
        node_id="node-a",
        retry_base_delay_s=0.01,
        retry_max_delay_s=0.05,
    )
    async with aws_clients(settings) as clients:
        await clients.s3.create_bucket(Bucket=settings.input_bucket)
        with pytest.raises(UploadFailed) as failed:
            await Uploader(clients.s3, settings).upload(request)
        listed = await clients.s3.list_objects_v2(Bucket=settings.input_bucket)
    assert failed.value.retryable is False
    assert failed.value.reason.startswith("BadDigest")
    assert not listed.get("Contents")


@pytest.mark.slow
def test_the_daemon_delivers_single_and_multipart_uploads_with_their_results(
    tmp_path: Path, s3_backend: S3Backend, unique_name: str, daemons: list[Daemon]
) -> None:
    cloud = make_cloud(s3_backend.endpoint, unique_name)
    daemon = Daemon(tmp_path / "node", cloud, multipart_threshold_mb=5, part_size_mb=5)
    daemons.append(daemon)
    originals = {
        "small café.mp4": video_bytes("small"),
        "large.mov": video_bytes("large", 11 * MIB + 3),  # three parts
    }
    with StandInFunction(cloud):
        daemon.start()
        for name, data in originals.items():
            drop(daemon.inbox, name, data)
        drop(daemon.inbox, "broken.mp4", video_bytes("broken"))
        daemon.wait_until(lambda: daemon.concluded(3), timeout=60)

    for name, data in originals.items():
        assert (daemon.done / name).read_bytes() == data
        stem = name.rsplit(".", 1)[0]
        assert (daemon.done / f"{stem}.csv").read_text() == "alice,physics,2026\nbob,cs,2027\n"
    assert (daemon.failed / "broken.mp4").exists()
    assert sorted(e["file"] for e in daemon.events("result.received")) == sorted(originals)
    uploads = {e["key"]: e for e in daemon.events("upload.completed")}
    assert sorted(e["multipart"] for e in uploads.values()) == [False, False, True]

    s3 = cloud.s3()
    keys = cloud.input_keys()
    assert len(keys) == 3 and sorted(keys) == sorted(uploads)
    heads = [s3.head_object(Bucket=cloud.input_bucket, Key=key) for key in keys]
    names = {original_name_from_metadata(head["Metadata"]) for head in heads}
    assert names == {*originals, "broken.mp4"}

    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
