"""`hybrid-watcher config`: the settings in effect and where each value came from.

Sources follow WatcherSettings' own order: environment (HYBRID_<NAME>) > config file >
default. Secrets never appear: a setting whose name says secret, a password inside a URL, and
any value of the AWS secret variables are shown as `[REDACTED]`; AWS credentials are reported
only by where they come from.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretBytes, SecretStr

from hybrid_common.config import ENV_PREFIX
from hybrid_common.logs import REDACTED, SECRET_FIELD, redact_text
from watcher.settings import CONFIG_ENV, DEMO_CONFIG_FILE, WatcherSettings, config_file_path

# A password in a URL's user info: scheme://user:PASSWORD@host.
URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/:@\s]*:)[^/@\s]+(?P<tail>@)", re.I)


@dataclass(frozen=True, slots=True)
class EffectiveSetting:
    name: str
    value: Any  # JSON-ready, secrets already hidden
    source: str  # "environment (HYBRID_X)", "file (PATH)" or "default"


def _hidden(name: str, value: Any, raw: Any) -> Any:
    if isinstance(raw, SecretStr | SecretBytes) or SECRET_FIELD.search(name):
        return REDACTED if value not in (None, "") else value
    if isinstance(value, str):
        return redact_text(URL_PASSWORD.sub(rf"\g<head>{REDACTED}\g<tail>", value))
    if isinstance(value, list):
        return [_hidden(name, v, v) for v in value]
    return value


def config_file_origin() -> str:
    """Why this config file (or none) is the one in use."""
    path = config_file_path()
    named = os.environ.get(CONFIG_ENV)
    if named is not None:
        return f"{path} ({CONFIG_ENV})" if path else f"none ({CONFIG_ENV} is empty)"
    if path is None:
        return "none found (HYBRID_CONFIG, ./var/hybrid-watcher.toml, /etc/hybrid-watcher/...)"
    if path == DEMO_CONFIG_FILE:
        return f"{path.resolve()} (the demo's, in this folder)"
    return str(path)


def effective_settings(settings: WatcherSettings) -> list[EffectiveSetting]:
    """Every setting with its shown value and its source."""
    path = config_file_path()
    from_file: dict[str, Any] = {}
    if path is not None and path.is_file():
        from_file = tomllib.loads(path.read_text(encoding="utf-8"))
    environment = {k.upper() for k in os.environ}
    dumped = settings.model_dump(mode="json")
    rows = []
    for name in type(settings).model_fields:
        variable = f"{ENV_PREFIX}{name.upper()}"
        if variable in environment:
            source = f"environment ({variable})"
        elif name in from_file:
            source = f"file ({Path(path or '').resolve()})"
        else:
            source = "default"
        rows.append(
            EffectiveSetting(name, _hidden(name, dumped[name], getattr(settings, name)), source)
        )
    return rows


def aws_credentials_origin() -> str:
    """Where botocore would take credentials from, never their values."""
    import botocore.session

    credentials = botocore.session.get_session().get_credentials()
    if credentials is None:
        return "none found (the local cloud does not need any)"
    return str(getattr(credentials, "method", "found"))


def render_text(rows: list[EffectiveSetting], config_file: str, aws: str) -> str:
    """TOML-like lines, each with its source as a comment: readable, and pasteable."""

    def shown(value: Any) -> str:
        return "(unset)" if value is None else json.dumps(value, ensure_ascii=False)

    width = min(56, max(len(f"{r.name} = {shown(r.value)}") for r in rows))
    lines = [f"# config file: {config_file}", f"# AWS credentials: {aws}"]
    for row in rows:
        assignment = f"{row.name} = {shown(row.value)}"
        lines.append(f"{assignment:<{width}}  # {row.source}")
    return "\n".join(lines)


def render_json(rows: list[EffectiveSetting], config_file: str, aws: str) -> str:
    settings = {r.name: {"value": r.value, "source": r.source} for r in rows}
    doc = {"config_file": config_file, "aws_credentials": aws, "settings": settings}
    return json.dumps(doc, indent=2)


__all__ = [
    "EffectiveSetting",
    "aws_credentials_origin",
    "config_file_origin",
    "effective_settings",
    "render_json",
    "render_text",
]
