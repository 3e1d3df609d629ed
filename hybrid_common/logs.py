"""structlog, configured once per process: JSON lines for journald, colours on a terminal.

Both programs call `configure_logging()` at start-up. Every event goes through
`redact_secrets`, so an AWS secret key or session token cannot reach a log line, not even
inside a formatted exception. Under systemd, when the stream is the journal (JOURNAL_STREAM),
each line starts with its syslog priority (`<4>` for a warning), which journald takes as the
entry's priority (SyslogLevelPrefix=yes, the default): `journalctl -p warning` shows problems.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[REDACTED]"

# Environment variables whose values must never be printed, wherever they turn up.
SECRET_ENV_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
# Field names that hold secrets by their nature, whatever their value.
SECRET_FIELD = re.compile(
    r"(secret|passw(or)?d|token|credential|authorization|signature)", re.IGNORECASE
)
# A name that says "secret" in free text: `aws_secret_access_key`, `SecretAccessKey`,
# `X-Amz-Security-Token`, `secret`, `password`, `SessionToken`, `X-Amz-Signature`...
_SENSITIVE_NAME = r"[\w-]*(?:secret|passw(?:or)?d|token|signature)[\w-]*"
# Shapes of secrets in free text (a botocore exception that echoes a header, an XML error body
# from S3/STS, a credentials file, a presigned URL). Each pattern keeps group 1 (what names
# the secret) and replaces the rest of the match with REDACTED.
SECRET_TEXT = [
    # <SecretAccessKey>...</SecretAccessKey>, <SessionToken>...</SessionToken> (S3/STS XML).
    re.compile(rf"(?i)(<({_SENSITIVE_NAME})>)[^<]*(?=</\2>)"),
    # The whole SigV4 header: its Credential names the key, its Signature proves it.
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)[^\r\n'\"]+"),
    # name = value, name: value, "name": "value", name=value& in a query string.
    re.compile(rf"(?i)({_SENSITIVE_NAME}['\"]?\s*[:=]\s*['\"]?)[^\s'\",;&<>}}\]]+"),
    # STS session tokens by their fixed base64 opening, wherever they stand alone.
    re.compile(r"()(?:FwoGZXIvYXdz|FQoGZXIvYXdz|IQoJb3JpZ2lu)[A-Za-z0-9+/=]+"),
]


def _secret_values() -> list[str]:
    # Short values are skipped: redacting "x" everywhere would make logs unreadable and
    # such values are not real secrets.
    return [v for name in SECRET_ENV_VARS if len(v := os.environ.get(name, "")) >= 8]


def redact_text(text: str, secrets: Iterable[str] | None = None) -> str:
    """Remove known secret values and secret-shaped substrings from free text."""
    for value in _secret_values() if secrets is None else secrets:
        text = text.replace(value, REDACTED)
    for pattern in SECRET_TEXT:
        text = pattern.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    return text


def _redact(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and SECRET_FIELD.search(k) else _redact(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact(v, secrets) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    # Anything else (an exception, bytes, an SDK object) would be rendered by its repr after
    # this step, out of redaction's reach: render it here instead.
    text = f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else repr(value)
    return redact_text(text, secrets)


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: the last word before rendering, so exceptions are covered too."""
    secrets = _secret_values()
    for key in list(event_dict):
        if SECRET_FIELD.search(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact(event_dict[key], secrets)
    return event_dict


# syslog(3) priorities by structlog level name.
SYSLOG_PRIORITY = {
    "critical": 2,
    "error": 3,
    "exception": 3,
    "warning": 4,
    "warn": 4,
    "info": 6,
    "debug": 7,
}


def writes_to_journal(stream: TextIO) -> bool:
    """True if `stream` is the journal connection systemd gave us (JOURNAL_STREAM=dev:inode).

    Compared by device and inode, as sd_journal_stream_fd(3) says: a child whose output was
    redirected inherits the variable, yet must not write priority prefixes into a file.
    """
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor (e.g. StringIO)
        return False
    return expected == f"{info.st_dev}:{info.st_ino}"


class SyslogPrefixed:
    """Wraps a renderer: `<N>` before the rendered line, N the event's syslog priority.

    Rendering comes after every processor, so redaction stays the last step over the data.
    """

    def __init__(self, renderer: Processor) -> None:
        self.renderer = renderer

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        level = str(event_dict.get("level", name)).lower()
        rendered = self.renderer(logger, name, event_dict)
        if isinstance(rendered, bytes | bytearray):  # e.g. orjson renderers; ours give str
            rendered = bytes(rendered).decode("utf-8")
        return f"<{SYSLOG_PRIORITY.get(level, 6)}>{rendered}"


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def configure_logging(
    level: str = "info", *, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog (and stdlib logging) for this process.

    `json=None` means: JSON lines unless the stream is a terminal. Library records (botocore,
    moto, aiohttp) are rendered by the same processors, so redaction covers them too.
    """
    out = stream or sys.stdout
    as_json = (not out.isatty()) if json is None else json
    renderer: list[Processor]
    final: Processor
    if as_json:
        # Tracebacks become data before redaction, so they are scrubbed like any field.
        renderer = [
            # Without locals: a local variable can hold anything, including credentials.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            redact_secrets,
        ]
        final = structlog.processors.JSONRenderer()
    else:
        renderer = [structlog.processors.format_exc_info, redact_secrets]
        final = structlog.dev.ConsoleRenderer(colors=out.isatty())
    renderer.append(SyslogPrefixed(final) if writes_to_journal(out) else final)
    threshold = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*_shared_processors(), *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *_shared_processors()],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    # werkzeug (moto's server) sets its own logger to INFO and would log every request.
    for noisy in ("werkzeug", "botocore", "urllib3", "aiobotocore", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str | None = None, **initial: Any) -> structlog.stdlib.BoundLogger:
    """A logger bound to `initial` context; typed loosely so callers stay simple."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name, **initial)
    return logger


__all__ = [
    "REDACTED",
    "SYSLOG_PRIORITY",
    "SyslogPrefixed",
    "configure_logging",
    "get_logger",
    "redact_secrets",
    "redact_text",
    "writes_to_journal",
]
