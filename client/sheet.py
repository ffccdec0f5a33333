"""A contact sheet of one search: the query, then its matches in rank order; for a search
of several faces, the query with its faces numbered, then a row per face.

Pillow only, so the thin client can draw it.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace
from functools import cache

from PIL import Image, ImageDraw, ImageFont, ImageOps

from lookalike.client._wire import limit_note
from lookalike.client.values import CropBox, FaceResult, Match, SearchResult

CELL = 160
CAPTION = 40
PAD = 10
TITLE = 56
NOTE_MARGIN = 6
BACKGROUND = (250, 250, 250)
INK = (25, 25, 25)
MUTED = (110, 110, 110)
SAME = (20, 150, 60)
CROP_COLOUR = (255, 40, 200)


@dataclass(frozen=True)
class SheetLayout:
    columns: int
    cells: int

    @property
    def rows(self) -> int:
        return math.ceil(self.cells / self.columns)

    @property
    def size(self) -> tuple[int, int]:
        width = PAD + self.columns * (CELL + PAD)
        height = TITLE + PAD + self.rows * (CELL + CAPTION + PAD)
        return width, height

    def origin(self, cell: int) -> tuple[int, int]:
        row, column = divmod(cell, self.columns)
        return PAD + column * (CELL + PAD), TITLE + PAD + row * (CELL + CAPTION + PAD)


def sheet_size(k: int, columns: int = 7) -> tuple[int, int]:
    """Pixel size of the sheet of a k-match search: one cell for the query, one per match."""
    return SheetLayout(min(columns, k + 1), k + 1).size


@cache
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _shorten(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, width: int = CELL
) -> str:
    """The text, cut with an ellipsis where it would run into the next cell."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _wrap(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, max_lines: int
) -> str:
    """Words in lines as wide as a cell, so a long note stays inside its own."""
    width = CELL - 2 * NOTE_MARGIN
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    kept = lines[: max_lines - 1] + [" ".join(lines[max_lines - 1 :])]
    return "\n".join(_shorten(draw, line, font, width) for line in kept if line)


def _fit(image: Image.Image) -> tuple[Image.Image, float, tuple[int, int]]:
    """The image scaled into a cell, the scale, and its offset inside the cell."""
    scale = min(CELL / image.width, CELL / image.height)
    fitted = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    return fitted, scale, ((CELL - fitted.width) // 2, (CELL - fitted.height) // 2)


def _caption(draw: ImageDraw.ImageDraw, x: int, y: int, lines: list[tuple[str, tuple]]) -> None:
    font = _font(13)
    for n, (text, colour) in enumerate(lines):
        draw.text((x, y + CELL + 3 + 17 * n), _shorten(draw, text, font), fill=colour, font=font)


def _draw_query(
    sheet: Image.Image, query: bytes, crop: CropBox | None, label: str | None, at: tuple[int, int]
) -> None:
    draw = ImageDraw.Draw(sheet)
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(query))).convert("RGB")
    fitted, scale, (dx, dy) = _fit(image)
    x, y = at
    sheet.paste(fitted, (x + dx, y + dy))
    whole = crop is None or (crop.left, crop.top, crop.right, crop.bottom) == (
        0,
        0,
        crop.image_width,
        crop.image_height,
    )
    if not whole:
        box = [
            x + dx + crop.left * scale,
            y + dy + crop.top * scale,
            x + dx + crop.right * scale - 1,
            y + dy + crop.bottom * scale - 1,
        ]
        draw.rectangle(box, outline=CROP_COLOUR, width=3)
    draw.rectangle([x - 3, y - 3, x + CELL + 2, y + CELL + 2], outline=INK, width=3)
    _caption(draw, x, y, [("QUERY", INK), (label or "label unknown", MUTED)])


