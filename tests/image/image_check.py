"""Run the course clips through the function image, as Lambda would, against moto on loopback.

The image's own entry point (awslambdaric) talks to a test-only Runtime API (runtime_api.py);
the handler inside reads and writes moto's S3 and DynamoDB over loopback. Checks every
answer, the error path, an SQS batch with a bad message, and that /tmp is left empty.
Run by `make image-test` (scripts/image-test.sh builds the image first).

    python tests/image/image_check.py --image localhost/hybridsphere-fn:bin
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runtime_api import RuntimeApi

from hybrid_common.keys import ResultKind, result_key
from hybrid_common.students import load_students, read_students
from lambda_fn.known_faces import KnownFaces
from lambda_fn.safe_pickle import load_course_encodings
from local_stack.provision import ensure_table
from tests.course import COURSE_CLIPS

REPO = Path(__file__).resolve().parents[2]
COURSE = COURSE_CLIPS
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing-access-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key-not-real",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class Checks:
    """Counts named checks and prints one line each; the last line is `N passed, N failed`."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.passed += ok
        self.failed += not ok
        print(f"{'PASS' if ok else 'FAIL'} {name}{'  ' + detail if detail else ''}", flush=True)


def s3_event(bucket: str, key: str, size: int) -> dict[str, Any]:
    """What S3 sends for a put: the key URL-encoded, spaces as '+'."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": bucket},
                    "object": {"key": quote_plus(key, safe="/"), "size": size},
                },
            }
        ]
    }


def sqs_record(body: Any) -> dict[str, Any]:
    return {
        "messageId": str(uuid.uuid4()),
        "eventSource": "aws:sqs",
        "body": body if isinstance(body, str) else json.dumps(body),
    }


def buildah(storage: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["buildah", "--storage-driver", storage, *args],
        check=True,
        text=True,
        capture_output=True,
        **kwargs,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default="localhost/hybridsphere-fn:bin")
    parser.add_argument("--storage-driver", default="vfs")
    parser.add_argument(
        "--shared-data",
        type=Path,
        default=Path(os.environ.get("HYBRID_SHARED_DATA", REPO.parent / "shared" / "data")),
    )
    parser.add_argument("--log", type=Path, default=REPO / "var" / "image-test.log")
    args = parser.parse_args()
    data = args.shared_data / "cse546"
    if not (data / "test_case_1").is_dir():
        print(f"shared data not found at {args.shared_data}", file=sys.stderr)
        return 2
    os.environ.update(FAKE_CREDENTIALS)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        return run(args, data, endpoint)
    finally:
        moto.stop()


def run(args: argparse.Namespace, data: Path, endpoint: str) -> int:
    checks = Checks()
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    inputs, outputs, table = "image-test-input", "image-test-output", "image-test-students"
    for bucket in (inputs, outputs):
        s3.create_bucket(Bucket=bucket)
    # The same provisioning and loading code the product uses.
    ensure_table(dynamodb, table)
    load_students(dynamodb, table, read_students(data / "student_data.json"))
    students = {s["name"]: s for s in json.loads((data / "student_data.json").read_text())}
    known = KnownFaces.from_lists(*load_course_encodings(data / "encoding"))
    s3.put_object(Bucket=inputs, Key="config/known_faces.json", Body=known.to_bytes())

    env = {
        **FAKE_CREDENTIALS,
        "HYBRID_ENDPOINT_URL": endpoint,
        "HYBRID_OUTPUT_BUCKET": outputs,
        "HYBRID_TABLE": table,
        "HYBRID_KNOWN_FACES": f"s3://{inputs}/config/known_faces.json",
        "AWS_LAMBDA_FUNCTION_NAME": "hybridsphere",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3008",
    }
    storage = args.storage_driver
    container = buildah(storage, "from", "--pull=never", args.image).stdout.strip()
    config = json.loads(buildah(storage, "inspect", "--type", "image", args.image).stdout)
    image_config = config["OCIv1"]["config"]
    command = [*image_config.get("Entrypoint", []), *image_config.get("Cmd", [])]
    checks.check(
        "image runs as a non-root user",
        image_config.get("User", "") not in ("", "0", "root", "0:0"),
        f"User={image_config.get('User')!r}",
    )
    checks.check(
        "image command is the handler",
        command[-1:] == ["lambda_fn.handler.handler"],
        shlex.join(command),
    )
    args.log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with RuntimeApi() as api, args.log.open("w") as log:
            env["AWS_LAMBDA_RUNTIME_API"] = api.address
            env_args = [a for k, v in env.items() for a in ("--env", f"{k}={v}")]
            started = time.perf_counter()
            function = subprocess.Popen(
                [
                    "buildah",
                    "--storage-driver",
                    storage,
                    "run",
                    "--isolation",
                    "chroot",
                    "--network",
                    "host",
                    *env_args,
                    container,
                    "--",
                    *command,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                ready = wait_for(
                    lambda: (
                        api.polled.is_set()
                        or function.poll() is not None
                        or api.init_failed.is_set()
                    ),
                    180,
                )
                checks.check(
                    "function initialises (models, clients, known faces)",
                    ready and api.polled.is_set(),
                    f"{time.perf_counter() - started:.1f} s to the first poll",
                )
                if api.polled.is_set():
                    exercise(
                        api,
                        s3,
                        inputs=inputs,
                        outputs=outputs,
                        data=data,
                        students=students,
                        checks=checks,
                    )
            finally:
                function.terminate()
                try:
                    function.wait(20)
                except subprocess.TimeoutExpired:
                    function.kill()
                    function.wait()
        leftovers = buildah(
            storage,
            "run",
            "--isolation",
            "chroot",
            container,
            "--",
            "sh",
            "-c",
            "ls -A /tmp | grep hybrid-input || true",
        ).stdout.split()
        checks.check("/tmp holds no input file afterwards", leftovers == [], " ".join(leftovers))
    finally:
        subprocess.run(
            ["buildah", "--storage-driver", storage, "rm", container],
            capture_output=True,
            check=False,
        )
    if checks.failed:
        print(f"function log: {args.log}\n" + args.log.read_text()[-4000:])
    print(f"image-test: {checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


def exercise(
    api: RuntimeApi,
    s3: Any,
    *,
    inputs: str,
    outputs: str,
    data: Path,
    students: dict[str, dict[str, Any]],
    checks: Checks,
) -> None:
    """The invocations and what each must produce."""
    total = 0.0
    for clip, person in COURSE.items():
        key = f"videos/image-test/s-1/{clip}"
        body = (data / "test_case_1" / clip).read_bytes()
        s3.put_object(Bucket=inputs, Key=key, Body=body)
        invocation = api.invoke(s3_event(inputs, key, len(body)))
        total += invocation.seconds
        csv = read(s3, outputs, result_key(key, ResultKind.CSV))
        student = students[person]
        want = f"{person},{student['major']},{student['year']}\n"
        checks.check(
            f"{clip}: {person}",
            csv == want and invocation.error is None,
            f"{invocation.seconds:.2f} s, csv={csv!r}"
            + (f", error={invocation.error}" if invocation.error else ""),
        )
    stages: dict[str, float] = {}
    for clip in COURSE:
        key = f"videos/image-test/s-1/{clip}"
        timings = json.loads(read(s3, outputs, result_key(key, ResultKind.DETAILS)) or "{}")
        for stage, seconds in timings.get("timings", {}).items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    summary = ", ".join(f"{stage} {seconds:.2f}" for stage, seconds in stages.items())
    print(f"course clips: {total:.2f} s for {len(COURSE)} invocations ({summary})", flush=True)
    compare_with_classic(data, stages.get("recognise_total", 0.0))
    key = "videos/image-test/s-1/test_0.mp4"
    details = json.loads(read(s3, outputs, result_key(key, ResultKind.DETAILS)) or "{}")
    version = details.get("function_version", "")
    checks.check(
        "details name the build and the Lambda version",
        version.endswith("($LATEST)") and not version.startswith(("unknown", "dev")),
        repr(version),
    )
    sheet = read_bytes(s3, outputs, result_key(key, ResultKind.FACES)) or b""
    checks.check("contact sheet is a JPEG", sheet[:2] == b"\xff\xd8", f"{len(sheet)} bytes")

    key = "videos/image-test/s-2/not a video+1 é.mp4"
    s3.put_object(Bucket=inputs, Key=key, Body=b"this is a text file, not a video\n" * 20)
    invocation = api.invoke(s3_event(inputs, key, 660))
    error = read(s3, outputs, result_key(key, ResultKind.ERROR))
    checks.check(
        "text file named .mp4 gives error.json, no CSV",
        '"code"' in error and read(s3, outputs, result_key(key, ResultKind.CSV)) is None,
        f"{invocation.seconds:.2f} s",
    )

    good = "videos/image-test/s-3/test_7.mp4"
    s3.put_object(Bucket=inputs, Key=good, Body=(data / "test_case_1" / "test_7.mp4").read_bytes())
    bad = sqs_record("not an S3 event")
    batch = {"Records": [sqs_record(s3_event(inputs, good, 1)), bad]}
    invocation = api.invoke(batch)
    checks.check(
        "SQS batch: only the bad message fails",
        invocation.response == {"batchItemFailures": [{"itemIdentifier": bad["messageId"]}]}
        and read(s3, outputs, result_key(good, ResultKind.CSV)) is not None,
        json.dumps(invocation.response),
    )


def compare_with_classic(data: Path, recognised_s: float) -> None:
    """The image's recognition time beside the classic implementation's, same clips, one video
    per call each, in this invocation (a benchmark line, not a check: machines are noisy).

    The image runs the default mode ('all'), so the classic run looks at every sampled frame;
    the classic code runs on this host's venv (dlib-bin), the image on its own dlib build.
    """
    classic = REPO.parent / "shared" / "bench" / "classic_baseline.py"
    if not classic.exists() or shutil.which("ffmpeg") is None:
        print("image vs classic: not measured (needs ../shared/bench and ffmpeg)", flush=True)
        return
    videos = [str(data / "test_case_1" / clip) for clip in COURSE]
    out = subprocess.run(
        [sys.executable, str(classic), str(data / "encoding"), *videos, "--all-frames", "--json"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    classic_s = float(json.loads(out)["total_seconds"])
    ratio = classic_s / recognised_s if recognised_s else float("inf")
    print(
        f"image vs classic --all-frames (one video per call, {len(videos)} course clips, "
        f"recognition only, start-up excluded): image {recognised_s:.2f} s, classic "
        f"{classic_s:.2f} s on the host: {ratio:.1f}x (goal >= 10x)",
        flush=True,
    )


def read(s3: Any, bucket: str, key: str) -> str | None:
    body = read_bytes(s3, bucket, key)
    return None if body is None else body.decode()


def read_bytes(s3: Any, bucket: str, key: str) -> bytes | None:
    try:
        body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    return body


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    done = threading.Event()
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        done.wait(0.2)
    return True


if __name__ == "__main__":
    sys.exit(main())
