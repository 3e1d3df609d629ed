"""The handler end to end: real clips, moto's S3 and DynamoDB over HTTP, real recognition."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import av
import boto3
import numpy as np
import pytest
import structlog
from botocore.exceptions import ClientError
from PIL import Image
from structlog.testing import capture_logs

from hybrid_common.keys import ResultKind, result_key
from hybrid_common.known_faces_file import file_version
from hybrid_common.result_schema import check_details
from hybrid_common.results import ErrorDoc, KnownFacesDetails, ResultDetails
from hybrid_common.students import load_students, read_students
from lambda_fn import handler as handler_module
from lambda_fn.handler import Runtime
from lambda_fn.known_faces import KnownFaces
from lambda_fn.metrics import FunctionMetrics
from lambda_fn.safe_pickle import load_course_encodings
from lambda_fn.settings import FunctionSettings, RecognitionOptions
from local_stack.provision import ensure_table
from tests.course import COURSE_CLIPS
from tests.faults import FaultProxy
from tests.servers import ServeLocal, provision_stack

COURSE = COURSE_CLIPS
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing-not-real"}


@dataclass
class Context:
    """Lambda's context object, as much of it as the handler reads."""

    aws_request_id: str = "req-test"
    function_version: str = "$LATEST"
    remaining_ms: int = 900_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@dataclass
class Cloud:
    endpoint: str
    s3: Any
    dynamodb: Any
    inputs: str
    outputs: str
    table: str
    known_faces: str
    students: dict[str, dict[str, Any]]

    def settings(self, tmp_dir: Path, **overrides: Any) -> FunctionSettings:
        values: dict[str, Any] = {
            "endpoint_url": self.endpoint,
            "output_bucket": self.outputs,
            "table": self.table,
            "known_faces": self.known_faces,
            "tmp_dir": tmp_dir,
            **overrides,
        }
        return FunctionSettings(**values)

    def runtime(self, tmp_dir: Path, **overrides: Any) -> Runtime:
        return Runtime(
            self.settings(tmp_dir, **overrides),
            RecognitionOptions(),
            clients=(self.s3, self.dynamodb),
        )

    def put(self, key: str, body: bytes) -> dict[str, Any]:
        """Upload and return the S3 event that announces it (key URL-encoded as S3 does)."""
        self.s3.put_object(Bucket=self.inputs, Key=key, Body=body)
        return s3_event(self.inputs, key, len(body))

    def read(self, key: str, kind: ResultKind) -> str | None:
        try:
            body: bytes = self.s3.get_object(Bucket=self.outputs, Key=result_key(key, kind))[
                "Body"
            ].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        return body.decode()

    def expected_row(self, name: str) -> str:
        student = self.students[name]
        return f"{name},{student['major']},{student['year']}\n"


def s3_event(bucket: str, key: str, size: int = 0) -> dict[str, Any]:
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": bucket},
            "object": {"key": quote_plus(key, safe="/"), "size": size},
        },
    }
    return {"Records": [record]}


def sqs_event(*bodies: Any) -> tuple[dict[str, Any], list[str]]:
    ids = [str(uuid.uuid4()) for _ in bodies]
    records = [
        {
            "messageId": message_id,
            "eventSource": "aws:sqs",
            "body": body if isinstance(body, str) else json.dumps(body),
        }
        for message_id, body in zip(ids, bodies, strict=True)
    ]
    return {"Records": records}, ids


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """An H.264 MP4 from RGB frames, with PyAV (even sizes, as yuv420p needs)."""
    height, width = (d - d % 2 for d in frames[0].shape[:2])
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for image in frames:
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(image[:height, :width]), format="rgb24"
            )
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def cloud(moto_endpoint: str, shared_data: Path) -> Cloud:
    """Buckets, the students table and the known faces, once for the module."""
    suffix = uuid.uuid4().hex[:10]
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1", **CREDENTIALS)
    dynamodb = boto3.client(
        "dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1", **CREDENTIALS
    )
    inputs, outputs, table = f"in-{suffix}", f"out-{suffix}", f"students-{suffix}"
    s3.create_bucket(Bucket=inputs)
    s3.create_bucket(Bucket=outputs)
    data = shared_data / "cse546"
    # The same provisioning and loading code the product uses.
    ensure_table(dynamodb, table)
    load_students(dynamodb, table, read_students(data / "student_data.json"))
    students = {s["name"]: s for s in json.loads((data / "student_data.json").read_text())}
    known = KnownFaces.from_lists(*load_course_encodings(data / "encoding"))
    s3.put_object(Bucket=inputs, Key="config/known_faces.json", Body=known.to_bytes())
    return Cloud(
        moto_endpoint,
        s3,
        dynamodb,
        inputs,
        outputs,
        table,
        f"s3://{inputs}/config/known_faces.json",
        students,
    )


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lambda-tmp")


