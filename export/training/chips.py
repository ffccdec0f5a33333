"""Training chips: each image decoded and cropped once by the serving code, kept as uint8.

Cutting a chip is the same code the index and the server run (``imaging.load``), so
training sees what search will see; with ``--crop align`` it costs a face detection and a
landmark fit per image, which no epoch should pay again. The chips of a run are cached in
one .npy file beside its checkpoints, named after the crop and size, and used while the
list of images is the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lookalike.common.files import atomic_path
from lookalike.common.output import bar_disable
from lookalike.server.index.gallery import GalleryImage
from lookalike.server.vision.imaging import ALIGNED, Crop, load


def cut_chips(data: Path, images: list[GalleryImage], crop: Crop, size: int) -> np.ndarray:
    """(n, size, size, 3) float32 pixels, exactly as the server would embed them."""
    return np.stack([load((data / i.path).read_bytes(), crop, size).pixels for i in images])


def cached_chips(
    data: Path,
    images: list[GalleryImage],
    crop: Crop,
    size: int,
    folder: Path,
    progress: bool = True,
) -> np.ndarray:
    """(n, size, size, 3) uint8 chips (the served pixels, rounded), cached in ``folder``."""
    name = "" if crop == ALIGNED else f"-{crop.mode}-{crop.fraction:g}"
    cache = folder / f"chips-{size}{name}.npy"
    listing = cache.with_suffix(".json")
    paths = [image.path for image in images]
    if cache.is_file() and listing.is_file() and json.loads(listing.read_text()) == paths:
        return np.load(cache)
    chips = np.empty((len(images), size, size, 3), np.uint8)
    for n, image in enumerate(
        tqdm(images, desc="cropping", unit="img", disable=bar_disable(progress))
    ):
        pixels = load((data / image.path).read_bytes(), crop, size).pixels
        chips[n] = np.clip(pixels.round(), 0, 255).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as staging, staging.open("wb") as stream:
        np.save(stream, chips)
    with atomic_path(listing) as staging:
        staging.write_text(json.dumps(paths))
    return chips
