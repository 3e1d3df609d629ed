"""A small JPEG with one crop per recognised person, boxed and named: quicker to check than CSV."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont

from lambda_fn.recognition import Recognition

TILE = 160  # crops are at most this many pixels a side (see recognition.CROP_MAX_SIDE)
LABEL_HEIGHT = 18
PADDING = 6
MAX_COLUMNS = 6
BOX_COLOUR = (40, 220, 90)
BACKGROUND = (24, 24, 24)
TEXT_COLOUR = (240, 240, 240)


def render_contact_sheet(recognition: Recognition, *, quality: int = 80) -> bytes | None:
    """JPEG bytes of the people's crops in order of first appearance; None if nobody was seen."""
    people = [p for p in recognition.people if p.crop is not None and p.crop.size]
    if not people:
        return None
    columns = min(MAX_COLUMNS, len(people))
    rows = -(-len(people) // columns)
    cell_w, cell_h = TILE + PADDING, TILE + LABEL_HEIGHT + PADDING
    sheet = Image.new("RGB", (columns * cell_w + PADDING, rows * cell_h + PADDING), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for number, person in enumerate(people):
        assert person.crop is not None  # noqa: S101 - filtered above
        x = PADDING + (number % columns) * cell_w
        y = PADDING + (number // columns) * cell_h
        crop = Image.fromarray(person.crop)
        crop.thumbnail((TILE, TILE))
        ratio = crop.width / person.crop.shape[1]
        # Centre the crop in its tile.
        x0 = x + (TILE - crop.width) // 2
        y0 = y + (TILE - crop.height) // 2
        sheet.paste(crop, (x0, y0))
        if person.crop_box is not None:
            top, right, bottom, left = (round(v * ratio) for v in person.crop_box)
            draw.rectangle(
                (x0 + left, y0 + top, x0 + right, y0 + bottom), outline=BOX_COLOUR, width=2
            )
        label = f"{person.name} {person.distance:.2f}"
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
