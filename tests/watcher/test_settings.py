"""Settings: sources in order, every setting documented, bad config → exit 78 naming it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from watcher.settings import WatcherSettings

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "hybrid-watcher.example.toml"


def test_example_documents_every_setting() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    documented = set(re.findall(r"^#?\s*([a-z_][a-z0-9_]*)\s*=", text, flags=re.MULTILINE))
    assert set(WatcherSettings.model_fields) - documented == set()


def test_example_loads_and_matches_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYBRID_CONFIG", str(EXAMPLE))
    monkeypatch.setenv("HYBRID_STAGING_ROOT", str(tmp_path))
    from_file = WatcherSettings()
    monkeypatch.setenv("HYBRID_CONFIG", "")
    defaults = WatcherSettings()
    assert from_file == defaults
    # Every uncommented value in the example is the default it claims to be.
    for key, value in tomllib.loads(EXAMPLE.read_text(encoding="utf-8")).items():
        if key != "staging_root":
            assert getattr(defaults, key) == value, key


def test_environment_wins_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    config.write_text('input_bucket = "from-file"\noutput_bucket = "out-from-file"\n')
    monkeypatch.setenv("HYBRID_CONFIG", str(config))
    monkeypatch.setenv("HYBRID_STAGING_ROOT", str(tmp_path))
    monkeypatch.setenv("HYBRID_INPUT_BUCKET", "from-env")
    settings = WatcherSettings()
    assert settings.input_bucket == "from-env"
    assert settings.output_bucket == "out-from-file"


def run_with_config(tmp_path: Path, toml: str, **env: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "bad.toml"
    config.write_text(toml, encoding="utf-8")
    full_env = {**os.environ, "HYBRID_CONFIG": str(config), **env}
    code = "from watcher.settings import load_settings; load_settings()"
    return subprocess.run(
        [sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("toml", "env", "named"),
    [
        ('input_bucket = ""\n', {}, "input_bucket (env HYBRID_INPUT_BUCKET): must not be empty"),
        ("bucket_typo = 1\n", {}, "bucket_typo"),
        ('staging_root = "/tmp"\nregion = 5\n', {}, "region"),
        ("x = [\n", {}, "bad.toml"),
        ("", {"HYBRID_OUTPUT_BUCKET": "Bad_Bucket"}, "output_bucket"),
        ("", {"HYBRID_NODE_ID": "../escape"}, "node_id"),
    ],
)
def test_bad_config_exits_78_naming_the_setting(
    tmp_path: Path, toml: str, env: dict[str, str], named: str
) -> None:
    result = run_with_config(tmp_path, toml, HYBRID_STAGING_ROOT=str(tmp_path), **env)
    assert result.returncode == 78, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_unwritable_staging_root_is_a_config_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    # root can write anywhere; a file in the way is unwritable for everyone.
    blocker = tmp_path / "file"
    blocker.write_text("")
    target = str(blocker / "staging") if os.getuid() == 0 else str(locked / "staging")
    result = run_with_config(tmp_path, "", HYBRID_STAGING_ROOT=target)
    assert result.returncode == 78
    assert "staging_root" in result.stderr
