"""The client factory: configuration that the uploader's speed and retry policy rely on."""

from __future__ import annotations

from pathlib import Path

from tests.faults import FaultProxy
from watcher.clients import aws_clients, client_config
from watcher.settings import WatcherSettings


def test_config_turns_off_botocore_retries_and_payload_hashing(tmp_path: Path) -> None:
    settings = WatcherSettings(
        staging_root=tmp_path,
        endpoint_url="http://127.0.0.1:1",
        upload_concurrency=3,
        part_concurrency=5,
    )
    config = client_config(settings)
    assert config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert config.max_pool_connections == 3 + 5 + 4
    assert config.s3 == {"payload_signing_enabled": False, "addressing_style": "path"}
    assert config.request_checksum_calculation == "when_required"


async def test_clients_reach_the_endpoint_once_per_call(moto_endpoint: str, tmp_path: Path) -> None:
    async with FaultProxy(moto_endpoint) as proxy:
        proxy.fail(1, lambda seen: seen.method == "GET")
        settings = WatcherSettings(
            staging_root=tmp_path, endpoint_url=proxy.url, region="eu-west-1"
        )
        async with aws_clients(settings) as clients:
            assert clients.s3.meta.region_name == "eu-west-1"
            assert clients.lambda_.meta.region_name == "eu-west-1"
            try:
                await clients.s3.list_buckets()
            except Exception as error:
                assert "SlowDown" in str(error)
            else:
                raise AssertionError("a 503 must surface: botocore's own retries are off")
            listed = await clients.s3.list_buckets()
    assert "Buckets" in listed
    assert [seen.path for seen in proxy.seen] == ["/", "/"]
