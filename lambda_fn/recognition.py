"""The recognition core: a video file and the known faces in, the people seen in it out.

Pure apart from reading the file: no cloud, no output files. The handler and
`hybrid-lambda process` both call `recognise`; `lambda_fn.recognition_pool` spreads many videos over
processes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from hybrid_common.logs import get_logger
from lambda_fn.faces import (
    DETECT_PASSES,
    TRACK_MAX_AGE,
    Box,
    FaceTracker,
    TrackedFace,
    detect_faces,
    encode_face,
    face_landmarks,
    match_face,
    signature,
)
from lambda_fn.frames import SampledFrame, VideoError, VideoInfo, VideoReader
from lambda_fn.known_faces import KnownFaces
from lambda_fn.settings import RecognitionOptions
from lambda_fn.unknown_faces import UnknownFaces, UnknownGroup, finish

__all__ = ["PersonSeen", "Recognition", "UnknownGroup", "VideoError", "VideoInfo", "recognise"]

log = get_logger(__name__)

CROP_MARGIN = 0.35  # of the face box, on each side, so the contact sheet shows some context
CROP_MAX_SIDE = 160


@dataclass(eq=False)  # eq would compare the crops (numpy arrays): ambiguous
class PersonSeen:
    """A known person found in the video; `distance` is the best (smallest) match distance."""

    name: str
    first_seen_s: float
    last_seen_s: float
    frames: int
    distance: float
    crop: np.ndarray | None = None  # RGB, at most CROP_MAX_SIDE pixels a side
    crop_box: tuple[int, int, int, int] | None = None  # face in the crop: top, right, bottom, left


@dataclass
class Recognition:
    """Everything one video produced: who, when, and what it cost."""

    video: VideoInfo
    frames_sampled: int
    people: list[PersonSeen]  # in order of first appearance
    unknown_faces: list[UnknownGroup]  # people matching nobody, in order of first appearance
    timings: dict[str, float]  # seconds: decode, detect, track, encode, match, total, cpu
    faces_encoded: int = 0
    faces_tracked: int = 0  # faces recognised by tracking instead of encoding
    decode_errors: int = 0

    @property
    def names(self) -> list[str]:
        return [person.name for person in self.people]


@dataclass
class _Stopwatch:
    totals: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("decode", "detect", "track", "encode", "match"), 0.0)
    )

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] += time.perf_counter() - start


def recognise(
    path: Path,
    known: KnownFaces,
    options: RecognitionOptions,
    *,
    segment: tuple[float, float] | None = None,
    deadline: float | None = None,
) -> Recognition:
    """Find the known people in a video file; raises VideoError for videos it cannot read.

    `segment` (start, end seconds) limits the work to those samples: `lambda_fn.recognition_pool`
    splits long videos over processes. `deadline` (a `time.monotonic()` value, comparable
    across processes on Linux) ends the work with `too_slow` if it comes before
    `options.max_seconds` does: the handler derives it from the invocation's remaining time.
    """
    start_s, end_s = segment or (0.0, math.inf)
    started, cpu_started = time.perf_counter(), time.process_time()
    limit = Limit.of(options.max_seconds, deadline)
    scan = _Scan(known, options)
    with scan.watch.stage("decode"):
        reader = VideoReader(
            Path(path),
            sample_fps=options.sample_fps,
            detect_width=options.detect_width,
            max_duration_s=options.max_duration_s,
            max_frames=options.max_frames,
            decode_threads=options.decode_threads,
            start_s=start_s,
            end_s=end_s,
        )
    with reader:
        frames: Generator[SampledFrame, None, None] = reader.frames()
        while True:
            with scan.watch.stage("decode"):
                frame = next(frames, None)
            if frame is None:
                break
            limit.check()
            if scan.look_at(frame):
                frames.close()  # first-match: the rest of the video is never decoded
                break
    timings = {name: round(seconds, 4) for name, seconds in scan.watch.totals.items()}
    timings["total"] = round(time.perf_counter() - started, 4)
    # CPU of this process (all its threads): unlike wall time, not inflated by a busy machine.
    timings["cpu"] = round(time.process_time() - cpu_started, 4)
    result = Recognition(
        video=reader.info,
        frames_sampled=scan.sampled,
        people=list(scan.people.values()),
        unknown_faces=scan.unknown.groups(known),
        timings=timings,
        faces_encoded=scan.encoded,
        faces_tracked=scan.tracked,
        decode_errors=reader.decode_errors,
    )
    log.debug(
        "video.recognised",
        path=str(path),
        people=result.names,
        unknown_faces=len(result.unknown_faces),
        frames_sampled=result.frames_sampled,
        faces_encoded=result.faces_encoded,
        faces_tracked=result.faces_tracked,
        **{f"{k}_s": v for k, v in timings.items()},
    )
    return result


@dataclass(frozen=True, slots=True)
class Limit:
    """When a video's work must stop, and which limit that is (for the error's message)."""

    started: float  # time.monotonic()
    at: float  # time.monotonic()
    reason: str

    @classmethod
    def of(cls, max_seconds: float, deadline: float | None) -> Limit:
        now = time.monotonic()
        if deadline is not None and deadline < now + max_seconds:
            return cls(now, deadline, "the invocation's remaining time less its margin")
        return cls(now, now + max_seconds, "max_seconds")

    def check(self) -> None:
        """Raise `too_slow` once the limit is past (checked between samples)."""
        now = time.monotonic()
        if now > self.at:
            raise VideoError(
                "too_slow",
                f"still running after {now - self.started:.1f} s; stopped at the limit of "
                f"{max(0.0, self.at - self.started):.1f} s ({self.reason})",
            )


class _Scan:
    """The state of one video's recognition: who was seen, the tracker, counters, timings."""

    def __init__(self, known: KnownFaces, options: RecognitionOptions) -> None:
        self.known = known
        self.options = options
        self.passes = DETECT_PASSES if options.find_small_faces else DETECT_PASSES[:-1]
        self.watch = _Stopwatch()
        self.people: dict[str, PersonSeen] = {}
        self.tracker = FaceTracker()
        self.unknown = UnknownFaces()
        self.encoded = self.tracked = self.sampled = 0

    def look_at(self, frame: SampledFrame) -> bool:
        """Find, identify and record the faces of one sample; True means stop (first-match)."""
        self.sampled += 1
        every = self.options.rescan_every
        thorough = every > 0 and frame.index % every == every - 1
        with self.watch.stage("detect"):
            boxes, _ = detect_faces(frame.small, frame.image, self.passes, thorough=thorough)
        try:
            for box in boxes:
                face, encoding = self._identify(frame, box)
                fresh = encoding is not None
                self.tracker.add(face)
                if face.name is None:
                    self.unknown.saw(
                        face.track,
                        frame.time_s,
                        encoding,
                        box.area,
                        partial(_crop, frame.image, box),
                    )
                else:
                    _saw(self.people, face, frame, fresh=fresh)
                    if self.options.mode == "first-match":
                        return True
            return False
        finally:
            self.tracker.next_sample()

    def _identify(self, frame: SampledFrame, box: Box) -> tuple[TrackedFace, np.ndarray | None]:
        """Who this face is: followed from the previous sample, or encoded (and its encoding)."""
        with self.watch.stage("track"):
            landmarks = face_landmarks(frame.image, box)
            look = signature(frame.image, landmarks)
            previous = self.tracker.follow(box, look) if self.options.track_faces else None
        if previous is not None and previous.age < TRACK_MAX_AGE:
            self.tracked += 1
            return TrackedFace(
                box, look, previous.name, previous.distance, previous.track, previous.age + 1
            ), None
        # A new face, or one followed for long enough to be checked again.
        self.encoded += 1
        with self.watch.stage("encode"):
            encoding = encode_face(frame.image, landmarks, self.options.descriptor)
        with self.watch.stage("match"):
            match = match_face(
                encoding, self.known, self.options.tolerance, self.options.match_margin
            )
        track = previous.track if previous is not None else self.tracker.new_track()
        return TrackedFace(box, look, match.name, match.distance, track), encoding