@pytest.fixture(scope="module")
def runtime(cloud: Cloud, tmp_dir: Path) -> Runtime:
    return cloud.runtime(tmp_dir)


@pytest.fixture(scope="module")
def course_run(
    cloud: Cloud, runtime: Runtime, shared_data: Path
) -> tuple[dict[str, Any], dict[str, str]]:
    """All eight course clips in one multi-record S3 event, run once for the module."""
    keys = {}
    records = []
    for clip in COURSE:
        key = f"videos/vm-1/s-course/{clip}"
        keys[clip] = key
        records += cloud.put(key, (shared_data / "cse546" / "test_case_1" / clip).read_bytes())[
            "Records"
        ]
    response = runtime.handle({"Records": records}, Context())
    return response, keys


@pytest.mark.slow
@pytest.mark.parametrize("clip", list(COURSE))
def test_course_clip_gives_the_right_person_with_the_tables_data(
    clip: str, cloud: Cloud, course_run: tuple[dict[str, Any], dict[str, str]]
) -> None:
    response, keys = course_run
    key = keys[clip]
    assert {"key": key, "status": "ok", "result_key": result_key(key, ResultKind.CSV)} in (
        response["results"]
    )
    # mr_bean's year is `freshmen` in the table (the course mapping says `freshman`).
    assert cloud.read(key, ResultKind.CSV) == cloud.expected_row(COURSE[clip])
    details = ResultDetails.from_json(cloud.read(key, ResultKind.DETAILS) or "")
    assert [p.name for p in details.people] == [COURSE[clip]]
    assert details.input.key == key
    assert (
        details.input.size == (cloud.s3.head_object(Bucket=cloud.inputs, Key=key))["ContentLength"]
    )
    assert details.video.codec == "h264"
    assert details.frames_sampled >= 1
    assert 0 < details.people[0].distance <= 0.6
    assert details.request_id == "req-test"
    assert "$LATEST" in details.function_version
    assert cloud.read(key, ResultKind.ERROR) is None
    jpeg = cloud.s3.get_object(Bucket=cloud.outputs, Key=result_key(key, ResultKind.FACES))
    assert jpeg["Body"].read()[:2] == b"\xff\xd8"


@pytest.mark.slow
def test_two_people_in_one_frame_are_both_reported(
    cloud: Cloud, runtime: Runtime, shared_data: Path, tmp_path: Path
) -> None:
    image = np.asarray(Image.open(shared_data / "faces" / "probes" / "two_people.jpg"))
    clip = write_clip(tmp_path / "two.mp4", [image[..., :3]] * 10, fps=5)
    key = "videos/vm-1/s-two/two people.mp4"
    runtime.handle(cloud.put(key, clip.read_bytes()), Context())
    rows = (cloud.read(key, ResultKind.CSV) or "").splitlines(keepends=True)
    assert sorted(rows) == sorted(
        [cloud.expected_row("president_biden"), cloud.expected_row("president_obama")]
    )


