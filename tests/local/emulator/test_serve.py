"""`hybrid-local serve`: its settings (flags over environment over local-cloud's state file) and
what its Invoke API accepts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from local_stack.cli import build_parser
from local_stack.emulator.serve import settings_from_args
from tests.servers import ServeLocal, provision_stack, s3_client


def test_the_state_file_fills_what_the_environment_leaves_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "local-cloud.json"
    state.write_text(
        json.dumps(
            {
                "endpoint_url": "http://127.0.0.1:5055",
                "region": "eu-west-1",
                "queue": "from-state",
                "output_bucket": "out-bucket",
                "table": "students",
                "known_faces_uri": "s3://in-bucket/config/known_faces.json",
            }
        )
    )
    # apply_cloud_state writes os.environ: give it a copy, so nothing leaks into other tests.
    monkeypatch.setattr(os, "environ", {**os.environ, "HYBRID_QUEUE": "from-env"})
    args = build_parser().parse_args(
        ["serve", "--cloud-state", str(state), "--max-concurrency", "3", "--handler", "m.f"]
    )
    settings = settings_from_args(args)
    assert settings.endpoint_url == "http://127.0.0.1:5055"
    assert settings.region == "eu-west-1"
    assert settings.queue == "from-env", "the environment wins over the state file"
    assert (settings.max_concurrency, settings.handler) == (3, "m.f"), "flags win over both"
    # The handler in the workers inherits these.
    assert os.environ["HYBRID_OUTPUT_BUCKET"] == "out-bucket"
    assert os.environ["HYBRID_KNOWN_FACES"].startswith("s3://in-bucket/")


def test_an_unreadable_state_file_is_a_config_error(tmp_path: Path) -> None:
    args = build_parser().parse_args(["serve", "--cloud-state", str(tmp_path / "none")])
    with pytest.raises(SystemExit) as exit_info:
        settings_from_args(args)
    assert exit_info.value.code == 78


def _s3_event(bucket: str, key: str) -> bytes:
    record = {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}
    record["s3"] = {"bucket": {"name": bucket}, "object": {"key": key}}  # type: ignore[assignment]
    return json.dumps({"Records": [record]}).encode()


@pytest.mark.timeout(120)
def test_the_invoke_api_binds_loopback_and_runs_only_the_configured_input_bucket(
    moto_endpoint: str, unique_name: str, tmp_path: Path
) -> None:
    """Its credentials may reach other buckets (on a laptop: all of them); an unauthenticated
    local API must not make the function read those for whoever can connect."""
    stack = provision_stack(moto_endpoint, unique_name, function_timeout_s=5)
    s3 = s3_client(moto_endpoint)
    other = f"{unique_name}-other"
    s3.create_bucket(Bucket=other)
    # `.bin`: not a trigger suffix, so only the invocations below run the stand-in.
    s3.put_object(Bucket=stack.input_bucket, Key="videos/n/s/mine.bin", Body=b"v")
    s3.put_object(Bucket=other, Key="videos/n/s/theirs.bin", Body=b"v")
    runtime = ServeLocal(stack, tmp_path / "stand-in")
    try:
        assert runtime.invoke_url.startswith("http://127.0.0.1:")
        client = boto3.client(
            "lambda",
            endpoint_url=runtime.invoke_url,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local-not-a-secret",
            config=Config(retries={"max_attempts": 1}),
        )
        name = "hybridsphere-face-recognition"
        for invocation_type in ("RequestResponse", "Event"):
            with pytest.raises(ClientError) as refused:
                client.invoke(
                    FunctionName=name,
                    InvocationType=invocation_type,
                    Payload=_s3_event(other, "videos/n/s/theirs.bin"),
                )
            assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
            assert stack.input_bucket in refused.value.response["Error"]["Message"]
        wrapped = {
            "Records": [
                {
                    "eventSource": "aws:sqs",
                    "messageId": "m-1",
                    "body": _s3_event(other, "videos/n/s/theirs.bin").decode(),
                }
            ]
        }
        with pytest.raises(ClientError, match="AccessDenied"):
            client.invoke(FunctionName=name, Payload=json.dumps(wrapped).encode())
        answer = client.invoke(
            FunctionName=name, Payload=_s3_event(stack.input_bucket, "videos/n/s/mine.bin")
        )
        assert answer["StatusCode"] == 200 and "FunctionError" not in answer
        client.close()
    finally:
        assert runtime.stop() == 0
        s3.close()
    # The stand-in ran for the input bucket's object only.
    ran = (tmp_path / "stand-in" / "invocations.log").read_text().splitlines()
    assert {line.split()[0] for line in ran} == {"videos/n/s/mine.bin"}


def test_the_input_bucket_comes_from_the_state_file_and_the_invoke_api_defaults_to_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "local-cloud.json"
    state.write_text(json.dumps({"input_bucket": "in-bucket", "output_bucket": "out-bucket"}))
    monkeypatch.setattr(
        os, "environ", {k: v for k, v in os.environ.items() if not k.startswith("HYBRID_")}
    )
    args = build_parser().parse_args(["serve", "--cloud-state", str(state)])
    settings = settings_from_args(args)
    assert settings.input_bucket == "in-bucket"
    assert settings.invoke_host == "127.0.0.1"
