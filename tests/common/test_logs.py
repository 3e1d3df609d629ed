"""Logs: JSON lines, UTC timestamps, context, and secrets never printed."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from hybrid_common.logs import REDACTED, configure_logging, get_logger

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "FQoGZXIvYXdzEXAMPLESESSIONTOKEN1234567890"


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    out = io.StringIO()
    configure_logging("debug", json=True, stream=out)
    yield out
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_events_are_json_with_utc_iso_timestamps_and_context(stream: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(submission_id="s-1")
    get_logger("t").info("upload.completed", key="videos/n/s/a.mp4", bytes=10)
    [event] = lines(stream)
    assert event["event"] == "upload.completed"
    assert event["submission_id"] == "s-1"
    assert event["level"] == "info"
    assert str(event["timestamp"]).endswith("Z")


def test_secret_values_never_reach_a_line(stream: io.StringIO) -> None:
    log = get_logger("t")
    log.info("config.loaded", detail=f"key={SECRET}", nested={"list": [TOKEN]})
    log.info("creds.seen", aws_secret_access_key="anything", session_token="x")
    try:
        raise RuntimeError(f"signature failed for secret {SECRET} token {TOKEN}")
    except RuntimeError:
        log.exception("upload.failed")
    logging.getLogger("botocore.auth").warning("header X-Amz-Security-Token=%s", TOKEN)
    text = stream.getvalue()
    assert SECRET not in text and TOKEN not in text
    assert text.count(REDACTED) >= 6
    assert len(lines(stream)) == 4


def test_secret_shaped_text_is_redacted_without_env(
    stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    get_logger("t").warning("odd.text", text="aws_secret_access_key = abcdEFGH1234abcdEFGH1234")
    assert "abcdEFGH1234" not in stream.getvalue()


def test_console_renderer_when_asked() -> None:
    out = io.StringIO()
    configure_logging("info", json=False, stream=out)
    try:
        get_logger("t").info("watcher.started", node="n1")
        assert "watcher.started" in out.getvalue()
        assert not out.getvalue().startswith("{")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