@pytest.mark.slow
def test_video_with_no_face_gives_an_empty_csv(
    cloud: Cloud, runtime: Runtime, tmp_path: Path
) -> None:
    gradient = np.linspace(0, 255, 320 * 240 * 3).reshape(240, 320, 3).astype(np.uint8)
    clip = write_clip(tmp_path / "empty.mp4", [np.roll(gradient, i, axis=1) for i in range(20)])
    key = "videos/vm-1/s-empty/landscape.mp4"
    response = runtime.handle(cloud.put(key, clip.read_bytes()), Context())
    assert response["results"][0]["status"] == "ok"
    assert cloud.read(key, ResultKind.CSV) == ""
    details = ResultDetails.from_json(cloud.read(key, ResultKind.DETAILS) or "")
    assert details.people == []
    assert details.frames_sampled == 2
    assert cloud.read(key, ResultKind.FACES) is None


def test_text_file_named_mp4_gives_an_error_quickly(cloud: Cloud, runtime: Runtime) -> None:
    key = "videos/vm-1/s-text/notes.mp4"
    started = time.perf_counter()
    response = runtime.handle(cloud.put(key, b"not a video at all\n" * 50), Context("req-42"))
    assert time.perf_counter() - started < 2.0
    assert response["results"][0]["status"] == "error"
    error = ErrorDoc.from_json(cloud.read(key, ResultKind.ERROR) or "")
    assert error.code == "not_a_video"
    assert error.request_id == "req-42"
    assert error.input_key == key
    assert cloud.read(key, ResultKind.CSV) is None


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_truncated_video_gives_a_result_or_an_error(
    cloud: Cloud, runtime: Runtime, shared_data: Path, fraction: float
) -> None:
    whole = (shared_data / "cse546" / "test_case_1" / "test_1.mp4").read_bytes()
    key = f"videos/vm-1/s-cut/test_1-{int(fraction * 100)}.mp4"
    started = time.perf_counter()
    response = runtime.handle(cloud.put(key, whole[: int(len(whole) * fraction)]), Context())
    assert time.perf_counter() - started < 60
    status = response["results"][0]["status"]
    csv, error = cloud.read(key, ResultKind.CSV), cloud.read(key, ResultKind.ERROR)
    if status == "ok":
        assert csv is not None and error is None
    else:
        assert status == "error" and csv is None and error is not None


@pytest.mark.slow
def test_key_with_spaces_unicode_and_plus(
    cloud: Cloud, runtime: Runtime, shared_data: Path
) -> None:
    key = "videos/vm 1/s-ünï/my clip+1 (été) 😀.mp4"
    event = cloud.put(key, (shared_data / "cse546" / "test_case_1" / "test_7.mp4").read_bytes())
    assert "+" in event["Records"][0]["s3"]["object"]["key"]  # the space, as S3 sends it
    runtime.handle(event, Context())
    assert cloud.read(key, ResultKind.CSV) == cloud.expected_row("morgan_freeman")


@pytest.mark.slow
def test_sqs_batch_fails_only_the_bad_messages(
    cloud: Cloud, runtime: Runtime, shared_data: Path
) -> None:
    good = "videos/vm-1/s-sqs/test_8.mp4"
    text = "videos/vm-1/s-sqs/text.mp4"
    good_event = cloud.put(
        good, (shared_data / "cse546" / "test_case_1" / "test_8.mp4").read_bytes()
    )
    text_event = cloud.put(text, b"plain text")
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": cloud.inputs}
    gone_bucket = s3_event("no-such-bucket-here", "videos/x.mp4")
    event, ids = sqs_event(test_event, good_event, "{not json", text_event, gone_bucket)
    response = runtime.handle(event, Context())
    # Not an S3 event: to the dead-letter queue. Unreadable bucket: retry. A text file got
    # its error.json and is done (a retry would fail the same way).
    assert response == {
        "batchItemFailures": [{"itemIdentifier": ids[2]}, {"itemIdentifier": ids[4]}]
    }
    assert cloud.read(good, ResultKind.CSV) == cloud.expected_row("president_obama")
    assert cloud.read(text, ResultKind.ERROR) is not None


