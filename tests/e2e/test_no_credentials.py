"""A new laptop has no AWS credentials: local commands work, AWS commands say so in one line.

Every command runs as the installed console script, with no AWS_* variable, HOME pointed at an
empty folder (no ~/.aws) and the instance-metadata lookup off, as on a fresh machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hybrid_common.aws_credentials import EX_NOPERM, is_loopback

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def bare_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This machine's environment minus anything that could hold AWS credentials or config."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "HYBRID_")) or k == "AWS_CA_BUNDLE"
    }
    # HYBRID_CONFIG empty: no config file, neither the machine's nor a demo's ./var one.
    env.update(HOME=str(home), AWS_EC2_METADATA_DISABLED="true", HYBRID_CONFIG="", **extra)
    return env


def run(
    argv: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=env["HOME"],
    )


def test_loopback_urls_are_recognised() -> None:
    assert is_loopback("http://127.0.0.1:5055")
    assert is_loopback("http://localhost:9001/")
    assert is_loopback("http://[::1]:4566")
    assert not is_loopback(None)
    assert not is_loopback("https://s3.us-east-1.amazonaws.com")
    assert not is_loopback("http://10.0.0.5:9000")


def test_local_cloud_starts_without_any_aws_credentials(tmp_path: Path) -> None:
    state_dir = tmp_path / "var"
    env = bare_env(tmp_path, HYBRID_STAGING_ROOT=str(state_dir))
    process = subprocess.Popen(
        [str(BIN / "hybrid-local"), "cloud", "--port", "0", "--state-dir", str(state_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (state_dir / "local-cloud.json").exists():
            if process.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert process.poll() is None, process.communicate()
        assert (state_dir / "local-cloud.json").exists()
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert "NoCredentialsError" not in err


def test_provision_and_students_load_work_on_a_loopback_endpoint_without_credentials(
    tmp_path: Path, moto_endpoint: str, unique_name: str
) -> None:
    students = tmp_path / "students.json"
    students.write_text(json.dumps([{"name": "ada", "major": "maths", "year": "senior"}]))
    env = bare_env(
        tmp_path,
        HYBRID_ENDPOINT_URL=moto_endpoint,
        HYBRID_STAGING_ROOT=str(tmp_path / "staging"),
        HYBRID_INPUT_BUCKET=f"{unique_name}-in",
        HYBRID_OUTPUT_BUCKET=f"{unique_name}-out",
        HYBRID_TABLE=f"{unique_name}-students",
        HYBRID_QUEUE=f"{unique_name}-events",
    )
    provisioned = run([str(BIN / "hybrid-local"), "provision"], env)
    assert provisioned.returncode == 0, provisioned.stderr
    loaded = run([str(BIN / "hybrid-watcher"), "students", "load", str(students)], env)
    assert loaded.returncode == 0, loaded.stderr
    assert "loaded 1 students" in loaded.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["hybrid-watcher", "students", "load", "STUDENTS"],
        ["hybrid-watcher", "run"],
        ["hybrid-local", "provision"],
        ["hybrid-local", "workload", "--direct", "CASES", "--timeout", "5"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_aws_commands_without_credentials_print_one_line_and_exit_77(
    tmp_path: Path, argv: list[str]
) -> None:
    students = tmp_path / "students.json"
    students.write_text(json.dumps([{"name": "ada", "major": "maths", "year": "senior"}]))
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    replaced = {"STUDENTS": str(students), "CASES": str(cases)}
    argv = [str(BIN / argv[0]), *(replaced.get(a, a) for a in argv[1:])]
    # No HYBRID_ENDPOINT_URL: the real AWS endpoints, never reached without credentials.
    env = bare_env(tmp_path, HYBRID_STAGING_ROOT=str(tmp_path / "staging"))
    result = run(argv, env, timeout=90)
    assert result.returncode == EX_NOPERM, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    problem_lines = [line for line in result.stderr.splitlines() if "no AWS credentials" in line]
    assert len(problem_lines) == 1, result.stderr
