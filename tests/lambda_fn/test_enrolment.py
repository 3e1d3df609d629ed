"""Enrolment: a known-faces store built from a folder of photos, unusable photos reported."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from lambda_fn.enrolment import build_from_photos

REPO = Path(__file__).resolve().parents[2]


def _imports(module: str) -> set[str]:
    tree = ast.parse((REPO / "lambda_fn" / f"{module}.py").read_text())
    return {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}


def test_the_store_and_the_detector_do_not_import_each_other_through_enrolment() -> None:
    """known_faces (the file format) needs no dlib; faces uses the store; enrolment uses both."""
    assert "lambda_fn.faces" not in _imports("known_faces")
    assert "lambda_fn.enrolment" not in _imports("faces") | _imports("known_faces")
    assert {"lambda_fn.faces", "lambda_fn.known_faces"} <= _imports("enrolment")


@pytest.mark.slow
def test_build_from_photos_skips_unusable_photos(shared_data: Path, tmp_path: Path) -> None:
    """Several photos per person; a two-person photo and a broken file are reported, skipped."""
    faces = shared_data / "faces"
    photos = tmp_path / "photos"
    (photos / "barack_obama").mkdir(parents=True)
    for name in ("obama.jpg", "obama2.jpg"):
        (photos / "barack_obama" / name).symlink_to(faces / "known" / "barack_obama" / name)
    (photos / "crowd").mkdir()
    (photos / "crowd" / "two.jpg").symlink_to(faces / "probes" / "two_people.jpg")
    (photos / "crowd" / "broken.png").write_text("not an image")
    (photos / "crowd" / "notes.txt").write_text("ignored: not a photo suffix")
    (photos / "loose.jpg").symlink_to(faces / "known" / "joe_biden" / "biden.jpg")

    store, skipped = build_from_photos(photos)

    assert store.names == ["barack_obama", "barack_obama"]
    assert store.sources == ["barack_obama/obama.jpg", "barack_obama/obama2.jpg"]
    # Two photos of one person encode close together.
    assert float(np.linalg.norm(store.encodings[0] - store.encodings[1])) < 0.6
    reasons = {photo.path.name: photo.reason for photo in skipped}
    assert reasons.keys() == {"two.jpg", "broken.png", "loose.jpg"}
    assert "not in a <name>/ folder" in reasons["loose.jpg"]
    assert reasons["two.jpg"] == "2 faces (need exactly one)"
    assert reasons["broken.png"].startswith("unreadable")
