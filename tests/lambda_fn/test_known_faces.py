"""The known-faces store: exact round trip, validation with clear errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from lambda_fn.known_faces import FORMAT, VERSION, KnownFaces, KnownFacesError


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
