"""README command 1 as a real process tree: `hybrid-local demo`, supervised parts, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.shared_data, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def known_faces(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("faces") / "known_faces.json"
    subprocess.run(
        [sys.executable, "-m", "lambda_fn", "faces", "import-pickle",
         str(shared_data / "cse546" / "encoding"), "-o", str(out)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return out


def demo_argv(state_dir: Path, known_faces: Path, shared_data: Path) -> list[str]:
    return [
        sys.executable, "-m", "local_stack", "demo", "--state-dir", str(state_dir), "--port", "0",
        "--known-faces", str(known_faces),
        "--students", str(shared_data / "cse546" / "student_data.json"),
    ]  # fmt: skip


def test_demo_samples_all_correct(shared_data: Path, known_faces: Path, tmp_path: Path) -> None:
    argv = demo_argv(tmp_path / "var", known_faces, shared_data)
    argv += ["--samples", str(shared_data / "cse546" / "test_case_1")]
    argv += ["--expect", str(shared_data / "cse546" / "mapping"), "--timeout", "300"]
    result = subprocess.run(
        argv, check=False, capture_output=True, text=True, timeout=540, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "correct=8 wrong=0 missing=0" in result.stdout
    assert len(list((tmp_path / "var" / "done").glob("*.csv"))) == 8


def part_pids(log_lines: list[str]) -> dict[str, int]:
    pids = {}
    for line in log_lines:
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "demo.part_started":
                pids[event["part"]] = event["pid"]  # the latest start wins
    return pids


def test_killed_watcher_is_restarted_and_the_cloud_keeps_its_state(
    shared_data: Path, known_faces: Path, tmp_path: Path
) -> None:
    state_dir = tmp_path / "var"
    log_path = tmp_path / "demo.log"
    with log_path.open("w") as log_file:
        demo = subprocess.Popen(
            demo_argv(state_dir, known_faces, shared_data),
            stdout=subprocess.DEVNULL, stderr=log_file, cwd=tmp_path,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(part_pids(log_path.read_text().splitlines())) < 3:
            assert demo.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        state = json.loads((state_dir / "local-cloud.json").read_text())
        s3 = boto3.client("s3", endpoint_url=state["endpoint_url"], region_name="us-east-1")
        s3.put_object(Bucket=state["output_bucket"], Key="marker", Body=b"kept")

        first = part_pids(log_path.read_text().splitlines())
        os.kill(first["watcher"], signal.SIGKILL)
        while part_pids(log_path.read_text().splitlines())["watcher"] == first["watcher"]:
            assert time.monotonic() < deadline + 60, log_path.read_text()[-3000:]
            time.sleep(0.2)
        after = part_pids(log_path.read_text().splitlines())
        assert after["local-cloud"] == first["local-cloud"]
        assert s3.get_object(Bucket=state["output_bucket"], Key="marker")["Body"].read() == b"kept"
    finally:
        demo.send_signal(signal.SIGINT)
        code = demo.wait(120)
    assert code == 0, log_path.read_text()[-3000:]
    text = log_path.read_text()
    assert text.count('"demo.part_stopped"') == 3