def _draw_match(sheet: Image.Image, match: Match, label: str | None, at: tuple[int, int]) -> None:
    draw = ImageDraw.Draw(sheet)
    x, y = at
    if match.thumbnail:
        fitted, _, (dx, dy) = _fit(Image.open(io.BytesIO(match.thumbnail)).convert("RGB"))
        sheet.paste(fitted, (x + dx, y + dy))
    else:
        draw.rectangle([x, y, x + CELL - 1, y + CELL - 1], fill=(220, 220, 220))
        draw.multiline_text(
            (x + CELL // 2, y + CELL // 2),
            _wrap(draw, match.note or "no thumbnail", _font(12), max_lines=6),
            fill=MUTED,
            font=_font(12),
            anchor="mm",
            align="center",
        )
    same = label is not None and match.label == label
    if same:
        draw.rectangle([x - 3, y - 3, x + CELL + 2, y + CELL + 2], outline=SAME, width=4)
        draw.rectangle([x + CELL - 44, y, x + CELL - 1, y + 18], fill=SAME)
        draw.text((x + CELL - 22, y + 9), "same", fill=(255, 255, 255), font=_font(12), anchor="mm")
    _caption(
        draw,
        x,
        y,
        [
            (f"#{match.rank} {match.label}", SAME if same else INK),
            (f"distance {match.distance:.3f}", MUTED),
        ],
    )


def render_sheet(
    query: bytes, result: SearchResult, label: str | None = None, columns: int = 7, title: str = ""
) -> Image.Image:
    """The query (its crop outlined), then every match captioned with label and distance.

    With ``label`` (the query's person), matches of that person get a green frame
    and the title counts them.
    """
    # With no match, a second cell says so instead of leaving the query alone.
    cells = max(len(result.matches) + 1, 2 if result.max_distance is not None else 1)
    layout = SheetLayout(min(columns, cells), cells)
    sheet = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    k = len(result.matches)
    headline = title or "lookalike search"
    if label is not None:
        same = sum(match.label == label for match in result.matches)
        headline += f"  ·  {same} of {k} are {label}"
    draw.text((PAD, 8), headline, fill=INK, font=_font(18))
    limit = "" if result.max_distance is None else f" within {result.max_distance:g}"
    draw.text(
        (PAD, 32),
        f"k = {k}{limit}, model {result.model_fingerprint}, index {result.index_version}",
        fill=MUTED,
        font=_font(13),
    )
    _draw_query(sheet, query, result.query_crop, label, layout.origin(0))
    for n, match in enumerate(result.matches, start=1):
        _draw_match(sheet, match, label, layout.origin(n))
    if not result.matches and result.max_distance is not None:
        _draw_no_match(draw, limit_note(result), layout.origin(1))
    return sheet


def _draw_no_match(draw: ImageDraw.ImageDraw, note: str, at: tuple[int, int]) -> None:
    x, y = at
    draw.rectangle([x, y, x + CELL - 1, y + CELL - 1], outline=MUTED, width=2)
    draw.multiline_text(
        (x + CELL // 2, y + CELL // 2),
        _wrap(draw, note, _font(16), max_lines=3),
        fill=INK,
        font=_font(16),
        anchor="mm",
        align="center",
    )


# One colour per face number on a group photo's sheet (then round again).
FACE_COLOURS = ((255, 40, 200), (30, 144, 255), (255, 140, 0), (50, 205, 50), (220, 20, 60))
FACE_ROW_MATCHES = 10  # matches shown on a face's row at most


def _face_colour(number: int) -> tuple[int, int, int]:
    return FACE_COLOURS[number % len(FACE_COLOURS)]


def render_faces_sheet(
    query: bytes, result: SearchResult, label: str | None = None, title: str = ""
) -> Image.Image:
    """A search of several faces: the query with each face's box drawn and numbered, then
    one row per face: the face, cut from the query, and its matches in rank order."""
    faces = result.faces
    shown = min(FACE_ROW_MATCHES, max((len(face.matches) for face in faces), default=0))
    columns = 1 + max(shown, 1)
    width = PAD + columns * (CELL + PAD)
    photo_height = 2 * CELL + PAD
    rows_top = TITLE + PAD + photo_height + PAD
    height = rows_top + len(faces) * (CELL + CAPTION + PAD)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    headline = (title or "lookalike search") + f"  ·  {len(faces)} faces"
    if label is not None:
        found = sum(any(m.label == label for m in face.matches[:1]) for face in faces)
        headline += f"  ·  {found} find {label} first"
    draw.text((PAD, 8), headline, fill=INK, font=_font(18))
    limit = "" if result.max_distance is None else f" within {result.max_distance:g}"
    draw.text(
        (PAD, 32),
        f"k = {shown}{limit} per face, model {result.model_fingerprint}, "
        f"index {result.index_version}",
        fill=MUTED,
        font=_font(13),
    )
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(query))).convert("RGB")
    scale = min((width - 2 * PAD) / image.width, photo_height / image.height)
    fitted = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    left = (width - fitted.width) // 2
    sheet.paste(fitted, (left, TITLE + PAD))
    for face in faces:
        box = face.box
        corners = [
            left + box.left * scale,
            TITLE + PAD + box.top * scale,
            left + box.right * scale - 1,
            TITLE + PAD + box.bottom * scale - 1,
        ]
        draw.rectangle(corners, outline=_face_colour(face.number), width=3)
        draw.text(
            (corners[0] + 4, corners[1] + 2),
            str(face.number),
            fill=_face_colour(face.number),
            font=_font(20),
            stroke_width=2,
            stroke_fill=(0, 0, 0),
        )
    for row, face in enumerate(faces):
        y = rows_top + row * (CELL + CAPTION + PAD)
        _draw_face(sheet, image, face, (PAD, y))
        for n, match in enumerate(face.matches[:shown], start=1):
            _draw_match(sheet, match, label, (PAD + n * (CELL + PAD), y))
        if not face.matches:
            note = limit_note(replace(result, matches=[])) or "no match"
            _draw_no_match(draw, note, (PAD + CELL + PAD, y))
    return sheet


def _draw_face(
    sheet: Image.Image, image: Image.Image, face: FaceResult, at: tuple[int, int]
) -> None:
    """The face's own box of the query, a little grown, framed in its colour."""
    draw = ImageDraw.Draw(sheet)
    box = face.box
    margin = (box.right - box.left) // 4
    region = image.crop(
        (
            max(0, box.left - margin),
            max(0, box.top - margin),
            min(image.width, box.right + margin),
            min(image.height, box.bottom + margin),
        )
    )
    fitted, _, (dx, dy) = _fit(region)
    x, y = at
    sheet.paste(fitted, (x + dx, y + dy))
    colour = _face_colour(face.number)
    draw.rectangle([x - 3, y - 3, x + CELL + 2, y + CELL + 2], outline=colour, width=4)
    detail = face.crop_note or f"detector score {face.score:.2f}"
    _caption(draw, x, y, [(f"FACE {face.number}", INK), (detail, MUTED)])
