"""Duplicate S3 events: which message owns an object version, with bounded memory."""

from __future__ import annotations

import json

from lambda_fn.dedupe import DedupeRegistry, object_versions, versions_in_body


def _event(key: str, etag: str | None = "abc", name: str = "ObjectCreated:Put") -> dict:
    obj: dict = {"key": key, "size": 1}
    if etag is not None:
        obj["eTag"] = etag
    return {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": name,
                "s3": {"bucket": {"name": "in"}, "object": obj},
            }
        ]
    }


def test_versions_are_read_from_s3_events_with_decoded_keys() -> None:
    assert object_versions(_event("a%2Fb+c%2Bd.mp4")) == [("in", "a/b c+d.mp4", "", "abc")]
    assert versions_in_body(json.dumps(_event("x.mp4"))) == [("in", "x.mp4", "", "abc")]
    assert versions_in_body('{"Service": "Amazon S3", "Event": "s3:TestEvent"}') == []
    assert versions_in_body("not json") == []
    assert object_versions(_event("x.mp4", name="ObjectRemoved:Delete")) == []


def test_the_first_message_owns_a_version_and_its_retries_still_pass() -> None:
    registry = DedupeRegistry(capacity=10)
    put = object_versions(_event("v.mp4"))
    assert registry.claim("m1", put)
    assert not registry.claim("m2", put), "the CompleteMultipartUpload twin is dropped"
    assert registry.claim("m1", put), "a redelivery of the owner is a retry, not a duplicate"
    assert registry.claim("m3", object_versions(_event("v.mp4", etag="new"))), "new version"


def test_events_without_an_etag_are_never_dropped() -> None:
    registry = DedupeRegistry(capacity=10)
    versions = object_versions(_event("v.mp4", etag=None))
    assert registry.claim("m1", versions)
    assert registry.claim("m2", versions)
    assert registry.claim("m3", [])


def test_memory_is_bounded_forgetting_the_oldest_first() -> None:
    registry = DedupeRegistry(capacity=3)
    for i in range(5):
        assert registry.claim(f"m{i}", object_versions(_event(f"{i}.mp4")))
    assert len(registry) == 3
    assert registry.claim("late", object_versions(_event("0.mp4"))), "forgotten: processed again"
    assert not registry.claim("late", object_versions(_event("4.mp4")))
