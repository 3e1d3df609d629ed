"""Faces: matching by smallest distance, adaptive detection of small faces, tracking."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lambda_fn.faces import (
    DETECT_PASSES,
    MATCH_MARGIN,
    Box,
    FaceTracker,
    TrackedFace,
    detect_faces,
    encode_face,
    face_landmarks,
    match_face,
    signature,
)
from lambda_fn.known_faces import KnownFaces
from tests.lambda_fn.clips import load_picture


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def test_match_takes_the_smallest_distance_not_the_first_hit() -> None:
    probe = np.zeros(128)
    first = np.zeros(128)
    first[0] = 0.55  # within tolerance, but listed first
    nearest = np.zeros(128)
    nearest[1] = 0.30
    known = KnownFaces(names=["first", "nearest"], encodings=np.stack([first, nearest]))
    match = match_face(probe, known, tolerance=0.6)
    assert (match.name, match.distance) == ("nearest", pytest.approx(0.30))
    assert match.runner_up == pytest.approx(0.55)


def test_match_beyond_tolerance_is_unknown_but_names_the_nearest() -> None:
    known = KnownFaces(names=["far"], encodings=np.full((1, 128), 0.1))
    match = match_face(np.zeros(128), known, tolerance=0.6)
    assert match.name is None and match.nearest == "far"
    assert match.distance == pytest.approx(0.1 * np.sqrt(128))
    nobody = match_face(np.zeros(128), KnownFaces(names=[], encodings=np.zeros((0, 128))), 0.6)
    assert (nobody.name, nobody.nearest, nobody.distance) == (None, None, math.inf)


def axis(distance: float, dimension: int) -> np.ndarray:
    vector = np.zeros(128)
    vector[dimension] = distance
    return vector


def test_a_face_about_as_near_two_people_is_nobody_however_near() -> None:
    """The Hamilton clip's stranger: 0.599 from one known person, 0.609 from another."""
    known = KnownFaces(names=["freeman", "washington"], encodings=[axis(0.599, 0), axis(0.609, 1)])
    match = match_face(np.zeros(128), known, tolerance=0.6)
    assert match.name is None
    assert (match.nearest, match.distance) == ("freeman", pytest.approx(0.599))
    # The classic rule (margin 0) names him.
    assert match_face(np.zeros(128), known, tolerance=0.6, margin=0).name == "freeman"


def test_a_clear_match_keeps_its_name_and_several_encodings_of_one_person_are_not_rivals() -> None:
    """floki: 0.569 from himself, 0.699 from the next person (margin 0.13)."""
    known = KnownFaces(
        names=["floki", "floki", "diesel"],
        encodings=[axis(0.569, 0), axis(0.58, 1), axis(0.699, 2)],
    )
    match = match_face(np.zeros(128), known, tolerance=0.6)
    assert (match.name, match.runner_up) == ("floki", pytest.approx(0.699))
    alone = KnownFaces(names=["floki"], encodings=[axis(0.569, 0)])
    assert match_face(np.zeros(128), alone, tolerance=0.6).name == "floki"  # no rival at all
    assert pytest.approx(0.08) == MATCH_MARGIN


def test_box_iou() -> None:
    box = Box(top=0, right=10, bottom=10, left=0)
    assert box.iou(box) == 1.0
    assert box.iou(Box(top=0, right=20, bottom=10, left=10)) == 0.0
    assert box.iou(Box(top=0, right=15, bottom=10, left=5)) == pytest.approx(50 / 150)


@pytest.fixture(scope="module")
def obama(shared_data: Path) -> np.ndarray:
    return load_picture(shared_data / "faces" / "probes" / "obama-720p.jpg")


@pytest.fixture(scope="module")
def biden(shared_data: Path) -> np.ndarray:
    return load_picture(shared_data / "faces" / "known" / "joe_biden" / "biden.jpg", width=640)


def test_detection_maps_boxes_back_to_full_resolution(obama: np.ndarray) -> None:
    small = np.ascontiguousarray(obama[::2, ::2])  # 640 x 360
    boxes, used = detect_faces(small, obama)
    assert len(boxes) == 1 and used == 0
    (box,) = boxes
    full_boxes, _ = detect_faces(obama, obama, (("full", 0),))
    assert box.iou(full_boxes[0]) > 0.6


