"""lambda_fn/settings.py: one settings class reads the environment; the core's options do not."""

from __future__ import annotations

import pytest

from lambda_fn.settings import FunctionSettings, RecognitionOptions


def test_the_function_settings_read_the_recognition_options_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HYBRID_MODE", "first-match")
    monkeypatch.setenv("HYBRID_TOLERANCE", "0.5")
    options = FunctionSettings().recognition
    assert isinstance(options, RecognitionOptions)
    assert (options.mode, options.tolerance) == ("first-match", 0.5)


def test_the_recognition_options_never_read_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HYBRID_MODE", "first-match")
    monkeypatch.setenv("HYBRID_WORKERS", "7")
    options = RecognitionOptions()
    assert (options.mode, options.workers) == ("all", 0)
    assert RecognitionOptions(workers=2).workers == 2
