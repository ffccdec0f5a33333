"""The contact sheet drawn without a server: its size, and notes kept inside their cells."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from lookalike.client import Match, SearchResult, Timings
from lookalike.client.sheet import BACKGROUND, CELL, SheetLayout, render_sheet, sheet_size


@pytest.mark.parametrize(("k", "size"), [(1, (350, 276)), (6, (1200, 276)), (20, (1200, 696))])
def test_sheet_size_follows_k(k, size):
    assert sheet_size(k) == size


def test_a_long_note_stays_inside_its_cell():
    query = io.BytesIO()
    Image.new("RGB", (96, 96), (90, 120, 160)).save(query, format="PNG")
    note = "gallery file unreadable: the image data is truncated or corrupt: " * 3
    result = SearchResult(
        matches=[
            Match(rank, f"id{rank}", "someone", f"p{rank}.jpg", 1.0, None, note) for rank in (1, 2)
        ],
        model_fingerprint="f",
        index_version="v",
        timings=Timings(0, 0, 0, 0),
    )
    sheet = render_sheet(query.getvalue(), result)
    (left, top), (right, _) = SheetLayout(3, 3).origin(1), SheetLayout(3, 3).origin(2)
    gap = sheet.crop((left + CELL, top, right, top + CELL))
    assert gap.getcolors() == [(gap.width * gap.height, BACKGROUND)]
