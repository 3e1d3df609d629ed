"""Known vulnerabilities in the locked dependencies: pip-audit where an advisory service answers,
PyPI's project-level advisory data where none does.

pip-audit asks OSV (api.osv.dev) or PyPI's per-release JSON API (/pypi/NAME/VERSION/json) about
each exact version. Some CI machines reach neither, only PyPI's index and its per-project JSON
(/pypi/NAME/json). That document lists the advisories of the project's *latest* release, so it
settles the question for every locked package that is at its latest release and says nothing about
older ones. In that case this script checks what it can, fails on any advisory found, and names
each package it could not check rather than passing it silently.

Usage (what `make audit` runs): python scripts/audit_lock.py REQUIREMENTS [--ignore ID ...]
Exit codes: 0 no known vulnerability; 1 vulnerabilities found; 2 the audit could not be done.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

EXIT_CLEAN, EXIT_VULNERABLE, EXIT_UNABLE = 0, 1, 2
DEFAULT_OSV_URL = "https://api.osv.dev/v1/query"
DEFAULT_PYPI_URL = "https://pypi.org"
# A release every advisory service knows: the probe only asks whether the service answers.
PROBE_PACKAGE, PROBE_VERSION = "pip", "24.0"
TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Pin:
    name: str
    version: str


@dataclass
class Report:
    """What the fallback found: advisories per checked package, and what it could not check."""

    checked: list[Pin] = field(default_factory=list)
    findings: dict[Pin, list[str]] = field(default_factory=dict)
    unchecked: dict[Pin, str] = field(default_factory=dict)  # pin -> why (e.g. latest is newer)


def read_pins(requirements: Path) -> list[Pin]:
    """The `name==version` lines of a `uv export` requirements file (hashes and markers allowed)."""
    pins = []
    for raw in requirements.read_text().splitlines():
        line = raw.split("#", 1)[0].strip().rstrip("\\").strip()
        if not line or line.startswith("-"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement as error:
            raise SystemExit(f"audit: {requirements}: cannot read {line!r}: {error}") from error
        exact = [s.version for s in requirement.specifier if s.operator == "=="]
        if len(exact) != 1:
            raise SystemExit(f"audit: {requirements}: {line!r} is not pinned to one version")
        pins.append(Pin(canonicalize_name(requirement.name), exact[0]))
    return pins


def fetch(url: str, body: bytes | None = None) -> bytes:
    """GET (or POST `body` to) an http(s) URL; raises OSError/URLError on any failure."""
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"not an http(s) URL: {url!r}")
    # The scheme is checked above, so urllib's file:/ftp: handlers cannot be reached (S310).
    request = urllib.request.Request(url, data=body, headers={"User-Agent": "hybrid-audit"})  # noqa: S310 -- http(s) only, checked above
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310 -- as above
        data: bytes = response.read()
    return data


def answers(url: str, body: bytes | None = None) -> bool:
    """Whether an HTTP service answers at `url` with a success (a 404 is no use either)."""
    try:
        fetch(url, body)
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return True


def pip_audit_service(osv_url: str, pypi_url: str) -> list[str] | None:
    """pip-audit's arguments for the first advisory service that answers, or None."""
    osv_probe = {"package": {"name": PROBE_PACKAGE, "ecosystem": "PyPI"}, "version": PROBE_VERSION}
    if answers(osv_url, json.dumps(osv_probe).encode()):
        return ["--vulnerability-service", "osv", "--osv-url", osv_url]
    # pip-audit's PyPI service only ever asks pypi.org, so a mirror cannot stand in for it.
    if pypi_url == DEFAULT_PYPI_URL and answers(
        f"{pypi_url}/pypi/{PROBE_PACKAGE}/{PROBE_VERSION}/json"
    ):
        return ["--vulnerability-service", "pypi"]
    return None


