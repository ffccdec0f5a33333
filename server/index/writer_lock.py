"""One writer per gallery: an exclusive lock beside its changes, held while a server runs.

The server that holds a gallery's lock may add, remove and compact; any other
server started on the same gallery follows it read-only, reading the changes
the writer publishes, and takes the lock over when the writer is gone. The
lock is ``flock`` on a file in the changes folder: the kernel drops it when its
holder exits, however it exits, so a killed writer never leaves it stale.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILE = "writer.lock"


class WriterLock:
    """A held writer lock, shared by the backends of one gallery in one process (an index
    reload hands it to the new backend); the file is closed when the last lets go."""

    def __init__(self, fd: int, folder: Path) -> None:
        self._fd: int | None = fd
        self.folder = folder
        self._holders = 1

    @classmethod
    def try_take(cls, folder: Path) -> WriterLock | None:
        """The lock of the changes folder ``folder``, or None when another process holds
        it or the folder cannot be written (a read-only gallery)."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            log.warning("the gallery's changes folder is not writable here: %s", error.strerror)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held by another process (or another open of it in this one)
            os.close(fd)
            return None
        return cls(fd, folder)

    def share(self) -> WriterLock:
        self._holders += 1
        return self

    def release(self) -> None:
        self._holders -= 1
        if self._holders == 0 and self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None
