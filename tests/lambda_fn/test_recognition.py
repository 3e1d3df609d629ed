"""The recognition core on real videos: the course clips, a known-faces store built from photos,
synthetic clips for tracking, unknown faces and no faces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lambda_fn import recognition
from lambda_fn.enrolment import build_from_photos
from lambda_fn.frames import VideoInfo
from lambda_fn.known_faces import KnownFaces
from lambda_fn.recognition import (
    PersonSeen,
    Recognition,
    UnknownGroup,
    VideoError,
    merge_segments,
    recognise,
)
from lambda_fn.recognition_pool import RecognitionPool
from lambda_fn.safe_pickle import load_course_encodings
from lambda_fn.settings import DescriptorEngine, RecognitionOptions
from tests.course import COURSE_CLIPS
from tests.lambda_fn.clips import level_painter, load_picture, still_painter, write_clip

EXPECTED = COURSE_CLIPS


@pytest.fixture(scope="module")
def course_faces(shared_data: Path) -> KnownFaces:
    names, encodings = load_course_encodings(shared_data / "cse546" / "encoding")
    return KnownFaces.from_lists(names, encodings)


@pytest.fixture(scope="module")
def course_results(
    shared_data: Path, course_faces: KnownFaces
) -> dict[str, dict[str, Recognition]]:
    """All 8 course clips in both modes, over the process pool (both cores), once per module."""
    clips = sorted((shared_data / "cse546" / "test_case_1").glob("*.mp4"))
    results: dict[str, dict[str, Recognition]] = {}
    for mode in ("all", "first-match"):
        with RecognitionPool(course_faces, RecognitionOptions(mode=mode)) as pool:
            outcomes = dict(pool.run(clips))
        results[mode] = {}
        for path, outcome in outcomes.items():
            assert isinstance(outcome, Recognition), outcome
            results[mode][path.name] = outcome
    return results


@pytest.mark.slow
def test_course_clips_all_people(course_results: dict[str, dict[str, Recognition]]) -> None:
    results = course_results["all"]
    assert {name: r.names for name, r in results.items()} == {
        name: [person] for name, person in EXPECTED.items()
    }
    for result in results.values():
        (person,) = result.people
        assert person.first_seen_s == 0.0
        assert person.distance < 0.6
        assert person.frames == result.frames_sampled >= 2
        assert result.unknown_faces == []
        assert person.crop is not None and person.crop.shape[2] == 3
        assert set(result.timings) >= {"decode", "detect", "encode", "match", "total"}
    assert results["test_6.mp4"].people[0].distance > 0.5  # floki: close to the tolerance
    # Tracking: fewer encodings than faces seen.
    assert sum(r.faces_encoded for r in results.values()) < sum(
        r.faces_encoded + r.faces_tracked for r in results.values()
    )


@pytest.mark.slow
def test_course_clips_first_match(course_results: dict[str, dict[str, Recognition]]) -> None:
    results = course_results["first-match"]
    assert {name: r.names for name, r in results.items()} == {
        name: [person] for name, person in EXPECTED.items()
    }
    # Classic behaviour: stop at the first recognised face, here in the first sample.
    assert all(r.frames_sampled == 1 and r.faces_encoded == 1 for r in results.values())


@pytest.mark.slow
def test_hamilton_clip_with_a_store_built_from_photos(shared_data: Path, tmp_path: Path) -> None:
    faces = shared_data / "faces"
    photos = tmp_path / "photos"
    photos.mkdir()
    for person in ("lin_manuel_miranda", "alex_lacamoire"):
        (photos / person).symlink_to(faces / "known" / person, target_is_directory=True)
    store, skipped = build_from_photos(photos)
    assert skipped == [] and store.people == ["alex_lacamoire", "lin_manuel_miranda"]
    clip = faces / "probes" / "short_hamilton_clip.mp4"
    result = recognise(clip, store, RecognitionOptions())
    assert "lin_manuel_miranda" in result.names
    assert result.frames_sampled >= 9

    # The same video split in two time segments over two processes: the same answer.
    with RecognitionPool(store, RecognitionOptions(workers=2)) as pool:
        split = pool.recognise(clip)
    assert split.timings["total"] > 0 and split.frames_sampled == result.frames_sampled
    assert [(p.name, p.first_seen_s, p.last_seen_s, p.frames) for p in split.people] == [
        (p.name, p.first_seen_s, p.last_seen_s, p.frames) for p in result.people
    ]
    assert min(p.distance for p in split.people) == pytest.approx(
        min(p.distance for p in result.people), abs=1e-9
    )


@pytest.fixture(scope="module")
def hamilton_with_course_faces(shared_data: Path, course_faces: KnownFaces) -> Recognition:
    clip = shared_data / "faces" / "probes" / "short_hamilton_clip.mp4"
    return recognise(clip, course_faces, RecognitionOptions())


@pytest.mark.slow
def test_a_stranger_about_as_near_two_known_people_is_not_named(
    hamilton_with_course_faces: Recognition,
) -> None:
    """The Hamilton clip holds none of the course's people. Its last face is 0.599 from
    morgan_freeman and 0.609 from denzel_washington: once named morgan_freeman."""
    assert hamilton_with_course_faces.names == []


@pytest.mark.slow
def test_the_hamilton_clips_two_strangers_are_two_stable_groups(
    shared_data: Path, course_faces: KnownFaces, hamilton_with_course_faces: Recognition
) -> None:
    result = hamilton_with_course_faces
    # Lin-Manuel Miranda in six samples over several shots (6 tracks), then another man.
    assert [(g.id, g.samples, g.first_seen_s, g.last_seen_s) for g in result.unknown_faces] == [
        ("u1", 6, 0.0, pytest.approx(7.007)),
        ("u2", 1, pytest.approx(8.008), pytest.approx(8.008)),
    ]
    second = result.unknown_faces[1]
    assert (second.nearest, second.nearest_distance) == (
        "morgan_freeman",
        pytest.approx(0.599, abs=0.005),
    )
    # Split over two processes, the groups of both segments are joined again.
    clip = shared_data / "faces" / "probes" / "short_hamilton_clip.mp4"
    with RecognitionPool(course_faces, RecognitionOptions(workers=2)) as pool:
        split = pool.recognise(clip)
    assert [(g.id, g.samples) for g in split.unknown_faces] == [("u1", 6), ("u2", 1)]
    for whole, part in zip(result.unknown_faces, split.unknown_faces, strict=True):
        assert np.linalg.norm(whole.descriptor - part.descriptor) < 0.05


@pytest.fixture(scope="module")
def obama_store(shared_data: Path) -> KnownFaces:
    return build_from_photos(shared_data / "faces" / "known")[0]


@pytest.mark.slow
def test_still_face_is_encoded_once_then_tracked(
    shared_data: Path, obama_store: KnownFaces, tmp_path: Path
) -> None:
    picture = load_picture(shared_data / "faces" / "probes" / "obama-720p.jpg", width=640)
    clip = write_clip(tmp_path / "still.mp4", still_painter(picture), frames=40, fps=10)
    tracked = recognise(clip, obama_store, RecognitionOptions())
    assert tracked.names == ["barack_obama"]
    assert (tracked.frames_sampled, tracked.faces_encoded, tracked.faces_tracked) == (4, 1, 3)
    assert tracked.people[0].frames == 4
    assert tracked.people[0].last_seen_s == pytest.approx(3.0, abs=0.2)

    untracked = recognise(clip, obama_store, RecognitionOptions(track_faces=False))
    assert (untracked.faces_encoded, untracked.faces_tracked) == (4, 0)
    # Each frame is compressed a little differently: the best of 4 encodings may be closer.
    assert untracked.people[0].distance == pytest.approx(tracked.people[0].distance, abs=0.01)


@pytest.mark.slow
def test_an_unknown_face_is_one_group_whose_descriptor_enrols_the_person(
    shared_data: Path, obama_store: KnownFaces, tmp_path: Path
) -> None:
    store = obama_store
    without_obama = KnownFaces.from_lists(
        [n for n in store.names if n != "barack_obama"],
        [e for n, e in zip(store.names, store.encodings, strict=True) if n != "barack_obama"],
    )
    picture = load_picture(shared_data / "faces" / "probes" / "obama-720p.jpg", width=640)
    # 8 samples: followed from sample to sample, and encoded again once it has aged.
    clip = write_clip(tmp_path / "stranger.mp4", still_painter(picture), frames=80, fps=10)
    result = recognise(clip, without_obama, RecognitionOptions())
    assert result.people == []
    assert (result.frames_sampled, result.faces_encoded, result.faces_tracked) == (8, 2, 6)
    (group,) = result.unknown_faces
    assert (group.id, group.samples, group.encodings) == ("u1", 8, 2)
    assert (group.first_seen_s, group.last_seen_s) == (0.0, pytest.approx(7.0, abs=0.2))
    assert group.nearest in without_obama.people and group.nearest_distance > 0.6
    assert group.crop is not None and group.crop_box is not None
    # Enrolled under a name (as `hybrid-watcher faces enrol` does), the group is recognised.
    enrolled = KnownFaces.from_lists(
        [*without_obama.names, "stranger"], [*without_obama.encodings, group.descriptor]
    )
    again = recognise(clip, enrolled, RecognitionOptions())
    assert again.names == ["stranger"] and again.unknown_faces == []
    assert again.people[0].distance < 0.1


def test_video_without_faces(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "grey.mp4", level_painter(320, 180, 30), frames=30, fps=10)
    known = KnownFaces(names=[], encodings=[])
    result = recognise(clip, known, RecognitionOptions())
    assert (result.people, result.unknown_faces, result.frames_sampled) == ([], [], 3)
    assert result.video.codec == "h264" and result.video.width == 320


def test_unreadable_video_is_a_video_error(tmp_path: Path) -> None:
    path = tmp_path / "text.mp4"
    path.write_text("hello")
    with pytest.raises(VideoError) as caught:
        recognise(path, KnownFaces(names=[], encodings=[]), RecognitionOptions())
    assert caught.value.code == "not_a_video"


def test_pool_reports_errors_per_video_in_input_order(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    good = write_clip(tmp_path / "good.mp4", level_painter(160, 96, 12), frames=12, fps=10)
    known = KnownFaces(names=[], encodings=[])
    with RecognitionPool(known, RecognitionOptions(workers=2)) as pool:
        outcomes = list(pool.run([bad, good, bad]))
    assert [path.name for path, _ in outcomes] == ["bad.mp4", "good.mp4", "bad.mp4"]
    assert isinstance(outcomes[0][1], VideoError) and outcomes[0][1].code == "not_a_video"
    assert isinstance(outcomes[1][1], Recognition)


def stranger(first: float, last: float, at: float) -> list[UnknownGroup]:
    """One unknown group whose descriptor is `at` along the first axis."""
    descriptor = np.zeros(128)
    descriptor[0] = at
    return [UnknownGroup(first, last, {first, last}, descriptor, 1)]


def test_merge_segments_keeps_first_appearance_and_best_match() -> None:
    info = VideoInfo(20.0, 30.0, 640, 360, 0, "h264", "mp4")
    early = Recognition(
        info,
        10,
        [PersonSeen("b", 2.0, 9.0, 5, 0.5), PersonSeen("a", 4.0, 4.0, 1, 0.4)],
        stranger(7.0, 8.0, 0.0),
        {"decode": 1.0, "total": 3.0},
        faces_encoded=3,
    )
    late = Recognition(
        info,
        10,
        [PersonSeen("c", 10.0, 11.0, 2, 0.3), PersonSeen("b", 10.0, 19.0, 9, 0.2)],
        stranger(10.0, 12.0, 0.1) + stranger(13.0, 13.0, 3.0),
        {"decode": 2.0, "total": 3.0},
        faces_encoded=2,
    )
    merged = merge_segments([early, late], wall_s=3.5, known=KnownFaces(names=[], encodings=[]))
    assert [
        (p.name, p.first_seen_s, p.last_seen_s, p.frames, p.distance) for p in merged.people
    ] == [
        ("b", 2.0, 19.0, 14, 0.2),
        ("a", 4.0, 4.0, 1, 0.4),
        ("c", 10.0, 11.0, 2, 0.3),
    ]
    assert (merged.frames_sampled, merged.faces_encoded) == (20, 5)
    # The stranger at the boundary is one group; the other one is a second group.
    assert [(g.id, g.first_seen_s, g.last_seen_s) for g in merged.unknown_faces] == [
        ("u1", 7.0, 12.0),
        ("u2", 13.0, 13.0),
    ]
    assert merged.timings == {"decode": 3.0, "total": 3.5}
    assert early.people[0].frames == 5  # the parts are not modified


def test_a_video_over_the_time_budget_fails_cleanly(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "grey.mp4", level_painter(160, 96, 30), frames=30, fps=10)
    known = KnownFaces(names=[], encodings=[])
    with pytest.raises(VideoError) as caught:
        recognise(clip, known, RecognitionOptions(max_seconds=1e-6))
    assert caught.value.code == "too_slow"


@pytest.mark.parametrize("engine", ["numpy", "dlib"])
def test_the_descriptor_option_chooses_the_engine_that_encodes(
    shared_data: Path,
    obama_store: KnownFaces,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    engine: DescriptorEngine,
) -> None:
    """HYBRID_DESCRIPTOR / --descriptor reach the encoder; both engines give the answer."""
    used: list[str] = []
    real_encode = recognition.encode_face

    def recording(image: np.ndarray, landmarks: Any, chosen: DescriptorEngine = "numpy") -> Any:
        used.append(chosen)
        return real_encode(image, landmarks, chosen)

    monkeypatch.setattr(recognition, "encode_face", recording)
    picture = load_picture(shared_data / "faces" / "probes" / "obama-720p.jpg", width=640)
    clip = write_clip(tmp_path / "still.mp4", still_painter(picture), frames=20, fps=10)
    result = recognise(clip, obama_store, RecognitionOptions(descriptor=engine))
    assert result.names == ["barack_obama"]
    assert used == [engine]
