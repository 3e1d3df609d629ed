"""No usable known-faces file: each video gets `known_faces_unavailable`, not endless retries.

The real handler against moto's server; the shipped sample (samples/) is the known-faces file
and the clip, so no course data is needed. A transient S3 error fetching the file (503 through
a fault proxy) still raises, for Lambda or SQS to retry.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from hybrid_common.keys import ResultKind, result_key
from hybrid_common.students import load_students, read_students
from lambda_fn.handler import Runtime
from lambda_fn.known_faces import KNOWN_FACES_UNAVAILABLE
from lambda_fn.settings import FunctionSettings, RecognitionOptions
from local_stack.provision import ensure_table
from tests.faults import FaultProxy

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
CLIP = SAMPLES / "videos" / "short_hamilton_clip.mp4"
FACES_KEY = "config/known_faces.json"


class Context:
    aws_request_id = "req-known-faces"
    function_version = "$LATEST"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


@dataclass
class Cloud:
    endpoint: str
    s3: Any
    dynamodb: Any
    inputs: str
    outputs: str
    table: str

    def settings(self, tmp_dir: Path, endpoint: str | None = None) -> FunctionSettings:
        return FunctionSettings(
            endpoint_url=endpoint or self.endpoint,
            output_bucket=self.outputs,
            table=self.table,
            known_faces=f"s3://{self.inputs}/{FACES_KEY}",
            tmp_dir=tmp_dir,
            contact_sheet=False,
        )

    def put(self, key: str, body: bytes) -> dict[str, Any]:
        self.s3.put_object(Bucket=self.inputs, Key=key, Body=body)
        record = {
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": self.inputs}, "object": {"key": key, "size": len(body)}},
        }
        return {"Records": [{"eventSource": "aws:s3", **record}]}

    def error_code(self, key: str) -> str:
        body = self.s3.get_object(Bucket=self.outputs, Key=result_key(key, ResultKind.ERROR))
        code: str = json.loads(body["Body"].read())["code"]
        return code


@pytest.fixture
def cloud(moto_endpoint: str) -> Cloud:
    """Buckets and the sample's students table; no known-faces file yet."""
    suffix = uuid.uuid4().hex[:10]
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    dynamodb = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")
    inputs, outputs, table = f"in-{suffix}", f"out-{suffix}", f"students-{suffix}"
    s3.create_bucket(Bucket=inputs)
    s3.create_bucket(Bucket=outputs)
    ensure_table(dynamodb, table)
    load_students(dynamodb, table, read_students(SAMPLES / "students.json"))
    return Cloud(moto_endpoint, s3, dynamodb, inputs, outputs, table)


def runtime_for(cloud: Cloud, tmp_path: Path, endpoint: str | None = None) -> Runtime:
    settings = cloud.settings(tmp_path, endpoint)
    clients_endpoint = endpoint or cloud.endpoint
    s3 = boto3.client("s3", endpoint_url=clients_endpoint, region_name="us-east-1")
    return Runtime(settings, RecognitionOptions(workers=1), clients=(s3, cloud.dynamodb))


def test_missing_file_is_an_error_result_and_uploading_it_heals_the_warm_container(
    cloud: Cloud, tmp_path: Path
) -> None:
    runtime = runtime_for(cloud, tmp_path)  # starts: no init failure, no retry loop
    try:
        assert runtime.known is None
        first = "videos/vm-1/s-1/short_hamilton_clip.mp4"
        response = runtime.handle(cloud.put(first, CLIP.read_bytes()), Context())
        assert response["results"][0]["status"] == "error"
        assert response["results"][0]["code"] == KNOWN_FACES_UNAVAILABLE
        assert cloud.error_code(first) == KNOWN_FACES_UNAVAILABLE

        # Someone uploads the file: the same warm container now recognises the person.
        cloud.s3.put_object(
            Bucket=cloud.inputs, Key=FACES_KEY, Body=(SAMPLES / "known_faces.json").read_bytes()
        )
        second = "videos/vm-1/s-2/short_hamilton_clip.mp4"
        response = runtime.handle(cloud.put(second, CLIP.read_bytes()), Context())
        assert response["results"][0]["status"] == "ok", response
        csv = cloud.s3.get_object(Bucket=cloud.outputs, Key=result_key(second, ResultKind.CSV))
        assert csv["Body"].read().decode().startswith("lin_manuel_miranda,theatre,sophomore")
    finally:
        if runtime.pool is not None:
            runtime.pool.close()


def test_a_file_that_is_not_known_faces_is_an_error_result(cloud: Cloud, tmp_path: Path) -> None:
    cloud.s3.put_object(Bucket=cloud.inputs, Key=FACES_KEY, Body=b"\x80\x04not json")
    runtime = runtime_for(cloud, tmp_path)
    key = "videos/vm-1/s-3/short_hamilton_clip.mp4"
    response = runtime.handle(cloud.put(key, CLIP.read_bytes()), Context())
    assert response["results"][0]["code"] == KNOWN_FACES_UNAVAILABLE
    assert cloud.error_code(key) == KNOWN_FACES_UNAVAILABLE


async def test_a_transient_error_fetching_the_file_still_raises_for_a_retry(
    cloud: Cloud, tmp_path: Path
) -> None:
    cloud.s3.put_object(
        Bucket=cloud.inputs, Key=FACES_KEY, Body=(SAMPLES / "known_faces.json").read_bytes()
    )
    async with FaultProxy(cloud.endpoint) as proxy:
        proxy.fail(100, lambda seen: seen.method == "GET" and FACES_KEY in seen.path)
        with pytest.raises(ClientError) as raised:
            await asyncio.to_thread(runtime_for, cloud, tmp_path, proxy.url)
    assert raised.value.response["Error"]["Code"] == "SlowDown"
