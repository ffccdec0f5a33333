"""Small galleries of real LFW photos, indexed by largest face and by every face."""

from __future__ import annotations

import shutil
from pathlib import Path

from lookalike.server.index.build import build_index
from lookalike.server.vision.selection import FaceSelection


def copy_photos(lfw_dir: Path, paths: list[str], root: Path) -> Path:
    """``paths`` of LFW's images copied under ``root`` (a gallery folder)."""
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lfw_dir / "images" / path, root / path)
    return root


def both_indexes(lfw_dir: Path, paths: list[str], embedder, folder: Path) -> tuple[Path, ...]:
    """The gallery of ``paths`` in ``folder``, and its largest-face and every-face indexes."""
    root = copy_photos(lfw_dir, paths, folder / "gallery")
    build_index(root, embedder, folder / "largest", progress=False)
    build_index(root, embedder, folder / "every", progress=False, faces=FaceSelection("all"))
    return root, folder / "largest", folder / "every"
