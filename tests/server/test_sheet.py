"""Thumbnails over gRPC and the contact sheet drawn from them."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys

from PIL import Image

from lookalike.client import SearchClient
from lookalike.client.sheet import render_sheet, sheet_size
from lookalike.server.index.build import build_index
from lookalike.server.vision.imaging import Crop
from tests.serving import in_process_server


def test_thumbnails_only_when_asked_and_within_the_cap(embedder, index_dir, gallery_dir):
    query = gallery_dir / "person_02" / "person_02_0001.jpg"
    with (
        in_process_server(embedder, index_dir, thumbnail_size=48) as target,
        SearchClient(target) as client,
    ):
        assert client.info().thumbnail_size == 48
        plain = client.search(query, k=4)
        assert all(m.thumbnail is None and m.note == "" for m in plain.matches)
        with_thumbnails = client.search(query, k=4, thumbnails=True)
    for match in with_thumbnails.matches:
        with Image.open(io.BytesIO(match.thumbnail)) as image:
            assert image.format == "JPEG"
            assert max(image.size) == 48  # 96x96 gallery images shrunk to the cap


def test_missing_gallery_file_gives_a_match_with_a_note(embedder, gallery_dir, tmp_path):
    gallery = tmp_path / "gallery"
    shutil.copytree(gallery_dir / "person_03", gallery / "person_03")
    build_index(gallery, embedder, tmp_path / "index", crop=Crop("center"), progress=False)
    query = (gallery / "person_03" / "person_03_0001.jpg").read_bytes()
    (gallery / "person_03" / "person_03_0002.jpg").unlink()
    with in_process_server(embedder, tmp_path / "index") as target, SearchClient(target) as client:
        result = client.search(query, k=3, thumbnails=True)
    by_path = {m.path: m for m in result.matches}
    missing = by_path["person_03/person_03_0002.jpg"]
    assert missing.thumbnail is None and missing.note == "thumbnail unavailable"
    assert by_path["person_03/person_03_0001.jpg"].thumbnail
    crop = result.query_crop
    assert (crop.left, crop.top, crop.right, crop.bottom) == (24, 24, 72, 72)
    assert (crop.image_width, crop.image_height) == (96, 96)


def test_sheet_is_drawn_for_a_real_search(server_target, gallery_dir):
    query = (gallery_dir / "person_01" / "person_01_0002.jpg").read_bytes()
    with SearchClient(server_target) as client:
        result = client.search(query, k=7, thumbnails=True)
    sheet = render_sheet(query, result, label="person_01")
    assert sheet.size == sheet_size(7)
    query_cell = sheet.crop((10, 66, 170, 226))
    assert len(query_cell.getcolors(maxcolors=100_000)) > 50  # the photo, not an empty cell


def test_cli_writes_the_sheet(server_target, gallery_dir, tmp_path):
    out = tmp_path / "sheet.png"
    query = gallery_dir / "person_01" / "person_01_0002.jpg"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lookalike.client.cli",
            "search",
            str(query),
            "--server",
            server_target,
            "-k",
            "5",
            "--label",
            "person_01",
            "--sheet",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    with Image.open(out) as sheet:
        assert sheet.format == "PNG" and sheet.size == sheet_size(5)
    assert '"thumbnail": ' in result.stdout  # JSON stays JSON: thumbnails become sizes
