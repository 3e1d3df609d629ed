"""The contact sheet: a small, valid JPEG with one boxed, named crop per person."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from lambda_fn.contact_sheet import BOX_COLOUR, TILE, UNKNOWN_COLOUR, render_contact_sheet
from lambda_fn.frames import VideoInfo
from lambda_fn.recognition import PersonSeen, Recognition, UnknownGroup

INFO = VideoInfo(2.0, 30.0, 1280, 720, 0, "h264", "mp4")


def person(name: str, shade: int) -> PersonSeen:
    crop = np.full((150, 120, 3), shade, dtype=np.uint8)
    return PersonSeen(name, 0.0, 1.0, 2, 0.42, crop=crop, crop_box=(30, 100, 130, 20))


def recognition(*people: PersonSeen) -> Recognition:
    return Recognition(INFO, 3, list(people), [], {"total": 1.0})


def test_sheet_is_a_small_jpeg_with_a_tile_per_person() -> None:
    data = render_contact_sheet(
        recognition(person("president_obama", 60), person("a_very_long_name_" * 4, 200))
    )
    assert data is not None and data[:3] == b"\xff\xd8\xff"
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "JPEG"
    assert TILE * 2 <= image.width < TILE * 3 and image.height < TILE * 2
    assert len(data) < 50_000
    # The box is drawn on the first crop: green pixels along its left edge.
    pixels = np.asarray(image.convert("RGB")).astype(int)
    left_edge = pixels[40:120, 6 + 20 + (TILE - 120) // 2]
    assert np.abs(left_edge - BOX_COLOUR).sum(axis=1).min() < 120


def test_no_sheet_when_nobody_was_recognised() -> None:
    assert render_contact_sheet(recognition()) is None
    nobody_visible = PersonSeen("x", 0.0, 0.0, 1, 0.5, crop=None)
    assert render_contact_sheet(recognition(nobody_visible)) is None


def test_many_people_wrap_into_rows() -> None:
    data = render_contact_sheet(recognition(*(person(f"p{i}", 20 * i) for i in range(8))))
    assert data is not None
    image = Image.open(io.BytesIO(data))
    assert image.height > 2 * TILE  # 6 per row, so two rows


def test_unknown_groups_get_tiles_after_the_known_people_with_their_ids() -> None:
    crop = np.full((150, 120, 3), 90, dtype=np.uint8)
    stranger = UnknownGroup(
        3.0, 5.0, {3.0}, np.zeros(128), 1, 0, crop, (30, 100, 130, 20), "u1", "bush", 0.63
    )
    only_unknown = Recognition(INFO, 3, [], [stranger], {"total": 1.0})
    data = render_contact_sheet(only_unknown)
    assert data is not None  # a sheet even though nobody known was seen
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    left_edge = pixels[40:120, 6 + 20 + (TILE - 120) // 2]
    assert np.abs(left_edge - UNKNOWN_COLOUR).sum(axis=1).min() < 120
    both = Recognition(INFO, 3, [person("president_obama", 60)], [stranger], {"total": 1.0})
    image = Image.open(io.BytesIO(render_contact_sheet(both) or b""))
    assert TILE * 2 <= image.width < TILE * 3