@dataclass
class LateContext(Context):
    """An invocation that started with `started_ms` and has `remaining_ms` left by the time
    the handler looks at its message (earlier messages of the batch took the rest)."""

    started_ms: int = 900_000
    calls: int = 0

    def get_remaining_time_in_millis(self) -> int:
        self.calls += 1
        return self.started_ms if self.calls == 1 else self.remaining_ms


def test_sqs_messages_are_handed_back_when_time_runs_short(cloud: Cloud, runtime: Runtime) -> None:
    event, ids = sqs_event(s3_event(cloud.inputs, "videos/vm-1/s-late/a.mp4"))
    response = runtime.handle(event, LateContext(remaining_ms=5_000, started_ms=300_000))
    assert response == {"batchItemFailures": [{"itemIdentifier": ids[0]}]}
    assert cloud.read("videos/vm-1/s-late/a.mp4", ResultKind.ERROR) is None


def test_a_short_function_timeout_still_begins_its_messages(cloud: Cloud, runtime: Runtime) -> None:
    """8 s in all (under the 30 s margin): the message is begun, not deferred forever."""
    event, _ = sqs_event(s3_event(cloud.inputs, "videos/vm-1/s-short/gone.mp4"))
    response = runtime.handle(event, Context(remaining_ms=8_000))
    assert response == {"batchItemFailures": []}
    error = cloud.read("videos/vm-1/s-short/gone.mp4", ResultKind.ERROR)
    assert error is not None and json.loads(error)["code"] == "input_missing"


class CountdownContext:
    """A context whose remaining time runs down with the clock, as Lambda's does."""

    aws_request_id = "req-countdown"
    function_version = "$LATEST"

    def __init__(self, remaining_ms: int) -> None:
        self.deadline = time.monotonic() + remaining_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def slow_clip(folder: Path) -> Path:
    """24 s of 1280x720 frames with no face: every sample also gets the full-resolution search
    for small faces (measured 0.17 s a frame at 640x360 on two workers, four times the pixels
    here), so the video takes well over the 3 s the test's invocation leaves it."""
    rng = np.random.default_rng(7)
    frames = [
        np.kron(rng.integers(0, 255, (18, 32, 3), dtype=np.uint8), np.ones((40, 40, 1), np.uint8))
        for _ in range(24)
    ]
    return write_clip(folder / "slow.mp4", frames, fps=1)


def test_a_video_slower_than_the_invocation_left_ends_in_too_slow_before_the_time_runs_out(
    cloud: Cloud, runtime: Runtime, tmp_path: Path
) -> None:
    # HYBRID_MAX_SECONDS stays at its default (600 s): only the invocation's own deadline
    # (6 s less the margin: half of it, as 30 s is more) can stop the video in time.
    clip = slow_clip(tmp_path)
    key = "videos/vm-1/s-slow/slow.mp4"
    event = cloud.put(key, clip.read_bytes())
    context = CountdownContext(remaining_ms=6_000)
    started = time.monotonic()
    response = runtime.handle(event, context)
    elapsed = time.monotonic() - started
    assert response["results"][0]["status"] == "error", response
    assert response["results"][0]["code"] == "too_slow"
    error = cloud.read(key, ResultKind.ERROR)
    assert error is not None and json.loads(error)["code"] == "too_slow"
    # The answer was written before Lambda would have killed the invocation.
    assert elapsed < 6.0 and context.get_remaining_time_in_millis() > 0, elapsed


