"""What build this is, for `--version` and bug reports: package version and git revision.

The revision comes from, in order: the `BUILD_VERSION` file an image build writes beside this
module (the VERSION build arg of lambda_fn/Dockerfile and watcher/Dockerfile, the tag
scripts/publish.sh gives it); `git describe` when running from a checkout; else `unknown`.
"""

from __future__ import annotations

import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

BUILD_VERSION_FILE = Path(__file__).with_name("BUILD_VERSION")
SOURCE_ROOT = Path(__file__).resolve().parents[1]


def package_version() -> str:
    """The installed distribution's version (images copy the code without installing it)."""
    try:
        return metadata.version("hybridsphere")
    except metadata.PackageNotFoundError:
        return "unknown"


@cache
def revision() -> str:
    """The build's revision: baked by an image build, else `git describe`, else `unknown`."""
    try:
        baked = BUILD_VERSION_FILE.read_text(encoding="utf-8").strip()
    except OSError:
        baked = ""
    if baked:
        return baked
    if (SOURCE_ROOT / ".git").exists():  # a file in a worktree, a folder in a clone
        try:
            # git from PATH with fixed arguments: a checkout's own tool, no outside input.
            described = subprocess.run(  # noqa: S603
                ["git", "-C", str(SOURCE_ROOT), "describe", "--always", "--dirty"],  # noqa: S607
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        if described.returncode == 0 and described.stdout.strip():
            return described.stdout.strip()
    return "unknown"


def version_line(prog: str) -> str:
    """`PROG VERSION (revision REV)`, as `--version` prints it."""
    return f"{prog} {package_version()} (revision {revision()})"


__all__ = ["package_version", "revision", "version_line"]
