"""The gallery on disk: which images it holds, laid out as ``<label>/<file>``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

Split = Literal["all", "train", "test"]
SPLITS: tuple[str, ...] = get_args(Split)
# Share of people held out for testing: never trained on, never tuned on.
TEST_SHARE = 0.3

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})


@dataclass(frozen=True)
class GalleryImage:
    label: str
    path: str  # relative to the gallery root, with forward slashes


def person_split(label: str) -> Split:
    """The split a person belongs to, from a hash of the name alone.

    It depends on nothing else (not the order, not who else is in the folder),
    so training, indexing and evaluation agree on it on any machine.
    """
    bucket = int.from_bytes(hashlib.sha256(label.encode()).digest()[:4], "big") / 2**32
    return "test" if bucket < TEST_SHARE else "train"


def list_gallery(root: Path, split: Split = "all") -> list[GalleryImage]:
    """Every image file one folder deep, in a stable (sorted) order, of the split's people."""
    if not root.is_dir():
        raise FileNotFoundError(f"gallery folder not found: {root}")
    images = [
        GalleryImage(label=file.parent.name, path=file.relative_to(root).as_posix())
        for file in sorted(root.glob("*/*"))
        if file.is_file()
        and file.suffix.lower() in IMAGE_SUFFIXES
        and split in ("all", person_split(file.parent.name))
    ]
    if not images:
        raise FileNotFoundError(
            f"no images of split {split!r} under {root}: expected <label>/<image> files "
            f"({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return images


def content_id(data: bytes) -> str:
    """A gallery id that survives renames and rebuilds: a hash of the file's bytes."""
    return hashlib.sha256(data).hexdigest()[:16]