@pytest.mark.timeout(180)
def test_under_the_local_runtime_a_too_slow_video_is_too_slow_not_a_sandbox_timeout(
    cloud: Cloud, moto_endpoint: str, unique_name: str, tmp_path: Path
) -> None:
    """The local runtime's context counts down from its function timeout as Lambda's does, so
    the real handler stops in time there too (8 s timeout: 4 s of work, then the answer)."""
    stack = provision_stack(moto_endpoint, unique_name, function_timeout_s=8)
    runtime = ServeLocal(
        stack,
        tmp_path / "unused",
        extra_env={
            "HYBRID_HANDLER": "lambda_fn.handler.handler",
            "HYBRID_TABLE": cloud.table,
            "HYBRID_KNOWN_FACES": cloud.known_faces,
            "HYBRID_FUNCTION_TIMEOUT_S": "8",
            "HYBRID_MAX_CONCURRENCY": "1",
            "HYBRID_WORKERS": "1",
            "HYBRID_TMP_DIR": str(tmp_path),
        },
    )
    key = "videos/vm-1/s-slow/slow.mp4"
    try:
        cloud.s3.upload_file(str(slow_clip(tmp_path)), stack.input_bucket, key)
        done = runtime.wait_for(
            lambda e: e["event"].startswith("invocation.") and e.get("key") == key, 120
        )
    finally:
        assert runtime.stop() == 0
    assert done["event"] == "invocation.completed", done
    assert done["duration_ms"] < 8_000
    body = cloud.s3.get_object(Bucket=stack.output_bucket, Key=result_key(key, ResultKind.ERROR))
    assert json.loads(body["Body"].read())["code"] == "too_slow"


def test_test_event_is_ignored(cloud: Cloud, runtime: Runtime) -> None:
    event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": cloud.inputs}
    assert runtime.handle(event, Context()) == {"ignored": "s3:TestEvent"}


def test_unsupported_event_raises(runtime: Runtime) -> None:
    with pytest.raises(ValueError, match="Records"):
        runtime.handle({"hello": "world"}, Context())


def test_object_over_the_size_limit_is_refused_before_download(
    cloud: Cloud, tmp_path: Path
) -> None:
    runtime = cloud.runtime(tmp_path, max_input_bytes=100)
    key = "videos/vm-1/s-big/big.mp4"
    response = runtime.handle(cloud.put(key, b"x" * 101), Context())
    assert response["results"][0] == {
        "key": key,
        "status": "error",
        "result_key": result_key(key, ResultKind.ERROR),
        "code": "input_too_large",
    }
    assert list(tmp_path.iterdir()) == []


def test_deleted_object_gets_an_error(cloud: Cloud, runtime: Runtime) -> None:
    key = "videos/vm-1/s-gone/gone.mp4"
    response = runtime.handle(s3_event(cloud.inputs, key), Context())
    assert response["results"][0]["code"] == "input_missing"


@contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    """tests/faults.py's proxy, on an event loop of its own thread (this test is synchronous)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fault-proxy")
    thread.start()
    proxy = FaultProxy(upstream)
    try:
        asyncio.run_coroutine_threadsafe(proxy.__aenter__(), loop).result(10)
        yield proxy
    finally:
        asyncio.run_coroutine_threadsafe(proxy.__aexit__(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_403_to_the_head_is_a_denial_retried_never_input_missing(
    cloud: Cloud, tmp_path: Path
) -> None:
    """A 403 to a HEAD is what S3 answers for a missing key to a role without s3:ListBucket,
    and for a real denial. The template grants the function ListBucket on the input bucket,
    so a deleted input is a 404 (`input_missing`, above); a 403 raises, so Lambda retries and
    then records it, with the reason logged — never an `input_missing` for a video that may
    well be there."""
    key = "videos/vm-1/s-denied/denied.mp4"
    cloud.put(key, b"x" * 100)
    with fault_proxy(cloud.endpoint) as proxy:
        proxy.fail(10, lambda seen: seen.method == "HEAD", status=403, code="403")
        s3 = boto3.client("s3", endpoint_url=proxy.url, region_name="us-east-1", **CREDENTIALS)
        runtime = Runtime(
            cloud.settings(tmp_path), RecognitionOptions(workers=1), clients=(s3, cloud.dynamodb)
        )
        try:
            with capture_logs() as logs, pytest.raises(ClientError, match="403"):
                runtime.handle(s3_event(cloud.inputs, key), Context())
        finally:
            runtime.pool.close()
            s3.close()
    assert cloud.read(key, ResultKind.ERROR) is None
    (denied,) = [e for e in logs if e["event"] == "input.forbidden"]
    assert "s3:ListBucket" in denied["hint"]


def test_infrastructure_errors_raise_so_lambda_retries(
    cloud: Cloud, shared_data: Path, tmp_path: Path
) -> None:
    runtime = cloud.runtime(tmp_path, table="no-such-table")
    key = "videos/vm-1/s-infra/test_7.mp4"
    event = cloud.put(key, (shared_data / "cse546" / "test_case_1" / "test_7.mp4").read_bytes())
    with pytest.raises(cloud.dynamodb.exceptions.ResourceNotFoundException):
        runtime.handle(event, Context())
    assert cloud.read(key, ResultKind.CSV) is None
    assert cloud.read(key, ResultKind.ERROR) is None
    assert list(tmp_path.iterdir()) == []


def test_removals_duplicates_and_own_results_are_skipped(cloud: Cloud, runtime: Runtime) -> None:
    removed = s3_event(cloud.inputs, "videos/vm-1/s-x/old.mp4")["Records"][0]
    removed["eventName"] = "ObjectRemoved:Delete"
    own = s3_event(cloud.outputs, "videos/vm-1/s-x/clip.csv")["Records"][0]
    response = runtime.handle({"Records": [removed, own]}, Context())
    assert [r["status"] for r in response["results"]] == ["skipped", "skipped"]


def test_tmp_is_left_empty_and_stale_inputs_are_swept(
    cloud: Cloud, runtime: Runtime, tmp_dir: Path, course_run: Any
) -> None:
    # Every earlier test of this module used `tmp_dir` through the shared runtime.
    assert [p.name for p in tmp_dir.iterdir()] == []
    # A timed-out invocation is killed and leaves its input; the next init removes it.
    (tmp_dir / "hybrid-input-killed.mp4").write_bytes(b"left by a timed-out invocation")
    (tmp_dir / "someone-elses.txt").write_bytes(b"not ours")
    cloud.runtime(tmp_dir)
    assert [p.name for p in tmp_dir.iterdir()] == ["someone-elses.txt"]
    (tmp_dir / "someone-elses.txt").unlink()


@pytest.fixture
def fresh_entry_point() -> Iterator[None]:
    """A cold container for the entry point; logging as the rest of the session expects it."""
    handler_module.get_runtime.cache_clear()
    root_handlers = list(logging.getLogger().handlers)
    yield
    handler_module.get_runtime.cache_clear()
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = root_handlers


def test_entry_point_builds_the_runtime_once_and_reuses_it_warm(
    cloud: Cloud,
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_entry_point: None,
) -> None:
    known_key = "config/known_faces-warm.json"
    known = KnownFaces.from_lists(*load_course_encodings(shared_data / "cse546" / "encoding"))
    cloud.s3.put_object(Bucket=cloud.inputs, Key=known_key, Body=known.to_bytes())
    for name, value in {
        "HYBRID_ENDPOINT_URL": cloud.endpoint,
        "HYBRID_OUTPUT_BUCKET": cloud.outputs,
        "HYBRID_TABLE": cloud.table,
        "HYBRID_KNOWN_FACES": f"s3://{cloud.inputs}/{known_key}",
        "HYBRID_TMP_DIR": str(tmp_path),
        "HYBRID_CONTACT_SHEET": "false",
    }.items():
        monkeypatch.setenv(name, value)
    first = cloud.put("videos/vm-1/s-warm/a.mp4", b"not a video")
    assert handler_module.handler(first, Context())["results"][0]["status"] == "error"
    runtime = handler_module.get_runtime()
    # Warm: the known faces are not read again, so removing them changes nothing.
    cloud.s3.delete_object(Bucket=cloud.inputs, Key=known_key)
    key = "videos/vm-1/s-warm/test_7.mp4"
    second = cloud.put(key, (shared_data / "cse546" / "test_case_1" / "test_7.mp4").read_bytes())
    assert handler_module.handler(second, Context())["results"][0]["status"] == "ok"
    assert handler_module.get_runtime() is runtime
    assert cloud.read(key, ResultKind.CSV) == cloud.expected_row("morgan_freeman")
    assert cloud.read(key, ResultKind.FACES) is None  # HYBRID_CONTACT_SHEET=false


# --- CloudWatch metrics (Embedded Metric Format on stdout) --------------------------------------


def emf_documents(stdout: str) -> list[dict[str, Any]]:
    """The EMF documents among stdout's lines: JSON objects with an `_aws` block."""
    found = []
    for line in stdout.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            doc = json.loads(line)
            (directive,) = doc["_aws"]["CloudWatchMetrics"]
            assert directive["Namespace"] == "HybridSphere"
            # Every metric and dimension the directive names has its value in the document.
            for metric in directive["Metrics"]:
                assert metric["Name"] in doc
            for dimension in (d for group in directive["Dimensions"] for d in group):
                assert isinstance(doc[dimension], str)
            found.append(doc)
    return found


