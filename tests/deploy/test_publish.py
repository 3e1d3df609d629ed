"""scripts/publish.sh (`make publish`): its dry run builds, pushes, updates and waits, in order."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PUBLISH = REPO / "scripts" / "publish.sh"


def _dry_run(**env: str) -> list[str]:
    result = subprocess.run(
        ["bash", str(PUBLISH)],
        env={**os.environ, "DRY_RUN": "1", "ALLOW_DIRTY": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    return [line[2:] for line in result.stderr.splitlines() if line.startswith("+ ")]


def _revision() -> str:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the image tag is the git revision")
    return subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()


def test_script_parses() -> None:
    subprocess.run(["bash", "-n", str(PUBLISH)], check=True, timeout=30)


@pytest.mark.parametrize("tool", ["docker", "podman", "buildah"])
def test_publish_builds_pushes_updates_and_waits(tool: str) -> None:
    revision = _revision()
    commands = _dry_run(
        CONTAINER_TOOL=tool, FUNCTION_NAME="hs-face-recognition", ECR_REPOSITORY="hs-fn"
    )
    image = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/hs-fn:{revision}"
    build, login, push, update, wait = commands[-5:]
    assert build.startswith(f"{tool} ") and "-f lambda_fn/Dockerfile" in build
    assert f"-t {image}" in build  # the tag starts with the git revision
    assert build.endswith(" .")  # the context is the repository root
    assert "--platform linux/amd64" in build
    assert "login --username AWS --password-stdin" in login
    assert push.startswith(f"{tool} push {image}")
    assert update.startswith("aws lambda update-function-code --function-name hs-face-recognition")
    assert f"--image-uri {image}" in update
    assert wait == "aws lambda wait function-updated --function-name hs-face-recognition"


def test_docker_builds_without_provenance_index() -> None:
    """Lambda rejects the attestation manifest list that BuildKit adds by default."""
    _revision()
    (build,) = [c for c in _dry_run(CONTAINER_TOOL="docker") if c.startswith("docker build")]
    assert "--provenance=false" in build


def test_shellcheck_is_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck is not installed (apt-get install -y shellcheck)")
    result = subprocess.run(
        [shellcheck, str(PUBLISH)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout
