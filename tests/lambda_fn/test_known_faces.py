"""The known-faces store: exact round trip, validation with clear errors, and rolling out a
new version to a warm container (moto's server over HTTP)."""

from __future__ import annotations

import hashlib
import json
import pickle
import uuid
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from structlog.testing import capture_logs

from hybrid_common.known_faces_file import FORMAT, VERSION, file_version
from lambda_fn.known_faces import KnownFaces, KnownFacesError, LiveKnownFaces


def sample_store(people: int = 3, per_person: int = 2) -> KnownFaces:
    rng = np.random.default_rng(7)
    names = [f"person_{i}" for i in range(people) for _ in range(per_person)]
    encodings = rng.normal(0, 0.1, size=(len(names), 128))
    sources = [f"{name}/photo{j}.jpg" for j, name in enumerate(names)]
    return KnownFaces(names=names, encodings=encodings, sources=sources)


def document(**changes: object) -> bytes:
    base: dict[str, object] = {
        "format": FORMAT,
        "version": VERSION,
        "faces": [{"name": "a", "source": "a.jpg", "encoding": [0.1] * 128}],
    }
    base.update(changes)
    return json.dumps(base).encode()


def test_round_trip_is_exact(tmp_path: Path) -> None:
    store = sample_store()
    path = tmp_path / "known_faces.json"
    store.save(path)
    loaded = KnownFaces.load(path)
    assert loaded.names == store.names
    assert loaded.sources == store.sources
    np.testing.assert_array_equal(loaded.encodings, store.encodings)  # float64 exactly
    assert loaded.people == ["person_0", "person_1", "person_2"]
    assert KnownFaces.from_bytes(path.read_bytes()).names == store.names


def test_store_is_immutable() -> None:
    store = sample_store()
    with pytest.raises(ValueError, match="read-only"):
        store.encodings[0, 0] = 1.0
    with pytest.raises(AttributeError):
        store.names = []  # type: ignore[misc]


def test_empty_store_round_trips(tmp_path: Path) -> None:
    empty = KnownFaces(names=[], encodings=np.zeros((0, 128)))
    empty.save(tmp_path / "empty.json")
    assert len(KnownFaces.load(tmp_path / "empty.json")) == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not a JSON known-faces file"),
        (b"[1, 2]", "expected a JSON object"),
        (document(format="something-else"), "'format' must be"),
        (document(version=2), "unsupported version 2"),
        (document(faces={}), "'faces' must be a list"),
        (document(faces=[{"encoding": [0.0] * 128}]), r"faces\[0\]: 'name' must be"),
        (document(faces=[{"name": "a", "encoding": [0.0] * 127}]), "128 numbers, got 127"),
        (document(faces=[{"name": "a", "encoding": ["x"] * 128}]), "non-finite or non-number"),
        (
            b'{"format": "%s", "version": 1, "faces": [{"name": "a", "encoding": [NaN'
            % FORMAT.encode()
            + b", 0" * 127
            + b"]}]}",
            "non-finite",
        ),
        (pickle.dumps({"name": [], "encoding": []}, protocol=3), "import-pickle"),
    ],
)
def test_invalid_files_fail_with_a_clear_message(data: bytes, message: str) -> None:
    with pytest.raises(KnownFacesError, match=message) as caught:
        KnownFaces.from_bytes(data, origin="s3://bucket/faces.json")
    assert str(caught.value).startswith("s3://bucket/faces.json")


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(KnownFacesError, match=r"absent\.json: cannot read"):
        KnownFaces.load(tmp_path / "absent.json")


def test_mismatched_lists_are_refused() -> None:
    with pytest.raises(KnownFacesError, match="2 names, 1 encodings"):
        KnownFaces.from_lists(["a", "b"], [np.zeros(128)])


# -- rolling out a new version: LiveKnownFaces ------------------------------------------------


