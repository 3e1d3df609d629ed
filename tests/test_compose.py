"""docker-compose.yml, checked without a Docker engine: the commands are the ones the tests run,
every HYBRID_* variable is a real setting of the program that reads it, and nothing listens
beyond loopback. (`docker compose config` and hadolint are run by hand; see the report.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lambda_fn.settings import FunctionSettings, RecognitionOptions
from local_stack.cli import build_parser as local_parser
from local_stack.emulator.settings import RuntimeSettings
from tests.servers import SERVE_LOCAL
from watcher.cli import build_parser as watcher_parser
from watcher.settings import WatcherSettings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return compose["services"]  # type: ignore[no-any-return]


def _settings_of(*classes: type) -> set[str]:
    return {f"HYBRID_{name.upper()}" for cls in classes for name in cls.model_fields}


def test_the_services_run_the_commands_the_tests_run(
    services: dict[str, Any], tmp_path: Path
) -> None:
    lambda_ = services["lambda"]
    assert lambda_["build"]["dockerfile"] == "lambda_fn/Dockerfile"
    # The tests run `python -m local_stack serve`; the image's python is /opt/venv's.
    assert [*lambda_["entrypoint"][1:], *lambda_["command"]] == SERVE_LOCAL[1:]
    assert local_parser().parse_args(lambda_["command"]).command == "serve"
    # Neither image carries the local stack: compose mounts it where it runs.
    mount = "./local_stack:/opt/app/local_stack:ro"
    assert mount in lambda_["volumes"] and mount in services["init"]["volumes"]
    assert services["init"]["entrypoint"] == ["python", "-m", "local_stack"]
    watcher_entry = (REPO / "watcher" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m", "watcher"]' in watcher_entry
    assert watcher_parser().parse_args(services["watcher"]["command"]).command == "run"
    # The init command parses with the real CLI (its files replaced by existing ones).
    placeholder = tmp_path / "file.json"
    placeholder.write_text("[]")
    init = [
        placeholder.as_posix() if a.startswith("/config/") else a
        for a in services["init"]["command"]
    ]
    args = local_parser().parse_args(init)
    assert (args.command, args.function_timeout) == ("provision", 900)
    assert args.students == args.known_faces == placeholder


def test_every_setting_in_the_environment_is_a_real_setting(services: dict[str, Any]) -> None:
    readers = {
        "init": _settings_of(WatcherSettings),
        "watcher": _settings_of(WatcherSettings),
        "lambda": _settings_of(RuntimeSettings, FunctionSettings, RecognitionOptions),
    }
    for name, known in readers.items():
        env = {k for k in services[name].get("environment", {}) if k.startswith("HYBRID_")}
        assert env - known - {"HYBRID_CONFIG"} == set(), name


def test_only_loopback_ports_and_pinned_images(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
        image = service.get("image", "")
        if "build" not in service:
            assert ":" in image and not image.endswith(":latest"), (name, image)
