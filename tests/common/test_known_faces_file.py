"""The dependency-free known-faces format: round trip, validation, and the function's numpy
reader (which parses through it) agreeing on every file: the same verdict and message, the same
faces, the same bytes, the same version."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybrid_common.known_faces_file import (
    ENCODING_SIZE,
    FORMAT,
    VERSION,
    Face,
    KnownFacesFile,
    KnownFacesFileError,
    distance,
    file_version,
)


def face(name: str = "ada", value: float = 0.1, source: str = "ada/1.jpg") -> Face:
    return Face(name, (value,) * ENCODING_SIZE, source)


def document(**changes: object) -> bytes:
    base: dict[str, object] = {
        "format": FORMAT,
        "version": VERSION,
        "faces": [{"name": "a", "source": "a.jpg", "encoding": [0.1] * 128}],
    }
    base.update(changes)
    return json.dumps(base).encode()


def test_round_trip_is_exact_and_canonical() -> None:
    known = KnownFacesFile((face("ada", 0.1), face("ada", 1 / 3), face("bo", -2e-17, "")))
    data = known.to_bytes()
    again = KnownFacesFile.from_bytes(data)
    assert again == known
    assert again.to_bytes() == data
    assert known.people == ["ada", "bo"]
    assert len(known.of("ada")) == 2
    assert known.content_version == again.content_version
    assert len(known.content_version) == 12


def test_editing_adds_and_removes_by_name() -> None:
    known = KnownFacesFile((face("ada"),)).adding(face("bo", 0.2))
    assert known.people == ["ada", "bo"]
    assert known.without("ada").people == ["bo"]
    assert known.content_version != known.without("ada").content_version


@pytest.mark.parametrize(
    "name", ["", "  ", "tab\there", "new\nline", " padded", "x" * 201, "bell\x07"]
)
def test_a_new_name_must_be_one_printable_line(name: str) -> None:
    with pytest.raises(KnownFacesFileError, match="name"):
        KnownFacesFile().adding(face(name))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x04garbage", "pickle"),
        (b"not json", "not a JSON"),
        (b"[]", "top level"),
        (document(format="other"), "format"),
        (document(version=2), "unsupported version"),
        (document(faces={}), "'faces' must be a list"),
        (document(faces=[1]), r"faces\[0\]: expected an object"),
        (document(faces=[{"name": "", "encoding": [0.0] * 128}]), "name"),
        (document(faces=[{"name": "a", "encoding": [0.0] * 127}]), "127"),
        (document(faces=[{"name": "a", "encoding": [True] * 128}]), "non-number"),
        (document(faces=[{"name": "a", "source": 3, "encoding": [0.0] * 128}]), "source"),
        (b'{"format": "hybridsphere.known-faces", "version": 1, "faces": '
         b'[{"name": "a", "encoding": [NaN' + b", 0" * 127 + b"]}]}", "non-finite"),
    ],
)  # fmt: skip
def test_invalid_files_are_refused_with_the_reason(data: bytes, message: str) -> None:
    with pytest.raises(KnownFacesFileError, match=message):
        KnownFacesFile.from_bytes(data, origin="x.json")


# A known-faces file is read from S3 and from pull requests: a hostile one must get the same
# clear refusal, not an OverflowError (an integer too large for a float), a ValueError (an
# integer past Python's 4,300-digit limit) or a RecursionError (deep nesting) from the parser.
HOSTILE = {
    "a 400-digit integer": document(faces=[{"name": "a", "encoding": [10**400] + [0] * 127}]),
    "a 5,000-digit integer": b'{"format": "hybridsphere.known-faces", "version": 1, "faces": '
    b'[{"name": "a", "encoding": [' + b"9" * 5000 + b", 0" * 127 + b"]}]}",
    "nesting 100,000 deep": b'{"faces": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


@pytest.mark.parametrize("data", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_numbers_and_nesting_are_refused_clearly(data: bytes) -> None:
    from lambda_fn.known_faces import KnownFaces, KnownFacesError

    with pytest.raises(KnownFacesFileError, match=r"^x\.json: ") as plain:
        KnownFacesFile.from_bytes(data, origin="x.json")
    with pytest.raises(KnownFacesError) as numpy:
        KnownFaces.from_bytes(data, origin="x.json")
    assert str(numpy.value) == str(plain.value)


def test_distance_is_euclidean() -> None:
    assert distance([0.0, 3.0], [4.0, 0.0]) == 5.0


# --- the function's reader, lambda_fn/known_faces.py (numpy), parses through this module ---

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
anything = st.one_of(
    finite, st.integers(-3, 3), st.booleans(), st.none(), st.text(max_size=2),
    st.just(math.inf), st.just(math.nan),
)  # fmt: skip
encodings = st.one_of(
    st.lists(finite, min_size=ENCODING_SIZE, max_size=ENCODING_SIZE),
    st.lists(anything, min_size=ENCODING_SIZE, max_size=ENCODING_SIZE),
    st.lists(finite, max_size=3),
    anything,
)
entries = st.one_of(
    st.fixed_dictionaries(
        {"name": st.one_of(st.text(max_size=6), st.integers()), "encoding": encodings},
        optional={"source": st.one_of(st.text(max_size=6), st.integers())},
    ),
    anything,
)
documents = st.fixed_dictionaries(
    {
        "format": st.sampled_from([FORMAT, "other"]),
        "version": st.sampled_from([VERSION, 2, "1"]),
        "faces": st.one_of(st.lists(entries, max_size=3), anything),
    }
)


def _numpy_verdict(data: bytes) -> tuple[str, object]:
    from lambda_fn.known_faces import KnownFaces, KnownFacesError  # the function's reader

    try:
        known = KnownFaces.from_bytes(data)
    except KnownFacesError as error:  # the function's own type, so the handler can catch it
        return ("error", str(error))
    return ("ok", (known.names, known.sources, known.encodings.tolist(), known.to_bytes()))


def _plain_verdict(data: bytes) -> tuple[str, object]:
    try:
        known = KnownFacesFile.from_bytes(data)
    except KnownFacesFileError as error:
        return ("error", str(error))
    faces = known.faces
    return (
        "ok",
        ([f.name for f in faces], [f.source for f in faces], [list(f.encoding) for f in faces],
         known.to_bytes()),
    )  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(documents)
def test_both_readers_agree_on_every_document(doc: dict[str, object]) -> None:
    data = json.dumps(doc).encode()
    assert _plain_verdict(data) == _numpy_verdict(data)


def test_both_readers_agree_on_a_pickle_and_non_json() -> None:
    for data in (pickle.dumps({"name": ["a"]}), b"\xff\xfe", b"{"):
        verdict = _plain_verdict(data)
        assert verdict[0] == "error" and verdict == _numpy_verdict(data)


@pytest.mark.parametrize(
    ("name", "encoding"),
    [("", [0.0] * 128), ("a", [0.0] * 127), ("a", [math.nan] * 128), ("a", [True] * 128)],
)
def test_the_function_refuses_bad_lists_as_a_file_would(name: str, encoding: list[float]) -> None:
    import numpy as np

    from lambda_fn.known_faces import KnownFaces, KnownFacesError

    entry = {"name": name, "encoding": encoding}
    with pytest.raises(KnownFacesFileError) as plain:
        KnownFacesFile.from_entries([entry], origin="photos")
    with pytest.raises(KnownFacesError) as numpy:  # arrays, as enrolment and the pickle pass them
        KnownFaces.from_lists([name], [np.array(encoding)], origin="photos")
    assert str(numpy.value) == str(plain.value)


def test_both_compute_the_same_content_version() -> None:
    from lambda_fn.known_faces import KnownFaces
    from lambda_fn.metrics import known_faces_version

    known = KnownFacesFile((face("ada", 0.125), face("bo", 1 / 7)))
    assert known.content_version == known_faces_version(KnownFaces.from_bytes(known.to_bytes()))


def test_both_name_a_file_by_the_same_version(tmp_path: Path) -> None:
    from lambda_fn.known_faces import LiveKnownFaces, read_version

    path = tmp_path / "faces.json"
    path.write_bytes(KnownFacesFile((face("ada", 0.125),)).to_bytes())
    version = KnownFacesFile.load(path).version
    assert version == file_version(path.read_bytes())
    assert (
        read_version(path).version == LiveKnownFaces(str(path), None, 60).current.version == version
    )
