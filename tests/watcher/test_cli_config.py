"""`--version` on every CLI and `hybrid-watcher config`, as the installed console scripts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hybrid_common.version import package_version

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(
    argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("prog", ["hybrid-watcher", "hybrid-lambda", "hybrid-local"])
def test_every_cli_prints_its_version_and_git_revision(prog: str) -> None:
    head = run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    if head.returncode != 0:
        pytest.skip("not a git checkout: the revision is 'unknown' here")
    result = run([str(BIN / prog), "--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{prog} {package_version()} (revision ")
    assert head.stdout.strip()[:7] in result.stdout


def test_an_image_builds_baked_version_wins_and_nothing_is_unknown(tmp_path: Path) -> None:
    """What the images do: the packages copied without git or install, BUILD_VERSION beside."""
    app = tmp_path / "app"
    for package in ("hybrid_common", "watcher"):
        shutil.copytree(REPO / package, app / package, ignore=shutil.ignore_patterns("BUILD_*"))
    env = {**os.environ, "PYTHONPATH": str(app)}
    bare = run([sys.executable, "-m", "watcher", "--version"], env=env, cwd=tmp_path)
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout.strip().endswith("(revision unknown)")
    (app / "hybrid_common" / "BUILD_VERSION").write_text("0.1.0+3f2c1ab\n")
    baked = run([sys.executable, "-m", "watcher", "--version"], env=env, cwd=tmp_path)
    assert baked.stdout.strip().endswith("(revision 0.1.0+3f2c1ab)"), baked.stdout


SECRETS = ["file-secret-9f8e7d6c", "env-secret-1a2b3c4d", "aws-secret-value-0123456789"]


def test_config_shows_each_settings_source_and_never_a_secret(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'input_bucket = "bucket-from-file"\n'
        f'endpoint_url = "http://ops:{SECRETS[0]}@127.0.0.1:9"\n'
        f'staging_root = "{tmp_path / "staging"}"\n'
    )
    env = {
        **os.environ,
        "HYBRID_CONFIG": str(config),
        "HYBRID_OUTPUT_BUCKET": "bucket-from-env",
        "HYBRID_TRIGGER_MODE": "invoke",
        "HYBRID_LAMBDA_ENDPOINT_URL": f"http://ops:{SECRETS[1]}@127.0.0.1:9001",
        "AWS_ACCESS_KEY_ID": "AKIATESTNOTREAL",
        "AWS_SECRET_ACCESS_KEY": SECRETS[2],
    }
    text = run([str(BIN / "hybrid-watcher"), "config"], env=env, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    lines = {line.split(" = ")[0]: line for line in text.stdout.splitlines() if " = " in line}
    assert lines["input_bucket"].endswith(f"# file ({config})")
    assert lines["output_bucket"].endswith("# environment (HYBRID_OUTPUT_BUCKET)")
    assert lines["region"].endswith("# default")
    assert '"http://ops:[REDACTED]@127.0.0.1:9"' in lines["endpoint_url"]
    assert f"# config file: {config} (HYBRID_CONFIG)" in text.stdout
    assert "# AWS credentials: env" in text.stdout

    as_json = run([str(BIN / "hybrid-watcher"), "config", "--json"], env=env, cwd=tmp_path)
    doc = json.loads(as_json.stdout)
    assert doc["settings"]["output_bucket"] == {
        "value": "bucket-from-env",
        "source": "environment (HYBRID_OUTPUT_BUCKET)",
    }
    everything = text.stdout + text.stderr + as_json.stdout + as_json.stderr
    for secret in SECRETS:
        assert secret not in everything
