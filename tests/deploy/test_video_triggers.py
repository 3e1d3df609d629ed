"""The SAM template's S3 triggers agree with hybrid_common.video_suffixes, in both modes.

Every extension the watcher accepts must invoke the function, and so must a video put at any
key of the input bucket: the template's notification filters are read (resolved for concrete
parameters) and evaluated the way S3 evaluates them, against the one definition. Deployed in
moto, the notifications read back and delivered are checked in test_stack_in_moto.py; local
provisioning's in tests/watcher/test_provision.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from cfn_template import load_template, static_names

from hybrid_common.video_suffixes import (
    TRIGGER_PREFIX,
    TRIGGER_SUFFIXES,
    VIDEO_EXTENSIONS,
    VIDEO_SUFFIXES,
    triggers,
)
from watcher.settings import WatcherSettings

TEMPLATE = load_template()
MODES = [
    pytest.param("s3", "LambdaConfigurations", "Function", id="s3"),
    pytest.param("sqs", "QueueConfigurations", "Queue", id="sqs"),
]
# Keys a person or the watcher could create, videos or not, at any depth.
SAMPLE_KEYS = [
    *(f"clip{suffix}" for suffix in TRIGGER_SUFFIXES),  # the bucket's root: `aws s3 cp`
    *(f"videos/vm-1/s-1/clip{suffix}" for suffix in VIDEO_SUFFIXES),  # the watcher's keys
    *(f"other/deeper/clip{suffix}" for suffix in VIDEO_SUFFIXES),
    "clip.Mp4",  # mixed case: no S3 rule can match every spelling
    "clip.mp4.txt",
    "notes.txt",
    "_assets/known_faces.json",
    "config/known_faces.json",
    "clipmp4",
    "videos/vm-1/s-1/clip.csv",
    "videos/vm-1/s-1/clip.error.json",
]


def notification_rules(mode: str, kind: str, target: str, **params: str) -> list[dict[str, str]]:
    """Per configuration of the input bucket: its filter rules as {name: value}."""
    r = static_names(TEMPLATE, {"TriggerMode": mode, **params})
    bucket = r.resolve(TEMPLATE["Resources"]["InputBucket"]["Properties"])
    config: dict[str, Any] = bucket["NotificationConfiguration"]
    assert set(config) == {kind}
    arn = r.attributes["FaceRecognitionFunction.Arn" if mode == "s3" else "InputEventsQueue.Arn"]
    rules = []
    for entry in config[kind]:
        assert entry["Event"] == "s3:ObjectCreated:*"
        assert entry[target] == arn
        pairs = [(rule["Name"], rule["Value"]) for rule in entry["Filter"]["S3Key"]["Rules"]]
        names = [name for name, _ in pairs]
        assert len(set(names)) == len(names), f"S3 allows one rule of each name: {pairs}"
        rules.append(dict(pairs))
    return rules


def s3_matches(rules: list[dict[str, str]], key: str) -> bool:
    """S3's evaluation: a key notifies if any configuration's prefix and suffix both match."""
    return any(
        key.startswith(rule.get("prefix", "")) and key.endswith(rule.get("suffix", ""))
        for rule in rules
    )


@pytest.mark.parametrize(("mode", "kind", "target"), MODES)
@pytest.mark.parametrize("key_prefix", ["videos", "clips"])
def test_the_templates_triggers_are_the_video_suffixes_at_any_key(
    mode: str, kind: str, target: str, key_prefix: str
) -> None:
    rules = notification_rules(mode, kind, target, KeyPrefix=key_prefix)
    # One configuration per trigger suffix, with the one prefix rule (none: every key).
    assert sorted(rule["suffix"] for rule in rules) == sorted(TRIGGER_SUFFIXES)
    assert {rule.get("prefix", "") for rule in rules} == {TRIGGER_PREFIX}
    for key in SAMPLE_KEYS:
        assert s3_matches(rules, key) == triggers(key), key


def test_the_sample_keys_cover_both_outcomes() -> None:
    """Guards the test above: it compares answers that differ from key to key."""
    assert triggers("clip.MP4") and triggers("a/b/clip.ts") and triggers("clip.3gp")
    assert not triggers("clip.Mp4") and not triggers("_assets/known_faces.json")


def test_no_two_trigger_suffixes_overlap() -> None:
    """S3 refuses overlapping notification configurations for one event type (one suffix
    ending with another, under prefixes that overlap): the bucket would not deploy."""
    for first in TRIGGER_SUFFIXES:
        for second in TRIGGER_SUFFIXES:
            if first != second:
                assert not first.endswith(second), (first, second)


def test_the_watcher_accepts_exactly_the_video_extensions() -> None:
    default = WatcherSettings.model_fields["allowed_extensions"].get_default(
        call_default_factory=True
    )
    assert tuple(default) == VIDEO_EXTENSIONS
