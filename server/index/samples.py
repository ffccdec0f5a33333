"""A gallery the project draws itself: no photos to download, no faces of real people.

Each "person" is a cartoon face (an ellipse, two eyes, a mouth) whose colours
and proportions come from a seed; each of their "photos" shifts it a little and
adds noise. The quickstart indexes it when no gallery is given, and the tests
use the same drawings. It shows the pipeline working end to end; it says
nothing about how well a model tells real people apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DESCRIPTION = (
    "synthetic cartoon faces drawn by lookalike (one colour and shape pattern per 'person', "
    "noisy variants as their photos), not photos of real people"
)


def person_image(person: int, photo: int, size: int = 96) -> Image.Image:
    """A face-ish drawing whose colours and shapes depend on ``person``, noise on ``photo``."""
    rng = np.random.default_rng(1000 * person + photo)
    base = np.random.default_rng(person)
    skin = tuple(int(c) for c in base.integers(80, 255, 3))
    background = tuple(int(c) for c in base.integers(0, 255, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    shift = rng.integers(-3, 4, 2)
    cx, cy = size // 2 + shift[0], size // 2 + shift[1]
    r = int(size * base.uniform(0.25, 0.4))
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=skin)
    eye = max(2, r // 5)
    for dx in (-r // 2, r // 2):
        draw.ellipse(
            (cx + dx - eye, cy - r // 3 - eye, cx + dx + eye, cy - r // 3 + eye), fill=(20, 20, 20)
        )
    mouth = int(r * base.uniform(0.3, 0.7))
    draw.line((cx - mouth, cy + r // 2, cx + mouth, cy + r // 2), fill=(120, 20, 20), width=3)
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_gallery(root: Path, people: int, photos: int, size: int = 96) -> Path:
    """``root/person_NN/person_NN_MMMM.jpg`` for every person and photo."""
    for person in range(people):
        folder = root / f"person_{person:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for photo in range(photos):
            person_image(person, photo, size).save(
                folder / f"person_{person:02d}_{photo + 1:04d}.jpg", quality=92
            )
    return root
