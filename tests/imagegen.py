"""Test images and galleries: the sample gallery's drawings (lookalike.server.index.samples),
encodings, noise, a decompression bomb, copies of generated and LFW people."""

from __future__ import annotations

import io
import shutil
import struct
import zlib

import numpy as np
from PIL import Image

from lookalike.server.index.samples import person_image, write_gallery

__all__ = [
    "GOOD",
    "encode",
    "gallery_of",
    "noise_image",
    "person_image",
    "photo",
    "png_declaring",
    "small_gallery",
    "write_gallery",
]


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noise_image(size: tuple[int, int] = (40, 30), seed: int = 0) -> Image.Image:
    """Random RGB pixels of (width, height)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge image: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def photo(size: tuple[int, int] = (120, 90)) -> Image.Image:
    """A noise photo; GOOD is its JPEG, an image every server searches."""
    return noise_image(size, seed=1)


GOOD = encode(photo(), "JPEG")


def person_jpeg(person: int, shot: int = 0) -> bytes:
    """A JPEG of ``person``'s photo ``shot``, as a client would send it."""
    return encode(person_image(person, shot), "JPEG", quality=92)


def gallery_of(source, people, into):
    """A copy of the ``people`` folders of the gallery ``source`` in ``into``."""
    for person in people:
        shutil.copytree(source / person, into / person)
    return into


def small_gallery(lfw_dir, root, people: int = 12, photos: int = 3):
    """``photos`` LFW photos of each of the first ``people`` people of the train split,
    copied into ``root``."""
    from lookalike.server.index.gallery import person_split

    chosen = [
        p
        for p in sorted((lfw_dir / "images").iterdir())
        if len(list(p.iterdir())) >= photos and person_split(p.name) == "train"
    ][:people]
    for person in chosen:
        (root / person.name).mkdir(parents=True)
        for photo in sorted(person.iterdir())[:photos]:
            (root / person.name / photo.name).write_bytes(photo.read_bytes())
    return root
