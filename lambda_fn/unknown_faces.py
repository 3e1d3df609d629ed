"""Faces that matched nobody, grouped per video so each unknown person is one addressable entry.

A group gathers the faces the tracker followed (same track: same person) and the faces whose
descriptors lie near the group's mean. It keeps when it was seen, in how many samples, its
largest crop (for the contact sheet), and its representative descriptor: the mean of its
faces' descriptors, which an operator can enrol later with no dlib (`hybrid-watcher faces
enrol`). Pure numpy: no models, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from lambda_fn.known_faces import KnownFaces

# Faces join a group whose mean descriptor is at most this far. dlib's own face clustering
# example (examples/face_clustering.py) links faces at 0.5, under the 0.6 match threshold so
# that two similar strangers are not merged. Measured (README, "Unknown faces"): a face lies
# at most 0.35 (1 sample/s) / 0.48 (5 samples/s) from its person's mean in the Hamilton clip
# and the course clips; the Hamilton stranger lies 0.58 from Lin-Manuel Miranda's mean.
GROUP_DISTANCE = 0.5
DESCRIPTOR_DECIMALS = 6
# At most this many groups per result, those seen in the most samples: each costs ~2.5 KB of
# `<stem>.json` (128 numbers) and a tile of the contact sheet, and the watcher refuses a
# details document over 256 KiB (`result_json_max_bytes`); 50 groups take ~125 KB.
MAX_GROUPS = 50

Crop = tuple[np.ndarray, tuple[int, int, int, int]]


@dataclass(eq=False)  # holds numpy arrays: no field-wise ==
class UnknownGroup:
    """One unknown person of a video; `id` (u1, u2, ...) is given once the video is done."""

    first_seen_s: float
    last_seen_s: float
    times: set[float] = field(default_factory=set)  # the samples it was seen in
    total: np.ndarray = field(default_factory=lambda: np.zeros(128))  # sum of descriptors
    encodings: int = 0  # how many descriptors `total` adds up
    area: int = 0  # of the face box of `crop`
    crop: np.ndarray | None = None  # RGB, the largest sighting
    crop_box: tuple[int, int, int, int] | None = None  # top, right, bottom, left in the crop
    id: str = ""
    nearest: str | None = None  # the nearest known person to `descriptor`
    nearest_distance: float = float("inf")

    @property
    def samples(self) -> int:
        return len(self.times)

    @property
    def descriptor(self) -> np.ndarray:
        """The mean of the group's descriptors (dlib's are not unit-norm: no renormalising)."""
        return self.total / max(1, self.encodings)

    def absorb(self, other: UnknownGroup) -> None:
        self.first_seen_s = min(self.first_seen_s, other.first_seen_s)
        self.last_seen_s = max(self.last_seen_s, other.last_seen_s)
        self.times |= other.times
        self.total = self.total + other.total
        self.encodings += other.encodings
        if other.area > self.area:
            self.area, self.crop, self.crop_box = other.area, other.crop, other.crop_box


class UnknownFaces:
    """Collects one video's unmatched faces into groups, in order of first appearance."""

    def __init__(self, threshold: float = GROUP_DISTANCE) -> None:
        self.threshold = threshold
        self._groups: list[UnknownGroup] = []
        self._by_track: dict[int, UnknownGroup] = {}

    def saw(
        self,
        track: int,
        time_s: float,
        descriptor: np.ndarray | None,
        area: int,
        crop: Callable[[], Crop],
    ) -> None:
        """A face nobody matched: `descriptor` is None when it was followed, not encoded."""
        group = self._by_track.get(track)
        if group is None and descriptor is not None:
            group = self._nearest(descriptor)
        if group is None:
            group = UnknownGroup(time_s, time_s)
            self._groups.append(group)
        self._by_track[track] = group
        group.first_seen_s = min(group.first_seen_s, time_s)
        group.last_seen_s = max(group.last_seen_s, time_s)
        group.times.add(time_s)
        if descriptor is not None:
            group.total = group.total + descriptor
            group.encodings += 1
        if area > group.area:
            group.area = area
            group.crop, group.crop_box = crop()

    def _nearest(self, descriptor: np.ndarray) -> UnknownGroup | None:
        encoded = [g for g in self._groups if g.encodings]
        if not encoded:
            return None
        distances = [float(np.linalg.norm(g.descriptor - descriptor)) for g in encoded]
        best = int(np.argmin(distances))
        return encoded[best] if distances[best] <= self.threshold else None

    def groups(self, known: KnownFaces) -> list[UnknownGroup]:
        """The final groups: merged where their means came close, numbered, nearest known."""
        return finish(self._groups, known, self.threshold)


def finish(
    groups: Iterable[UnknownGroup],
    known: KnownFaces,
    threshold: float = GROUP_DISTANCE,
    limit: int = MAX_GROUPS,
) -> list[UnknownGroup]:
    """Merge groups whose means are within `threshold` (closest pair first), keep the `limit`
    seen in the most samples, then give each its id in order of first appearance and its
    nearest known person.

    Also how the segments of a split video are joined: the same stranger seen in two
    segments is one group. A group never encoded (cannot happen from `UnknownFaces`: a track
    starts with an encoding) is kept as it is.
    """
    merged = [g for g in groups if g.encodings or g.times]
    while True:
        pair = _closest_pair(merged)
        if pair is None or pair[0] > threshold:
            break
        _, i, j = pair
        merged[i].absorb(merged[j])
        del merged[j]
    merged.sort(key=lambda g: g.first_seen_s)
    if len(merged) > limit:
        # sorted() is stable: among groups seen as often, the earlier ones stay.
        kept = set(map(id, sorted(merged, key=lambda g: -g.samples)[:limit]))
        merged = [g for g in merged if id(g) in kept]
    for number, group in enumerate(merged, start=1):
        group.id = f"u{number}"
        group.nearest, group.nearest_distance = _nearest_known(group, known)
    return merged


def _closest_pair(groups: list[UnknownGroup]) -> tuple[float, int, int] | None:
    encoded = [i for i, g in enumerate(groups) if g.encodings]
    best: tuple[float, int, int] | None = None
    for a, i in enumerate(encoded):
        for j in encoded[a + 1 :]:
            distance = float(np.linalg.norm(groups[i].descriptor - groups[j].descriptor))
            if best is None or distance < best[0]:
                best = (distance, i, j)
    return best


def _nearest_known(group: UnknownGroup, known: KnownFaces) -> tuple[str | None, float]:
    if not len(known) or not group.encodings:
        return None, float("inf")
    distances = np.linalg.norm(known.encodings - group.descriptor, axis=1)
    nearest = int(np.argmin(distances))
    return known.names[nearest], float(distances[nearest])
