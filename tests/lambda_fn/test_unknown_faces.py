"""Grouping unmatched faces: tracks, descriptor distance, merging segments, ids and nearest."""

from __future__ import annotations

import numpy as np
import pytest

from lambda_fn.known_faces import KnownFaces
from lambda_fn.unknown_faces import GROUP_DISTANCE, MAX_GROUPS, UnknownFaces, finish

NOBODY = KnownFaces(names=[], encodings=np.zeros((0, 128)))


def point(*coordinates: float) -> np.ndarray:
    vector = np.zeros(128)
    vector[: len(coordinates)] = coordinates
    return vector


def crop_of(value: int) -> object:
    """A crop maker whose crop tells which sighting it came from."""
    return lambda: (np.full((4, 4, 3), value, dtype=np.uint8), (1, 3, 3, 1))


def test_a_followed_face_stays_in_its_group_and_near_faces_join_it() -> None:
    faces = UnknownFaces()
    faces.saw(1, 0.0, point(0.0), 100, crop_of(1))
    faces.saw(1, 1.0, None, 400, crop_of(2))  # followed: no descriptor
    faces.saw(2, 5.0, point(0.3), 50, crop_of(3))  # another track, the same person
    faces.saw(3, 6.0, point(2.0), 80, crop_of(4))  # someone else
    (one, other) = faces.groups(NOBODY)
    assert (one.id, one.first_seen_s, one.last_seen_s, one.samples) == ("u1", 0.0, 5.0, 3)
    assert one.encodings == 2 and one.descriptor == pytest.approx(point(0.15))
    assert one.crop is not None and one.crop[0, 0, 0] == 2  # the largest sighting
    assert (other.id, other.samples, other.first_seen_s) == ("u2", 1, 6.0)


def test_faces_further_than_the_group_distance_are_separate_people() -> None:
    faces = UnknownFaces()
    faces.saw(1, 0.0, point(0.0), 10, crop_of(1))
    faces.saw(2, 1.0, point(GROUP_DISTANCE + 0.05), 10, crop_of(2))
    assert [g.id for g in faces.groups(NOBODY)] == ["u1", "u2"]


def test_groups_of_split_segments_are_joined_and_numbered_by_first_appearance() -> None:
    early, late = UnknownFaces(), UnknownFaces()
    early.saw(1, 0.0, point(0.0), 10, crop_of(1))
    early.saw(2, 2.0, point(3.0), 10, crop_of(2))
    late.saw(1, 1.0, point(3.1), 10, crop_of(3))  # the second stranger, seen first here
    late.saw(2, 6.0, point(0.1), 90, crop_of(4))  # the first stranger again
    joined = finish([*early.groups(NOBODY), *late.groups(NOBODY)], NOBODY)
    assert [(g.id, g.first_seen_s, g.last_seen_s, g.samples) for g in joined] == [
        ("u1", 0.0, 6.0, 2),
        ("u2", 1.0, 2.0, 2),
    ]
    assert joined[0].crop is not None and joined[0].crop[0, 0, 0] == 4


def test_each_group_names_its_nearest_known_person() -> None:
    known = KnownFaces(names=["ann", "bob"], encodings=[point(0.0, 0.7), point(2.0)])
    faces = UnknownFaces()
    faces.saw(1, 0.0, point(0.0), 10, crop_of(1))
    (group,) = faces.groups(known)
    assert (group.nearest, group.nearest_distance) == ("ann", pytest.approx(0.7))
    assert UnknownFaces().groups(known) == []


def test_a_crowd_keeps_the_groups_seen_most_so_the_result_stays_small() -> None:
    faces = UnknownFaces()
    for person in range(MAX_GROUPS + 10):
        sightings = 3 if person % 2 else 1  # odd people are seen in three samples
        for sample in range(sightings):
            faces.saw(person, person + sample / 10, point(person * 2.0), 10, crop_of(person))
    groups = faces.groups(NOBODY)
    assert len(groups) == MAX_GROUPS
    assert [g.id for g in groups] == [f"u{i}" for i in range(1, MAX_GROUPS + 1)]
    assert [g.first_seen_s for g in groups] == sorted(g.first_seen_s for g in groups)
    assert sum(g.samples == 3 for g in groups) == (MAX_GROUPS + 10) // 2  # all the frequent
