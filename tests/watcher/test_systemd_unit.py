"""systemd/hybrid-watcher.service: verified by systemd, hardened, consistent with the settings."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from watcher.settings import WatcherSettings

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "hybrid-watcher.service"
ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(ANALYZE is None, reason="apt-get install systemd")


def _directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            name, _, value = line.partition("=")
            found.setdefault(name.strip(), []).append(value.strip())
    return found


def _runnable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at a binary that exists here (verify checks it)."""
    text = UNIT.read_text()
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={sys.executable} -m watcher", text, flags=re.M)
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    return copy


@needs_systemd
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "verify", str(_runnable_copy(tmp_path))],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "hybrid-watcher" not in done.stderr, done.stderr  # no warnings about our unit


@needs_systemd
def test_exposure_is_at_most_2(tmp_path: Path) -> None:
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "security", "--offline=true", str(_runnable_copy(tmp_path))],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 2.0


def test_lifecycle_directives_match_the_daemon(tmp_path: Path) -> None:
    unit = _directives()
    assert unit["Type"] == ["notify"]
    assert unit["RestartPreventExitStatus"] == ["78"]  # hybrid_common.config.EX_CONFIG
    assert unit["Restart"] == ["on-failure"]
    assert "WatchdogSec" in unit
    grace = WatcherSettings(staging_root=tmp_path).shutdown_grace_s
    assert float(unit["TimeoutStopSec"][0].removesuffix("s")) > grace
    assert unit["EnvironmentFile"] == ["-/etc/hybrid-watcher/credentials.env"]
    assert unit["ExecStart"][0].endswith("hybrid-watcher run")


def test_hardening_directives() -> None:
    unit = _directives()
    for name, value in {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "CapabilityBoundingSet": "", "PrivateDevices": "yes",
    }.items():  # fmt: skip
        assert unit[name] == [value], name
    assert "@system-service" in unit["SystemCallFilter"]
    # StateDirectory= makes the staging root writable; ReadWritePaths= would only repeat it.
    assert unit["StateDirectory"] == ["hybrid-watcher"]
    assert "ReadWritePaths" not in unit
    assert unit["RequiresMountsFor"] == ["/var/lib/hybrid-watcher"]


def test_user_and_credentials_as_documented() -> None:
    """A static user whose group operators join; credentials from the root-only file only,
    with the metadata service (which serves the user-data) out of the service's reach."""
    unit = _directives()
    assert unit["User"] == unit["Group"] == ["hybrid-watcher"]
    assert "DynamicUser" not in unit
    assert "link-local" in unit["IPAddressDeny"][0].split()
    assert "instance role" not in UNIT.read_text()
    readme = (REPO / "README.md").read_text()
    assert "dynamic user" not in readme


def test_install_script_is_valid_bash() -> None:
    script = REPO / "scripts" / "install-service.sh"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    text = script.read_text()
    for folder in ("inbox", "processing", "done", "failed", "rejected"):
        assert folder in text
    assert "credentials.env" in text and "0600" in text
