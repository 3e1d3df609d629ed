"""`hybrid-local serve`'s settings: flags over environment over local-cloud's state file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from local_stack.cli import build_parser
from local_stack.emulator.serve import settings_from_args


def test_the_state_file_fills_what_the_environment_leaves_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "local-cloud.json"
    state.write_text(
        json.dumps(
            {
                "endpoint_url": "http://127.0.0.1:5055",
                "region": "eu-west-1",
                "queue": "from-state",
                "output_bucket": "out-bucket",
                "table": "students",
                "known_faces_uri": "s3://in-bucket/config/known_faces.json",
            }
        )
    )
    # apply_cloud_state writes os.environ: give it a copy, so nothing leaks into other tests.
    monkeypatch.setattr(os, "environ", {**os.environ, "HYBRID_QUEUE": "from-env"})
    args = build_parser().parse_args(
        ["serve", "--cloud-state", str(state), "--max-concurrency", "3", "--handler", "m.f"]
    )
    settings = settings_from_args(args)
    assert settings.endpoint_url == "http://127.0.0.1:5055"
    assert settings.region == "eu-west-1"
    assert settings.queue == "from-env", "the environment wins over the state file"
    assert (settings.max_concurrency, settings.handler) == (3, "m.f"), "flags win over both"
    # The handler in the workers inherits these.
    assert os.environ["HYBRID_OUTPUT_BUCKET"] == "out-bucket"
    assert os.environ["HYBRID_KNOWN_FACES"].startswith("s3://in-bucket/")


def test_an_unreadable_state_file_is_a_config_error(tmp_path: Path) -> None:
    args = build_parser().parse_args(["serve", "--cloud-state", str(tmp_path / "none")])
    with pytest.raises(SystemExit) as exit_info:
        settings_from_args(args)
    assert exit_info.value.code == 78
