"""Each deployable installs and imports alone, and carries none of the others' code or libraries.

Three throwaway virtualenvs, each with exactly one extra's locked dependencies (uv export, as
the images install them) and only the packages that deployable ships (the COPY lines of its
Dockerfile, the package list of scripts/install-venv.sh). Every module of those packages
must import there, and the others' packages and libraries must be absent.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UV = shutil.which("uv") or next(
    (str(p) for p in (Path.home() / ".local/bin/uv", Path("/usr/local/bin/uv")) if p.is_file()),
    None,
)

# Imports every module of the given packages, then reports the installed distributions and
# which of the repository's packages this interpreter can see.
PROBE = """
import importlib, importlib.metadata, importlib.util, json, pkgutil, sys
failed = {}
for name in sys.argv[1:]:
    package = importlib.import_module(name)
    for info in pkgutil.walk_packages(package.__path__, name + "."):
        if info.name.endswith(".__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except Exception as error:
            failed[info.name] = repr(error)
repo = ["watcher", "lambda_fn", "local_stack", "hybrid_common"]
print(json.dumps({
    "failed": failed,
    "distributions": sorted(d.metadata["Name"].lower() for d in importlib.metadata.distributions()),
    "packages": [p for p in repo if importlib.util.find_spec(p) is not None],
}))
"""


def _copied_packages(dockerfile: Path) -> set[str]:
    """The repository packages a Dockerfile copies into its image."""
    return set(re.findall(r"^COPY (\w+) /opt/app/\1$", dockerfile.read_text(), re.M))


def _vm_packages() -> set[str]:
    """The packages scripts/install-venv.sh (run by install-service.sh) puts on the VM."""
    script = (REPO / "scripts" / "install-venv.sh").read_text()
    match = re.search(r"^PACKAGES=\(([^)]*)\)$", script, re.M)
    assert match, "install-venv.sh names its packages in PACKAGES=(...)"
    return set(match.group(1).split())


def _install(tmp: Path, extras: list[str], packages: set[str]) -> dict[str, object]:
    """A venv with the extras' locked dependencies and copies of `packages`; runs PROBE."""
    assert UV is not None
    requirements = tmp / "requirements.txt"
    flags = [arg for extra in extras for arg in ("--extra", extra)]
    subprocess.run(
        [UV, "export", "--frozen", *flags, "--no-dev", "--no-emit-project", "--no-header",
         "--quiet", "-o", str(requirements)],
        cwd=REPO, check=True, timeout=60,
    )  # fmt: skip
    venv = tmp / "venv"
    subprocess.run(
        [UV, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, timeout=60
    )
    python = venv / "bin" / "python"
    install = [UV, "pip", "install", "--quiet", "--no-deps", "--python", str(python),
               "-r", str(requirements)]  # fmt: skip
    # From uv's cache (filled by `make install`) in about a second; the index only if not.
    offline = subprocess.run([*install, "--offline"], cwd=REPO, capture_output=True, check=False)
    if offline.returncode != 0:
        subprocess.run(install, cwd=REPO, check=True, timeout=300)
    app = tmp / "app"
    for package in packages:
        shutil.copytree(REPO / package, app / package, ignore=shutil.ignore_patterns("Docker*"))
    done = subprocess.run(
        [str(python), "-c", PROBE, *sorted(packages)],
        cwd=app,  # not the repository: only the copied packages are importable
        env={"PYTHONPATH": str(app), "PATH": "/usr/bin:/bin", "HOME": str(tmp)},
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return report


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(UV is None, reason="uv is not installed (make install provides it)"),
]


def test_the_function_image_is_the_function_alone(tmp_path: Path) -> None:
    packages = _copied_packages(REPO / "lambda_fn" / "Dockerfile")
    assert packages == {"lambda_fn", "hybrid_common"}
    report = _install(tmp_path, ["function"], packages)
    assert report["failed"] == {}
    assert report["packages"] == ["lambda_fn", "hybrid_common"]
    distributions = set(report["distributions"])  # type: ignore[call-overload]
    assert {"dlib-bin", "av", "face-recognition", "awslambdaric"} <= distributions
    assert not distributions & {"aiobotocore", "moto", "watchfiles", "flask", "rich"}


def test_the_vm_install_is_the_watcher_alone(tmp_path: Path) -> None:
    packages = _vm_packages()
    assert packages == _copied_packages(REPO / "watcher" / "Dockerfile")
    assert packages == {"watcher", "hybrid_common"}
    report = _install(tmp_path, ["watcher"], packages)
    assert report["failed"] == {}
    assert report["packages"] == ["watcher", "hybrid_common"]
    distributions = set(report["distributions"])  # type: ignore[call-overload]
    assert {"aiobotocore", "watchfiles", "boto3"} <= distributions
    assert not distributions & {"moto", "dlib-bin", "dlib", "av", "face-recognition", "numpy"}


def test_the_local_stack_runs_with_its_extra(tmp_path: Path) -> None:
    """The local extra runs the function (emulator) and the daemon (demo): it pulls in both."""
    packages = {"local_stack", "lambda_fn", "watcher", "hybrid_common"}
    report = _install(tmp_path, ["local"], packages)
    assert report["failed"] == {}
    distributions = set(report["distributions"])  # type: ignore[call-overload]
    assert {"moto", "dlib-bin", "aiobotocore"} <= distributions
