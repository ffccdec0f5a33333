"""The gallery on disk: which images it holds, laid out as ``<label>/<file>``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})


@dataclass(frozen=True)
class GalleryImage:
    label: str
    path: str  # relative to the gallery root, with forward slashes


def list_gallery(root: Path) -> list[GalleryImage]:
    """Every image file one folder deep, in a stable (sorted) order."""
    if not root.is_dir():
        raise FileNotFoundError(f"gallery folder not found: {root}")
    images = [
        GalleryImage(label=file.parent.name, path=file.relative_to(root).as_posix())
        for file in sorted(root.glob("*/*"))
        if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not images:
        raise FileNotFoundError(
            f"no images under {root}: expected <label>/<image> files "
            f"({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return images


def content_id(data: bytes) -> str:
    """A gallery id that survives renames and rebuilds: a hash of the file's bytes."""
    return hashlib.sha256(data).hexdigest()[:16]
