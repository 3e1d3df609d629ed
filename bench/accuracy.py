#!/usr/bin/env python3
"""Recognition accuracy before and after the margin rule, and how stable unknown groups are.

Every labelled set there is, each with each known-faces set that applies:
- the 8 course clips with the course's known faces (`cse546/encoding`, imported safely), one
  expected person per clip (`tests/course.py`, from the course's mapping);
- the 8 course clips with the six-people photo set (`faces/known`, built like `hybrid-lambda
  faces build`): only test_1 (Biden) and test_8 (Obama) hold one of those six;
- the face_recognition project's Hamilton clip: nobody with the course faces (as the classic
  code says), Lin-Manuel Miranda with the six-people set (the clip's other face, 7.4-8.2 s,
  is none of them);
- the probe photos: three of Obama, one of Biden and Obama, with both sets.
"Before" is the rule we had (the nearest known person within the tolerance, per encoded
face); "after" also asks for `MATCH_MARGIN` over the next-nearest person. A decision is a
(video or photo, person) pair: precision = right names / names given, recall = right names
/ names expected.

Group stability: every video again with no known faces at all (so every face is unknown),
at 1 and 5 samples a second: how many unknown groups each video gives, against how many
people are in it.

Usage: python bench/accuracy.py [--json]      (~1-2 min on one core)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hybrid_common.logs import configure_logging  # noqa: E402 - after the path is set
from lambda_fn.enrolment import _shrink, build_from_photos  # noqa: E402 - after the path is set
from lambda_fn.faces import MATCH_MARGIN, detect_faces, encode_face, face_landmarks, match_face  # noqa: E402
from lambda_fn.known_faces import KnownFaces  # noqa: E402
from lambda_fn.recognition import recognise  # noqa: E402
from lambda_fn.safe_pickle import load_course_encodings  # noqa: E402
from lambda_fn.settings import RecognitionOptions  # noqa: E402
from tests.course import COURSE_CLIPS  # noqa: E402

SHARED = Path(os.environ.get("HYBRID_SHARED_DATA", REPO.parent / "shared" / "data"))
CLIPS = SHARED / "cse546" / "test_case_1"
HAMILTON = SHARED / "faces" / "probes" / "short_hamilton_clip.mp4"
PROBES = SHARED / "faces" / "probes"
# Who is in each labelled video, per known-faces set (names as that set spells them).
SIX_IN_COURSE = {"test_1.mp4": "joe_biden", "test_8.mp4": "barack_obama"}
PEOPLE_IN_VIDEO = {**{clip: 1 for clip in COURSE_CLIPS}, HAMILTON.name: 2}
PHOTOS = {
    "obama-240p.jpg": ("president_obama",),
    "obama-720p.jpg": ("president_obama",),
    "obama_partial_face.jpg": ("president_obama",),
    "two_people.jpg": ("president_biden", "president_obama"),
}
SIX_NAMES = {"president_obama": "barack_obama", "president_biden": "joe_biden"}


@dataclass
class Score:
    right: int = 0
    wrong: int = 0
    missed: int = 0

    def add(self, said: set[str], expected: set[str]) -> list[str]:
        self.right += len(said & expected)
        self.wrong += len(said - expected)
        self.missed += len(expected - said)
        return sorted(said - expected)

    def text(self) -> str:
        given, wanted = self.right + self.wrong, self.right + self.missed
        precision = self.right / given if given else 1.0
        recall = self.right / wanted if wanted else 1.0
        return f"P {precision:.3f} ({self.right}/{given})  R {recall:.3f} ({self.right}/{wanted})"


def video_cases(
    course: KnownFaces, six: KnownFaces
) -> list[tuple[str, KnownFaces, Path, set[str]]]:
    cases = []
    for clip, person in COURSE_CLIPS.items():
        cases.append(("course clips, course faces", course, CLIPS / clip, {person}))
    for clip in COURSE_CLIPS:
        expected = {SIX_IN_COURSE[clip]} if clip in SIX_IN_COURSE else set()
        cases.append(("course clips, six-people faces", six, CLIPS / clip, expected))
    cases.append(("Hamilton, course faces", course, HAMILTON, set()))
    cases.append(("Hamilton, six-people faces", six, HAMILTON, {"lin_manuel_miranda"}))
    return cases


@functools.cache
def photo_faces() -> dict[str, list[np.ndarray]]:
    """Every face descriptor of every probe photo (found like `faces build` finds them)."""
    found: dict[str, list[np.ndarray]] = {}
    for name in PHOTOS:
        with Image.open(PROBES / name) as opened:
            image = np.ascontiguousarray(ImageOps.exif_transpose(opened).convert("RGB"))
        boxes, _ = detect_faces(_shrink(image, 1024), image, (("small", 1), ("full", 1)))
        found[name] = [encode_face(image, face_landmarks(image, box)) for box in boxes]
    return found


RULES = {"before (margin 0)": 0.0, f"after (margin {MATCH_MARGIN})": MATCH_MARGIN}


def score(report: dict[str, Any], course: KnownFaces, six: KnownFaces) -> None:
    """Precision and recall of each rule on every labelled set, and the false names given."""
    for rule, margin in RULES.items():
        options = RecognitionOptions(match_margin=margin, workers=1)
        total = Score()
        decisions: list[tuple[str, str, set[str], set[str]]] = []
        for label, known, video, expected in video_cases(course, six):
            said = set(recognise(video, known, options).names)
            decisions.append((label, video.name, said, expected))
        for label, known, rename in (
            ("probe photos, course faces", course, {}),
            ("probe photos, six-people faces", six, SIX_NAMES),
        ):
            for photo, faces in photo_faces().items():
                matches = [match_face(face, known, options.tolerance, margin) for face in faces]
                said = {m.name for m in matches if m.name}
                decisions.append((label, photo, said, {rename.get(n, n) for n in PHOTOS[photo]}))
        for label, item, said, expected in decisions:
            scores = report["sets"].setdefault(label, {}).setdefault(rule, Score())
            for wrong in scores.add(said, expected):
                report["false"].setdefault(rule, []).append(f"{label}: {item} -> {wrong}")
            total.add(said, expected)
        report["sets"].setdefault("all", {})[rule] = total


def group_counts(report: dict[str, Any]) -> None:
    """Unknown groups per video with no known faces (every face unknown), 1 and 5 samples/s."""
    nobody = KnownFaces(names=[], encodings=np.zeros((0, 128)))
    for fps in (1.0, 5.0):
        options = RecognitionOptions(sample_fps=fps, workers=1)
        for video in [*(CLIPS / clip for clip in COURSE_CLIPS), HAMILTON]:
            result = recognise(video, nobody, options)
            report["groups"].setdefault(f"{fps:g}/s", {})[video.name] = [
                [g.id, g.samples, g.first_seen_s, g.last_seen_s] for g in result.unknown_faces
            ]


def print_report(report: dict[str, Any]) -> None:
    print(f"{'labelled set':34} " + "  ".join(f"{rule:40}" for rule in RULES))
    for label, scores in report["sets"].items():
        print(f"{label:34} " + "  ".join(f"{scores[rule].text():40}" for rule in RULES))
    for rule in RULES:
        print(f"false names, {rule}: {report['false'].get(rule, []) or 'none'}")
    print("\nunknown groups with no known faces (video: groups [people]; id samples first-last s)")
    for fps, videos in report["groups"].items():
        for video, groups in videos.items():
            spans = ", ".join(f"{g[0]} {g[1]} {g[2]:.1f}-{g[3]:.1f}" for g in groups)
            print(f"  {fps:>4} {video:26} {len(groups)} [{PEOPLE_IN_VIDEO[video]}]  {spans}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="the figures as one JSON document")
    args = parser.parse_args()
    configure_logging("warning", stream=sys.stderr)
    names, encodings = load_course_encodings(SHARED / "cse546" / "encoding")
    course = KnownFaces.from_lists(names, encodings)
    six, _ = build_from_photos(SHARED / "faces" / "known")
    report: dict[str, Any] = {"sets": {}, "false": {}, "groups": {}}
    score(report, course, six)
    group_counts(report)
    if args.json:
        print(json.dumps(report, default=vars, indent=1))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
