"""deploy/openstack/cli-steps.sh: valid bash, and its dry run issues the DevStack steps in order."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CLI_STEPS = Path(__file__).resolve().parents[2] / "deploy" / "openstack" / "cli-steps.sh"
ENV = {
    "DRY_RUN": "1",
    "SSH_CIDR": "203.0.113.7/32",
    "REPO_URL": "https://git.example.org/team/hybridsphere.git",
    "INPUT_BUCKET": "hs-input",
    "OUTPUT_BUCKET": "hs-output",
    "CREDENTIALS_FILE": "/secure/credentials.env",
}


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CLI_STEPS), *args],
        env={**os.environ, **ENV, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _commands(stderr: str) -> list[str]:
    return [line[2:] for line in stderr.splitlines() if line.startswith("+ ")]


def test_script_parses() -> None:
    subprocess.run(["bash", "-n", str(CLI_STEPS)], check=True, timeout=30)


def test_shellcheck_is_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck is not installed (apt-get install -y shellcheck)")
    result = subprocess.run(
        [shellcheck, str(CLI_STEPS)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout


def test_up_creates_everything_in_order() -> None:
    result = _run("up")
    assert result.returncode == 0, result.stderr
    commands = _commands(result.stderr)
    firsts = [" ".join(c.split()[:3]) for c in commands]
    order = [
        "openstack network create",
        "openstack subnet create",
        "openstack router create",
        "openstack router set",
        "openstack router add",
        "openstack security group",
        "openstack image create",
        "openstack keypair create",
        "openstack server create",
        "openstack floating ip",
        "openstack server add",
    ]
    positions = [next(i for i, f in enumerate(firsts) if f.startswith(step)) for step in order]
    assert positions == sorted(positions), commands
    (rule,) = [c for c in commands if c.startswith("openstack security group rule create")]
    assert "--ingress" in rule and "--protocol tcp" in rule and "--dst-port 22" in rule
    assert "--remote-ip 203.0.113.7/32" in rule
    assert sum(c.startswith("openstack security group rule") for c in commands) == 1
    (server,) = [c for c in commands if c.startswith("openstack server create")]
    assert "--user-data" in server and "--security-group hybridsphere-ssh-only" in server
    # Credentials travel over SSH into a root-only file, never in user-data.
    assert any(
        "install -m 0600 -o root -g root /dev/stdin /etc/hybrid-watcher/credentials.env" in c
        and c.endswith("< /secure/credentials.env")
        for c in commands
    )
    assert commands[-1].endswith("systemctl is-active hybrid-watcher")


def test_up_refuses_ssh_from_everywhere() -> None:
    result = _run("up", SSH_CIDR="0.0.0.0/0")
    assert result.returncode == 2
    assert "0.0.0.0/0" in result.stderr
    assert _commands(result.stderr) == []


def test_up_needs_the_ssh_cidr() -> None:
    result = _run("up", SSH_CIDR="")
    assert result.returncode == 2
    assert "SSH_CIDR" in result.stderr


def test_down_deletes_in_reverse_dependency_order() -> None:
    result = _run("down")
    assert result.returncode == 0, result.stderr
    commands = _commands(result.stderr)
    assert [c.split()[1:3] for c in commands] == [
        ["floating", "ip"],
        ["server", "delete"],
        ["router", "remove"],
        ["router", "delete"],
        ["subnet", "delete"],
        ["network", "delete"],
        ["security", "group"],
        ["keypair", "delete"],
    ]
