"""Enrolment: photos of known people in, a known-faces store out (`hybrid-lambda faces build`).

Apart from the store (`known_faces`), which must load without dlib, and from the detector
(`faces`), which matches against a store: this module uses both, neither uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lambda_fn.faces import detect_faces, encode_face, face_landmarks
from lambda_fn.known_faces import KnownFaces, KnownFacesError

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class SkippedPhoto:
    """A photo left out of the store, and why (no face, several faces, unreadable)."""

    path: Path
    reason: str


def build_from_photos(photo_dir: Path) -> tuple[KnownFaces, list[SkippedPhoto]]:
    """Encode PHOTO_DIR/<name>/*.jpg|jpeg|png: one face per photo, several photos per person."""
    photo_dir = Path(photo_dir)
    if not photo_dir.is_dir():
        raise KnownFacesError(f"{photo_dir}: not a folder of <name>/ photo folders")
    names: list[str] = []
    encodings: list[np.ndarray] = []
    sources: list[str] = []
    skipped = [
        SkippedPhoto(loose, "not in a <name>/ folder: the folder name is the person's name")
        for loose in sorted(photo_dir.iterdir())
        if loose.is_file() and loose.suffix.lower() in PHOTO_SUFFIXES
    ]
    for person in sorted(p for p in photo_dir.iterdir() if p.is_dir()):
        photos = sorted(p for p in person.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
        for photo in photos:
            try:
                with Image.open(photo) as opened:
                    # Phone photos are stored sideways with an EXIF orientation.
                    image = np.ascontiguousarray(ImageOps.exif_transpose(opened).convert("RGB"))
            except (OSError, UnidentifiedImageError) as error:
                skipped.append(SkippedPhoto(photo, f"unreadable: {error}"))
                continue
            small = _shrink(image, 1024)
            boxes, _ = detect_faces(small, image, (("small", 1), ("full", 1)))
            if len(boxes) != 1:
                reason = "no face found" if not boxes else f"{len(boxes)} faces (need exactly one)"
                skipped.append(SkippedPhoto(photo, reason))
                continue
            names.append(person.name)
            encodings.append(encode_face(image, face_landmarks(image, boxes[0])))
            sources.append(photo.relative_to(photo_dir).as_posix())
    return KnownFaces.from_lists(names, encodings, sources, origin=str(photo_dir)), skipped


def _shrink(image: np.ndarray, width: int) -> np.ndarray:
    """The image scaled down to `width` (Pillow's area-averaging), or itself if narrower."""
    if image.shape[1] <= width:
        return image
    height = round(image.shape[0] * width / image.shape[1])
    resized = Image.fromarray(image).resize((width, height), Image.Resampling.BOX)
    return np.ascontiguousarray(resized)
