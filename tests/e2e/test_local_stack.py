"""End to end through the local stack: the course's 8 clips, uploaded to the input bucket as
the course's workload script did, come back correct through `hybrid-local serve` running the real
handler (real PyAV, face_recognition, DynamoDB lookups in moto), graded by `workload`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hybrid_common.results import parse_csv
from hybrid_common.students import load_students, read_students
from local_stack.expectations import expected_from_table, judge, read_expectations, render_mapping
from local_stack.provision import Resources, make_clients, provision
from tests.servers import REPO, ServeLocal


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.timeout(600)
def test_the_course_clips_come_back_correct_through_serve_local(
    shared_data: Path, moto_endpoint: str, unique_name: str, tmp_path: Path
) -> None:
    data = shared_data / "cse546"
    faces = tmp_path / "known_faces.json"
    convert = ["faces", "import-pickle", str(data / "encoding"), "-o", str(faces)]
    subprocess.run(
        [sys.executable, "-m", "lambda_fn", *convert],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=120,
    )
    clients = make_clients(moto_endpoint, "us-east-1")
    resources = provision(
        clients,
        Resources(
            endpoint_url=moto_endpoint,
            region="us-east-1",
            input_bucket=f"{unique_name}-in",
            output_bucket=f"{unique_name}-out",
            table=f"{unique_name}-table",
            queue=f"{unique_name}-q",
        ),
        function_timeout_s=300,
        known_faces=faces.read_bytes(),
    )
    students = read_students(data / "student_data.json")
    load_students(clients.dynamodb, resources.table, students)
    clips = {p.name for p in (data / "test_case_1").glob("*.mp4")}
    course = {v: e for v, e in read_expectations(data / "mapping").items() if v in clips}
    expected, _ = expected_from_table(course, students)  # the table's mr_bean is a "freshmen"
    expect = tmp_path / "expected.mapping"
    expect.write_text(render_mapping(expected))

    runtime = ServeLocal(
        resources,
        tmp_path / "unused",
        extra_env={
            "HYBRID_HANDLER": "lambda_fn.handler.handler",
            "HYBRID_TABLE": resources.table,
            "HYBRID_KNOWN_FACES": resources.known_faces_uri,
            "HYBRID_FUNCTION_TIMEOUT_S": "300",
            "HYBRID_MAX_CONCURRENCY": "2",
            "HYBRID_WORKERS": "1",
            "HYBRID_CONTACT_SHEET": "false",
        },
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRID_")}
    env.update(
        {
            "HYBRID_CONFIG": "",
            "HYBRID_ENDPOINT_URL": moto_endpoint,
            "HYBRID_INPUT_BUCKET": resources.input_bucket,
            "HYBRID_OUTPUT_BUCKET": resources.output_bucket,
            "HYBRID_STAGING_ROOT": str(tmp_path / "staging"),
            "HYBRID_NODE_ID": "e2e",
        }
    )
    try:
        grade = ["--direct", "--expect", str(expect), "--json", "--timeout", "400"]
        done = subprocess.run(
            [sys.executable, "-m", "local_stack", "workload", str(data / "test_case_1"), *grade],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=500,
            check=False,
        )
    finally:
        assert runtime.stop() == 0
    report = json.loads(done.stdout)
    assert done.returncode == 0, json.dumps(report["problems"], indent=1) + done.stderr
    assert (report["videos"], report["correct"]) == (8, 8)
    completed = runtime.named("invocation.completed")
    cold = [e for e in completed if e["cold"]]
    print(
        f"\n8 course clips through the emulator + the real handler: {report['elapsed_s']:.1f} s, "
        f"latency p50 {report['latency_s']['p50']:.1f} s / max {report['latency_s']['max']:.1f} s, "
        f"cold starts {len(cold)} (init {[e.get('init_ms') for e in cold]} ms), "
        f"peak memory {max(e.get('max_memory_mb') or 0 for e in completed):.0f} MB"
    )


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.timeout(300)
def test_classic_csv_key_and_header_through_serve_local(
    shared_data: Path, moto_endpoint: str, unique_name: str, tmp_path: Path
) -> None:
    """A classic grader puts `test_0.mp4` and reads its answer at `test_0`, header first."""
    data = shared_data / "cse546"
    faces = tmp_path / "known_faces.json"
    convert = ["faces", "import-pickle", str(data / "encoding"), "-o", str(faces)]
    subprocess.run(
        [sys.executable, "-m", "lambda_fn", *convert],
        cwd=REPO, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    clients = make_clients(moto_endpoint, "us-east-1")
    resources = provision(
        clients,
        Resources(
            endpoint_url=moto_endpoint, region="us-east-1",
            input_bucket=f"{unique_name}-in", output_bucket=f"{unique_name}-out",
            table=f"{unique_name}-table", queue=f"{unique_name}-q",
        ),
        function_timeout_s=300,
        known_faces=faces.read_bytes(),
    )  # fmt: skip
    students = read_students(data / "student_data.json")
    load_students(clients.dynamodb, resources.table, students)
    runtime = ServeLocal(
        resources,
        tmp_path / "unused",
        extra_env={
            "HYBRID_HANDLER": "lambda_fn.handler.handler",
            "HYBRID_TABLE": resources.table,
            "HYBRID_KNOWN_FACES": resources.known_faces_uri,
            "HYBRID_FUNCTION_TIMEOUT_S": "300",
            "HYBRID_WORKERS": "1",
            "HYBRID_CONTACT_SHEET": "false",
            "HYBRID_CSV_KEY": "{stem}",
            "HYBRID_CSV_HEADER": "true",
        },
    )
    s3 = clients.s3
    try:
        s3.upload_file(
            str(data / "test_case_1" / "test_0.mp4"), resources.input_bucket, "test_0.mp4"
        )
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            listed = s3.list_objects_v2(Bucket=resources.output_bucket).get("Contents", [])
            if any(item["Key"] == "test_0" for item in listed):
                break
            time.sleep(0.5)
    finally:
        assert runtime.stop() == 0
    listed = s3.list_objects_v2(Bucket=resources.output_bucket)["Contents"]
    assert sorted(o["Key"] for o in listed if o["Key"].startswith("test_0")) == [
        "test_0",
        "test_0.json",
    ]
    answer = s3.get_object(Bucket=resources.output_bucket, Key="test_0")["Body"].read().decode()
    assert answer.startswith("name,major,year\n")
    correct, got = judge(
        read_expectations(data / "mapping")["test_0.mp4"], parse_csv(answer, header=True)
    )
    assert correct, got
