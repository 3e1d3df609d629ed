"""scripts/install-venv.sh (what install-service.sh and cloud-init run): the VM's virtualenv
holds exactly uv.lock's watcher set, at the lock's versions, and nothing else.

The expected set is computed here from uv.lock itself (the dependency closure of the project's
base and `watcher` dependencies, markers evaluated for this interpreter), not from `uv export`,
which is what the script runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
INSTALL_VENV = REPO / "scripts" / "install-venv.sh"
INSTALL_SERVICE = REPO / "scripts" / "install-service.sh"

LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m, json; "
    "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
)


def lock_closure(extra: str) -> dict[str, str]:
    """{name: version} that uv.lock pins for the project with `extra`, on this interpreter."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    packages = {p["name"]: p for p in lock["package"]}
    project = packages["hybridsphere"]
    wanted: dict[str, str] = {}
    todo: list[dict[str, Any]] = [
        *project["dependencies"],
        *project["optional-dependencies"][extra],
    ]
    while todo:
        dep = todo.pop()
        if "marker" in dep and not Marker(dep["marker"]).evaluate():
            continue
        package = packages[dep["name"]]
        for dep_extra in dep.get("extra", []):
            todo.extend(package["optional-dependencies"][dep_extra])
        if dep["name"] in wanted:
            continue
        wanted[dep["name"]] = package["version"]
        todo.extend(package.get("dependencies", []))
    return wanted


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if shutil.which("uv") is None and not (Path.home() / ".local" / "bin" / "uv").exists():
        pytest.skip("uv is not installed (scripts/ensure-uv.sh installs it)")
    prefix = tmp_path_factory.mktemp("vm") / "hybrid-watcher"
    result = subprocess.run(
        ["bash", str(INSTALL_VENV), str(prefix)],
        # This machine's environment as is (its CA bundle, uv's settings); the interpreter the
        # tests run on builds the venv, so the lock's markers are evaluated for the same one.
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    listed = subprocess.run(
        [str(prefix / "bin" / "python"), "-c", LIST_DISTRIBUTIONS],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found: dict[str, str] = json.loads(listed.stdout)
    return {canonicalize_name(name): version for name, version in found.items()}


@pytest.mark.slow
def test_the_vm_venv_is_exactly_the_locks_watcher_set(installed: dict[str, str]) -> None:
    expected = {canonicalize_name(k): v for k, v in lock_closure("watcher").items()}
    # The daemon's own packages are copied in, not installed as a distribution.
    assert installed == expected


@pytest.mark.slow
def test_the_vm_venv_has_none_of_the_functions_dependencies(installed: dict[str, str]) -> None:
    assert not {"dlib", "dlib-bin", "av", "face-recognition", "moto", "numpy"} & set(installed)


def test_install_service_installs_through_install_venv_only() -> None:
    """No second, unpinned path: install-service.sh has no pip install of its own."""
    text = INSTALL_SERVICE.read_text()
    assert "scripts/install-venv.sh" in text
    assert "pip install" not in text


def test_scripts_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck is not installed (apt-get install -y shellcheck)")
    result = subprocess.run(
        [shellcheck, str(INSTALL_VENV), str(INSTALL_SERVICE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout
