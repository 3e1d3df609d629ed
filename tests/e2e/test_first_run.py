"""A newcomer's first minutes, as real commands: a clone alone, no AWS credentials, no env vars.

The demo runs on the shipped sample (samples/, what `make demo` picks without the course
data); a second "terminal" in the same folder uses `hybrid-watcher submit|status|show` and
`hybrid-local workload` with no HYBRID_* variable, finding the demo through the
`var/hybrid-watcher.toml` it writes. Without known faces the demo refuses to start.
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

from hybrid_common.config import EX_CONFIG

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
CLIP = SAMPLES / "videos" / "short_hamilton_clip.mp4"
BIN = Path(sys.executable).parent


def newcomer_env(home: Path) -> dict[str, str]:
    """No AWS_* (no credentials), no HYBRID_*, HOME without ~/.aws, no instance metadata."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "HYBRID_")) or k == "AWS_CA_BUNDLE"
    }
    env.update(HOME=str(home), AWS_EC2_METADATA_DISABLED="true")
    return env


def run(
    argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize(
    "faces",
    [None, "absent.json", "broken.json"],
    ids=["no --known-faces", "missing file", "not a known-faces file"],
)
def test_demo_without_usable_known_faces_refuses_to_start(
    tmp_path: Path, faces: str | None
) -> None:
    (tmp_path / "broken.json").write_text('{"format": "something else"}')
    argv = [str(BIN / "hybrid-local"), "demo", "--state-dir", "var", "--port", "0"]
    if faces:
        argv += ["--known-faces", faces]
    result = run(argv, tmp_path, newcomer_env(tmp_path / "home"), timeout=60)
    assert result.returncode == EX_CONFIG, result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("demo:")]
    assert len(problems) == 1, result.stderr
    assert "hybrid-lambda faces build" in problems[0]
    assert "samples/known_faces.json" in problems[0]
    assert not (tmp_path / "var" / "local-cloud.json").exists()  # nothing was started


def test_hybrid_config_naming_a_missing_file_is_an_error(tmp_path: Path) -> None:
    env = {**newcomer_env(tmp_path / "home"), "HYBRID_CONFIG": str(tmp_path / "typo.toml")}
    result = run([str(BIN / "hybrid-watcher"), "status"], tmp_path, env)
    assert result.returncode == EX_CONFIG, result.stderr
    assert "typo.toml: no such file" in result.stderr
    assert "Traceback" not in result.stderr


def wait_for_file(path: Path, demo: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert demo.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


def test_a_clone_alone_recognises_the_sample_and_the_cli_finds_the_demo(tmp_path: Path) -> None:
    """`make demo` without ../shared, then the operator commands from a second terminal."""
    env = newcomer_env(tmp_path / "home")
    log_path = tmp_path / "demo.log"
    with log_path.open("w") as log_file:
        demo = subprocess.Popen(
            [str(BIN / "hybrid-local"), "demo", "--state-dir", "./var", "--port", "0",
             "--known-faces", str(SAMPLES / "known_faces.json"),
             "--students", str(SAMPLES / "students.json")],
            cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for_file(tmp_path / "var" / "hybrid-watcher.toml", demo, log_path, 120)
        # Another terminal, same folder, no environment variables at all.
        submitted = run(
            [str(BIN / "hybrid-watcher"), "submit", "--wait", "--timeout", "240", str(CLIP)],
            tmp_path, env, timeout=300,
        )  # fmt: skip
        demo_log = log_path.read_text()[-4000:]
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr + demo_log
        assert str(tmp_path / "var" / "inbox") in submitted.stdout
        assert "done" in submitted.stdout and "lin_manuel_miranda" in submitted.stdout
        assert list((tmp_path / "var" / "done").glob("short_hamilton_clip*.csv"))

        status = run([str(BIN / "hybrid-watcher"), "status", "--json"], tmp_path, env)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["counts"]["done"] == 1

        shown = run(
            [str(BIN / "hybrid-watcher"), "show", "--json", "short_hamilton_clip.mp4"],
            tmp_path, env,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)[0]["result"]["people"] == ["lin_manuel_miranda"]

        cases = tmp_path / "cases"
        cases.mkdir()
        (cases / "again.mp4").write_bytes(CLIP.read_bytes())
        graded = run(
            [str(BIN / "hybrid-local"), "workload", str(cases), "--timeout", "240"],
            tmp_path, env, timeout=300,
        )  # fmt: skip
        assert graded.returncode == 0, graded.stdout + graded.stderr + log_path.read_text()[-4000:]
    finally:
        demo.send_signal(signal.SIGINT)
        code = demo.wait(120)
    assert code == 0, log_path.read_text()[-3000:]
    log = log_path.read_text()
    assert "Traceback" not in log
    assert "NoCredentialsError" not in log