class Clock:
    """time.monotonic for the checks, moved by hand: the interval is minutes in production."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store_bucket(moto_endpoint: str) -> tuple[Any, str, list[int]]:
    """A bucket on moto's server, its client, and the status of every GetObject it answers."""
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing-not-real",
    )
    bucket = f"kf-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    statuses: list[int] = []

    def count(http_response: Any, **_: Any) -> None:
        statuses.append(http_response.status_code)

    s3.meta.events.register("after-call.s3.GetObject", count)
    return s3, bucket, statuses


def test_the_version_is_the_sha256_of_the_files_bytes() -> None:
    data = sample_store().to_bytes()
    assert file_version(data) == hashlib.sha256(data).hexdigest()


def test_a_pushed_version_is_used_once_the_check_interval_is_up(
    store_bucket: tuple[Any, str, list[int]],
) -> None:
    s3, bucket, statuses = store_bucket
    v1, v2 = sample_store(2), sample_store(3)
    s3.put_object(Bucket=bucket, Key="faces.json", Body=v1.to_bytes())
    clock = Clock()
    live = LiveKnownFaces(f"s3://{bucket}/faces.json", s3, 60, clock=clock)
    assert live.current.version == file_version(v1.to_bytes())
    assert live.current.source == f"s3://{bucket}/faces.json"
    assert live.current.faces.people == v1.people and statuses == [200]

    s3.put_object(Bucket=bucket, Key="faces.json", Body=v2.to_bytes())
    clock.now += 59
    assert live.refresh() == (live.current, False)
    assert statuses == [200]  # not even asked: the interval is not up
    clock.now += 2
    with capture_logs() as logs:
        current, changed = live.refresh()
    assert changed and current.faces.people == v2.people
    assert current.version == file_version(v2.to_bytes())
    assert [e["event"] for e in logs] == ["known_faces.reloaded"]
    clock.now += 61
    assert live.refresh() == (current, False)
    assert statuses == [200, 200, 304]  # unchanged: a conditional GET, no body


def test_an_invalid_version_is_refused_and_the_current_one_kept(
    store_bucket: tuple[Any, str, list[int]],
) -> None:
    s3, bucket, statuses = store_bucket
    v1 = sample_store(2)
    s3.put_object(Bucket=bucket, Key="faces.json", Body=v1.to_bytes())
    clock = Clock()
    live = LiveKnownFaces(f"s3://{bucket}/faces.json", s3, 10, clock=clock)
    first = live.current
    s3.put_object(Bucket=bucket, Key="faces.json", Body=document(version=99))
    clock.now += 11
    with capture_logs() as logs:
        assert live.refresh() == (first, False)
    (event,) = logs
    assert event["event"] == "known_faces.invalid" and event["kept"] == first.version
    assert "unsupported version 99" in event["reason"]
    clock.now += 11
    assert live.refresh() == (first, False)
    assert statuses[-1] == 304  # the broken file is not fetched again until it changes
    s3.delete_object(Bucket=bucket, Key="faces.json")
    clock.now += 11
    with capture_logs() as logs:
        assert live.refresh() == (first, False)
    assert [e["event"] for e in logs] == ["known_faces.check_failed"]
    v3 = sample_store(4)
    s3.put_object(Bucket=bucket, Key="faces.json", Body=v3.to_bytes())
    clock.now += 11
    current, changed = live.refresh()
    assert changed and current.faces.people == v3.people


def test_a_path_is_read_again_when_the_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "faces.json"
    sample_store(2).save(path)
    clock = Clock()
    live = LiveKnownFaces(str(path), None, 0, clock=clock)
    assert live.refresh()[1] is False  # same file
    sample_store(5).save(path)  # written beside, then renamed over: a new file
    current, changed = live.refresh()
    assert changed and len(current.faces.people) == 5
    assert current.version == file_version(path.read_bytes())


def test_a_missing_file_fails_the_first_load_clearly(tmp_path: Path) -> None:
    with pytest.raises(KnownFacesError, match=r"nothing\.json"):
        LiveKnownFaces(str(tmp_path / "nothing.json"), None, 60)