def _saw(
    people: dict[str, PersonSeen], face: TrackedFace, frame: SampledFrame, fresh: bool
) -> None:
    """Record a sighting; keep the crop of the closest match for the contact sheet."""
    assert face.name is not None  # noqa: S101 - callers pass recognised faces only
    person = people.get(face.name)
    if person is None:
        person = people[face.name] = PersonSeen(
            face.name, frame.time_s, frame.time_s, 0, face.distance
        )
        person.crop, person.crop_box = _crop(frame.image, face.box)
    if person.last_seen_s != frame.time_s or person.frames == 0:
        person.frames += 1
    person.last_seen_s = frame.time_s
    if fresh and face.distance < person.distance:
        person.distance = face.distance
        person.crop, person.crop_box = _crop(frame.image, face.box)


def _crop(image: np.ndarray, box: Box) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The face with a margin, shrunk to CROP_MAX_SIDE, and the face box inside it."""
    height, width = image.shape[:2]
    margin_y = int((box.bottom - box.top) * CROP_MARGIN)
    margin_x = int((box.right - box.left) * CROP_MARGIN)
    top, left = max(0, box.top - margin_y), max(0, box.left - margin_x)
    bottom, right = min(height, box.bottom + margin_y), min(width, box.right + margin_x)
    crop = image[top:bottom, left:right]
    step = max(1, -(-max(crop.shape[:2]) // CROP_MAX_SIDE))  # ceil division
    crop = np.ascontiguousarray(crop[::step, ::step])
    inner = (
        (box.top - top) // step,
        (box.right - left) // step,
        (box.bottom - top) // step,
        (box.left - left) // step,
    )
    return crop, inner


def merge_segments(parts: list[Recognition], wall_s: float, known: KnownFaces) -> Recognition:
    """One video's result (mode `all`) from those of its consecutive time segments.

    People are merged by name (first and last sighting, frames, best distance and its crop),
    in order of first appearance; counts and stage times are added up. A face followed
    across a segment boundary is encoded in both segments; the unknown groups of all segments
    are joined again by descriptor distance, so a stranger seen in two segments is one group.
    """
    merged: dict[str, PersonSeen] = {}
    for part in parts:
        for seen in part.people:
            person = merged.get(seen.name)
            if person is None:
                merged[seen.name] = PersonSeen(**vars(seen))
                continue
            person.last_seen_s = max(person.last_seen_s, seen.last_seen_s)
            person.frames += seen.frames
            if seen.distance < person.distance:
                person.distance, person.crop, person.crop_box = (
                    seen.distance,
                    seen.crop,
                    seen.crop_box,
                )
    people = sorted(merged.values(), key=lambda person: person.first_seen_s)
    timings: dict[str, float] = {}
    for part in parts:
        for stage, seconds in part.timings.items():
            timings[stage] = round(timings.get(stage, 0.0) + seconds, 4)
    timings["total"] = round(wall_s, 4)
    first = parts[0]
    return Recognition(
        video=next((p.video for p in parts if p.video.rotation), first.video),
        frames_sampled=sum(part.frames_sampled for part in parts),
        people=people,
        unknown_faces=finish((g for part in parts for g in part.unknown_faces), known),
        timings=timings,
        faces_encoded=sum(part.faces_encoded for part in parts),
        faces_tracked=sum(part.faces_tracked for part in parts),
        decode_errors=sum(part.decode_errors for part in parts),
    )