def run_pip_audit(requirements: Path, service: list[str], ignore: Sequence[str]) -> int:
    """pip-audit on the exact pins: no resolver, no pip; a lookup that fails fails the audit."""
    command = [
        sys.executable,
        "-m",
        "pip_audit",
        "--requirement",
        str(requirements),
        "--no-deps",
        "--disable-pip",
        "--strict",
        "--progress-spinner",
        "off",
        *service,
        *(arg for vuln in ignore for arg in ("--ignore-vuln", vuln)),
    ]
    if cache := os.environ.get("AUDIT_CACHE_DIR"):
        command += ["--cache-dir", cache]
    return subprocess.run(command, check=False).returncode  # noqa: S603 -- our own argv, no shell


def project_data(pypi_url: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(fetch(f"{pypi_url}/pypi/{name}/json"))
    return data


def advisory_ids(advisory: dict[str, Any]) -> Iterator[str]:
    yield str(advisory["id"])
    yield from (str(alias) for alias in advisory.get("aliases") or [])


def audit_from_project_data(pins: Sequence[Pin], pypi_url: str, ignore: Sequence[str]) -> Report:
    """Check each pin that is its project's latest release against that release's advisories."""
    ignored = set(ignore)
    report = Report()
    # Some documents are megabytes (botocore lists thousands of releases): fetch a few at once.
    with ThreadPoolExecutor(max_workers=8) as pool:
        documents = list(pool.map(lambda pin: project_data(pypi_url, pin.name), pins))
    for pin, data in zip(pins, documents, strict=True):
        latest = str(data["info"]["version"])
        if latest != pin.version:
            report.unchecked[pin] = f"latest release is {latest}"
            continue
        report.checked.append(pin)
        for advisory in data.get("vulnerabilities") or []:
            if advisory.get("withdrawn"):
                continue
            ids = list(advisory_ids(advisory))
            if ignored.intersection(ids):
                continue
            fixed = ", ".join(advisory.get("fixed_in") or []) or "no fix yet"
            report.findings.setdefault(pin, []).append(f"{' / '.join(ids)} (fixed in: {fixed})")
    return report


def print_report(report: Report) -> None:
    total = len(report.checked) + len(report.unchecked)
    print(f"audit: checked {len(report.checked)} of {total} locked packages (at latest release)")
    for pin, advisories in sorted(report.findings.items(), key=lambda item: item[0].name):
        for advisory in advisories:
            print(f"  VULNERABLE {pin.name}=={pin.version}: {advisory}")
    if report.unchecked:
        print(f"audit: {len(report.unchecked)} not checkable here (older than their latest):")
        for pin, why in sorted(report.unchecked.items(), key=lambda item: item[0].name):
            print(f"  unchecked {pin.name}=={pin.version}: {why}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("requirements", type=Path, help="pinned requirements (uv export)")
    parser.add_argument("--ignore", action="append", default=[], metavar="ID")
    parser.add_argument("--osv-url", default=os.environ.get("AUDIT_OSV_URL", DEFAULT_OSV_URL))
    parser.add_argument("--pypi-url", default=os.environ.get("AUDIT_PYPI_URL", DEFAULT_PYPI_URL))
    args = parser.parse_args(argv)
    pypi_url = args.pypi_url.rstrip("/")

    pins = read_pins(args.requirements)
    service = pip_audit_service(args.osv_url, pypi_url)
    if service is not None:
        print(f"audit: pip-audit {' '.join(service)} on {len(pins)} locked packages", flush=True)
        return run_pip_audit(args.requirements, service, args.ignore)

    print(
        f"audit: no advisory service answers ({args.osv_url}; {pypi_url}/pypi/NAME/VERSION/json);"
        f" using the advisories of each project's latest release from {pypi_url}/pypi/NAME/json"
    )
    try:
        report = audit_from_project_data(pins, pypi_url, args.ignore)
    except (urllib.error.URLError, OSError, ValueError, KeyError) as error:
        print(f"audit: could not read PyPI's project data: {error}", file=sys.stderr)
        return EXIT_UNABLE
    print_report(report)
    return EXIT_VULNERABLE if report.findings else EXIT_CLEAN


if __name__ == "__main__":
    sys.exit(main())
