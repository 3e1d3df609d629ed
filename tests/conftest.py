"""Fixtures shared by every test: the shared data folder and moto's server on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Daemon-driving fixtures (cloud, function, daemons), shared by tests/watcher and tests/e2e.
pytest_plugins = ["tests.daemon_fixtures"]

SHARED_DATA = Path(os.environ.get("HYBRID_SHARED_DATA", REPO.parent / "shared" / "data"))


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
    monkeypatch.setenv("HYBRID_CONFIG", "/nonexistent/hybrid-watcher.toml")


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


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A bucket-safe name unique to this test (S3 names: lower case, 3-63 chars)."""
    import hashlib

    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    return f"t-{digest}"
