"""Augmented faces for distillation, each cut twice: at the teacher's size and the student's.

The teacher (dlib's network, ported: cheap to run in batches) describes every augmented
chip, so the student learns the teacher's descriptor of exactly the face it sees, not the
descriptor of the unaugmented face. Each copy moves the aligned face a little (shift,
scale, rotation about the chip's centre), mirrors half of them and changes brightness and
contrast; both chips are warped from the photo by the same transform, so the student's
chip is what alignment at its own size would give that face. Copies are drawn from a seed
and cached beside the checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lookalike.common.files import atomic_path
from lookalike.common.output import bar_disable
from lookalike.server.index.gallery import GalleryImage
from lookalike.server.vision.align import align, warp
from lookalike.server.vision.imaging import decode

TEACHER_SIZE = 150
SHIFT = 0.04  # of the chip's side, each way
SCALE = 0.06  # up or down
ROTATION = np.deg2rad(6)
BRIGHTNESS, CONTRAST = 12.0, 0.12  # grey levels added; share of contrast


def jitter(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random similarity about the centre of a ``size`` chip, as a 3x3 matrix."""
    angle = rng.uniform(-ROTATION, ROTATION)
    scale = rng.uniform(1 - SCALE, 1 + SCALE)
    shift = rng.uniform(-SHIFT, SHIFT, 2) * size
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([size / 2, size / 2])
    matrix = np.eye(3)
    matrix[:2, :2] = rotation
    matrix[:2, 2] = centre - rotation @ centre + shift
    return matrix


def augmented_pairs(
    data: Path,
    images: list[GalleryImage],
    copies: int,
    student_size: int,
    seed: int,
    folder: Path,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(teacher chips (n*copies, 150, 150, 3), student chips (n*copies, s, s, 3)), uint8,
    copy k of image i at row i*copies + k."""
    cache = folder / f"augmented-{copies}x-{student_size}px-seed{seed}.npz"
    listing = cache.with_suffix(".json")
    paths = [image.path for image in images]
    if cache.is_file() and listing.is_file() and json.loads(listing.read_text()) == paths:
        with np.load(cache) as saved:
            return saved["teacher"], saved["student"]
    rng = np.random.default_rng([seed, copies, student_size])
    rows = len(images) * copies
    teacher = np.empty((rows, TEACHER_SIZE, TEACHER_SIZE, 3), np.uint8)
    student = np.empty((rows, student_size, student_size, 3), np.uint8)
    row = 0
    for image in tqdm(images, desc="augmenting", unit="img", disable=bar_disable(progress)):
        photo = decode((data / image.path).read_bytes())
        rgb = np.ascontiguousarray(np.asarray(photo.convert("RGB")))
        base = np.vstack([align(photo, TEACHER_SIZE).transform, [0, 0, 1]])
        for _ in range(copies):
            moved = (jitter(rng, TEACHER_SIZE) @ base)[:2]
            mirror = rng.random() < 0.5
            gain, offset = rng.uniform(1 - CONTRAST, 1 + CONTRAST), rng.uniform(-1, 1) * BRIGHTNESS
            for out, size in ((teacher, TEACHER_SIZE), (student, student_size)):
                chip = warp(rgb, moved * (size / TEACHER_SIZE), size)
                chip = (chip - 127.5) * gain + 127.5 + offset
                out[row] = np.clip(np.round(chip[:, ::-1] if mirror else chip), 0, 255)
            row += 1
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as staging, staging.open("wb") as stream:
        np.savez(stream, teacher=teacher, student=student)
    with atomic_path(listing) as staging:
        staging.write_text(json.dumps(paths))
    return teacher, student
