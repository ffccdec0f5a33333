"""Small JPEGs of gallery images, for callers that show their results."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from lookalike.server.vision.imaging import ImageError, decode

JPEG_QUALITY = 85


def thumbnail_jpeg(path: Path, size: int, max_pixels: int) -> bytes:
    """The image at ``path`` shrunk to at most ``size`` on its longer side.

    Raises OSError or ImageError when the file is gone or no longer decodes.
    """
    image = decode(path.read_bytes(), max_pixels)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def thumbnail_or_note(path: Path, size: int, max_pixels: int) -> tuple[bytes, str]:
    """(jpeg, "") or (b"", why there is none): a missing file must not fail the search."""
    try:
        return thumbnail_jpeg(path, size, max_pixels), ""
    except FileNotFoundError:
        return b"", "gallery file missing"
    except (OSError, ImageError) as error:
        return b"", f"gallery file unreadable: {error}"
