"""What every program's settings share: the HYBRID_ prefix, the log options, readable errors.

Validation errors become lines a person can act on, and exit status 78.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError

# sysexits.h: "configuration error". systemd units use RestartPreventExitStatus=78 so a bad
# config is not restarted in a loop.
EX_CONFIG = 78

# Every setting of every program is also the environment variable HYBRID_<NAME>.
ENV_PREFIX = "HYBRID_"

LogLevel = Literal["debug", "info", "warning", "error"]
# `auto`: JSON lines when stderr/stdout is not a terminal (journald), colours when it is.
LogFormat = Literal["auto", "json", "console"]
_JSON_BY_FORMAT: dict[str, bool | None] = {"auto": None, "json": True, "console": False}


def json_logs(log_format: LogFormat) -> bool | None:
    """The `log_format` setting as `configure_logging`'s `json` argument (None: by terminal)."""
    return _JSON_BY_FORMAT[log_format]


SettingsT = TypeVar("SettingsT", bound=BaseModel)


def describe_errors(error: ValidationError, env_prefix: str = "") -> list[str]:
    """One readable line per problem, naming the setting (and its environment variable)."""
    lines = []
    for item in error.errors():
        name = ".".join(str(part) for part in item["loc"]) or "(settings)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown setting (check the spelling; see config/hybrid-watcher.example.toml)"
        hint = f" (env {env_prefix}{name.upper()})" if env_prefix and "." not in name else ""
        lines.append(f"config error: {name}{hint}: {message}")
    return lines


def exit_on_config_error(error: ValidationError | ValueError, env_prefix: str = "") -> NoReturn:
    """Print the problems to stderr and exit with EX_CONFIG."""
    if isinstance(error, ValidationError):
        lines = describe_errors(error, env_prefix)
    else:
        lines = [f"config error: {error}"]
    for line in lines:
        print(line, file=sys.stderr)
    raise SystemExit(EX_CONFIG)


def check_writable_dir(path: Path) -> Path:
    """The folder, or its nearest existing parent, must be writable by this process."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"{probe} exists and is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{probe} is not writable by this user (uid {os.getuid()})")
    return path


def check_bucket_name(name: str) -> str:
    """S3's own rules, so a typo fails at start-up rather than at the first upload."""
    if not name:
        raise ValueError("must not be empty")
    if not 3 <= len(name) <= 63:
        raise ValueError(f"bucket names are 3-63 characters (got {len(name)})")
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789.-")
    if not set(name) <= allowed or not name[0].isalnum() or not name[-1].isalnum():
        raise ValueError(
            "bucket names use lower-case letters, digits, '.' and '-', "
            f"and start and end with a letter or digit (got {name!r})"
        )
    return name
