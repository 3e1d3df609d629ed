"""Finding, encoding, matching and tracking faces: dlib's HOG detector and ResNet descriptor.

The models are face_recognition's (same files, same 5-point landmarks and descriptor, so
distances equal `face_recognition.face_encodings`), loaded straight through dlib: that skips
the CNN detector and 68-point model face_recognition loads at import, and pkg_resources.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dlib
import numpy as np
from PIL import Image

from lambda_fn.known_faces import KnownFaces
from lambda_fn.resnet_descriptor import compute_descriptor, describe_chip
from lambda_fn.settings import DescriptorEngine

# Detection passes, coarse to fine: (detection frame, dlib upsampling). A later pass runs
# only when the earlier ones found nothing in the frame, so the common case costs one cheap
# pass. HOG's window is 80 px; CPU per pass measured on the course clips' frames:
#   small (detect_width, 640 px) x1: faces >= 80 px at 640 px, 13 ms
#   mid (1.5 x detect_width)     x1: faces >= 53 px at 640 px, 29 ms
#   small, upsampled             x2: faces >= 40 px at 640 px, 55 ms
#   full resolution, upsampled   x2: what the classic code finds (faces >= 40 px in the
#                                    original frame, up to 1920 px wide), 300-1000 ms on 1080p
# On the course clips the first pass misses the face in 2-3 of 19 samples (faces ~53 px or
# turned); `mid` finds all of them at half the cost of upsampling.
DETECT_PASSES: tuple[tuple[str, int], ...] = (
    ("small", 0),
    ("mid", 0),
    ("small", 1),
    ("full", 1),
)
MID_FACTOR = 1.5
# The last pass searches at most this wide: 4K frames are scaled to 1920 px first, or a
# frame with no face would cost ~4 s (faces down to ~80 px of a 4K frame are still found).
FULL_PASS_MAX_WIDTH = 1920
# Tracking: a face overlapping a face of the previous sample, and looking alike (normalised
# correlation of aligned grey signatures, see `signature`), is taken to be the same person
# and not encoded again: (IoU, similarity) at least TRACK_RULES[0] or [1] (a face that moved
# more in a second must look more alike). A followed face is re-encoded after TRACK_MAX_AGE
# samples all the same, so a mistake cannot last. Measured on the course clips: the same face
# 1 s later has IoU 0.14-1.0 and similarity 0.78-0.98; different people at most 0.70.
TRACK_RULES = ((0.3, 0.75), (0.1, 0.85))
# Two detection passes found the same face when their boxes overlap this much.
DUPLICATE_IOU = 0.3
TRACK_MAX_AGE = 5
SIGNATURE_SIZE = 32


@dataclass(frozen=True)
class Box:
    """A face box in full-resolution pixels (face_recognition's top, right, bottom, left)."""

    top: int
    right: int
    bottom: int
    left: int

    @property
    def area(self) -> int:
        return max(0, self.bottom - self.top) * max(0, self.right - self.left)

    def iou(self, other: Box) -> float:
        """Intersection over union: 1 for the same box, 0 for disjoint boxes."""
        top, bottom = max(self.top, other.top), min(self.bottom, other.bottom)
        left, right = max(self.left, other.left), min(self.right, other.right)
        inter = max(0, bottom - top) * max(0, right - left)
        union = self.area + other.area - inter
        return inter / union if union else 0.0

    def clipped(self, height: int, width: int) -> Box:
        return Box(
            max(0, self.top), min(width, self.right), min(height, self.bottom), max(0, self.left)
        )


class FaceModels:
    """dlib's detector, 5-point landmark model and face descriptor, loaded once per process."""

    def __init__(self, models_dir: Path) -> None:
        self.detector = dlib.get_frontal_face_detector()
        self.landmarks = dlib.shape_predictor(
            str(models_dir / "shape_predictor_5_face_landmarks.dat")
        )
        self.encoder = dlib.face_recognition_model_v1(
            str(models_dir / "dlib_face_recognition_resnet_model_v1.dat")
        )


@functools.cache
def models() -> FaceModels:
    """The process-wide models (the Lambda container and pool workers load them once)."""
    # find_spec locates the package without running its __init__, which imports the
    # deprecated pkg_resources just to compute this same path.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face_recognition_models is not installed")
    return FaceModels(Path(next(iter(spec.submodule_search_locations))) / "models")


def _detect(image: np.ndarray, upsample: int) -> list[Any]:
    return list(models().detector(image, upsample))


def detect_faces(
    small: np.ndarray,
    image: np.ndarray,
    passes: Sequence[tuple[str, int]] = DETECT_PASSES,
    *,
    thorough: bool = False,
) -> tuple[list[Box], int]:
    """Face boxes in full-resolution pixels, and the index of the last pass that ran.

    Detection runs on the small frame; the later passes run only if nothing was found.
    `thorough` runs the finest pass below full resolution even after a find, and adds the
    faces it alone sees: smaller faces beside a large one (a far person behind a speaker).
    """
    height, width = image.shape[:2]
    done: set[tuple[int, int]] = set()
    boxes: list[Box] = []
    last = last_run = len(passes) - 1
    for number, (frame, upsample) in enumerate(passes):
        if boxes and (not thorough or number == last):
            break
        if boxes and number < last - 1:
            continue  # thorough: only the finest pass below full resolution adds faces
        source = _detection_frame(frame, small, image)
        if (source.shape[1], upsample) in done:
            continue  # an earlier pass already searched this very picture this way
        done.add((source.shape[1], upsample))
        factor = width / source.shape[1]
        for rect in _detect(source, upsample):
            box = Box(
                round(rect.top() * factor),
                round(rect.right() * factor),
                round(rect.bottom() * factor),
                round(rect.left() * factor),
            ).clipped(height, width)
            if box.area and all(box.iou(seen) < DUPLICATE_IOU for seen in boxes):
                boxes.append(box)
        last_run = number
    return boxes, last_run


def _detection_frame(frame: str, small: np.ndarray, image: np.ndarray) -> np.ndarray:
    """The picture a pass searches: the small frame, the full one, or one in between."""
    if frame == "small":
        return small
    target = round(small.shape[1] * MID_FACTOR) if frame == "mid" else FULL_PASS_MAX_WIDTH
    if target >= image.shape[1]:
        return image
    height = round(image.shape[0] * target / image.shape[1])
    # Pillow's box filter: area averaging, a few ms for a 1080p frame.
    resized = Image.fromarray(image).resize((target, height), Image.Resampling.BOX)
    return np.ascontiguousarray(resized)


def face_landmarks(image: np.ndarray, box: Box) -> Any:
    """dlib's 5-point landmarks of the face in `box` (~2 ms): they align the face for both
    the descriptor and the tracking signature."""
    return models().landmarks(image, dlib.rectangle(box.left, box.top, box.right, box.bottom))


def encode_face(
    image: np.ndarray, landmarks: Any, engine: DescriptorEngine = "numpy"
) -> np.ndarray:
    """The 128-d descriptor, on the full-resolution image, like face_encodings.

    Both engines run dlib's ResNet on dlib's face chip; 'numpy' (~16 ms a face) through
    numpy's BLAS, 'dlib' (~60-110 ms with the dlib-bin wheel, built without BLAS) in dlib.
    """
    if engine == "numpy":
        return compute_descriptor(image, landmarks)
    return np.array(models().encoder.compute_face_descriptor(image, landmarks, 1))


# A match must beat every other known person by this much. dlib trained its face descriptor
# (loss_metric, dlib/dnn/loss.h) to put the same person under 0.6 - 0.04 and different people
# over 0.6 + 0.04: a face whose distances to two known people differ by less than the two
# margins (0.08) lies where the model was never taught to tell them apart, so naming either
# is a guess. Measured (bench/accuracy.py): the stranger of the Hamilton clip sits 0.599 from
# morgan_freeman and 0.609 from denzel_washington (0.010 apart); the course's true matches beat
# the next person by 0.13 (floki) to 0.35.
MATCH_MARGIN = 0.08


@dataclass(frozen=True, slots=True)
class Match:
    """Who a face is (`name`, None: nobody), and the evidence: nearest person, runner-up."""

    name: str | None
    nearest: str | None  # the nearest known person, even when too far or too ambiguous
    distance: float  # to `nearest` (inf with no known faces)
    runner_up: float  # distance to the nearest *other* person (inf if there is none)


def match_face(
    encoding: np.ndarray, known: KnownFaces, tolerance: float, margin: float = MATCH_MARGIN
) -> Match:
    """The nearest known person, named if within `tolerance` and `margin` closer than any other.

    Several encodings of one person count as that person (their nearest one); `margin` 0
    gives the classic rule, nearest within tolerance.
    """
    if not len(known):
        return Match(None, None, math.inf, math.inf)
    distances = np.linalg.norm(known.encodings - encoding, axis=1)
    order = np.argsort(distances, kind="stable")
    nearest = known.names[int(order[0])]
    distance = float(distances[order[0]])
    others = (float(distances[i]) for i in order[1:] if known.names[int(i)] != nearest)
    runner_up = next(others, math.inf)
    clear = distance <= tolerance and runner_up - distance >= margin
    return Match(nearest if clear else None, nearest, distance, runner_up)


def signature(image: np.ndarray, landmarks: Any) -> np.ndarray:
    """A tiny aligned grey face (zero mean, unit norm), to tell two faces apart cheaply.

    Aligned on the landmarks, so a face that moved or turned a little still correlates
    (measured on the course clips: 0.78-0.98 for the same face 1 s apart, at most 0.70
    between different faces).
    """
    chip = dlib.get_face_chip(image, landmarks, size=SIGNATURE_SIZE, padding=0.0)
    grey = chip.astype(np.float64).mean(axis=2)
    grey -= grey.mean()
    norm = float(np.linalg.norm(grey))
    result: np.ndarray = grey / norm if norm else grey
    return result


@dataclass(eq=False)  # holds a numpy array: no field-wise ==
class TrackedFace:
    """A face seen in a sample, with who it was (None: unknown) and how close the match was."""

    box: Box
    signature: np.ndarray
    name: str | None
    distance: float
    track: int  # stable id while the face is followed from sample to sample
    age: int = 0  # samples since this face was last encoded


class FaceTracker:
    """Remembers the previous sample's faces so a face that stays put is not encoded again."""

    def __init__(self) -> None:
        self.previous: list[TrackedFace] = []
        self.current: list[TrackedFace] = []
        self.tracks = 0

    def follow(self, box: Box, signature: np.ndarray) -> TrackedFace | None:
        """The previous sample's face that is clearly this one, if any (best overlap wins)."""
        best: TrackedFace | None = None
        best_iou = 0.0
        for face in self.previous:
            overlap = box.iou(face.box)
            alike = float(np.sum(face.signature * signature))
            clearly_same = any(overlap >= i and alike >= s for i, s in TRACK_RULES)
            if clearly_same and overlap > best_iou:
                best, best_iou = face, overlap
        if best is not None:
            self.previous.remove(best)  # one face of a sample continues one track only
        return best

    def add(self, face: TrackedFace) -> None:
        self.current.append(face)

    def new_track(self) -> int:
        self.tracks += 1
        return self.tracks

    def next_sample(self) -> None:
        self.previous, self.current = self.current, []


def warm_up() -> None:
    """Run each model once on a blank picture: dlib allocates its buffers on first use.

    Done before the pool forks, so workers inherit warm models (their first video measured
    ~10-20 ms faster); in the Lambda, it moves that cost into the init phase.
    """
    blank = np.zeros((150, 150, 3), dtype=np.uint8)
    face = models()
    face.detector(blank, 0)
    face.encoder.compute_face_descriptor(blank)
    describe_chip(blank)  # loads and checks the weights for the numpy descriptor
