"""Fixtures shared by every test: the shared data folder, moto's server on loopback, and
`s3_backend`, which runs a test once against moto and once against SeaweedFS."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import structlog

from tests.servers import SeaweedProcess

REPO = Path(__file__).resolve().parent.parent
# Daemon-driving fixtures (cloud, function, daemons), shared by tests/watcher and tests/e2e.
pytest_plugins = ["tests.daemon_fixtures"]

SHARED_DATA = Path(os.environ.get("HYBRID_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """A test that runs a command in-process configures logging onto that test's captured
    stdout, which pytest closes afterwards: later tests would log to a closed file. Each test
    leaves structlog's and the root logger's configuration as it found them."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach AWS: fake credentials, and no profile or config files from the host."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-access-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-key-not-real")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    # The host's HYBRID_* settings or config file must not leak into tests.
    for name in list(os.environ):
        if name.startswith("HYBRID_") and name != "HYBRID_SHARED_DATA":
            monkeypatch.delenv(name)
    monkeypatch.setenv("HYBRID_CONFIG", "")  # empty: no config file at all


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $HYBRID_SHARED_DATA); tests needing it skip with a reason if absent."""
    if not (SHARED_DATA / "cse546" / "test_case_1").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set HYBRID_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's real HTTP server on a free loopback port, shared by the session's tests.

    Tests isolate themselves by using their own bucket/table/queue names (see `unique_name`).
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweedfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedProcess]:
    """SeaweedFS on free loopback ports, shared by the session's tests (own buckets each)."""
    server = SeaweedProcess(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class S3Backend:
    """An S3 server a test runs against, and the credentials it accepts."""

    name: str  # "moto" or "seaweedfs"
    endpoint: str
    access_key: str
    secret_key: str
    kms_key_id: str  # a KMS key SSE-KMS can use there (moto takes any id)


@pytest.fixture(params=["moto", "seaweedfs"])
def s3_backend(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, _fake_aws_credentials: None
) -> S3Backend:
    """The test runs twice: against moto's mock and against SeaweedFS, a real object store
    whose answers differ from moto's where moto is loose (it checks signatures, keeps the case
    of metadata keys, honours If-None-Match). Its credentials are put in the environment, where
    aiobotocore, boto3 and the daemon's subprocesses find them."""
    if request.param == "moto":  # moto accepts any credentials: the fake ones stay
        endpoint = request.getfixturevalue("moto_endpoint")
        key, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
        backend = S3Backend("moto", endpoint, key, secret, "alias/hybrid-test")
    else:
        server: SeaweedProcess = request.getfixturevalue("seaweedfs_server")
        backend = S3Backend(
            "seaweedfs", server.url, server.access_key, server.secret_key, server.kms_key_id
        )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", backend.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", backend.secret_key)
    # boto3's default session keeps the first credentials it found for the whole process.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    return backend


@pytest.fixture
def s3_endpoint(s3_backend: S3Backend) -> str:
    """The endpoint URL of this run's S3 server (see `s3_backend`)."""
    return s3_backend.endpoint


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A bucket-safe name unique to this test (S3 names: lower case, 3-63 chars)."""
    import hashlib

    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    return f"t-{digest}"
