"""Key naming: properties that both the watcher and the function rely on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybrid_common.keys import (
    MAX_NAME_BYTES,
    InputKey,
    ResultKind,
    ResultNaming,
    result_key,
    safe_name,
    split_result_key,
    stem_of,
    validate_csv_key,
)

SAFE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@given(st.text(min_size=0, max_size=400))
def test_safe_name_is_always_key_safe_and_bounded(name: str) -> None:
    safe = safe_name(name)
    assert safe
    assert set(safe) <= SAFE_CHARS
    assert len(safe.encode()) <= MAX_NAME_BYTES + 11
    assert not safe.startswith((".", "-"))
    assert "/" not in safe and ".." not in safe.split(".")[0]


@given(st.text(min_size=1, max_size=100))
def test_safe_name_is_idempotent(name: str) -> None:
    assert safe_name(safe_name(name)) == safe_name(name)


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ("clip.mp4", "clip.mp4"),
        ("my holiday video.MOV", "my_holiday_video.mov"),
        ("café+crème.mp4", "cafe_creme.mp4"),
        ("../../etc/passwd", "passwd"),
        ("-rf.mp4", "rf.mp4"),
        ("line\nbreak.mkv", "line_break.mkv"),
        ("日本語.mp4", "video.mp4"),
    ],
)
def test_safe_name_examples(original: str, expected: str) -> None:
    assert safe_name(original) == expected


def test_input_key_round_trip() -> None:
    key = InputKey("videos", "vm-1", "20261127T190601Z-0a1b2c3d", "clip.mp4")
    assert key.key == "videos/vm-1/20261127T190601Z-0a1b2c3d/clip.mp4"
    assert InputKey.parse(key.key) == key
    assert key.node_prefix == "videos/vm-1/"


@pytest.mark.parametrize("node", ["", "../x", "a/b", "-x", "x" * 64])
def test_input_key_refuses_segments_that_could_escape(node: str) -> None:
    with pytest.raises(ValueError, match="node id"):
        InputKey("videos", node, "s1", "clip.mp4")


def test_input_key_refuses_unsafe_names() -> None:
    with pytest.raises(ValueError, match="key-safe"):
        InputKey("videos", "n", "s", "../evil.mp4")


@given(
    st.sampled_from(list(ResultKind)),
    st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,20}\.(mp4|mkv|mov)", fullmatch=True),
)
def test_result_key_and_split_are_inverse(kind: ResultKind, name: str) -> None:
    key = f"videos/node/sub/{name}"
    stem, parsed = split_result_key(result_key(key, kind)) or ("", None)
    assert parsed is kind
    assert stem == stem_of(key)


def test_stem_keeps_inner_dots() -> None:
    assert stem_of("a/b/clip.v2.mp4") == "a/b/clip.v2"
    assert result_key("a/clip.v2.mp4", ResultKind.ERROR) == "a/clip.v2.error.json"
    assert split_result_key("a/clip.faces.jpg") == ("a/clip", ResultKind.FACES)
    assert split_result_key("a/clip.mp4") is None


@pytest.mark.parametrize(
    ("template", "name", "expected"),
    [
        ("{stem}.csv", "videos/n/s/test_0.mp4", "videos/n/s/test_0.csv"),
        ("{stem}", "test_0.mp4", "test_0"),  # the classic handler's key
        ("{stem}", "videos/n/s/clip.v2.mp4", "videos/n/s/clip.v2"),
        ("{stem}-result.txt", "a/clip.mov", "a/clip-result.txt"),
    ],
)
def test_csv_key_template_names_the_csv(template: str, name: str, expected: str) -> None:
    naming = ResultNaming(template)
    assert naming.key(name, ResultKind.CSV) == expected
    assert (stem_of(name), ResultKind.CSV) in naming.finals(expected)
    # The companions keep their names whatever the CSV's.
    assert naming.key(name, ResultKind.DETAILS) == stem_of(name) + ".json"
    assert naming.key(name, ResultKind.ERROR) == stem_of(name) + ".error.json"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{stem}.json", "companion"),
        ("{stem}.error.json", "companion"),
        ("{stem}.faces.jpg", "companion"),
        ("{stem}.x.json", "companion"),
        ("{stem}.jpg", "companion"),
        ("results/{stem}.csv", "start with"),
        ("{name}.csv", "start with"),
        ("{stem}.{ext}", "only"),
        ("{stem}{stem}", "only"),
        ("{stem}.c}sv", "only"),
        ("{stem}/result.csv", "only"),
        ("test_0.csv", "start with"),
        ("", "start with"),
    ],
)
def test_csv_key_template_is_refused_when_it_could_collide(template: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        validate_csv_key(template)


@given(
    st.sampled_from(["{stem}.csv", "{stem}", "{stem}-out.csv", "{stem}_r"]),
    st.sampled_from(list(ResultKind)),
    st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,20}\.(mp4|mkv|mov)", fullmatch=True),
)
def test_every_final_result_key_is_found_by_its_stem(
    template: str, kind: ResultKind, name: str
) -> None:
    naming = ResultNaming(template)
    key = f"videos/node/sub/{name}"
    result = naming.key(key, kind)
    finals = naming.finals(result)
    if kind in (ResultKind.CSV, ResultKind.ERROR):
        assert (stem_of(key), kind) in finals
    else:  # a details file or a contact sheet never stands for this input's answer
        assert all(stem != stem_of(key) for stem, _ in finals)
