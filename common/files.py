"""Writing files so that a reader sees the old version or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(destination: Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it into place on success."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
    os.close(fd)
    staging = Path(name)
    try:
        yield staging
        staging.chmod(mode)  # mkstemp makes files private to their owner
        os.replace(staging, destination)
    finally:
        staging.unlink(missing_ok=True)


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries (a rename in it), to the disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
