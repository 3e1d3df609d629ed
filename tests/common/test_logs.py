"""Logs: JSON lines, UTC timestamps, context, and secrets never printed."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from hybrid_common.logs import REDACTED, configure_logging, get_logger, redact_text

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


# Secret shapes seen in real AWS error bodies, SDK debug output, credentials files and URLs.
# Each value below is unique and must not survive redaction, wherever the text turns up.
SHAPED = "Zq8XmR2vT5kLp9Ww3Ny7Hc4Jd6Bf1Gs0Ea"
SECRET_SHAPES = [
    f"<Error><SecretAccessKey>{SHAPED}</SecretAccessKey></Error>",
    f"<Credentials><SessionToken>{SHAPED}</SessionToken></Credentials>",
    f"bad request: secret={SHAPED}&x=1",
    f'{{"SecretAccessKey": "{SHAPED}", "AccessKeyId": "AKIAEXAMPLE"}}',
    f"aws_secret_access_key = {SHAPED}",
    f"aws_session_token={SHAPED}",
    f"[default]\naws_secret_access_key={SHAPED}\n",
    "Authorization: AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20261130/us-east-1/s3/aws4_request, "
    f"SignedHeaders=host;x-amz-date, Signature={SHAPED}",
    f"https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature={SHAPED}",
    f"https://b.s3.amazonaws.com/k?X-Amz-Security-Token={SHAPED}&X-Amz-Expires=60",
    f"{{'Password': '{SHAPED}'}}",
    f"token: {SHAPED}",
    f"session token IQoJb3JpZ2luX2VjE{SHAPED}//////////wEaCXVzLWVhc3QtMSJHMEUCIQ",
    f"session token FwoGZXIvYXdzE{SHAPED}DKt1P2dDqH1z",
]


@pytest.mark.parametrize("text", SECRET_SHAPES)
@pytest.mark.parametrize("where", ["field", "nested", "exception", "exception_object"])
def test_secret_shapes_are_redacted_wherever_they_turn_up(
    stream: io.StringIO, monkeypatch: pytest.MonkeyPatch, text: str, where: str
) -> None:
    # No environment secrets: the shapes alone must be recognised.
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    log = get_logger("t")
    if where == "field":
        log.warning("s3.error", body=text)
    elif where == "nested":
        log.warning("s3.error", response={"Error": {"Body": [("x", text)], "Code": "Denied"}})
    elif where == "exception":
        try:
            raise RuntimeError(text)
        except RuntimeError:
            log.exception("s3.failed")
    else:
        log.warning("s3.failed", error=ValueError(text))
    out = stream.getvalue()
    assert SHAPED not in out
    assert REDACTED in out
    assert len(lines(stream)) == 1


@given(st.sampled_from(SECRET_SHAPES), st.text(max_size=30), st.text(max_size=30))
def test_secret_shapes_inside_any_text_are_redacted(shape: str, before: str, after: str) -> None:
    assert SHAPED not in redact_text(f"{before} {shape} {after}", secrets=[])


def test_ordinary_text_is_left_alone() -> None:
    text = "upload.completed key=videos/n/s/a.mp4 bytes=10 etag=abc sha256=0f3a"
    assert redact_text(text, secrets=[]) == text
