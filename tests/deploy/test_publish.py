"""scripts/publish.sh (`make publish`): build with the version baked in, push, deploy the stack.

The script runs for real against stand-ins for `aws` and the container tools: small
executables first on PATH that record their argv (one JSON line per call) and answer what the
script asks (the account id, whether a tag is in ECR). git is the real one.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PUBLISH = REPO / "scripts" / "publish.sh"
TEMPLATE = REPO / "deploy" / "aws" / "template.yaml"
ACCOUNT = "123456789012"

# Records argv; answers `sts get-caller-identity` with the account, and `ecr describe-images`
# with success only for the tags listed in $STUB_ECR_TAGS.
STUB = """#!/usr/bin/env python3
import json, os, sys
name = os.path.basename(sys.argv[0])
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps([name, *sys.argv[1:]]) + "\\n")
args = sys.argv[1:]
if name == "aws" and args[:2] == ["sts", "get-caller-identity"]:
    print(os.environ["STUB_ACCOUNT"])
elif name == "aws" and args[:2] == ["ecr", "describe-images"]:
    tag = next(a for a in args if a.startswith("imageTag=")).split("=", 1)[1]
    sys.exit(0 if tag in os.environ.get("STUB_ECR_TAGS", "").split() else 1)
elif name == "aws" and args[:2] == ["ecr", "describe-repositories"]:
    sys.exit(0 if os.environ.get("STUB_REPO_EXISTS") else 254)
elif name == "aws" and args[:2] == ["ecr", "get-login-password"]:
    print("stub-password")
elif name != "aws" and args[:1] == ["login"]:
    sys.stdin.read()
"""


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


def _publish(
    tmp_path: Path, tools: tuple[str, ...] = ("aws", "docker"), **env: str
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    for tool in tools:
        path = stubs / tool
        path.write_text(STUB)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.jsonl"
    log.write_text("")
    git_dir = Path(shutil.which("git") or "/usr/bin/git").parent
    result = subprocess.run(
        ["bash", str(PUBLISH)],
        env={
            "PATH": f"{stubs}:{git_dir}:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "STUB_LOG": str(log),
            "STUB_ACCOUNT": ACCOUNT,
            "ALLOW_DIRTY": "1",
            "AWS_REGION": "us-east-1",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return result, calls


def _option(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


def _deploy_call(calls: list[list[str]]) -> list[str]:
    (deploy,) = [c for c in calls if c[:3] == ["aws", "cloudformation", "deploy"]]
    return deploy


def test_script_parses() -> None:
    subprocess.run(["bash", "-n", str(PUBLISH)], check=True, timeout=30)


@pytest.mark.parametrize("tool", ["docker", "podman", "buildah"])
def test_publish_builds_the_revision_pushes_it_and_deploys_the_stack_with_it(
    tmp_path: Path, tool: str
) -> None:
    revision = _revision()
    result, calls = _publish(
        tmp_path,
        ("aws", tool),
        CONTAINER_TOOL=tool,
        STACK_NAME="hs",
        ECR_REPOSITORY="hs-fn",
        PARAMETER_OVERRIDES="TriggerMode=sqs AlarmEmail=ops@example.org",
    )
    assert result.returncode == 0, result.stderr
    image = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/hs-fn:{revision}"
    # The dirty test tree may add -dirty-<time>: the tag starts with the revision either way.
    (build,) = [c for c in calls if c[0] == tool and c[1] in {"build", "bud"}]
    tag = _option(build, "-t")
    assert tag.startswith(image)
    assert _option(build, "-f") == "lambda_fn/Dockerfile"
    assert build[-1] == "."  # the context is the repository root
    assert _option(build, "--platform") == "linux/amd64"
    # The version baked into the image is the tag: results then say which build answered.
    assert _option(build, "--build-arg") == f"VERSION={tag.rsplit(':', 1)[1]}"
    if tool == "docker":  # Lambda rejects the attestation index BuildKit adds by default
        assert "--provenance=false" in build

    order = [c[:3] if c[0] == "aws" else c[:2] for c in calls]
    push = [tool, "push"]
    deploy = ["aws", "cloudformation", "deploy"]
    assert order.index(push) < order.index(deploy)  # the stack never names a missing image
    assert calls[order.index(push)][2] == tag
    assert ["aws", "ecr", "create-repository"] in order  # STUB_REPO_EXISTS unset

    stack = _deploy_call(calls)
    assert _option(stack, "--stack-name") == "hs"
    assert Path(_option(stack, "--template-file")) == Path("deploy/aws/template.yaml")
    overrides = stack[stack.index("--parameter-overrides") + 1 :]
    assert overrides == [f"ImageUri={tag}", "TriggerMode=sqs", "AlarmEmail=ops@example.org"]
    assert {"CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"} <= set(stack)
    # Never beside the stack: that is how the function drifted from it.
    assert not any(c[:2] == ["aws", "lambda"] for c in calls)


def test_rollback_deploys_an_earlier_tag_without_building(tmp_path: Path) -> None:
    result, calls = _publish(tmp_path, IMAGE_TAG="0123456789ab", STUB_ECR_TAGS="0123456789ab")
    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if c[0] == "docker"]
    stack = _deploy_call(calls)
    image = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/hybridsphere-function:0123456789ab"
    assert stack[stack.index("--parameter-overrides") + 1 :] == [f"ImageUri={image}"]


def test_rollback_to_a_tag_not_in_ecr_stops_before_the_stack(tmp_path: Path) -> None:
    result, calls = _publish(tmp_path, IMAGE_TAG="feedfacecafe")
    assert result.returncode == 1
    assert "not in ECR" in result.stderr
    assert not [c for c in calls if c[:2] == ["aws", "cloudformation"]]


def test_an_image_already_in_ecr_is_not_rebuilt(tmp_path: Path) -> None:
    revision = _revision()
    result, calls = _publish(tmp_path, ALLOW_DIRTY="", STUB_ECR_TAGS=revision)
    if result.returncode == 1 and "uncommitted changes" in result.stderr:
        pytest.skip("the checkout has uncommitted changes: its tag is never one in ECR")
    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if c[0] == "docker"]
    assert _deploy_call(calls)


def test_the_template_fits_a_direct_change_set(tmp_path: Path) -> None:
    """`aws cloudformation deploy` sends the template inline up to 51,200 bytes; beyond that
    it needs an S3 bucket, which publish does not pass."""
    assert len(TEMPLATE.read_bytes()) < 51_200


def test_shellcheck_is_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck is not installed (apt-get install -y shellcheck)")
    result = subprocess.run(
        [shellcheck, str(PUBLISH)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout
