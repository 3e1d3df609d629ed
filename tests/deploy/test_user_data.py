"""deploy/openstack/user-data.yaml: valid #cloud-config, a config the watcher accepts, a
root-only credentials file, and a bootstrap that installs the repository's own unit."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from watcher.settings import WatcherSettings

REPO = Path(__file__).resolve().parents[2]
USER_DATA = REPO / "deploy" / "openstack" / "user-data.yaml"
CLI_STEPS = REPO / "deploy" / "openstack" / "cli-steps.sh"
UNIT = REPO / "systemd" / "hybrid-watcher.service"

VALUES = {
    "__AWS_REGION__": "eu-west-1",
    "__INPUT_BUCKET__": "hs-input-123456789012-eu-west-1",
    "__OUTPUT_BUCKET__": "hs-output-123456789012-eu-west-1",
    "__TABLE__": "hs-students",
    "__FUNCTION_NAME__": "hs-face-recognition",
    "__TRIGGER_MODE__": "invoke",
    "__NODE_ID__": "vm-7",
    "__KEY_PREFIX__": "videos",
    "__AWS_ACCESS_KEY_ID__": "TESTKEYID-not-a-real-key",
    "__AWS_SECRET_ACCESS_KEY__": "not/a+real/secret/key/0000000000000000000",
    "__REPO_URL__": "https://git.example.org/team/hybridsphere.git",
    "__REPO_REF__": "v1.2.3",
    "__WATCHER_PACKAGE__": "",
    # What Heat's WaitConditionHandle gives as curl_cli (a command line, headers in quotes).
    "__WAIT_NOTIFY__": "curl -i -X POST -H 'X-Auth-Token: gAAAA-not-a-token' "
    "-H 'Content-Type: application/json' -H 'Accept: application/json' "
    "https://heat.example.org:8004/v1/p/stacks/s/1/resources/wait_handle/signal",
    "__STAGING_VOLUME_ID__": "0a1b2c3d-4e5f-6789-abcd-ef0123456789",
}


def render(values: dict[str, str] = VALUES) -> str:
    """What Heat's str_replace makes of the template."""
    text = USER_DATA.read_text()
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def _files(text: str) -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(text)
    return {entry["path"]: entry for entry in data["write_files"]}


def _cloud_init() -> str:
    found = shutil.which("cloud-init")
    if not found:
        pytest.skip("cloud-init is not installed (apt-get install -y cloud-init)")
    return found