@pytest.mark.slow
def test_a_far_face_is_found_by_the_full_resolution_pass(obama: np.ndarray) -> None:
    """A ~60 px face in a 1920x1080 frame: invisible at 640 px, found at full resolution."""
    frame = np.full((1080, 1920, 3), 90, dtype=np.uint8)
    boxes, _ = detect_faces(obama, obama, (("full", 0),))
    face = boxes[0]
    pad = (face.bottom - face.top) // 2
    crop = obama[face.top - pad : face.bottom + pad, face.left - pad : face.right + pad]
    step = max(1, round((face.bottom - face.top) / 60))
    tiny = crop[::step, ::step]
    frame[500 : 500 + tiny.shape[0], 1500 : 1500 + tiny.shape[1]] = tiny
    small = np.ascontiguousarray(frame[::3, ::3])

    quick, _ = detect_faces(small, frame, DETECT_PASSES[:-1])
    assert quick == []  # what detection on the downscaled frame alone would miss
    found, used = detect_faces(small, frame)
    assert used == len(DETECT_PASSES) - 1
    assert len(found) == 1 and found[0].left >= 1500 and found[0].top >= 500


@pytest.mark.slow
def test_encoding_equals_face_recognition(obama: np.ndarray) -> None:
    """Same models, same 5-point landmarks: the same descriptor as face_recognition's."""
    import face_recognition

    (box,), _ = detect_faces(obama, obama, (("full", 1),))
    ours = encode_face(obama, face_landmarks(obama, box))
    (theirs,) = face_recognition.face_encodings(obama, [(box.top, box.right, box.bottom, box.left)])
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def _tracked(image: np.ndarray, name: str) -> TrackedFace:
    (box,), _ = detect_faces(image, image, (("full", 0),))
    return TrackedFace(box, signature(image, face_landmarks(image, box)), name, 0.4, 1)


def test_tracker_follows_the_same_face_and_not_another(
    obama: np.ndarray, biden: np.ndarray
) -> None:
    shifted = np.roll(obama, 12, axis=1)  # the same face, moved a little
    tracker = FaceTracker()
    tracker.add(_tracked(obama, "obama"))
    tracker.next_sample()
    moved = _tracked(shifted, "?")
    followed = tracker.follow(moved.box, moved.signature)
    assert followed is not None and followed.name == "obama"

    # Another person in the same place is not the same face.
    tracker = FaceTracker()
    tracker.add(_tracked(obama, "obama"))
    tracker.next_sample()
    other = _tracked(biden, "?")
    assert tracker.follow(tracker.previous[0].box, other.signature) is None


def test_thorough_search_adds_a_small_face_beside_a_large_one(obama: np.ndarray) -> None:
    """A far face next to a near one: the quick pass stops at the near one; thorough finds both."""
    frame = np.full((720, 1280, 3), 90, dtype=np.uint8)
    (face,), _ = detect_faces(obama, obama, (("full", 0),))
    pad = (face.bottom - face.top) // 2
    crop = obama[face.top - pad : face.bottom + pad, face.left - pad : face.right + pad]
    frame[: crop.shape[0], : crop.shape[1]] = crop  # near: as large as in the photo
    step = max(1, round((face.bottom - face.top) / 110))
    far = crop[::step, ::step]  # a ~110 px face: ~55 px on the 640 px detection frame
    frame[400 : 400 + far.shape[0], 1000 : 1000 + far.shape[1]] = far
    small = np.ascontiguousarray(frame[::2, ::2])

    quick, _ = detect_faces(small, frame)
    thorough, _ = detect_faces(small, frame, thorough=True)
    assert len(quick) == 1
    assert len(thorough) == 2
    assert any(box.left >= 1000 and box.top >= 400 for box in thorough)


def test_the_last_pass_is_capped_at_1920_px() -> None:
    """A 4K frame is searched at 1920 px: a face-less 4K frame must not cost seconds."""
    from lambda_fn.faces import FULL_PASS_MAX_WIDTH, _detection_frame

    image = np.zeros((2160, 3840, 3), dtype=np.uint8)
    small = np.zeros((360, 640, 3), dtype=np.uint8)
    assert _detection_frame("full", small, image).shape == (1080, FULL_PASS_MAX_WIDTH, 3)
    assert _detection_frame("mid", small, image).shape == (540, 960, 3)
    hd = np.zeros((720, 1280, 3), dtype=np.uint8)
    assert _detection_frame("full", small, hd) is hd
