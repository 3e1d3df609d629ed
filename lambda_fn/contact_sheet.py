"""A small JPEG with one crop per person seen, boxed and labelled: quicker to check than CSV.

Recognised people come first (green box, name and distance), then the unknown groups (amber
box, their id in `<stem>.json` and the nearest known person: "u1 ~freeman 0.60"), so an
operator can pick the id to enrol from the picture.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lambda_fn.recognition import Recognition

TILE = 160  # crops are at most this many pixels a side (see recognition.CROP_MAX_SIDE)
LABEL_HEIGHT = 18
PADDING = 6
MAX_COLUMNS = 6
BOX_COLOUR = (40, 220, 90)
UNKNOWN_COLOUR = (250, 170, 30)
BACKGROUND = (24, 24, 24)
TEXT_COLOUR = (240, 240, 240)


@dataclass(frozen=True, eq=False)
class _Tile:
    crop: np.ndarray
    box: tuple[int, int, int, int] | None
    label: str
    colour: tuple[int, int, int]


def _tiles(recognition: Recognition) -> list[_Tile]:
    tiles = [
        _Tile(p.crop, p.crop_box, f"{p.name} {p.distance:.2f}", BOX_COLOUR)
        for p in recognition.people
        if p.crop is not None and p.crop.size
    ]
    for group in recognition.unknown_faces:
        if group.crop is None or not group.crop.size:
            continue
        near = f" ~{group.nearest} {group.nearest_distance:.2f}" if group.nearest else ""
        tiles.append(_Tile(group.crop, group.crop_box, f"{group.id}{near}", UNKNOWN_COLOUR))
    return tiles


def render_contact_sheet(recognition: Recognition, *, quality: int = 80) -> bytes | None:
    """JPEG bytes: known people, then unknown groups, each in order of first appearance;
    None if no face was seen."""
    people = _tiles(recognition)
    if not people:
        return None
    columns = min(MAX_COLUMNS, len(people))
    rows = -(-len(people) // columns)
    cell_w, cell_h = TILE + PADDING, TILE + LABEL_HEIGHT + PADDING
    sheet = Image.new("RGB", (columns * cell_w + PADDING, rows * cell_h + PADDING), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for number, person in enumerate(people):
        x = PADDING + (number % columns) * cell_w
        y = PADDING + (number // columns) * cell_h
        crop = Image.fromarray(person.crop)
        crop.thumbnail((TILE, TILE))
        ratio = crop.width / person.crop.shape[1]
        # Centre the crop in its tile.
        x0 = x + (TILE - crop.width) // 2
        y0 = y + (TILE - crop.height) // 2
        sheet.paste(crop, (x0, y0))
        if person.box is not None:
            top, right, bottom, left = (round(v * ratio) for v in person.box)
            draw.rectangle(
                (x0 + left, y0 + top, x0 + right, y0 + bottom), outline=person.colour, width=2
            )
        label = person.label
        draw.text((x, y + TILE + 3), _fit(draw, label, font), fill=TEXT_COLOUR, font=font)
    out = io.BytesIO()
    sheet.save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue()


def _fit(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont
) -> str:
    """Shorten a label with an ellipsis until it fits under its tile."""
    while len(text) > 1 and draw.textlength(text, font=font) > TILE:
        text = text[:-2] + "…"
    return text
