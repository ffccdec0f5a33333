"""Writing files so that a reader sees the old version or the new one, never half of one.

A rename is atomic but not durable by itself: after a power cut the new name
may point at a file whose blocks never reached the disk, or the rename itself
may be lost. So a file is fsynced before it is renamed into place and its
folder after.

``crash_point`` lets tests stop a process at a named step of a publish
(``LOOKALIKE_CRASH_AT=<step>``), the way a kill or a power cut would.
"""

from __future__ import annotations

import glob
import os
import string
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CRASH_AT = "LOOKALIKE_CRASH_AT"
CRASH_EXIT_CODE = 86
# tempfile.mkstemp names its files with 8 of these
STAGING_CHARACTERS = frozenset(string.ascii_lowercase + string.digits + "_")


def crash_point(step: str) -> None:
    """End the process at once, with no cleanup, when ``LOOKALIKE_CRASH_AT`` names ``step``."""
    if os.environ.get(CRASH_AT) == step:
        os._exit(CRASH_EXIT_CODE)


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries (a rename in it), to the disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Every file in ``folder`` and its folders (an index's items/), and the folders."""
    for entry in folder.iterdir():
        if entry.is_symlink():
            continue
        if entry.is_dir():
            fsync_tree(entry)
        elif entry.is_file():
            fsync_path(entry)
    fsync_path(folder)


def remove_leftovers(destination: Path) -> None:
    """Staging files that a killed writer of ``destination`` left behind (mkstemp's names)."""
    prefix = f".{destination.name}."
    for entry in destination.parent.glob(f"{glob.escape(prefix)}*"):
        rest = entry.name[len(prefix) :]
        if len(rest) == 8 and set(rest) <= STAGING_CHARACTERS and entry.is_file():
            entry.unlink(missing_ok=True)


@contextmanager
def atomic_path(
    destination: Path, mode: int = 0o644, step: str = "file", tidy: bool = False
) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; put it into place, durably, on success.

    ``step`` names the crash points ``<step>-staged`` (written and synced, not
    yet renamed) and ``<step>-placed`` (renamed, folder synced). ``tidy`` first
    removes staging files a killed writer left: only for a destination that no
    other process writes at the same time (a command's output file).
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    if tidy:
        remove_leftovers(destination)
    fd, name = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
    os.close(fd)
    staging = Path(name)
    try:
        yield staging
        staging.chmod(mode)  # mkstemp makes files private to their owner
        fsync_path(staging)
        crash_point(f"{step}-staged")
        os.replace(staging, destination)
        fsync_path(destination.parent)
        crash_point(f"{step}-placed")
    finally:
        staging.unlink(missing_ok=True)
