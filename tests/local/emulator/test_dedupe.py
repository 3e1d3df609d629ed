"""Duplicate S3 events: which message owns an object version, with bounded memory."""

from __future__ import annotations

import json

from local_stack.emulator.dedupe import DedupeRegistry, object_versions, versions_in_body


def _event(
    key: str, etag: str | None = "abc", name: str = "ObjectCreated:Put", at: str | None = None
) -> dict:
    obj: dict = {"key": key, "size": 1}
    if etag is not None:
        obj["eTag"] = etag
    record: dict = {
        "eventSource": "aws:s3",
        "eventName": name,
        "s3": {"bucket": {"name": "in"}, "object": obj},
    }
    if at is not None:
        record["eventTime"] = at
    return {"Records": [record]}


def test_versions_are_read_from_s3_events_with_decoded_keys() -> None:
    assert object_versions(_event("a%2Fb+c%2Bd.mp4")) == [("in", "a/b c+d.mp4", "", "abc", None)]
    assert versions_in_body(json.dumps(_event("x.mp4"))) == [("in", "x.mp4", "", "abc", None)]
    [timed] = object_versions(_event("x.mp4", at="2026-11-27T22:23:01.287Z"))
    assert timed.uploaded_at == 1795818181.287
    assert object_versions(_event("x.mp4", at="yesterday"))[0].uploaded_at is None
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


def test_the_same_bytes_uploaded_again_later_are_a_new_upload_not_a_duplicate() -> None:
    """Regression: the watcher re-uploads a video whose input object vanished; same key, same
    ETag. The runtime took it for a duplicate of the first upload and never answered it."""
    registry = DedupeRegistry(capacity=10)
    first = object_versions(
        _event("v.mp4", name="ObjectCreated:Put", at="2026-11-27T10:00:00.100Z")
    )
    # moto's twin event for the same multipart completion, milliseconds later: a duplicate.
    twin = object_versions(
        _event("v.mp4", name="ObjectCreated:CompleteMultipartUpload", at="2026-11-27T10:00:00.140Z")
    )
    again = object_versions(_event("v.mp4", at="2026-11-27T10:00:07.000Z"))
    assert registry.claim("m1", first)
    assert not registry.claim("m2", twin)
    assert registry.claim("m3", again), "uploaded again 7 s later: processed"
    assert not registry.claim("m4", again), "and its own duplicates are dropped in turn"
    assert registry.claim("m3", again), "while its owner's retries pass"