def emf_value(doc: dict[str, Any], name: str) -> float:
    """A metric's value: EMF allows one number or a list of them (one per add_metric)."""
    value = doc[name]
    if isinstance(value, list):
        (value,) = value
    assert isinstance(value, float | int)
    return float(value)


def emf_metrics(doc: dict[str, Any]) -> dict[str, str]:
    """{metric name: unit} of one EMF document."""
    (directive,) = doc["_aws"]["CloudWatchMetrics"]
    return {m["Name"]: m["Unit"] for m in directive["Metrics"]}


def test_a_video_error_is_counted_by_its_code(
    cloud: Cloud, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    key = "videos/vm-1/s-emf/notes.mp4"
    runtime.handle(cloud.put(key, b"not a video at all\n" * 50), Context("req-emf-1"))
    (doc,) = emf_documents(capsys.readouterr().out)
    assert emf_metrics(doc) == {"VideoErrors": "Count"}
    assert emf_value(doc, "VideoErrors") == 1.0
    assert doc["ErrorCode"] == "not_a_video"
    assert doc["service"] == "face-recognition"
    assert doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service", "ErrorCode"]]


@pytest.mark.slow
def test_a_processed_video_emits_counts_and_stage_durations(
    cloud: Cloud, runtime: Runtime, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "videos/vm-1/s-emf/test_7.mp4"
    event = cloud.put(key, (shared_data / "cse546" / "test_case_1" / "test_7.mp4").read_bytes())
    capsys.readouterr()
    runtime.handle(event, Context("req-emf-2"))
    (doc,) = emf_documents(capsys.readouterr().out)
    metrics = emf_metrics(doc)
    assert (emf_value(doc, "Videos"), emf_value(doc, "PeopleFound")) == (1.0, 1.0)
    assert emf_value(doc, "UnknownFaces") >= 0
    assert {"DownloadDuration", "LookupDuration", "TotalDuration"} <= set(metrics)
    assert any(name.startswith("Recognise") for name in metrics)
    durations = {n for n, unit in metrics.items() if n.endswith("Duration")}
    assert all(metrics[n] == "Milliseconds" for n in durations)
    assert 0 < emf_value(doc, "DownloadDuration") <= emf_value(doc, "TotalDuration")
    # Tied to the request and to the known faces the container loaded (metadata, not dimensions).
    assert doc["request_id"] == "req-emf-2"
    assert len(doc["known_faces_version"]) == 12
    assert doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]


def test_messages_handed_back_are_counted(
    cloud: Cloud, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    event, _ = sqs_event(s3_event(cloud.inputs, "videos/vm-1/s-emf-late/a.mp4"))
    capsys.readouterr()
    # 300 s when the invocation starts, 5 s when the message comes up: handed back.
    runtime.handle(event, LateContext(remaining_ms=5_000, started_ms=300_000))
    (doc,) = emf_documents(capsys.readouterr().out)
    assert emf_value(doc, "MessagesHandedBack") == 1.0


def test_an_invocation_that_counts_nothing_prints_no_metrics(
    cloud: Cloud, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    runtime.handle(
        {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": cloud.inputs}, Context()
    )
    assert emf_documents(capsys.readouterr().out) == []


def test_a_new_container_reports_the_known_faces_version(
    cloud: Cloud, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    fresh = cloud.runtime(tmp_path)
    try:
        (doc,) = emf_documents(capsys.readouterr().out)
    finally:
        fresh.pool.close()
    assert emf_metrics(doc) == {"KnownFacesLoaded": "Count"}
    assert emf_value(doc, "KnownFacesLoaded") == float(len(fresh.known))
    assert doc["KnownFacesVersion"] == fresh.metrics.known_version
    # The version is the content's: the same faces give the same version.
    same = KnownFaces.from_bytes(fresh.known.to_bytes())
    assert fresh.metrics.known_version == FunctionMetrics(same).known_version


@pytest.mark.slow
def test_a_pushed_known_faces_version_reaches_a_warm_container_and_its_workers(
    cloud: Cloud, shared_data: Path, tmp_path: Path
) -> None:
    """v1 (the course faces) -> the Hamilton clip's man is an unknown group; his group's
    descriptor, enrolled into v2 and pushed, is used by the same warm container once the
    check interval is up: the new result names him and v2's version."""
    faces_key = f"config/rollout-{uuid.uuid4().hex[:8]}.json"
    v1 = KnownFaces.from_lists(*load_course_encodings(shared_data / "cse546" / "encoding"))
    cloud.s3.put_object(Bucket=cloud.inputs, Key=faces_key, Body=v1.to_bytes())
    location = f"s3://{cloud.inputs}/{faces_key}"
    settings = cloud.settings(tmp_path, known_faces=location, known_faces_check_s=1.0)
    # Two workers: the clip (10 samples) is split over them, so they must get v2 too.
    runtime = Runtime(settings, RecognitionOptions(workers=2), clients=(cloud.s3, cloud.dynamodb))
    clip = (shared_data / "faces" / "probes" / "short_hamilton_clip.mp4").read_bytes()
    key = "videos/vm-1/s-rollout/hamilton.mp4"
    try:
        runtime.handle(cloud.put(key, clip), Context())
        first = check_details(json.loads(cloud.read(key, ResultKind.DETAILS) or ""))
        assert first.people == [] and cloud.read(key, ResultKind.CSV) == ""
        assert first.known_faces == KnownFacesDetails(file_version(v1.to_bytes()), location)
        assert [(u.id, u.samples) for u in first.unknown_faces] == [("u1", 6), ("u2", 1)]
        nearest = first.unknown_faces[1].nearest
        assert nearest is not None and nearest.name == "morgan_freeman"
        assert nearest.distance == pytest.approx(0.599, abs=0.005)  # "looks like X at 0.60"
        # The contact sheet shows the unknown groups, though nobody known was seen.
        sheet = cloud.s3.get_object(Bucket=cloud.outputs, Key=result_key(key, ResultKind.FACES))
        assert sheet["Body"].read()[:2] == b"\xff\xd8"

        # Enrol u1 from the result alone (no dlib: its descriptor), push v2.
        man = first.unknown_face("u1")
        v2 = KnownFaces.from_lists(
            [*v1.names, "lin_manuel_miranda"],
            [*v1.encodings, man.descriptor],
            [*v1.sources, f"{key}#u1"],
        )
        cloud.s3.put_object(Bucket=cloud.inputs, Key=faces_key, Body=v2.to_bytes())
        time.sleep(1.1)
        runtime.handle(cloud.put(key, clip), Context())
        second = check_details(json.loads(cloud.read(key, ResultKind.DETAILS) or ""))
        assert [p.name for p in second.people] == ["lin_manuel_miranda"]
        assert second.people[0].frames == 6
        assert (
            second.known_faces.version == file_version(v2.to_bytes()) != first.known_faces.version
        )
        assert [(u.id, u.samples) for u in second.unknown_faces] == [("u1", 1)]
        assert runtime.known.people[-1] == "lin_manuel_miranda"
    finally:
        runtime.pool.close()