def _schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_cloud_init(), "schema", "--config-file", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_cloud_init_schema_accepts_the_template_and_its_rendering(tmp_path: Path) -> None:
    rendered = tmp_path / "user-data.yaml"
    rendered.write_text(render())
    for path in (USER_DATA, rendered):
        result = _schema(path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Valid cloud-config" in result.stdout


@pytest.mark.slow
def test_cloud_init_schema_rejects_a_broken_copy(tmp_path: Path) -> None:
    """The schema check above can fail: an unquoted octal mode is an int, not a string."""
    broken = tmp_path / "user-data.yaml"
    broken.write_text(render().replace('permissions: "0600"', "permissions: 0600"))
    result = _schema(broken)
    assert result.returncode != 0
    assert "permissions" in result.stdout + result.stderr


def test_it_is_cloud_config() -> None:
    assert USER_DATA.read_text().startswith("#cloud-config\n")


def test_credentials_file_is_root_only_and_holds_only_aws_keys() -> None:
    files = _files(render())
    creds = files["/etc/hybrid-watcher/credentials.env"]
    assert creds["owner"] == "root:root"
    assert creds["permissions"] == "0600"
    lines = dict(line.split("=", 1) for line in creds["content"].splitlines() if line)
    assert lines == {
        "AWS_ACCESS_KEY_ID": VALUES["__AWS_ACCESS_KEY_ID__"],
        "AWS_SECRET_ACCESS_KEY": VALUES["__AWS_SECRET_ACCESS_KEY__"],
        "AWS_DEFAULT_REGION": VALUES["__AWS_REGION__"],
    }


def test_no_secret_outside_the_credentials_file() -> None:
    files = _files(render())
    for path, entry in files.items():
        if path != "/etc/hybrid-watcher/credentials.env":
            assert VALUES["__AWS_SECRET_ACCESS_KEY__"] not in entry["content"], path
            assert VALUES["__AWS_ACCESS_KEY_ID__"] not in entry["content"], path


def test_the_watcher_accepts_the_written_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every key is a real setting (the watcher forbids unknown keys) and the values land."""
    config = tmp_path / "config.toml"
    config.write_text(_files(render())["/etc/hybrid-watcher/config.toml"]["content"])
    monkeypatch.setenv("HYBRID_CONFIG", str(config))
    # The unit sets the same staging root; here it must be a folder this test can write.
    monkeypatch.setenv("HYBRID_STAGING_ROOT", str(tmp_path / "staging"))
    settings = WatcherSettings()
    assert settings.region == "eu-west-1"
    assert settings.input_bucket == VALUES["__INPUT_BUCKET__"]
    assert settings.output_bucket == VALUES["__OUTPUT_BUCKET__"]
    assert settings.table == VALUES["__TABLE__"]
    assert settings.function_name == VALUES["__FUNCTION_NAME__"]
    assert settings.node_id == "vm-7"
    assert settings.key_prefix == "videos"
    assert settings.trigger_mode == "invoke"
    assert 'staging_root = "/var/lib/hybrid-watcher"' in config.read_text()


def test_bootstrap_script_is_valid_bash_and_uses_the_repo_installer(tmp_path: Path) -> None:
    script = _files(render())["/usr/local/sbin/hybrid-watcher-bootstrap"]
    assert script["permissions"] == "0755"
    path = tmp_path / "bootstrap.sh"
    path.write_text(script["content"])
    subprocess.run(["bash", "-n", str(path)], check=True, timeout=30)
    body = script["content"]
    assert "scripts/install-service.sh" in body
    assert (REPO / "scripts" / "install-service.sh").is_file()
    assert f'--branch "{VALUES["__REPO_REF__"]}" "{VALUES["__REPO_URL__"]}"' in body
    assert "systemctl enable hybrid-watcher.service" in body
    shellcheck = shutil.which("shellcheck")
    if shellcheck:
        lint = subprocess.run(
            [shellcheck, "--shell=bash", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert lint.returncode == 0, lint.stdout
    runcmd = yaml.safe_load(render())["runcmd"]
    assert runcmd == [["/usr/local/sbin/hybrid-watcher-bootstrap"]]


def test_unit_reads_the_credentials_file_this_writes() -> None:
    # No skip: a missing unit is what this must catch, not a reason to pass.
    assert UNIT.is_file(), f"{UNIT} is missing"
    text = UNIT.read_text()
    assert re.search(r"^EnvironmentFile=-?/etc/hybrid-watcher/credentials\.env$", text, re.M)
    # install-service.sh installs the daemon where the unit runs it from.
    assert re.search(r"^ExecStart=/opt/hybrid-watcher/bin/hybrid-watcher run$", text, re.M)


def test_cli_steps_renders_the_same_user_data_without_keys(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "REPO_URL": VALUES["__REPO_URL__"],
        "REPO_REF": VALUES["__REPO_REF__"],
        "INPUT_BUCKET": VALUES["__INPUT_BUCKET__"],
        "OUTPUT_BUCKET": VALUES["__OUTPUT_BUCKET__"],
        "TABLE": VALUES["__TABLE__"],
        "FUNCTION_NAME": VALUES["__FUNCTION_NAME__"],
        "TRIGGER_MODE": VALUES["__TRIGGER_MODE__"],
        "NODE_ID": VALUES["__NODE_ID__"],
        "AWS_REGION": VALUES["__AWS_REGION__"],
    }
    out = subprocess.run(
        ["bash", str(CLI_STEPS), "user-data"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert out == render(
        {
            **VALUES,
            "__AWS_ACCESS_KEY_ID__": "",
            "__AWS_SECRET_ACCESS_KEY__": "",
            "__WAIT_NOTIFY__": "",
            "__STAGING_VOLUME_ID__": "",
        }
    )
    assert not re.search(r"__[A-Z_]+__", out)


def _bootstrap() -> str:
    content: str = _files(render())["/usr/local/sbin/hybrid-watcher-bootstrap"]["content"]
    return content


def test_bootstrap_signals_success_only_after_the_service_is_active() -> None:
    body = _bootstrap()
    assert body.index("systemctl is-active --quiet hybrid-watcher.service") < body.index(
        "notify SUCCESS"
    )
    # Any failing command (set -E: inside functions too) signals FAILURE with its line.
    assert "set -Eeuo pipefail" in body
    assert re.search(r"^trap 'notify FAILURE .*' ERR$", body, re.M)
    # The token-bearing signal command is root-only.
    notify_file = _files(render())["/etc/hybrid-watcher/wait-notify"]
    assert notify_file["permissions"] == "0600"
    assert notify_file["owner"] == "root:root"


def _run_notify(tmp_path: Path, command: str, status: str) -> subprocess.CompletedProcess[str]:
    """The bootstrap's own notify(), with the wait-notify file at a temporary path."""
    body = _bootstrap()
    function = body[body.index("notify() {") : body.index("\n}\n", body.index("notify() {")) + 3]
    notify_file = tmp_path / "wait-notify"
    notify_file.write_text(command + "\n")
    script = function.replace("/etc/hybrid-watcher/wait-notify", str(notify_file))
    return subprocess.run(
        ["bash", "-c", f'{script}\nnotify {status} "the reason"'],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_notify_runs_heats_curl_command_with_a_json_status(tmp_path: Path) -> None:
    recorder = tmp_path / "curl"
    calls = tmp_path / "calls.json"
    recorder.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"open({str(calls)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    recorder.chmod(0o755)
    command = VALUES["__WAIT_NOTIFY__"].replace("curl ", f"{recorder} ", 1)
    done = _run_notify(tmp_path, command, "SUCCESS")
    assert done.returncode == 0, done.stderr
    argv = json.loads(calls.read_text())
    assert "X-Auth-Token: gAAAA-not-a-token" in argv  # the quoted headers stay whole
    assert argv[argv.index("--data-binary") + 1 :][0] == (
        '{"status": "SUCCESS", "reason": "the reason", "id": "bootstrap"}'
    )
    assert json.loads(argv[-1])["status"] == "SUCCESS"


def test_notify_does_nothing_without_a_wait_condition(tmp_path: Path) -> None:
    """cli-steps.sh renders no signal command: notify must then be silent and succeed."""
    done = _run_notify(tmp_path, "", "SUCCESS")
    assert done.returncode == 0
    assert done.stderr == ""
