"""Test images: the sample gallery's drawings (lookalike.server.index.samples), encodings, noise."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from lookalike.server.index.samples import person_image, write_gallery

__all__ = ["encode", "noise_image", "person_image", "write_gallery"]


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noise_image(size: tuple[int, int] = (40, 30), seed: int = 0) -> Image.Image:
    """Random RGB pixels of (width, height)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
