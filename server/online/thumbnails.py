"""Small JPEGs of gallery images, for callers that show their results.

Only gallery files are read, and only the file that was indexed is shown: the
path from the manifest must stay inside the gallery root once resolved (no
absolute paths, no ``..``, no links leading out), name a regular file within a
size cap, and hash to the item's id. A file swapped since indexing would
otherwise show another person's face under the matched label. A client sees
only ``UNAVAILABLE`` as the note; the reason is logged, with the paths. A face
of a gallery indexed by face is shown as its whole photo with the face's box
drawn on it, so that a match in a group photo says which of its people matched.
"""

from __future__ import annotations

import io
import logging
import os
import stat
from pathlib import Path, PurePosixPath

from PIL import Image, ImageDraw

from lookalike.server.index.gallery import content_id
from lookalike.server.index.store import Item
from lookalike.server.vision.imaging import ImageError, decode

log = logging.getLogger(__name__)

JPEG_QUALITY = 85
BOX_COLOUR = (255, 0, 255)  # magenta, as the contact sheet marks the query's crop
UNAVAILABLE = "thumbnail unavailable"
# Largest gallery file read for a thumbnail; a 40-megapixel JPEG is about 20 MB.
MAX_GALLERY_FILE_BYTES = 64 * 1024 * 1024


class GalleryFileError(Exception):
    """A gallery file that may not or cannot be shown; the message is for the log only."""


def gallery_file(root: Path, relative: str) -> Path:
    """``relative`` resolved under ``root``, refused if it names anything outside it."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise GalleryFileError(f"path {relative!r} is not relative to the gallery")
    try:
        real_root = root.resolve(strict=True)
        real = (real_root / relative).resolve(strict=True)
    except (OSError, RuntimeError) as error:  # RuntimeError: a symlink loop
        raise GalleryFileError(f"{root / relative}: {error}") from None
    if not real.is_relative_to(real_root):
        raise GalleryFileError(f"{root / relative} leads out of the gallery, to {real}")
    return real


def read_gallery_file(path: Path, item_id: str, cap: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``cap`` of them, hashing to ``item_id``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        raise GalleryFileError(f"{path}: {error}") from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise GalleryFileError(f"{path} is not a regular file")
        if status.st_size > cap:
            raise GalleryFileError(f"{path} is {status.st_size:,} bytes, over the {cap:,} cap")
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read(cap + 1)
    finally:
        os.close(fd)
    if len(data) > cap:
        raise GalleryFileError(f"{path} grew over the {cap:,} byte cap while read")
    if content_id(data) != item_id:
        raise GalleryFileError(f"{path} changed since it was indexed as {item_id}")
    return data


def thumbnail_jpeg(
    data: bytes, size: int, max_pixels: int, box: tuple[int, int, int, int] | None = None
) -> bytes:
    """The image ``data`` shrunk to at most ``size`` on its longer side (raises ImageError),
    with ``box`` (photo pixels) drawn on it when given."""
    image = decode(data, max_pixels)
    scale = min(1.0, size / max(image.size))
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    if box is not None:
        width = max(2, round(min(image.size) / 50))
        shown = [round(value * scale) for value in box]
        shown[2], shown[3] = max(shown[0] + 1, shown[2] - 1), max(shown[1] + 1, shown[3] - 1)
        ImageDraw.Draw(image).rectangle(shown, outline=BOX_COLOUR, width=width)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def thumbnail_or_note(root: Path, item: Item, size: int, max_pixels: int) -> tuple[bytes, str]:
    """(jpeg, "") or (b"", UNAVAILABLE): a file that cannot be shown must not fail the search.

    The item's paths are tried in turn (identical files are indexed once).
    """
    problems = []
    for relative in (item.path, *item.also):
        try:
            data = read_gallery_file(
                gallery_file(root, relative), item.file_id, MAX_GALLERY_FILE_BYTES
            )
            return thumbnail_jpeg(data, size, max_pixels, item.box), ""
        except (GalleryFileError, ImageError, OSError) as error:
            problems.append(str(error))
    log.warning("no thumbnail for item %s: %s", item.id, "; ".join(problems))
    return b"", UNAVAILABLE
